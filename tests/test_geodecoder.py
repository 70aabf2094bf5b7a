"""GeoDecoder on tiny ViTs (CPU, seconds): the coarse-to-fine order of the hierarchical cross-attention,
scene selection, hierarchical inference, the confidence-weighted loss, encoder weights, a few training
steps through `geotag train`'s engine and `geotag predict --weights` end to end; a bf16 GPU run of the
full-size (CLIP ViT-L/14) model."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import save_file

from geotag.config import TrainConfig
from geotag.engine.train import run_train
from geotag.errors import WeightsError
from geotag.geo.cells import Geocells, PartitionSpec, build_cells
from geotag.models.cell_head import cell_radius_km
from geotag.models.checkpoint import list_checkpoints
from geotag.models.geodecoder import (
    CONFIDENCE_PENALTY,
    GeoDecoder,
    GeoDecoderTask,
    HierarchyDependentLayer,
    build_geodecoder,
    geodecoder_loss,
    load_geodecoder,
    save_checkpoint,
)
from geotag.models.registry import available_models, build_model
from geotag.models.tasks import make_task
from geotag.models.translocator import BackboneConfig

from conftest import REPO

SIZE = 32
TINY = BackboneConfig("vit_base_patch16_224", "none", overrides={"embed_dim": 32, "depth": 1, "num_heads": 2})
SPECS = (PartitionSpec("coarse", 2, 60), PartitionSpec("middle", 2, 25), PartitionSpec("fine", 2, 10))


@pytest.fixture(scope="module")
def cells() -> Geocells:
    rng = np.random.default_rng(0)
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, 400)))
    lon = rng.uniform(-180, 180, 400)
    return build_cells(lat, lon, SPECS)


def tiny(cells: Geocells, **kw: object) -> GeoDecoder:
    torch.manual_seed(0)
    settings = {"independent_layers": 1, "dependent_layers": 1, **kw}
    return build_geodecoder(
        cells, "vit-b16", backbone=TINY, img_size=SIZE, allow_untrained=True, **settings
    ).eval()


def test_registered_and_needs_a_checkpoint() -> None:
    assert "geodecoder" in available_models()
    with pytest.raises(WeightsError, match="--weights FOLDER"):
        build_model("geodecoder")


def test_dependent_layer_runs_coarse_to_fine() -> None:
    """Level h attends to level h-1's output of the same layer: a finer query never reaches a coarser
    level, a coarser one reaches every finer level."""
    torch.manual_seed(0)
    layer = HierarchyDependentLayer(16, 2, levels=3, mlp_ratio=2.0, dropout=0.0).eval()
    q, memory = torch.randn(2, 4, 3, 16), torch.randn(2, 5, 16)  # (B, scenes, levels, D)
    with torch.no_grad():
        base = layer(q, memory)
        fine = q.clone()
        fine[:, :, 2] += torch.randn_like(fine[:, :, 2])
        after_fine = layer(fine, memory)
        coarse = q.clone()
        coarse[:, 1, 0] += torch.randn(16)  # one scene's coarse query (not a constant: LayerNorm removes it)
        after_coarse = layer(coarse, memory)
    assert torch.equal(after_fine[:, :, :2], base[:, :, :2])
    assert not torch.allclose(after_fine[:, :, 2], base[:, :, 2])
    for level in (1, 2):  # reaches every scene of the finer levels (within-level self-attention)
        assert all(not torch.allclose(after_coarse[:, s, level], base[:, s, level]) for s in range(4))


def test_hierarchical_order_through_the_whole_decoder(cells: Geocells) -> None:
    """With no hierarchy independent layer the whole decoder keeps the order; the independent layers
    (self-attention over all queries, as in the paper) mix every level with every other."""
    images = torch.randn(2, 3, SIZE, SIZE)
    for independent in (0, 1):
        model = tiny(cells, independent_layers=independent)
        with torch.no_grad():
            memory = model.encode(images)
            base = model.decode(memory)
            original = model.queries.clone()
            model.queries[:, 2] += torch.randn_like(model.queries[:, 2])  # the fine queries of every scene
            after_fine = model.decode(memory)
            model.queries.copy_(original)
            model.queries[:, 0] += torch.randn_like(model.queries[:, 0])  # the coarse queries
            after_coarse = model.decode(memory)
        assert not torch.allclose(after_coarse[:, :, 2], base[:, :, 2])
        assert not torch.allclose(after_fine[:, :, 2], base[:, :, 2])
        assert torch.equal(after_fine[:, :, 0], base[:, :, 0]) == (independent == 0)


def test_scene_queries_choose_the_representation(cells: Geocells) -> None:
    model = tiny(cells)
    images = torch.randn(3, 3, SIZE, SIZE)
    with torch.no_grad():
        q = model.decode(model.encode(images))
        out = model(images)
    assert q.shape == (3, 3, 3, 32)  # (B, scenes, hierarchies, D)
    torch.testing.assert_close(out["scene"], q[..., 0].mean(dim=2))
    choice = out["scene"].argmax(dim=1)
    for b in range(3):
        chosen = q[b, choice[b]]
        for h, name in enumerate(cells.names):
            torch.testing.assert_close(out[name][b], model.heads[h](chosen[h]))
        torch.testing.assert_close(out["confidence"][b], torch.sigmoid(chosen[:, 0]))
    assert {k: v.shape[1] for k, v in out.items()} == {
        "coarse": len(cells.partitions[0]),
        "middle": len(cells.partitions[1]),
        "fine": len(cells.fine),
        "scene": 3,
        "confidence": 3,
    }


def test_predict_follows_the_hierarchy_of_its_cells(cells: Geocells) -> None:
    model = tiny(cells)
    images = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        pred = model.predict(images, top_k=3)
        probs = model.probabilities(images)
    ancestors = cells.ancestors()
    for b in range(2):
        scores = np.array(
            [
                np.prod([probs[n][b, ancestors[f, p]].item() for p, n in enumerate(cells.names)])
                for f in range(len(cells.fine))
            ]
        )
        scores /= scores.sum()
        best = np.argsort(-scores)[:3]
        assert pred.extras["cell"][b] == cells.fine.tokens()[best[0]]
        np.testing.assert_allclose(pred.topk_score[b].numpy(), scores[best], rtol=1e-5)
        assert pred.lat[b].item() == cells.fine.lat[best[0]] and pred.confidence[b] == pred.topk_score[b, 0]
        assert pred.extras["scene"][b] in ("indoor", "natural", "urban")
        assert 0 <= pred.error_km[b].item() <= 20_016
        radius = float(cell_radius_km(cells.fine.ids[best[:1]])[0])  # never finer than the chosen cell
        assert pred.error_km[b].item() >= radius > 0


def test_loss_weights_each_hierarchy_by_its_learned_confidence() -> None:
    torch.manual_seed(0)
    logits = {n: torch.randn(4, k, requires_grad=True) for n, k in (("coarse", 3), ("fine", 5))}
    conf = torch.tensor([[0.9, 0.5], [0.2, 0.7], [0.6, 0.6], [1.0, 0.1]], requires_grad=True)
    out = {**logits, "scene": torch.randn(4, 3), "confidence": conf}
    targets = torch.tensor([[0, 1], [2, -1], [1, 4], [-1, 0]])  # -1: the point's cell was dropped
    scene = torch.tensor([0, -1, 2, 1])
    got = geodecoder_loss(out, targets, ["coarse", "fine"], scene)
    expected = torch.zeros(())
    for h, name in enumerate(["coarse", "fine"]):
        rows = [b for b in range(4) if targets[b, h] >= 0]
        ce = torch.nn.functional.cross_entropy(logits[name][rows], targets[rows, h], reduction="none")
        expected = expected + (conf[rows, h] * ce).mean()
    expected = expected + CONFIDENCE_PENALTY * (-torch.log(conf.clamp(1e-6, 1))).sum(dim=1).mean()
    scene_ce = torch.nn.functional.cross_entropy(out["scene"], scene, ignore_index=-1)
    torch.testing.assert_close(got["loss"], expected + scene_ce)
    torch.testing.assert_close(got["scene"], scene_ce)
    got["loss"].backward()
    assert conf.grad is not None and conf.grad.abs().sum() > 0
    # the optimum confidence of an image is penalty / its cross-entropy (capped at 1): hard images weigh less
    c = torch.linspace(0.01, 1.0, 10_000)
    ce = 20.0
    best = c[(c * ce - CONFIDENCE_PENALTY * torch.log(c)).argmin()]
    assert best.item() == pytest.approx(CONFIDENCE_PENALTY / ce, abs=1e-3)


def test_encoder_weights_from_a_local_clip_file(tmp_path: Path, cells: Geocells) -> None:
    """An OpenAI-CLIP-shaped timm tower (QuickGELU) is assigned into a meta-device encoder."""
    import timm

    shape = {"embed_dim": 32, "depth": 1, "num_heads": 2}
    clip = BackboneConfig("vit_base_patch16_clip_quickgelu_224", "openai", overrides=shape)
    torch.manual_seed(1)
    source = timm.create_model(clip.arch, pretrained=False, num_classes=0, img_size=SIZE, **shape)
    save_file(dict(source.state_dict()), tmp_path / "clip.safetensors")
    model = build_geodecoder(
        cells, "clip-vit-b16", backbone=clip, img_size=SIZE, backbone_weights=tmp_path / "clip.safetensors"
    )
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in model.encoder.state_dict().items())
    assert model.config.mean[0] == pytest.approx(0.48145466)  # CLIP statistics from timm's pretrained cfg
    assert model.weights_label.startswith("clip.safetensors encoder") and "UNTRAINED" in model.weights_label


def test_offline_without_encoder_weights_fails_fast(tmp_path: Path, monkeypatch, cells: Geocells) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(WeightsError) as info:
        build_geodecoder(cells)  # the paper's CLIP ViT-L/14: stops before building anything
    assert time.perf_counter() - start < 3
    assert "hf download timm/vit_large_patch14_clip_224.openai" in str(info.value)


def test_train_steps_then_predict_end_to_end(tmp_path: Path, sample_data: Path, cells: Geocells) -> None:
    """`geotag train`'s engine runs GeoDecoderTask for a few steps; the run folder predicts in process
    (same answers as the saved model) and through `geotag predict --weights RUN` in a new process."""
    assert isinstance(make_task(TrainConfig(data=[], out=tmp_path, model="geodecoder")), GeoDecoderTask)
    kw = {"backbone": TINY, "img_size": SIZE, "independent_layers": 1, "dependent_layers": 1}
    cfg = TrainConfig(
        data=[sample_data],
        out=tmp_path / "run",
        model="geodecoder",
        epochs=1,
        batch_size=8,  # 24 tagged photos and the truncated one: 3 full batches
        workers=0,
        device="cpu",
        allow_untrained=True,
        freeze_backbone=False,
        val_fraction=0.0,
        lr=1e-3,
    )
    summary = run_train(cfg, task=GeoDecoderTask("vit-b16", model_kwargs=kw, cells_scale="auto"))
    assert summary.steps == 3 and list_checkpoints(tmp_path / "run")
    folder = summary.checkpoint
    assert {"config.json", "model.safetensors", "cells.parquet"} <= {p.name for p in folder.iterdir()}
    fresh = tiny(Geocells.load(folder / "cells.parquet"), dropout=0.1)
    loaded = build_model("geodecoder", weights=tmp_path / "run")
    assert not torch.equal(loaded.queries, fresh.queries)  # trained
    assert "trained (step 3)" in loaded.weights_label
    images = torch.randn(2, 3, SIZE, SIZE)
    again = save_checkpoint(loaded, tmp_path / "copy")
    with torch.no_grad():
        a, b = loaded.predict(images, 2), load_geodecoder(again).predict(images, 2)
    assert torch.equal(a.topk_score, b.topk_score) and a.extras == b.extras

    out = tmp_path / "preds.parquet"
    result = subprocess.run(
        [sys.executable, "-m", "geotag.cli", "predict", str(sample_data), "--out", str(out)]
        + ["--model", "geodecoder", "--weights", str(tmp_path / "run"), "--device", "cpu"]
        + ["--workers", "0", "--batch-size", "4", "--top-k", "2", "--tta-crops", "2", "--tta-mirrors"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 1, result.stderr  # sample_data holds broken files on purpose
    rows = [r for r in pq.read_table(out).to_pylist() if r["status"] == "ok"]
    tokens = set(Geocells.load(folder / "cells.parquet").fine.tokens())
    assert len(rows) == 26  # 24 tagged + 2 untagged photos; the other 2 files are broken
    for r in rows:
        assert (
            r["model"] == "geodecoder"
            and r["cell"] in tokens
            and r["scene"] in ("indoor", "natural", "urban")
        )
        assert len(r["topk"]) == 2 and r["topk"][0]["lat"] == r["pred_lat"]
        assert r["confidence"] == pytest.approx(r["topk"][0]["score"]) and r["error_km"] is not None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_full_clip_vit_l14_geodecoder_in_bf16(cells: Geocells, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # cached timm weights are used if present; nothing downloads
    torch.manual_seed(0)
    model = build_geodecoder(cells, allow_untrained=True).cuda().eval()
    assert sum(p.numel() for p in model.encoder.parameters()) > 300_000_000  # ViT-L/14
    assert len(model.encoder.blocks) == 24 and model.encoder.embed_dim == 1024
    assert len(model.independent) == 6 and len(model.dependent) == 1
    images = torch.randn(16, 3, 224, 224, device="cuda")
    with torch.inference_mode():
        full = model.predict(images, 5)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            half = model.predict(images, 5)
            logits = model(images)
    assert logits["fine"].dtype == torch.bfloat16 and torch.isfinite(half.topk_score).all()
    assert half.lat.dtype == torch.float64 and half.topk_score.dtype == torch.float32
    assert (half.topk_score.sum(1) <= 1 + 1e-5).all()
    torch.testing.assert_close(half.confidence, full.confidence, atol=0.02, rtol=0.1)
