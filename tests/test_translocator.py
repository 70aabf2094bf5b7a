"""TransLocator on tiny ViTs (CPU, seconds): MFF, hierarchical inference, the ablation configs, checkpoints
through the registry and `run_predict`, TTA, precomputed maps, and a bf16 GPU run of the full-size model."""

from __future__ import annotations

import dataclasses
import itertools
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from cli_util import geotag
from safetensors.torch import save_file
from tiny_weights import save_tiny_hf_clip

from geotag.config import PredictConfig
from geotag.engine.predict import run_predict
from geotag.errors import InputError, WeightsError
from geotag.geo.cells import Geocells, PartitionSpec, build_cells
from geotag.models.cell_head import cell_radius_km
from geotag.models.registry import available_models, build_model
from geotag.models.segmentation import DiskSegmentation, SegFormerProvider
from geotag.models.translocator import (
    SCENES,
    VARIANTS,
    BackboneConfig,
    TransLocator,
    build_translocator,
    hierarchical_probabilities,
    load_translocator,
    save_checkpoint,
    translocator_loss,
)

transformers = pytest.importorskip("transformers")

TINY = BackboneConfig(overrides={"embed_dim": 32, "depth": 2, "num_heads": 2})
SIZE = 64
SPECS = (PartitionSpec("coarse", 2, 60), PartitionSpec("middle", 2, 25), PartitionSpec("fine", 2, 10))


def tiny_segformer(seed: int = 0) -> SegFormerProvider:
    torch.manual_seed(seed)
    config = transformers.SegformerConfig(
        num_labels=150,
        depths=[1, 1, 1, 1],
        sr_ratios=[8, 4, 2, 1],
        hidden_sizes=[8, 16, 16, 16],
        num_attention_heads=[1, 1, 1, 1],
        decoder_hidden_size=16,
    )
    return SegFormerProvider(transformers.SegformerForSemanticSegmentation(config).eval(), size=SIZE)


@pytest.fixture(scope="module")
def cells() -> Geocells:
    rng = np.random.default_rng(0)
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, 400)))
    lon = rng.uniform(-180, 180, 400)
    return build_cells(lat, lon, SPECS)


@pytest.fixture(scope="module")
def segmenter() -> SegFormerProvider:
    return tiny_segformer()


def tiny(cells: Geocells, variant: str = "vit+seg+mff+scene", segmenter=None, **kw) -> TransLocator:
    torch.manual_seed(0)
    model = build_translocator(
        cells, variant, backbone=TINY, img_size=SIZE, allow_untrained=True, segmenter=segmenter, **kw
    )
    return model.eval()


def test_registered_and_needs_a_checkpoint() -> None:
    assert "translocator" in available_models()
    with pytest.raises(WeightsError, match="--weights FOLDER"):
        build_model("translocator")
    with pytest.raises(WeightsError, match="not found"):
        build_model("translocator", weights=Path("/nonexistent"))


@pytest.mark.parametrize("mff", [True, False])
def test_fusion_mixes_the_branches_only_with_mff(cells: Geocells, mff: bool) -> None:
    model = tiny(cells, "vit+seg+mff" if mff else "vit+seg")
    images = torch.randn(2, 3, SIZE, SIZE)
    seg_a, seg_b = torch.randn(2, 3, SIZE, SIZE), torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        trace_a, trace_b = [], []
        model.features(images, seg_a, trace=trace_a)
        model.features(images, seg_b, trace=trace_b)
    rgb_cls_a, rgb_cls_b = trace_a[0][0], trace_b[0][0]  # the RGB branch's [CLS] after block 1
    if mff:
        assert not torch.allclose(rgb_cls_a, rgb_cls_b)
        assert all(torch.equal(r, s) for r, s in trace_a)  # the fused token is written into both branches
    else:
        assert torch.equal(rgb_cls_a, rgb_cls_b)
        assert all(torch.equal(r1, r2) for (r1, _), (r2, _) in zip(trace_a, trace_b, strict=True))


