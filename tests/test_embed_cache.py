"""Embedding caches: `geotag embed` (folders, shards, error rows, resume after a crash), heads trained on
cached features (GeoCLIP, TransLocator's RGB-only row) equal to normal frozen-backbone training, kNN
galleries from a cache equal to galleries from photos, and refusals of foreign features."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from cli_util import geotag as cli
from safetensors.torch import load_file

from geotag.config import EmbedConfig, PredictConfig, TrainConfig
from geotag.engine import embed as embed_engine
from geotag.engine.embed import run_embed, task_source
from geotag.engine.predict import run_predict
from geotag.engine.train import run_train
from geotag.engine.train_data import load_samples
from geotag.errors import InputError
from geotag.io.embed_cache import part_path, read_cache, read_info
from geotag.io.embeddings import read_gallery, read_gallery_info
from geotag.models.checkpoint import list_checkpoints

from conftest import REPO, save_tiny_hf_clip, write_tagged_photos

GEOTAG = [sys.executable, "-m", "geotag.cli"]
CPU = ["--device", "cpu", "--workers", "0"]


def cli_process(*args: str) -> subprocess.CompletedProcess[str]:
    """`geotag ARGS` in a process of its own: for what only a process shows (no traceback, one line)."""
    return subprocess.run([*GEOTAG, *args], cwd=REPO, capture_output=True, text=True)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tagged_photos(tmp_path_factory.mktemp("photos"), 12)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_hf_clip(tmp_path_factory.mktemp("tinyclip"))


@pytest.fixture(scope="module")
def clip_cache(photos: Path, tiny_clip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny GeoCLIP tower's float32 features of the photos, through the CLI, in parts of 5."""
    out = tmp_path_factory.mktemp("cache") / "clip"
    done = cli(
        "embed",
        str(photos),
        "--out",
        str(out),
        "--backbone",
        "geoclip",
        "--backbone-weights",
        str(tiny_clip),
        "--dtype",
        "float32",
        "--shard-size",
        "5",
        *CPU,
    )
    assert done.returncode == 0, done.stderr
    assert "embedded 12 sample(s) with geoclip (768-d)" in done.stderr
    return out


def geoclip_cfg(out: Path, tiny_clip: Path, **kw: Any) -> TrainConfig:
    settings: dict[str, Any] = {
        "epochs": 2,
        "batch_size": 4,
        "queue_size": 8,
        "workers": 0,
        "device": "cpu",
        "backbone_weights": tiny_clip,
        "allow_mismatched_heads": True,
        "val_fraction": 0.2,
        "lr": 1e-3,
        "augment": False,  # the cache holds the eval transform's features
        "freeze_backbone": True,
        "log_to": (),
        **kw,
    }
    return TrainConfig(out=out, **settings)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------
# geotag embed


def test_embed_writes_parts_of_raw_features_with_what_made_them(clip_cache: Path, photos: Path) -> None:
    info = read_info(clip_cache)
    assert info.complete and info.n_samples == 12 and info.ok == 12 and info.errors == 0
    assert info.backbone == "geoclip" and info.feature_dim == 768 and info.dtype == "float32"
    assert info.preprocess["input_size"] == 64 and not info.normalised and len(info.fingerprint) == 16
    assert [part_path(clip_cache, k).is_file() for k in range(4)] == [True, True, True, False]
    assert pq.read_table(part_path(clip_cache, 2)).num_rows == 2
    _, samples, feats = read_cache(clip_cache)
    want = load_samples([photos])
    assert samples.image_ids.to_pylist() == want.image_ids.to_pylist()
    np.testing.assert_array_equal(samples.lat, want.lat)
    norms = np.linalg.norm(feats, axis=1)
    assert feats.shape == (12, 768) and not np.allclose(norms, 1.0)  # raw, not L2-normalised
    assert set(pq.read_table(part_path(clip_cache, 0)).column("gt_source").to_pylist()) == {"exif"}


