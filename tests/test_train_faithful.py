"""Training makes the papers' models: per-model settings are checked, not silently replaced."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from geotag.config import TrainConfig
from geotag.engine.train import run_train
from geotag.errors import InputError
from geotag.models.tasks import TransLocatorTask, make_task
from geotag.models.trained_label import trained_label


@pytest.mark.parametrize("model", ["geodecoder", "experts"])
def test_an_unknown_variant_is_an_error_not_the_default(tmp_path: Path, model: str) -> None:
    with pytest.raises(InputError, match="unknown"):
        make_task(TrainConfig(data=[], out=tmp_path, model=model, variant="vit+seg+mff+scnee"))


def test_no_variant_means_each_models_paper_setting(tmp_path: Path) -> None:
    from geotag.models.experts import DEFAULT_EXPERT
    from geotag.models.geodecoder import DEFAULT_ENCODER

    decoder = make_task(TrainConfig(data=[], out=tmp_path, model="geodecoder"))
    experts = make_task(TrainConfig(data=[], out=tmp_path, model="experts"))
    assert (decoder.variant or DEFAULT_ENCODER) == DEFAULT_ENCODER  # type: ignore[attr-defined]
    assert experts.expert == DEFAULT_EXPERT  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------------------
# Geocells for training: GeoEstimation's thresholds unless --cells-scale says otherwise

TINY_VIT = {"embed_dim": 32, "depth": 2, "num_heads": 2, "patch_size": 16}


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 small JPEGs with GPS EXIF spread over the globe."""
    from datetime import datetime

    from geotag.sample_data import Place, make_exif, render

    folder = tmp_path_factory.mktemp("photos")
    for i in range(24):
        place = Place(f"P{i}", -60 + (i * 7) % 120, -170 + (i * 37) % 340, f"p{i:03d}.jpg")
        render(place, size=(48, 36)).save(
            folder / place.file, exif=make_exif(place, datetime(2024, 1, 1)).tobytes()
        )
    return folder


def _samples(photos: Path) -> Any:
    from geotag.engine.train_data import load_samples

    return load_samples([photos])


def tiny_translocator(variant: str = "vit", **kw: Any) -> TransLocatorTask:
    from geotag.models.translocator import BackboneConfig

    backbone = BackboneConfig(arch="vit_tiny_patch16_224", tag="none", overrides=TINY_VIT)
    model_kwargs = {"backbone": backbone, "img_size": 32, **kw.pop("model_kwargs", {})}
    return TransLocatorTask(variant, model_kwargs=model_kwargs, **kw)


def cell_cfg(photos: Path, out: Path, **kw: Any) -> TrainConfig:
    settings: dict[str, Any] = {
        "model": "translocator",
        "epochs": 1,
        "batch_size": 8,
        "workers": 0,
        "device": "cpu",
        "allow_untrained": True,
        "freeze_backbone": False,
        "augment": False,
        "val_fraction": 0.0,
        "lr": 1e-3,
        **kw,
    }
    return TrainConfig(data=[photos], out=out, **settings)


def test_training_cells_use_geoestimation_thresholds_unless_scaled(photos: Path, tmp_path: Path) -> None:
    """24 images cannot fill a cell of more than 50: the default (no scaling) refuses with a hint, and
    --cells-scale auto is the explicit way to train on toy data (a setting a resume must keep)."""
    from geotag.engine.train import RESUME_KEYS

    with pytest.raises(InputError, match="--cells-scale auto"):
        run_train(cell_cfg(photos, tmp_path / "a"), task=tiny_translocator())
    assert make_task(TrainConfig(data=[], out=tmp_path, model="translocator")).cells_scale == "none"  # type: ignore[attr-defined]
    cfg = TrainConfig(data=[], out=tmp_path, model="geodecoder", cells_scale="auto")
    assert make_task(cfg).cells_scale == "auto"  # type: ignore[attr-defined]
    assert "cells_scale" in RESUME_KEYS
    summary = run_train(cell_cfg(photos, tmp_path / "b"), task=tiny_translocator(cells_scale="auto"))
    assert summary.steps == 3


# ------------------------------------------------------------------------------------------------
# The weights label of a trained checkpoint


def test_trained_label_says_what_training_changed() -> None:
    built = "timm ViT-B/16 (augreg_in21k) backbones; geocell/scene heads UNTRAINED (random init)"
    tuned = trained_label(built, 7, heads="geocell/scene heads", backbone_trained=True)
    assert tuned == (
        "timm ViT-B/16 (augreg_in21k) backbones fine-tuned end to end; geocell/scene heads trained (step 7)"
    )
    frozen = trained_label(built, 7, heads="geocell/scene heads", backbone_trained=False)
    assert frozen.startswith("timm ViT-B/16 (augreg_in21k) backbones, frozen;") and "UNTRAINED" not in frozen
    random = "UNTRAINED backbones (random init); geocell/scene heads UNTRAINED (random init)"
    assert "UNTRAINED" in trained_label(random, 3, heads="geocell heads", backbone_trained=False)
    scratch = trained_label(random, 3, heads="geocell heads", backbone_trained=True)
    assert scratch == "backbones trained from random init; geocell heads trained (step 3)"