def test_hierarchical_inference_equals_brute_force() -> None:
    """Two coarse, three middle, five fine cells; parents chosen by hand."""
    middle_parent = [0, 0, 1]  # middle cell -> coarse cell
    fine_parent = [0, 0, 1, 2, 2]  # fine cell -> middle cell
    ancestors = torch.tensor([[middle_parent[m], m, f] for f, m in enumerate(fine_parent)])
    gen = torch.Generator().manual_seed(0)
    probs = [torch.rand(4, n, generator=gen).softmax(dim=1) for n in (2, 3, 5)]
    got = hierarchical_probabilities(probs, ancestors)
    for b, f in itertools.product(range(4), range(5)):
        m = fine_parent[f]
        c = middle_parent[m]
        expected = probs[2][b, f].item() * probs[1][b, m].item() * probs[0][b, c].item()
        assert got[b, f].item() == pytest.approx(expected, rel=1e-6)


def test_predict_follows_the_hierarchy_of_its_cells(cells: Geocells, segmenter) -> None:
    model = tiny(cells, segmenter=segmenter)
    images = torch.randn(3, 3, SIZE, SIZE)
    with torch.no_grad():
        pred = model.predict(images, top_k=4)
        probs = model.probabilities(images, model.segment(images))
    names = cells.names
    for b in range(3):
        scores = []
        for f in range(len(cells.fine)):  # walk each fine cell's parent chain with python loops
            score, index = probs[names[-1]][b, f].item(), f
            for p in range(len(names) - 1, 0, -1):
                index = int(cells.partitions[p].parent[index])
                score *= probs[names[p - 1]][b, index].item()
            scores.append(score)
        scores = np.array(scores) / sum(scores)
        best = np.argsort(-scores)[:4]
        assert pred.extras["cell"][b] == cells.fine.tokens()[best[0]]
        np.testing.assert_allclose(pred.topk_score[b].numpy(), scores[best], rtol=1e-5)
        assert pred.lat[b].item() == cells.fine.lat[best[0]] and pred.lon[b].item() == cells.fine.lon[best[0]]
        assert pred.confidence[b].item() == pytest.approx(scores[best[0]], rel=1e-5)
        assert pred.topk_lat[b].tolist() == cells.fine.lat[best].tolist()
        assert 0 <= pred.error_km[b].item() <= 20_016
        radius = float(cell_radius_km(cells.fine.ids[best[:1]])[0])  # never finer than the chosen cell
        assert pred.error_km[b].item() >= radius > 0


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_ablation_configs_build_and_run(cells: Geocells, segmenter, variant: str) -> None:
    model = tiny(cells, variant, segmenter=segmenter)
    spec = VARIANTS[variant]
    assert (model.seg is not None) == spec.use_seg and (model.scene_head is not None) == spec.scene
    assert len(model.heads) == 3 and model.heads[-1].out_features == len(cells.fine)
    images = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        logits = model(images, model.normalise(model.segment(images)) if spec.use_seg else None)
        pred = model.predict(images, top_k=3)
    assert set(logits) == {"coarse", "middle", "fine"} | ({"scene"} if spec.scene else set())
    assert pred.topk_lat.shape == (2, 3) and pred.lat.dtype == torch.float64
    assert torch.all(pred.topk_score[:, :-1] >= pred.topk_score[:, 1:])
    assert ("scene" in pred.extras) == spec.scene
    if spec.scene:
        assert set(pred.extras["scene"]) <= set(SCENES)


def test_loss_trains_both_branches(cells: Geocells) -> None:
    model = tiny(cells, segmenter=tiny_segformer()).train()
    assert not model.segmenter.training and not model.segmenter.model.training  # frozen maps while training
    images, seg = torch.randn(4, 3, SIZE, SIZE), torch.randn(4, 3, SIZE, SIZE)
    lat, lon = np.array([10.0, -20, 40, 60]), np.array([5.0, 100, -70, 20])
    targets = {n: torch.from_numpy(t) for n, t in zip(cells.names, cells.assign(lat, lon).T, strict=True)}
    targets["scene"] = torch.tensor([0, 1, 2, -1])
    loss = translocator_loss(model(images, seg), targets, cells.names)
    loss.backward()
    assert torch.isfinite(loss)
    assert model.rgb.patch_embed.proj.weight.grad.abs().sum() > 0
    assert model.seg.patch_embed.proj.weight.grad.abs().sum() > 0


def test_tta_crops_average_probabilities(cells: Geocells, segmenter) -> None:
    model = tiny(cells, segmenter=segmenter, tta_crops=10)
    assert model.preprocess().input_size == round(SIZE / 0.875)
    images = torch.randn(2, 3, 73, 73)
    with torch.no_grad():
        pred = model.predict(images, top_k=2)
        views = model._views(images)
    assert views.shape == (10, 2, 3, SIZE, SIZE)
    assert torch.equal(views[4], images[..., 4:68, 4:68]) and torch.equal(views[9], views[4].flip(-1))
    assert pred.topk_score.shape == (2, 2)
    with pytest.raises(InputError, match="tta_crops"):
        tiny(cells, tta_crops=3)