def test_embed_reads_tar_shards_as_train_does(photos: Path, tmp_path: Path) -> None:
    from geotag.engine.shards import pack

    pack([photos], tmp_path / "shards", 5, None)
    pattern = str(tmp_path / "shards" / "{00000..00002}.tar")
    done = cli("embed", pattern, "--out", str(tmp_path / "cache"), "--dtype", "float32", *CPU)
    assert done.returncode == 0, done.stderr
    info, samples, feats = read_cache(tmp_path / "cache")
    assert info.ok == 12 and feats.shape == (12, 1280) and info.backbone == "efficientnet_lite0.imagenet"
    assert sorted(samples.lat.round(5)) == sorted(load_samples([photos]).lat.round(5))


def test_unreadable_files_become_error_rows(photos: Path, tmp_path: Path) -> None:
    files = sorted(photos.glob("*.jpg"))[:3]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(files[0].read_bytes()[:400])  # a header and no picture
    rows = [f"{files[0]},10,20", f"{tmp_path / 'missing.jpg'},1,2", f"{broken},3,4", f"{files[1]},5,6"]
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,lat,lon\n" + "\n".join(rows) + "\n")
    done = cli("embed", str(manifest), "--out", str(tmp_path / "cache"), *CPU)
    assert done.returncode == 1, done.stderr  # some files failed
    assert "2 unreadable" in done.stderr
    table = pq.read_table(part_path(tmp_path / "cache", 0)).to_pylist()
    assert [r["status"] for r in table] == ["ok", "error", "error", "ok"]
    assert all(r["error"].startswith("cannot decode image") for r in table if r["status"] == "error")
    assert [r["embedding"] is None for r in table] == [False, True, True, False]
    assert [r["gt_source"] for r in table] == ["manifest"] * 4
    info, samples, _ = read_cache(tmp_path / "cache")
    assert info.ok == 2 and info.errors == 2 and samples.lat.tolist() == [10.0, 5.0]


