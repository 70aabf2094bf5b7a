"""Issue 29 groups 5 and 7: a checkpoint (or embedding cache) from someone else is read as untrusted data.

Its files are read inside its folder only (no absolute path, no `..`, no symlink leading out), every field
of config.json / train.json / trainer.json / embeddings.json is checked, and each crafted variant is one
line naming the file and the field, exit 2, never an internal error and never a quote of a file it should
not have read. Also: an absurd step count is refused, not printed; temps a killed checkpoint left behind
are removed on the next run (geotag's own names only, never through a link)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tiny_weights import save_tiny_hf_clip

from geotag.config import TrainConfig
from geotag.engine.train import run_train
from geotag.errors import GeotagError

from conftest import write_tagged_photos

SECRET = "root:x:0:0:SECRET-LINE"


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_hf_clip(tmp_path_factory.mktemp("tinyclip"))


def _cfg(photos: Path, out: Path, tiny_clip: Path, **kw: object) -> TrainConfig:
    settings: dict[str, object] = {
        "epochs": 1,
        "batch_size": 4,
        "queue_size": 8,
        "workers": 0,
        "device": "cpu",
        "backbone_weights": tiny_clip,
        "val_fraction": 0.0,
        "allow_mismatched_heads": True,
        "log_to": (),
        **kw,
    }
    return TrainConfig(data=[photos], out=out, **settings)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_clip: Path) -> tuple[Path, Path]:
    """(photos, run folder): a tiny GeoCLIP run stopped after 1 of 2 steps (step-00000001 holds its own
    gallery.parquet, named in config.json `files`)."""
    photos = write_tagged_photos(tmp_path_factory.mktemp("photos"), n=8)
    run = tmp_path_factory.mktemp("run") / "run"
    summary = run_train(_cfg(photos, run, tiny_clip, max_steps=1))
    assert summary.checkpoint is not None and summary.checkpoint.name == "step-00000001"
    return photos, run


def _copy(run: Path, tmp_path: Path) -> tuple[Path, Path]:
    out = tmp_path / "run"
    shutil.copytree(run, out, symlinks=True)
    return out, out / "step-00000001"


def _edit(path: Path, change: Callable[[dict[str, Any]], object]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _one_line(exc: GeotagError, *names: str) -> str:
    text = str(exc)
    assert exc.exit_code == 2 and "\n" not in text, text
    assert SECRET not in text and "SECRET" not in text
    for name in names:
        assert name in text, text
    return text


# --- config.json: files only inside the folder, every field typed ---------------------------------------


def _set(*keys: str, value: object) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        for k in keys[:-1]:
            data = data.setdefault(k, {})
        data[keys[-1]] = value

    return change


CONFIG_VARIANTS = {
    "gallery-dotdot": (_set("files", "gallery", value="../../outside.csv"), "files.gallery"),
    "gallery-absolute": (None, "files.gallery"),  # set in the test: the absolute path of a secret file
    "gallery-number": (_set("files", "gallery", value=5), "files.gallery"),
    "files-string": (_set("files", value="gallery.parquet"), "files"),
    "skipped-prefixes-ints": (_set("skipped_prefixes", value=[1, 2]), "skipped_prefixes"),
    "model-config-list": (_set("model_config", value=[]), "model_config"),
    "gps-sigmas-string": (_set("model_config", "gps_sigmas", value="2,16"), "model_config.gps_sigmas"),
    "backbone-config-width-string": (
        _set("model_config", "backbone_config", "width", value="wide"),
        "model_config.backbone_config.width",
    ),
    "format-version-string": (_set("format_version", value="1"), "format_version"),
    "model-number": (_set("model", value=7), "model"),
    "train-step-huge": (_set("train", "step", value=10**40), "train.step"),
}


@pytest.mark.parametrize("variant", sorted(CONFIG_VARIANTS))
def test_config_json_variants_are_one_line(
    trained: tuple[Path, Path], tmp_path: Path, tiny_clip: Path, variant: str
) -> None:
    from geotag.models.registry import build_geoclip

    _, run = trained
    _, step = _copy(run, tmp_path)
    secret = tmp_path / "passwd"
    secret.write_text(f"{SECRET}\nlat,lon\n1,2\n")
    change, field = CONFIG_VARIANTS[variant]
    if change is None:
        change = _set("files", "gallery", value=str(secret))
    (tmp_path / "outside.csv").write_text("lat,lon\n12.5,45.25\n")
    _edit(step / "config.json", change)
    with pytest.raises(GeotagError) as info:
        build_geoclip(backbone_weights=tiny_clip, weights=step, allow_mismatched_heads=True)
    _one_line(info.value, "config.json", field)


def test_gallery_symlink_leading_out_is_refused(
    trained: tuple[Path, Path], tmp_path: Path, tiny_clip: Path
) -> None:
    """The gallery file named in config.json is a link to a file outside the checkpoint."""
    from geotag.models.registry import build_geoclip

    _, run = trained
    _, step = _copy(run, tmp_path)
    outside = tmp_path / "outside.csv"
    outside.write_text("lat,lon\n12.5,45.25\n")
    (step / "gallery.parquet").unlink()
    (step / "gallery.parquet").symlink_to(outside)
    with pytest.raises(GeotagError) as info:
        build_geoclip(backbone_weights=tiny_clip, weights=step, allow_mismatched_heads=True)
    _one_line(info.value, "files.gallery", "symlink")


def test_config_json_that_is_a_link_out_or_not_an_object(
    trained: tuple[Path, Path], tmp_path: Path, tiny_clip: Path
) -> None:
    from geotag.models.registry import build_geoclip

    _, run = trained
    _, step = _copy(run, tmp_path)
    secret = tmp_path / "passwd"
    secret.write_text(SECRET + "\n")
    (step / "config.json").unlink()
    (step / "config.json").symlink_to(secret)
    with pytest.raises(GeotagError) as info:
        build_geoclip(backbone_weights=tiny_clip, weights=step, allow_mismatched_heads=True)
    _one_line(info.value, "config.json")
    (step / "config.json").unlink()
    (step / "config.json").write_text("[1, 2]")
    with pytest.raises(GeotagError) as info:
        build_geoclip(backbone_weights=tiny_clip, weights=step, allow_mismatched_heads=True)
    _one_line(info.value, "config.json", "object")


def test_the_untouched_checkpoint_still_loads(trained: tuple[Path, Path], tiny_clip: Path) -> None:
    from geotag.models.registry import build_geoclip

    _, run = trained
    model = build_geoclip(backbone_weights=tiny_clip, weights=run, allow_mismatched_heads=True)
    assert len(model.gps_gallery) == 8


# --- train.json / trainer.json: what --resume reads ----------------------------------------------------

RESUME_VARIANTS = {
    "train-settings-list": ("train.json", _set("settings", value=[]), "settings"),
    "train-step-string": ("train.json", _set("step", value="1"), "step"),
    "train-data-fingerprint-number": ("train.json", _set("data_fingerprint", value=5), "data_fingerprint"),
    "train-metrics-string": ("train.json", _set("metrics", "median_km", value="far"), "metrics.median_km"),
    "trainer-step-huge": ("trainer.json", _set("position", "step", value=10**30), "position.step"),
    "trainer-step-negative": ("trainer.json", _set("position", "step", value=-1), "position.step"),
    "trainer-step-other-folder": ("trainer.json", _set("position", "step", value=7), "position.step"),
    "trainer-position-list": ("trainer.json", _set("position", value=[]), "position"),
    "trainer-position-extra": ("trainer.json", _set("position", "oops", value=1), "position.oops"),
    "trainer-param-groups-object": (
        "trainer.json",
        _set("optimizer", "param_groups", value={}),
        "param_groups",
    ),
    "trainer-rng-python-short": (
        "trainer.json",
        _set("rng", "python", "state", value=[1, 2]),
        "rng.python.state",
    ),
    "trainer-rng-numpy-pos-string": ("trainer.json", _set("rng", "numpy", "pos", value="x"), "rng.numpy.pos"),
    "trainer-loss-sum-string": ("trainer.json", _set("position", "loss_sum", value="0"), "position.loss_sum"),
}


@pytest.mark.parametrize("variant", sorted(RESUME_VARIANTS))
def test_resume_state_variants_are_one_line(
    trained: tuple[Path, Path], tmp_path: Path, tiny_clip: Path, variant: str
) -> None:
    photos, run = trained
    out, step = _copy(run, tmp_path)
    name, change, field = RESUME_VARIANTS[variant]
    _edit(step / name, change)
    with pytest.raises(GeotagError) as info:
        run_train(_cfg(photos, out, tiny_clip, resume=True))
    text = _one_line(info.value, name, field)
    assert "0" * 20 not in text  # a huge step count is refused, never printed


def test_optimizer_state_of_another_shape_is_one_line(
    trained: tuple[Path, Path], tmp_path: Path, tiny_clip: Path
) -> None:
    """param_groups that do not match the model's: torch's own error becomes one WeightsError line."""
    photos, run = trained
    out, step = _copy(run, tmp_path)
    _edit(
        step / "trainer.json",
        lambda d: d["optimizer"]["param_groups"].append(d["optimizer"]["param_groups"][0]),
    )
    with pytest.raises(GeotagError) as info:
        run_train(_cfg(photos, out, tiny_clip, resume=True))
    _one_line(info.value, "does not fit")


def test_stale_checkpoint_temps_are_removed_on_the_next_run(
    trained: tuple[Path, Path], tmp_path: Path, tiny_clip: Path
) -> None:
    """Group 7: a kill during a checkpoint leaves `.step-N.<random>.geotag-tmp/`; the next run removes
    geotag's own temps (folders and files) but never follows or removes a link, nor other names."""
    photos, run = trained
    out, _ = _copy(run, tmp_path)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("keep")
    stale_dir = out / ".step-00000002.k3j2l1zz.geotag-tmp"
    stale_dir.mkdir()
    (stale_dir / "model.safetensors").write_bytes(b"half")
    (out / ".metrics.csv.abcd1234.geotag-tmp").write_text("half")
    (out / ".best.q1w2e3r4.geotag-tmp").mkdir()
    link = out / ".step-00000003.aaaa1111.geotag-tmp"
    link.symlink_to(victim)
    other = out / ".notes.txt.aaaa1111.geotag-tmp"
    other.write_text("not geotag's")
    summary = run_train(_cfg(photos, out, tiny_clip, resume=True))
    assert summary.steps == 2
    left = sorted(p.name for p in out.iterdir() if p.name.startswith("."))
    assert left == sorted([link.name, other.name])
    assert (victim / "keep.txt").read_text() == "keep"
    assert any("temporary" in n for n in summary.notes)