@pytest.mark.parametrize("frozen", [False, True])
def test_trained_translocator_rows_carry_a_true_label(photos: Path, tmp_path: Path, frozen: bool) -> None:
    """Train a tiny TransLocator, predict with --weights RUN: the rows' `weights` says what was trained
    at which step; eval warns UNTRAINED only when the random backbone stayed frozen."""
    from geotag.config import PredictConfig
    from geotag.engine.predict import run_predict
    from geotag.eval.metrics import evaluate

    cfg = cell_cfg(photos, tmp_path / "run", freeze_backbone=frozen)
    summary = run_train(cfg, task=tiny_translocator(cells_scale="auto"))
    preds = tmp_path / "preds.parquet"
    run_predict(
        PredictConfig(
            paths=[photos], out=preds, model="translocator", weights=tmp_path / "run", device="cpu", workers=0
        )
    )
    labels = set(pq.read_table(preds, columns=["weights"]).column("weights").to_pylist())
    assert len(labels) == 1
    label = labels.pop()
    assert f"geocell heads trained (step {summary.steps})" in label
    untrained_note = any("UNTRAINED" in n for n in evaluate([preds]).notes)
    if frozen:
        assert "UNTRAINED backbones (random init), frozen" in label and untrained_note
    else:
        assert "backbones trained from random init" in label and "UNTRAINED" not in label
        assert not untrained_note


# ------------------------------------------------------------------------------------------------
# Per-model defaults: what each paper froze


def test_each_model_trains_what_its_paper_trained_by_default(photos: Path, tmp_path: Path) -> None:
    """GeoCLIP keeps CLIP frozen; TransLocator, GeoDecoder and the experts fine-tune end to end unless
    --freeze-backbone says otherwise (the default TransLocator run used to be a linear probe)."""
    from safetensors.torch import load_file

    from geotag.models.recipes import RECIPES, paper_frozen

    assert paper_frozen("geoclip") and paper_frozen("geoclip-lite")
    assert not any(paper_frozen(m) for m in ("translocator", "geodecoder", "experts"))
    assert TrainConfig(data=[], out=tmp_path).freeze_backbone is None
    assert RECIPES["geodecoder"].batch_size == 128

    def rgb_moved(freeze: bool | None, out: str) -> bool:
        cfg = cell_cfg(photos, tmp_path / out, freeze_backbone=freeze)
        task = tiny_translocator(cells_scale="auto")
        torch.manual_seed(cfg.seed)  # the trainer's initialisation
        before = {k: v.clone() for k, v in task.build(cfg, _samples(photos), None).state_dict().items()}
        after = load_file(run_train(cfg, task=task).checkpoint / "model.safetensors")
        return any(not torch.equal(before[k], after[k]) for k in before if k.startswith("rgb."))

    assert rgb_moved(None, "default"), "the RGB ViT did not train by default"
    assert not rgb_moved(True, "frozen")


# ------------------------------------------------------------------------------------------------
# Test-time crops: no mirrors unless asked for


def test_mirrored_test_time_crops_need_an_explicit_option(photos: Path, tmp_path: Path) -> None:
    """Training never flips (a mirror swaps the driving side), so 2 / 10 TTA views (with mirrors) are
    refused unless --tta-mirrors; 5 crops (no mirrors) need nothing."""
    from geotag.config import PredictConfig
    from geotag.engine.predict import apply_model_options

    model = tiny_translocator(cells_scale="auto").build(cell_cfg(photos, tmp_path), _samples(photos), None)
    for crops in (2, 10):
        with pytest.raises(InputError, match="--tta-mirrors"):
            apply_model_options(model, PredictConfig(paths=[], out=tmp_path / "p", tta_crops=crops))
    apply_model_options(model, PredictConfig(paths=[], out=tmp_path / "p", tta_crops=5))
    assert model.config.tta_crops == 5  # type: ignore[attr-defined]
    apply_model_options(model, PredictConfig(paths=[], out=tmp_path / "p", tta_crops=10, tta_mirrors=True))
    assert model.config.tta_crops == 10  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------------------
# Precomputed segmentation maps: cropped with the image's own random resized crop