def test_a_killed_embed_continues_at_the_next_unwritten_part(
    photos: Path, tiny_clip: Path, clip_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = EmbedConfig(
        data=[photos],
        out=tmp_path / "cache",
        backbone="geoclip",
        backbone_weights=tiny_clip,
        dtype="float32",
        shard_size=5,
        device="cpu",
        workers=0,
    )
    real, calls = embed_engine.write_part, []

    def crash_on_second(*args: Any, **kw: Any) -> None:
        calls.append(args[1])
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed while part 1 is being written
        real(*args, **kw)

    monkeypatch.setattr(embed_engine, "write_part", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        run_embed(cfg)
    out = tmp_path / "cache"
    assert part_path(out, 0).is_file() and not part_path(out, 1).is_file()
    assert not read_info(out).complete and sorted(p.name for p in out.iterdir()) == [
        "embeddings.json",
        "part-00000.parquet",
    ]
    with pytest.raises(InputError, match="incomplete"):
        read_cache(out)
    monkeypatch.setattr(embed_engine, "write_part", real)
    before = part_path(out, 0).stat().st_mtime_ns
    summary = run_embed(cfg)
    assert summary.parts_kept == 1 and summary.parts_written == 2 and summary.embedded == 7
    assert part_path(out, 0).stat().st_mtime_ns == before  # not rewritten
    _, _, resumed = read_cache(out)
    _, _, whole = read_cache(clip_cache)
    np.testing.assert_allclose(resumed, whole, rtol=1e-5, atol=1e-6)
    other = replace(cfg, dtype="float16")
    with pytest.raises(InputError, match="other data or another backbone"):
        run_embed(other)


# ------------------------------------------------------------------------------------------------
# Heads on cached features == heads over the frozen backbone


def head_weights(run: Path) -> dict[str, torch.Tensor]:
    folder = list_checkpoints(run)[-1][1]
    return load_file(folder / "model.safetensors")


def predictions(photos: Path, run: Path, tmp_path: Path, **kw: Any) -> dict[str, list]:
    out = tmp_path / f"{run.name}.parquet"
    run_predict(PredictConfig(paths=[photos], out=out, weights=run, device="cpu", workers=0, **kw))
    return pq.read_table(out, columns=["image_id", "pred_lat", "pred_lon", "confidence"]).to_pydict()


def test_geoclip_heads_on_the_cache_match_frozen_backbone_training(
    photos: Path, tiny_clip: Path, clip_cache: Path, tmp_path: Path
) -> None:
    normal = run_train(geoclip_cfg(tmp_path / "normal", tiny_clip, data=[photos]))
    cached = run_train(geoclip_cfg(tmp_path / "cached", tiny_clip, data=[], embeddings=clip_cache))
    assert cached.steps == normal.steps == 4 and cached.n_train == normal.n_train
    a, b = head_weights(tmp_path / "normal"), head_weights(tmp_path / "cached")
    assert a.keys() == b.keys() and any(k.startswith("image_encoder.mlp.") for k in a)
    first = load_file(list_checkpoints(tmp_path / "cached")[0][1] / "model.safetensors")
    assert not torch.equal(first["image_encoder.mlp.0.weight"], b["image_encoder.mlp.0.weight"])  # it trains
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    val_a = [r for r in normal.metrics if r["kind"] == "val"]
    val_b = [r for r in cached.metrics if r["kind"] == "val"]
    assert [r["median_km"] for r in val_a] == pytest.approx([r["median_km"] for r in val_b], rel=1e-6)
    opts = {"model": "geoclip", "backbone_weights": tiny_clip, "allow_mismatched_heads": True}
    pa_, pb = (
        predictions(photos, tmp_path / "normal", tmp_path, **opts),
        predictions(photos, tmp_path / "cached", tmp_path, **opts),
    )
    assert pa_["pred_lat"] == pb["pred_lat"] and pa_["pred_lon"] == pb["pred_lon"]
    np.testing.assert_allclose(pa_["confidence"], pb["confidence"], rtol=1e-4)


def test_translocator_cell_heads_on_the_cache_match_frozen_backbone_training(
    photos: Path, tmp_path: Path
) -> None:
    from test_train_faithful import tiny_translocator

    cfg = TrainConfig(
        data=[photos],
        out=tmp_path / "normal",
        model="translocator",
        epochs=2,
        batch_size=4,
        workers=0,
        device="cpu",
        allow_untrained=True,
        freeze_backbone=True,
        augment=False,
        val_fraction=0.2,
        lr=1e-3,
        cells_scale="auto",
        log_to=(),
    )
    normal = run_train(cfg, task=tiny_translocator(cells_scale="auto"))
    task = tiny_translocator(cells_scale="auto")
    torch.manual_seed(cfg.seed)  # the random tiny ViT the trainer builds from the same seed
    model = task.build(cfg, load_samples([photos]), None)
    source = task_source(task, model, "translocator")
    ecfg = EmbedConfig(data=[photos], out=tmp_path / "cache", dtype="float32", device="cpu", workers=0)
    run_embed(ecfg, source=source)
    cached_cfg = replace(cfg, data=[], out=tmp_path / "cached", embeddings=tmp_path / "cache")
    cached = run_train(cached_cfg, task=tiny_translocator(cells_scale="auto"))
    assert cached.steps == normal.steps
    a, b = head_weights(tmp_path / "normal"), head_weights(tmp_path / "cached")
    assert a.keys() == b.keys() and any(k.startswith("heads.") for k in a)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    pa_ = predictions(photos, tmp_path / "normal", tmp_path, model="translocator")
    pb = predictions(photos, tmp_path / "cached", tmp_path, model="translocator")
    assert pa_["pred_lat"] == pb["pred_lat"] and pa_["pred_lon"] == pb["pred_lon"]


# ------------------------------------------------------------------------------------------------
# Galleries, and refusals


def test_gallery_from_the_cache_equals_the_gallery_from_photos(photos: Path, tmp_path: Path) -> None:
    made = cli("embed", str(photos), "--out", str(tmp_path / "cache"), "--dtype", "float32", *CPU)
    assert made.returncode == 0, made.stderr
    direct = cli("gallery", "build", str(photos), "--out", str(tmp_path / "photos.parquet"), *CPU)
    cached = cli(
        "gallery", "build", "--embeddings", str(tmp_path / "cache"), "--out", str(tmp_path / "cached.parquet")
    )
    assert direct.returncode == 0 and cached.returncode == 0, direct.stderr + cached.stderr
    assert read_gallery_info(tmp_path / "photos.parquet") == read_gallery_info(tmp_path / "cached.parquet")
    ia, ca, ea = read_gallery(tmp_path / "photos.parquet")
    ib, cb, eb = read_gallery(tmp_path / "cached.parquet")
    torch.testing.assert_close(ca, cb)
    torch.testing.assert_close(ea.float(), eb.float(), atol=2e-3, rtol=0)
    keys = ("image_id", "path", "gt_source")
    assert (
        pq.read_table(tmp_path / "photos.parquet", columns=list(keys)).to_pylist()
        == pq.read_table(tmp_path / "cached.parquet", columns=list(keys)).to_pylist()
    )
    preds = cli(
        "predict",
        str(photos),
        "--out",
        str(tmp_path / "knn.parquet"),
        "--model",
        "knn",
        "--gallery",
        str(tmp_path / "cached.parquet"),
        *CPU,
    )
    assert preds.returncode == 0, preds.stderr


def test_foreign_features_are_refused_in_one_line(clip_cache: Path, photos: Path, tmp_path: Path) -> None:
    other = save_tiny_hf_clip(tmp_path / "other")  # same shape, other weights
    state = load_file(other / "model.safetensors")
    from safetensors.torch import save_file

    save_file({k: v + 0.01 for k, v in state.items()}, other / "model.safetensors")
    done = cli_process(
        "train",
        "--embeddings",
        str(clip_cache),
        "--out",
        str(tmp_path / "run"),
        "--backbone-weights",
        str(other),
        "--allow-mismatched-heads",
        "--batch-size",
        "4",
        "--epochs",
        "1",
        *CPU,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "not this model's backbone" in done.stderr and "fingerprint" in done.stderr
    assert sum(line.startswith("error:") for line in done.stderr.splitlines()) == 1
    assert not list_checkpoints(tmp_path / "run")
    refused = cli("gallery", "build", "--embeddings", str(clip_cache), "--out", str(tmp_path / "g.parquet"))
    assert refused.returncode == 2 and "needs a registry backbone" in refused.stderr
    both = cli("train", "--embeddings", str(clip_cache), "--data", str(photos), "--out", str(tmp_path / "r2"))
    assert both.returncode == 2 and "drop --data" in both.stderr
    full = cli("train", "--embeddings", str(clip_cache), "--out", str(tmp_path / "r3"), "--full")
    assert full.returncode == 2 and "frozen backbone: drop --full" in full.stderr
    with pytest.raises(InputError, match="not an embedding cache"):
        read_cache(photos)


def test_a_validation_cache_validates_the_heads(photos: Path, tiny_clip: Path, tmp_path: Path) -> None:
    """--val with --embeddings is a second cache: its rows validate, none of them trains."""
    files = sorted(photos.glob("*.jpg"))
    for name, part in (("train", files[:8]), ("val", files[8:])):
        (tmp_path / name).mkdir()
        for f in part:
            (tmp_path / name / f.name).write_bytes(f.read_bytes())
        run_embed(
            EmbedConfig(
                data=[tmp_path / name],
                out=tmp_path / f"{name}-cache",
                backbone="geoclip",
                backbone_weights=tiny_clip,
                device="cpu",
                workers=0,
            )
        )
    cfg = geoclip_cfg(
        tmp_path / "run",
        tiny_clip,
        data=[],
        embeddings=tmp_path / "train-cache",
        val=tmp_path / "val-cache",
        epochs=1,
    )
    summary = run_train(cfg)
    assert summary.n_train == 8 and summary.n_val == 4
    assert [r["n"] for r in summary.metrics if r["kind"] == "val"] == [4]