def test_precomputed_maps_through_predict(tmp_path: Path, cells: Geocells) -> None:
    from PIL import Image

    model = tiny(cells)
    with pytest.raises(WeightsError):
        model.prepare()  # the seg branch has nothing to see yet
    labels = np.random.default_rng(0).integers(0, 150, (SIZE, SIZE), dtype=np.uint8)
    Image.fromarray(labels, mode="L").save(tmp_path / "id0.png")
    Image.fromarray(labels, mode="L").save(tmp_path / "photo1.png")
    model.set_segmentation(DiskSegmentation(tmp_path))
    model.prepare()
    assert model.needs_image_keys
    images = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        a = model.predict(images, 2, image_ids=["id0", None], paths=[None, "/x/photo1.jpg"])
        b = model.predict(images, 2, seg_maps=torch.from_numpy(labels)[None].expand(2, -1, -1))
    assert torch.equal(a.topk_score, b.topk_score)


def test_backbones_from_a_local_timm_file(tmp_path: Path, cells: Geocells) -> None:
    torch.manual_seed(1)
    source = build_translocator(cells, "vit", backbone=TINY, img_size=SIZE, allow_untrained=True).rgb
    state = {**source.state_dict(), "head.weight": torch.zeros(10, 32), "head.bias": torch.zeros(10)}
    save_file(state, tmp_path / "vit.safetensors")
    model = build_translocator(
        cells,
        "vit+seg",
        backbone=TINY,
        img_size=SIZE,
        backbone_weights=tmp_path / "vit.safetensors",
        segmenter=None,
    )
    for branch in (model.rgb, model.seg):
        assert all(torch.equal(v, source.state_dict()[k]) for k, v in branch.state_dict().items())
    assert (
        model.weights_label.startswith("vit.safetensors backbones")
        and "heads UNTRAINED" in model.weights_label
    )


def test_offline_without_backbone_weights_fails_fast(tmp_path: Path, monkeypatch, cells: Geocells) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(WeightsError) as info:
        build_translocator(cells)  # full ViT-B/16: stops before building anything
    assert time.perf_counter() - start < 3
    message = str(info.value)
    assert "hf download timm/vit_base_patch16_224.augreg_in21k" in message and "\n" not in message


def test_checkpoint_predicts_end_to_end(
    tmp_path: Path, sample_data: Path, cells: Geocells, segmenter
) -> None:
    model = tiny(cells, segmenter=segmenter)
    folder = save_checkpoint(model, tmp_path / "ckpt")
    assert {p.name for p in folder.iterdir()} == {
        "config.json",
        "model.safetensors",
        "cells.parquet",
        "segmenter",
    }

    loaded = build_model("translocator", weights=folder)
    assert isinstance(loaded, TransLocator) and "UNTRAINED" in loaded.weights_label
    loaded.eval().prepare()
    images = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        a, b = model.predict(images, 3), loaded.predict(images, 3)
    assert torch.equal(a.topk_score, b.topk_score) and a.extras == b.extras

    out = tmp_path / "preds.parquet"
    cfg = PredictConfig(paths=[sample_data], out=out, batch_size=4, workers=0, top_k=3)
    summary = run_predict(cfg, model=loaded)
    rows = pq.read_table(out).to_pylist()
    ok = [r for r in rows if r["status"] == "ok"]
    assert summary.total == len(rows) and ok and summary.failed == len(rows) - len(ok)
    tokens = set(cells.fine.tokens())
    for r in ok:
        assert r["model"] == "translocator" and r["cell"] in tokens and r["scene"] in SCENES
        assert len(r["topk"]) == 3 and r["topk"][0]["lat"] == r["pred_lat"]
        assert r["topk"][0]["score"] >= r["topk"][1]["score"] >= r["topk"][2]["score"]
        assert r["confidence"] == pytest.approx(r["topk"][0]["score"])
        assert r["error_km"] is not None and 0 <= r["error_km"] <= 20_016

    cli_out = tmp_path / "cli.parquet"
    args = ["predict", sample_data, "--out", cli_out, "--model", "translocator", "--weights", folder]
    result = geotag(*args, "--device", "cpu", "--workers", "0", "--batch-size", "4", "--top-k", "3")
    assert result.returncode == 1, result.stderr  # sample_data holds broken files on purpose
    cli_rows = pq.read_table(cli_out, columns=["path", "cell", "topk", "model", "weights"]).to_pylist()
    by_path = {r["path"]: r for r in rows}
    for r in cli_rows:
        assert r["model"] == "translocator" and "UNTRAINED" in r["weights"]
        assert r["cell"] == by_path[r["path"]]["cell"] and r["topk"] == by_path[r["path"]]["topk"]