def _grid_photos(folder: Path, maps: Path, n: int = 8) -> Path:
    """Photos of a 6 x 4 grid of distinct colours, and as their maps the same grid at twice the size
    (a map of another resolution, as the paper's full-image HRNet maps are)."""
    import numpy as np
    from PIL import Image

    folder.mkdir()
    maps.mkdir()
    rows = ["path,lat,lon"]
    rng = np.random.default_rng(0)
    for k in range(n):
        colours = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
        small = np.kron(colours, np.ones((24, 24, 1), dtype=np.uint8))  # 96 x 144
        Image.fromarray(small).save(folder / f"g{k}.png")
        Image.fromarray(np.kron(colours, np.ones((48, 48, 1), dtype=np.uint8))).save(maps / f"g{k}.png")
        rows.append(f"g{k}.png,{-40 + 10 * k},{-100 + 25 * k}")
    (folder / "m.csv").write_text("\n".join(rows) + "\n")
    return folder / "m.csv"


def test_precomputed_maps_get_the_images_random_crop(tmp_path: Path) -> None:
    from geotag.engine.train_data import TrainDataset, load_samples
    from geotag.models.base import Preprocess

    manifest = _grid_photos(tmp_path / "photos", tmp_path / "maps")
    samples = load_samples([manifest])
    from geotag.models.segmentation import load_map

    def agree(a: torch.Tensor, b: torch.Tensor) -> float:
        return ((a.int() - b.int()).abs().max(dim=0).values <= 8).float().mean().item()

    pre = Preprocess(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "nearest")  # nearest: edges stay sharp
    data = TrainDataset(samples, pre, augment=True, seed=3, seg_dir=tmp_path / "maps")
    centred = []
    for i in range(len(samples)):
        item = data[i]
        assert item["seg"].shape == item["pixels"].shape == (3, 32, 32)
        same = agree(item["pixels"], item["seg"])
        assert same > 0.95, f"image and map disagree on {1 - same:.0%} of the crop"
        whole = (load_map(tmp_path / "maps" / f"g{i}.png", 32) * 255).round()
        centred.append(agree(item["pixels"], whole))
    assert min(centred) < 0.6  # the old centre-cropped map: misaligned with the random crop
    plain = TrainDataset(samples, pre, augment=False, seed=3, seg_dir=tmp_path / "maps")[0]
    assert agree(plain["pixels"], plain["seg"]) > 0.95


def test_seg_rows_train_on_precomputed_maps_and_predict_with_a_true_label(tmp_path: Path) -> None:
    """The +Seg / +MFF rows train offline on --seg-dir maps (no segmenter download), the fusion is the
    paper's sum by default, and `predict --seg-dir --weights` rows carry the trained label."""
    from geotag.config import PredictConfig
    from geotag.engine.predict import run_predict
    from geotag.models.translocator import load_translocator

    manifest = _grid_photos(tmp_path / "photos", tmp_path / "maps")
    for variant in ("vit+seg", "vit+seg+mff"):
        cfg = cell_cfg(manifest, tmp_path / variant, seg_dir=tmp_path / "maps", batch_size=4, augment=True)
        summary = run_train(cfg, task=tiny_translocator(variant, cells_scale="auto"))
        model = load_translocator(summary.checkpoint)
        assert model.config.fusion == "sum" and model.config.variant == variant
        preds = tmp_path / f"{variant}.parquet"
        run_predict(
            PredictConfig(
                paths=[tmp_path / "photos"],
                out=preds,
                model="translocator",
                weights=tmp_path / variant,
                seg_dir=tmp_path / "maps",
                device="cpu",
                workers=0,
            )
        )
        table = pq.read_table(preds, columns=["weights", "status"]).to_pylist()
        assert table and all(r["status"] == "ok" for r in table)
        assert all(f"trained (step {summary.steps})" in r["weights"] for r in table)
    mean = cell_cfg(manifest, tmp_path / "mean", seg_dir=tmp_path / "maps", batch_size=4, fusion="mean")
    summary = run_train(mean, task=tiny_translocator("vit+seg+mff", cells_scale="auto"))
    assert load_translocator(summary.checkpoint).config.fusion == "mean"
    with pytest.raises(InputError, match="no segmentation branch"):
        run_train(cell_cfg(manifest, tmp_path / "x", seg_dir=tmp_path / "maps"), task=tiny_translocator())
    with pytest.raises(InputError, match="TransLocator options"):
        make_task(TrainConfig(data=[], out=tmp_path, model="geodecoder", fusion="mean"))


def test_the_scene_row_refuses_data_without_scene_labels(photos: Path, tmp_path: Path) -> None:
    """A photo folder has no scene labels: the full row (the default) would train its scene head on
    nothing and still print a random scene, so it refuses with a one-line way out."""
    with pytest.raises(InputError, match="none of the 24 training images has a scene label"):
        run_train(cell_cfg(photos, tmp_path / "run"), task=tiny_translocator("vit+seg+mff+scene"))
    with pytest.raises(InputError, match="--variant vit\\+seg\\+mff"):
        run_train(cell_cfg(photos, tmp_path / "run2"), task=TransLocatorTask(None, cells_scale="auto"))