# --- embeddings.json ---------------------------------------------------------------------------------

CACHE_VARIANTS = {
    "dtype-object": (_set("dtype", value="object"), "dtype"),
    "feature-dim-string": (_set("feature_dim", value="768"), "feature_dim"),
    "feature-dim-huge": (_set("feature_dim", value=10**9), "feature_dim"),
    "shard-size-zero": (_set("shard_size", value=0), "shard_size"),
    "n-samples-negative": (_set("n_samples", value=-1), "n_samples"),
    "ok-huge": (_set("ok", value=10**11), "ok"),
    "preprocess-list": (_set("preprocess", value=[]), "preprocess"),
    "complete-string": (_set("complete", value="yes"), "complete"),
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny complete embedding cache written by the cache's own writer."""
    import numpy as np
    import pyarrow as pa

    from geotag.io.embed_cache import CacheInfo, write_info, write_part
    from geotag.io.samples import TrainSamples

    folder = tmp_path_factory.mktemp("cache")
    n = 3
    samples = TrainSamples(
        pa.array([f"/p/{i}.jpg" for i in range(n)]),
        pa.array([str(i) for i in range(n)]),
        np.array([1.0, 2.0, 3.0]),
        np.array([4.0, 5.0, 6.0]),
        np.full(n, -1, np.int64),
        pa.nulls(n, pa.string()),
        [],
    )
    pre = {"input_size": 8, "mean": [0, 0, 0], "std": [1, 1, 1], "interpolation": "bilinear"}
    info = CacheInfo("b", "w", "f", 4, "float16", pre, 10, n, "d", complete=True, ok=n)
    write_part(folder, 0, info, samples, ["exif"] * n, np.ones((n, 4)), [None] * n)
    write_info(folder, info)
    return folder


@pytest.mark.parametrize("variant", sorted(CACHE_VARIANTS))
def test_embeddings_json_variants_are_one_line(cache: Path, tmp_path: Path, variant: str) -> None:
    from geotag.io.embed_cache import read_cache

    folder = tmp_path / "cache"
    shutil.copytree(cache, folder)
    change, field = CACHE_VARIANTS[variant]
    _edit(folder / "embeddings.json", change)
    with pytest.raises(GeotagError) as info:
        read_cache(folder)
    _one_line(info.value, "embeddings.json", field)


def test_the_untouched_cache_reads(cache: Path) -> None:
    from geotag.io.embed_cache import read_cache

    info, samples, features = read_cache(cache)
    assert len(samples) == 3 and features.shape == (3, 4) and str(features.dtype) == "float16"


def test_checkpoint_temps_are_named_as_the_cleanup_expects(tmp_path: Path) -> None:
    from geotag.engine.train import STALE_TEMPS
    from geotag.io.durable import TEMP_NAME, new_temp, new_temp_dir

    for made in (new_temp_dir(tmp_path / "step-00000005"), new_temp(tmp_path / "metrics.csv")[1]):
        m = TEMP_NAME.match(made.name)
        assert m is not None and STALE_TEMPS.fullmatch(m[1]), made.name


def test_resume_refuses_a_step_folder_that_is_a_link(trained: tuple[Path, Path], tmp_path: Path) -> None:
    """A planted `step-99999999` link to a folder elsewhere is not taken as the newest checkpoint."""
    from geotag.models.checkpoint import list_checkpoints

    _, run = trained
    out, step = _copy(run, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(step, elsewhere)
    (out / "step-99999999").symlink_to(elsewhere)
    assert [p.name for _, p in list_checkpoints(out)] == ["step-00000001"]


def test_what_geotag_writes_passes_the_checks(trained: tuple[Path, Path]) -> None:
    """The validators accept what geotag itself writes (every file of a real checkpoint)."""
    from geotag.models.checkpoint import load_trainer_state, read_config, read_train_info

    _, run = trained
    step = run / "step-00000001"
    assert read_config(step)["files"] == {"gallery": "gallery.parquet"}
    assert read_train_info(step)["step"] == 1
    assert load_trainer_state(step).position["step"] == 1


def test_a_huge_saved_setting_is_never_printed_at_length(
    trained: tuple[Path, Path], tmp_path: Path, tiny_clip: Path
) -> None:
    photos, run = trained
    out, step = _copy(run, tmp_path)
    _edit(step / "train.json", _set("settings", "lr", value="9" * 100_000))
    with pytest.raises(GeotagError, match="other settings") as info:
        run_train(_cfg(photos, out, tiny_clip, resume=True))
    assert len(str(info.value)) < 300