def test_loaded_checkpoint_defers_a_missing_segmenter(tmp_path: Path, cells: Geocells, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = tiny(cells)  # no segmenter: the config records the default hub id
    model.config = dataclasses.replace(model.config, segmenter="nvidia/segformer-b0-finetuned-ade-512-512")
    folder = save_checkpoint(model, tmp_path / "ckpt")
    loaded = load_translocator(folder)
    with pytest.raises(WeightsError, match="hf download nvidia/segformer"):
        loaded.prepare()
    loaded.set_segmentation(DiskSegmentation(tmp_path))
    loaded.prepare()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_full_vit_b16_dual_model_in_bf16(cells: Geocells, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # cached timm weights are used if present; nothing downloads
    torch.manual_seed(0)
    model = build_translocator(cells, allow_untrained=True, segmenter=None).cuda().eval()
    assert sum(p.numel() for p in model.rgb.parameters()) > 85_000_000  # ViT-B/16
    assert len(model.rgb.blocks) == 12 and model.rgb.embed_dim == 768
    images = torch.randn(16, 3, 224, 224, device="cuda")
    labels = torch.randint(0, 150, (16, 224, 224), device="cuda")
    with torch.inference_mode():
        full = model.predict(images, 5, seg_maps=labels)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            half = model.predict(images, 5, seg_maps=labels)
            feats = model.features(images, model.normalise(model.segment(images, labels)))
    assert feats.dtype == torch.bfloat16 and torch.isfinite(half.topk_score).all()
    assert half.lat.dtype == torch.float64 and half.topk_score.dtype == torch.float32
    assert (half.topk_score.sum(1) <= 1 + 1e-5).all()
    torch.testing.assert_close(half.confidence, full.confidence, atol=0.02, rtol=0.1)


def test_cli_seg_dir_tta_and_a_missing_map(tmp_path: Path, sample_data: Path, cells: Geocells) -> None:
    """--seg-dir maps by file stem; a photo whose map is missing becomes one error row while the rest
    of its batch is still predicted; --tta-crops reaches the model; GeoCLIP refuses both options."""
    from PIL import Image

    folder = save_checkpoint(tiny(cells), tmp_path / "ckpt")
    maps = tmp_path / "maps"
    maps.mkdir()
    photos = sorted(p for p in (sample_data / "europe").iterdir())
    labels = np.random.default_rng(0).integers(0, 150, (SIZE, SIZE), dtype=np.uint8)
    for photo in photos[1:]:
        Image.fromarray(labels, mode="L").save(maps / f"{photo.stem}.png")
    out = tmp_path / "preds.parquet"
    base = ["predict", str(sample_data / "europe"), "--out", str(out)]
    base += ["--model", "translocator", "--weights", str(folder), "--workers", "0", "--batch-size", "4"]
    result = geotag(*base, "--seg-dir", maps, "--tta-crops", "2", "--tta-mirrors")
    assert result.returncode == 1, result.stderr  # one photo has no map
    rows = {Path(r["path"]).name: r for r in pq.read_table(out).to_pylist()}
    missing = rows[photos[0].name]
    assert missing["status"] == "error" and "no segmentation map" in missing["error"]
    for photo in photos[1:]:
        assert rows[photo.name]["status"] == "ok" and rows[photo.name]["cell"] is not None

    # GeoCLIP refuses TTA whatever its weights: a tiny tower, not the untrained ViT-L/14 (~10 s to build)
    geoclip = geotag(
        *["predict", sample_data / "europe", "--out", out, "--tta-crops", "5"],
        *["--backbone-weights", save_tiny_hf_clip(tmp_path / "clip"), "--allow-mismatched-heads"],
        *["--gallery", sample_data / "truth.csv"],
    )
    assert geoclip.returncode == 2 and "no test-time augmentation" in geoclip.stderr
    assert "Traceback" not in geoclip.stderr