# ------------------------------------------------------------------------------------------------
# The loss of a real training step, and the full-size model


def _scene_manifest(photos: Path, folder: Path) -> Path:
    from geotag.engine.train_data import load_samples

    s = load_samples([photos])
    rows = ["path,lat,lon,scene"]
    for i, (p, a, b) in enumerate(zip(s.paths.to_pylist(), s.lat, s.lon, strict=True)):
        rows.append(f"{p},{a},{b},{['indoor', 'natural', 'urban'][i % 3]}")
    folder.mkdir()
    (folder / "m.csv").write_text("\n".join(rows) + "\n")
    return folder / "m.csv"


def test_training_loss_weighs_the_partitions_half_three_tenths_one_fifth(
    photos: Path, tmp_path: Path
) -> None:
    """TransLocatorTask.loss on a batch (what the trainer minimises) equals 0.5 / 0.3 / 0.2 x the coarse /
    middle / fine cross-entropies plus the scene cross-entropy, recomputed here from the logits."""
    import torch.nn.functional as F

    from geotag.engine.train_data import load_samples

    manifest = _scene_manifest(photos, tmp_path / "m")
    samples = load_samples([manifest])
    task = tiny_translocator("vit+seg+mff+scene", cells_scale="auto", model_kwargs={"segmenter": None})
    model = task.build(cell_cfg(manifest, tmp_path / "run"), samples, None)
    task.configure(model, False)
    model.eval()  # no dropout: the two forwards below see the same network
    torch.manual_seed(0)
    index = torch.arange(8)
    batch = {
        "images": torch.randn(8, 3, 32, 32),
        "seg_maps": torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8),
        "index": index,
        "latlon": torch.from_numpy(np.stack([samples.lat[:8], samples.lon[:8]], 1)),
        "scene": torch.from_numpy(samples.scene[:8]),
    }
    out = task.loss(model, batch)
    seg = model._normalise(batch["seg_maps"].float() / 255)  # type: ignore[operator]
    logits = model(batch["images"], seg)
    targets = task.targets[index]
    names = model.cells.names  # type: ignore[attr-defined]
    ces = [F.cross_entropy(logits[n].float(), targets[:, k], ignore_index=-1) for k, n in enumerate(names)]
    scene = F.cross_entropy(logits["scene"].float(), batch["scene"], ignore_index=-1)
    expected = 0.5 * ces[0] + 0.3 * ces[1] + 0.2 * ces[2] + scene
    assert task.level_weights == (0.5, 0.3, 0.2)
    torch.testing.assert_close(out["loss"], expected, rtol=1e-5, atol=1e-5)
    out["loss"].backward()
    assert model.heads[0].weight.grad is not None and model.scene_head.weight.grad.abs().sum() > 0  # type: ignore[union-attr,index]


@pytest.mark.slow
def test_full_size_translocator_forward_and_one_training_step_on_cpu(tmp_path: Path) -> None:
    """The paper's model at its size (two ViT-B/16: 12 blocks of 768, MFF after each, scene head) at
    batch 1 on the CPU: a forward and one optimizer step that moves both branches."""
    from geotag.geo.cells import build_cells
    from geotag.models.losses import hierarchical_cell_loss
    from geotag.models.translocator import build_translocator

    rng = np.random.default_rng(0)
    cells = build_cells(rng.uniform(-60, 60, 400), rng.uniform(-180, 180, 400), scale="auto")
    model = build_translocator(cells, "vit+seg+mff+scene", allow_untrained=True, segmenter=None)
    assert len(model.rgb.blocks) == len(model.seg.blocks) == 12 and model.rgb.embed_dim == 768  # type: ignore[union-attr]
    assert model.config.fusion == "sum" and model.config.img_size == 224
    image = torch.randn(1, 3, 224, 224)
    seg = model._normalise(torch.rand(1, 3, 224, 224))  # type: ignore[operator]
    before = {
        n: p.detach().clone() for n, p in model.named_parameters() if n.endswith("blocks.0.attn.qkv.weight")
    }
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    logits = model(image, seg)
    assert {n: logits[n].shape[1] for n in cells.names} == {p.name: len(p) for p in cells.partitions}
    target = torch.from_numpy(cells.assign(np.array([10.0]), np.array([20.0])))
    loss = hierarchical_cell_loss([logits[n] for n in cells.names], target.clamp_min(0))["cells"]
    loss = loss + torch.nn.functional.cross_entropy(logits["scene"], torch.tensor([1]))
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    moved = [n for n, p in model.named_parameters() if n in before and not torch.equal(before[n], p.detach())]
    assert sorted(moved) == sorted(before) and len(before) == 2  # rgb and seg branches
