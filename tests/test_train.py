"""`geotag train` on CPU with tiny models: data, split, schedule, losses, queue, checkpoints, exact resume,
and train -> `geotag predict --weights` end to end."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file
from tiny_weights import save_tiny_hf_clip, tiny_train_config

from geotag.config import TrainConfig
from geotag.engine.train import (
    RESUME_KEYS,
    TrainMonitor,
    distance_metrics,
    lr_factor,
    param_groups,
    run_train,
)
from geotag.engine.train_data import (
    EpochSampler,
    TrainDataset,
    hash_unit,
    load_samples,
    read_manifest,
    split_samples,
)
from geotag.errors import InputError, WeightsError
from geotag.geo.distance import haversine_np
from geotag.io.decode import decode_for_model
from geotag.models.base import Preprocess
from geotag.models.checkpoint import (
    flatten_optimizer,
    list_checkpoints,
    read_train_info,
    rng_state,
    set_rng_state,
    unflatten_optimizer,
)
from geotag.models.losses import (
    GPSQueue,
    cell_cross_entropy,
    contrastive_loss,
    hierarchical_cell_loss,
    jitter_gps,
    smoothed_cell_targets,
)
from geotag.models.registry import build_geoclip
from geotag.models.segmentation import SegmentationProvider
from geotag.models.tasks import GeoCLIPTask, TransLocatorTask
from geotag.sample_data import Place, make_exif, render

from conftest import REPO

GEOTAG = [sys.executable, "-m", "geotag.cli"]
TINY_VIT = {"embed_dim": 32, "depth": 2, "num_heads": 2, "patch_size": 16}


# ------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 small JPEGs with GPS EXIF spread over the globe, and 2 without GPS."""
    folder = tmp_path_factory.mktemp("photos")
    for i in range(26):
        place = Place(f"P{i}", -60 + (i * 7) % 120, -170 + (i * 37) % 340, f"p{i:03d}.jpg", tagged=i < 24)
        render(place, size=(48, 36)).save(
            folder / place.file, exif=make_exif(place, datetime(2024, 1, 1)).tobytes()
        )
    return folder


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random HF CLIP vision checkpoint (as a user passes with --backbone-weights)."""
    return save_tiny_hf_clip(tmp_path_factory.mktemp("tinyclip"))


def geoclip_cfg(photos: Path, out: Path, tiny_clip: Path, **kw: object) -> TrainConfig:
    settings: dict[str, object] = {
        "epochs": 1,
        "batch_size": 4,
        "queue_size": 16,
        "workers": 0,
        "device": "cpu",
        "backbone_weights": tiny_clip,
        "val_fraction": 0.2,
        "lr": 1e-3,
        "allow_mismatched_heads": True,  # a tiny tower with the released heads
        **kw,
    }
    return TrainConfig(data=[photos], out=out, **settings)  # type: ignore[arg-type]


def translocator_task(**kw: object) -> TransLocatorTask:
    from geotag.models.translocator import BackboneConfig

    backbone = BackboneConfig(arch="vit_tiny_patch16_224", tag="none", overrides=TINY_VIT)
    settings: dict[str, object] = {"cells_scale": "auto", **kw}
    return TransLocatorTask("vit", model_kwargs={"backbone": backbone, "img_size": 32}, **settings)  # type: ignore[arg-type]


def cell_cfg(photos: Path, out: Path, **kw: object) -> TrainConfig:
    """tests/tiny_weights.py's one-epoch CPU config, training the backbone too, with a fixed step size."""
    return tiny_train_config(photos, out, **{"freeze_backbone": False, "lr": 1e-3, "clip_grad": None, **kw})


def tensors_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


# ------------------------------------------------------------------------------------------------
# Data


def test_manifest_csv_and_parquet(tmp_path: Path, photos: Path) -> None:
    rows = [
        ("p000.jpg", -60.0, -170.0, "urban", "FR"),
        (str(photos / "p001.jpg"), -53.0, -133.0, "2", None),
        ("p002.jpg", "n/a", 10.0, None, None),  # dropped: no latitude
        ("p003.jpg", 95.0, 10.0, None, None),  # dropped: out of range
    ]
    manifest = tmp_path / "m.csv"
    with manifest.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["Path", "Latitude", "Longitude", "scene", "country"])
        w.writerows(rows)
    s = read_manifest(manifest, image_root=photos)
    assert len(s) == 2 and "2 row(s)" in s.notes[0]
    assert s.paths.to_pylist() == [str(photos / "p000.jpg"), str(photos / "p001.jpg")]
    assert s.scene.tolist() == [2, 2] and s.country.to_pylist() == ["FR", None]
    assert s.image_ids.to_pylist()[0] == "p000.jpg"  # the path as written: no hashing of every file
    # MP-16 / GeoCLIP style, Parquet, relative to the manifest's folder
    pq.write_table(
        pa.table({"IMG_FILE": ["a.jpg"], "LAT": [1.5], "LON": [2.5], "image_id": ["x"]}), tmp_path / "m.pq"
    )
    t = read_manifest(tmp_path / "m.pq")
    assert t.paths.to_pylist() == [str((tmp_path / "a.jpg").absolute())] and t.image_ids.to_pylist() == ["x"]
    with pytest.raises(InputError, match="lat"):
        pq.write_table(pa.table({"path": ["a"], "x": [1.0]}), tmp_path / "bad.parquet")
        read_manifest(tmp_path / "bad.parquet")


def test_folder_of_exif_photos(sample_data: Path) -> None:
    s = load_samples([sample_data])
    names = [Path(p).name for p in s.paths.to_pylist()]
    # the truncated JPEG has GPS, but scan finds its missing end-of-image marker: counted, not listed
    assert len(s) == 25 - 1 and "2 photo(s) without GPS, 2 unreadable" in s.notes[0] and s.unreadable == 2
    assert "truncated.jpg" not in names
    i = names.index("sydney.jpg")
    assert s.lat[i] == pytest.approx(-33.856784, abs=1e-5) and s.lon[i] == pytest.approx(151.215297, abs=1e-5)
    assert all(len(x) == 32 for x in s.image_ids.to_pylist())  # content hashes


def test_split_by_seeded_hash_is_stable(photos: Path) -> None:
    ids = [f"img{i}" for i in range(2000)]
    u = hash_unit(ids, seed=7)
    assert np.array_equal(u[::-1], hash_unit(ids[::-1], seed=7))  # order does not matter
    assert np.array_equal(u[:100], hash_unit(ids[:100], seed=7))  # nor what else is in the set
    assert abs((u < 0.1).mean() - 0.1) < 0.03
    assert not np.array_equal(u, hash_unit(ids, seed=8))
    s = load_samples([photos])
    train, val = split_samples(s, seed=0, val_fraction=0.25)
    train2, val2 = split_samples(s.take(np.arange(len(s))[::-1]), seed=0, val_fraction=0.25)
    assert sorted(val.image_ids.to_pylist()) == sorted(val2.image_ids.to_pylist())
    assert len(train) + len(val) == len(s) == 24
    given_train, given_val = split_samples(s, seed=0, val_fraction=0.0, val=s.take(np.array([0, 1])))
    assert (
        len(given_train) == 22 and len(given_val) == 2 and "also in the validation" in given_train.notes[-1]
    )


def test_epoch_order_and_crops_are_deterministic(photos: Path) -> None:
    a = list(EpochSampler(50, seed=1, epoch=3, start=0, stop=50))
    assert sorted(a) == list(range(50)) and a != list(range(50))
    assert list(EpochSampler(50, 1, 3, 10, 30)) == a[10:30]  # a resumed epoch continues the same order
    assert list(EpochSampler(50, 1, 4, 0, 50)) != a
    s = load_samples([photos])
    pre = Preprocess(32, (0.5,) * 3, (0.5,) * 3)
    ds = TrainDataset(s, pre, augment=True, seed=0)
    x1, x2 = ds[3]["pixels"], ds[3]["pixels"]
    ds.epoch = 1
    assert torch.equal(x1, x2) and not torch.equal(x1, ds[3]["pixels"])


def test_training_pixels_match_inference_pixels(photos: Path) -> None:
    """GUIDE: GeoCLIP's trainer normalised with ImageNet stats while its predict used CLIP's; ours
    share decode and the model's own Preprocess, so a validation image is exactly what predict sees."""
    s = load_samples([photos])
    pre = Preprocess(40, (0.48, 0.45, 0.40), (0.26, 0.26, 0.27), "bicubic")
    item = TrainDataset(s, pre, augment=False, seed=0)[5]
    assert torch.equal(item["pixels"], decode_for_model(s.paths[5].as_py(), 40, "bicubic"))


# ------------------------------------------------------------------------------------------------
# Optimisation pieces


def test_schedule_warmup_then_cosine() -> None:
    f = [lr_factor(s, total=100, warmup=10, min_ratio=0.1) for s in range(100)]
    assert f[:10] == pytest.approx([(i + 1) / 10 for i in range(10)])
    assert f[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:], strict=False))
    assert f[55] == pytest.approx(0.1 + 0.9 * 0.5, abs=1e-9)  # half way down the cosine
    assert lr_factor(100, 100, 10, 0.1) == pytest.approx(0.1)
    assert lr_factor(0, 10, 0) == 1.0


def test_layer_decay_groups() -> None:
    import timm

    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, **TINY_VIT)
    model = torch.nn.ModuleDict({"backbone": vit, "head": torch.nn.Linear(32, 3)})
    groups = param_groups(model, 0.05, layer_decay=0.5, layered=[vit])
    scales = sorted({g["lr_scale"] for g in groups})
    assert scales == [0.125, 0.25, 0.5, 1.0]  # embed, block 0, block 1, head / final norm
    head = next(g for g in groups if any(p is model["head"].weight for p in g["params"]))
    assert head["lr_scale"] == 1.0 and head["weight_decay"] == 0.05
    n = sum(len(g["params"]) for g in groups)
    assert n == len(list(model.parameters()))
    plain = param_groups(model, 0.05)
    assert [g["weight_decay"] for g in plain] == [0.05, 0.0]  # biases and norms are not decayed


def test_distance_metrics() -> None:
    row = distance_metrics(
        np.array([0.0, 0.0]), np.array([0.0, 0.0]), np.array([0.0, 1.0]), np.array([0.0, 0.0])
    )
    assert row["n"] == 2 and row["acc_1km"] == 0.5 and row["acc_200km"] == 1.0
    assert row["median_km"] == pytest.approx(111.195 / 2, rel=1e-3)


# ------------------------------------------------------------------------------------------------
# Losses


def test_label_smoothing_targets() -> None:
    cell_lat = torch.tensor([0.0, 0.0, 0.0, 10.0])
    cell_lon = torch.tensor([0.0, 1.0, 3.0, 0.0])
    lat, lon = torch.tensor([0.0, 0.1]), torch.tensor([1.0, 0.0])
    q = smoothed_cell_targets(lat, lon, cell_lat, cell_lon, tau_km=65.0)
    assert q.sum(dim=1).tolist() == pytest.approx([1.0, 1.0])
    assert q.argmax(dim=1).tolist() == [1, 0]  # peaked at the true cell (its centroid is nearest)
    d = haversine_np(0.0, 1.0, cell_lat.numpy(), cell_lon.numpy())
    raw = np.exp(-(d - d[1]) / 65.0)  # PIGEON's formula, then normalised (which PIGEON's code forgot)
    assert q[0].numpy() == pytest.approx(raw / raw.sum(), rel=1e-5)
    sharp = smoothed_cell_targets(lat, lon, cell_lat, cell_lon, tau_km=1.0)
    assert sharp[0].tolist() == pytest.approx([0.0, 1.0, 0.0, 0.0], abs=1e-6)
    logits = torch.randn(2, 4)
    target = torch.tensor([1, 0])
    assert cell_cross_entropy(logits, target, sharp) == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits, target)), rel=1e-5
    )


def test_hierarchical_cell_loss_weights_and_dropped_cells() -> None:
    torch.manual_seed(0)
    logits = [torch.randn(3, 2), torch.randn(3, 4), torch.randn(3, 8)]
    targets = torch.tensor([[0, 1, 2], [1, 3, -1], [1, 2, 5]])
    out = hierarchical_cell_loss(logits, targets, (0.5, 0.3, 0.2))
    ce = torch.nn.functional.cross_entropy
    expect = (
        0.5 * ce(logits[0], targets[:, 0])
        + 0.3 * ce(logits[1], targets[:, 1])
        + 0.2 * ce(logits[2], targets[:, 2], ignore_index=-1)
    )
    assert float(out["cells"]) == pytest.approx(float(expect), rel=1e-6)
    assert float(cell_cross_entropy(torch.randn(2, 3), torch.tensor([-1, -1]))) == 0.0


def test_contrastive_loss_matches_geoclip_form() -> None:
    torch.manual_seed(0)
    img, gps = torch.randn(4, 8), torch.randn(10, 8)
    scale = torch.tensor(math.log(1 / 0.07))
    logits = (
        (1 / 0.07) * torch.nn.functional.normalize(img, dim=1) @ torch.nn.functional.normalize(gps, dim=1).T
    )
    expect = torch.nn.functional.cross_entropy(logits, torch.arange(4))
    assert float(contrastive_loss(img, gps, scale)) == pytest.approx(float(expect), rel=1e-5)


def test_gps_queue_fills_wraps_and_jitters() -> None:
    torch.manual_seed(0)
    q = GPSQueue(size=5, noise_m=1000.0)
    assert len(q) == 0 and q.entries().shape == (0, 2)
    batch = lambda start, n: torch.tensor([[float(i), float(i)] for i in range(start, start + n)])  # noqa: E731
    q.push(batch(0, 3))
    assert len(q) == 3 and q.ptr == 3
    q.push(batch(3, 3))  # wraps: slot 0 now holds the 6th coordinate
    assert len(q) == 5 and q.ptr == 1
    order = q.entries()[:, 0].round().tolist()
    assert order == [1.0, 2.0, 3.0, 4.0, 5.0]  # oldest first, the first coordinate overwritten
    q.push(batch(10, 12))  # more than the queue holds: the last five stay
    assert q.entries()[:, 0].round().tolist() == [17.0, 18.0, 19.0, 20.0, 21.0]
    state = q.state_dict()
    q2 = GPSQueue(size=5)
    q2.load_state_dict(state)
    assert torch.equal(q2.entries(), q.entries()) and (q2.ptr, q2.count) == (q.ptr, q.count)
    # jitter: ~1 km on queue entries, ~150 m on the batch; it never crosses the poles or the antimeridian
    pts = torch.tensor([[45.0, 179.9999]] * 4000)
    moved = jitter_gps(pts, 1000.0)
    d = haversine_np(45.0, 179.9999, moved[:, 0].numpy(), moved[:, 1].numpy()) * 1000
    assert np.sqrt((d**2).mean() / 2) == pytest.approx(1000.0, rel=0.05)
    assert moved[:, 1].abs().max() <= 180.0
    assert jitter_gps(torch.tensor([[89.9999, 0.0]] * 100), 1000.0)[:, 0].max() <= 90.0


def test_geoclip_task_reads_queue_before_pushing(tiny_clip: Path) -> None:
    model = build_geoclip(backbone_weights=tiny_clip, allow_mismatched_heads=True)
    task = GeoCLIPTask(queue_size=8)
    task.configure(model, freeze_backbone=True)
    images = torch.randn(3, 3, 64, 64)
    seen: list[int] = []
    encoder = model.location_encoder
    hook = encoder.register_forward_hook(lambda m, i, o: seen.append(len(i[0])))
    latlon = torch.tensor([[10.0, 20.0], [30.0, 40.0], [-5.0, 100.0]], dtype=torch.float64)
    out = task.loss(model, {"images": images, "latlon": latlon})
    out2 = task.loss(model, {"images": images, "latlon": latlon})
    hook.remove()
    assert seen == [3, 6]  # first batch: no negatives yet; second: its 3 + 3 queued
    assert len(task.queue) == 6 and torch.isfinite(out["loss"]) and torch.isfinite(out2["loss"])
    out2["loss"].backward()
    assert model.image_encoder.mlp[0].weight.grad is not None and model.logit_scale.grad is not None
    assert all(p.grad is None for p in model.location_encoder.parameters())
    assert all(p.grad is None for p in model.image_encoder.backbone.parameters())


# ------------------------------------------------------------------------------------------------
# Checkpoints


def test_optimizer_and_rng_state_round_trip() -> None:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors, meta = flatten_optimizer(opt.state_dict())
    import json

    back = unflatten_optimizer(tensors, json.loads(json.dumps(meta)))
    opt2 = torch.optim.AdamW(model.parameters(), lr=0.1)
    opt2.load_state_dict(back)
    t2, m2 = flatten_optimizer(opt2.state_dict())
    assert not tensors_equal(tensors, t2) and m2 == meta
    rt, rj = rng_state()
    a = (torch.rand(3), np.random.rand(3), __import__("random").random())
    set_rng_state(rt, json.loads(json.dumps(rj)))
    b = (torch.rand(3), np.random.rand(3), __import__("random").random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_train_saves_checkpoint_that_predict_loads(photos: Path, tmp_path: Path, tiny_clip: Path) -> None:
    cfg = geoclip_cfg(photos, tmp_path / "run", tiny_clip, epochs=2, save_every=2, keep=2)
    summary = run_train(cfg)
    per_epoch = summary.n_train // 4
    assert summary.steps == 2 * per_epoch and summary.epochs_done == 2
    found = list_checkpoints(tmp_path / "run")
    assert [s for s, _ in found] == [2 * per_epoch - 2, 2 * per_epoch]  # keep=2 pruned the older ones
    ckpt = summary.checkpoint
    assert ckpt == found[-1][1]
    names = sorted(p.name for p in ckpt.iterdir())
    assert names == sorted(
        [
            "config.json",
            "gallery.parquet",
            "model.safetensors",
            "optimizer.safetensors",
            "train.json",
            "trainer.json",
            "trainer.safetensors",
        ]
    )
    saved = load_file(ckpt / "model.safetensors")
    assert not any(k.startswith(("image_encoder.backbone.", "location_encoder.")) for k in saved)  # frozen
    info = read_train_info(ckpt)
    assert (
        info["step"] == summary.steps
        and info["split"]["seed"] == 0
        and info["data"]["n_val"] == summary.n_val
    )
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert [r["kind"] for r in rows] == ["baseline", "val", "val"]
    assert {"acc_1km", "acc_25km", "acc_200km", "acc_750km", "acc_2500km", "median_km"} <= rows[0].keys()
    # the registry rebuilds it: trained heads over the released ones, the training coords as gallery
    model = build_geoclip(backbone_weights=tiny_clip, weights=tmp_path / "run", allow_mismatched_heads=True)
    own = model.state_dict()
    assert not tensors_equal(saved, {k: own[k] for k in saved})
    assert len(model.gps_gallery) == summary.n_train and f"step-{summary.steps:08d}" in model.weights_label
    with pytest.raises(WeightsError, match="not a geotag checkpoint|neither"):
        build_geoclip(backbone_weights=tiny_clip, weights=tmp_path, allow_mismatched_heads=True)


def test_frozen_backbone_stays_frozen(photos: Path, tmp_path: Path, tiny_clip: Path) -> None:
    before = build_geoclip(backbone_weights=tiny_clip, allow_mismatched_heads=True).state_dict()
    task = GeoCLIPTask(queue_size=16)
    run_train(geoclip_cfg(photos, tmp_path / "run", tiny_clip, max_steps=2), task=task)
    after = build_geoclip(
        backbone_weights=tiny_clip, weights=tmp_path / "run", allow_mismatched_heads=True
    ).state_dict()
    changed = tensors_equal(before, after)
    assert changed and all(k.startswith(("image_encoder.mlp.", "logit_scale")) for k in changed)


class Spy(TrainMonitor):
    """Keeps what the trainer reports per step."""

    def __init__(self) -> None:
        self.logs: list[dict[str, float]] = []

    def step(self, step: int, logs: dict[str, float]) -> None:
        self.logs.append(logs)


def test_gradient_clipping(photos: Path, tmp_path: Path) -> None:
    """After one AdamW step exp_avg = (1 - beta1) * g, so its global norm shows the clipped gradient."""
    norms = {}
    for clip in (None, 1e-3):
        spy = Spy()
        out = tmp_path / f"run-{clip}"
        run_train(cell_cfg(photos, out, clip_grad=clip, max_steps=1), task=translocator_task(), monitor=spy)
        state = load_file(list_checkpoints(out)[-1][1] / "optimizer.safetensors")
        m = torch.sqrt(sum((v.double() ** 2).sum() for k, v in state.items() if k.endswith("exp_avg")))
        norms[clip] = (float(m) / 0.1, spy.logs[0]["grad_norm"])
    raw, logged = norms[None]
    assert raw == pytest.approx(logged, rel=1e-4) and raw > 1e-2
    assert norms[1e-3][0] == pytest.approx(1e-3, rel=1e-4) and norms[1e-3][1] == pytest.approx(
        logged, rel=1e-6
    )


def test_gradient_accumulation_matches_a_bigger_batch(photos: Path, tmp_path: Path) -> None:
    big = run_train(cell_cfg(photos, tmp_path / "big", batch_size=8, max_steps=2), task=translocator_task())
    acc = run_train(
        cell_cfg(photos, tmp_path / "acc", batch_size=4, accum=2, max_steps=2), task=translocator_task()
    )
    a = load_file(big.checkpoint / "model.safetensors")
    b = load_file(acc.checkpoint / "model.safetensors")
    assert a.keys() == b.keys()
    one = load_file(
        run_train(
            cell_cfg(photos, tmp_path / "one", batch_size=4, max_steps=2), task=translocator_task()
        ).checkpoint.joinpath("model.safetensors")
    )

    def gap(x: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([(a[k] - x[k]).abs().flatten() for k in a])

    # AdamW steps are ~lr = 1e-3 per element; summation order alone moves a few near-zero-gradient
    # elements by ~1e-5, while half the batch (no accumulation) moves weights by a whole step
    assert gap(b).max() < 1e-4 and gap(b).mean() < 1e-7
    assert gap(one).max() > 1e-3


def test_exact_resume_geoclip(photos: Path, tmp_path: Path, tiny_clip: Path) -> None:
    """N steps straight == N/2 steps, a new process-like restart, N/2 more: identical bits on CPU.
    Full fine-tuning (the backbone is in the checkpoint too), warm-up, augmentation and the GPS queue."""
    base = geoclip_cfg(
        photos, tmp_path / "a", tiny_clip, epochs=2, max_steps=7, freeze_backbone=False, warmup_steps=2
    )
    straight = run_train(base)
    run_train(replace(base, out=tmp_path / "b", max_steps=3))  # stops inside epoch 0
    resumed = run_train(replace(base, out=tmp_path / "b", resume=True))
    assert resumed.resumed_from is not None and resumed.resumed_from.name == "step-00000003"
    for name in ("model.safetensors", "optimizer.safetensors", "trainer.safetensors"):
        a, b = load_file(straight.checkpoint / name), load_file(resumed.checkpoint / name)
        assert not tensors_equal(a, b), name
    assert any(
        k.startswith("image_encoder.backbone.") for k in load_file(straight.checkpoint / "model.safetensors")
    )
    a_rows = [
        {k: v for k, v in r.items() if k != "seconds"}
        for r in csv.DictReader((tmp_path / "a/metrics.csv").open())
    ]
    b_rows = [
        {k: v for k, v in r.items() if k != "seconds"}
        for r in csv.DictReader((tmp_path / "b/metrics.csv").open())
    ]
    assert [r for r in b_rows if r["step"] != "3"] == a_rows  # plus the stop-time validation at step 3


def test_exact_resume_cells_with_smoothing_and_scene(photos: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    s = load_samples([photos])
    with manifest.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "lat", "lon", "scene"])
        for i, (p, a, b) in enumerate(zip(s.paths.to_pylist(), s.lat, s.lon, strict=True)):
            w.writerow([p, a, b, ["indoor", "natural", "urban", ""][i % 4]])
    base = TrainConfig(
        data=[manifest],
        out=tmp_path / "a",
        model="translocator",
        epochs=2,
        batch_size=4,
        workers=0,
        device="cpu",
        allow_untrained=True,
        freeze_backbone=False,
        val_fraction=0.2,
        label_smoothing_km=500.0,
    )
    straight = run_train(base, task=_scene_task())
    steps = straight.steps // 2
    run_train(replace(base, out=tmp_path / "b", max_steps=steps), task=_scene_task())  # the end of epoch 0
    resumed = run_train(replace(base, out=tmp_path / "b", resume=True), task=_scene_task())
    for name in ("model.safetensors", "optimizer.safetensors", "trainer.safetensors"):
        assert not tensors_equal(load_file(straight.checkpoint / name), load_file(resumed.checkpoint / name))
    assert (resumed.checkpoint / "cells.parquet").is_file()


class GreySegmenter(SegmentationProvider):
    """A stand-in segmenter (no download): label = quantised brightness."""

    def labels(self, rgb: torch.Tensor) -> torch.Tensor:
        return (rgb.mean(dim=1) * 149).long()


def _scene_task() -> TransLocatorTask:
    """The full TransLocator (segmentation branch, MFF, scene head) at toy size."""
    from geotag.models.translocator import BackboneConfig

    backbone = BackboneConfig(arch="vit_tiny_patch16_224", tag="none", overrides=TINY_VIT)
    kwargs = {"backbone": backbone, "img_size": 32, "segmenter": GreySegmenter()}
    return TransLocatorTask("vit+seg+mff+scene", tau_km=500.0, model_kwargs=kwargs, cells_scale="auto")


def test_resume_guards(photos: Path, tmp_path: Path, tiny_clip: Path) -> None:
    cfg = geoclip_cfg(photos, tmp_path / "run", tiny_clip, max_steps=1)
    with pytest.raises(InputError, match="no checkpoint to resume"):
        run_train(replace(cfg, resume=True))
    run_train(cfg)
    with pytest.raises(InputError, match="already holds checkpoints"):
        run_train(cfg)
    with pytest.raises(InputError, match="lr 0.001 -> 0.01"):
        run_train(replace(cfg, resume=True, lr=1e-2))
    assert "lr" in RESUME_KEYS and "epochs" not in RESUME_KEYS


def test_geoclip_lite_head_trains_and_loads(photos: Path, tmp_path: Path) -> None:
    """The offline model: only its image MLP (and logit scale) train; the head file loads in predict."""
    from geotag.models.registry import build_model

    cfg = replace(
        geoclip_cfg(photos, tmp_path / "run", Path("unused"), max_steps=1, batch_size=4),
        model="geoclip-lite",
        backbone_weights=None,
        val_fraction=0.0,
        allow_mismatched_heads=False,
    )
    summary = run_train(cfg)
    head = summary.checkpoint / "head.safetensors"
    assert head.is_file() and (summary.checkpoint / "gallery.parquet").is_file()
    trained = build_model(
        "geoclip-lite", weights=head, gallery=summary.checkpoint / "gallery.parquet"
    ).state_dict()
    from_run_dir = build_model("geoclip-lite", weights=tmp_path / "run").state_dict()  # newest step + gallery
    assert not tensors_equal(from_run_dir, trained)
    fresh = build_model("geoclip-lite", allow_untrained=True).state_dict()
    changed = tensors_equal(fresh, trained)
    assert "logit_scale" in changed  # trained (the fresh one is the released value)
    assert all(k.startswith(("image_encoder.mlp.", "logit_scale")) for k in changed)
    with pytest.raises(InputError, match="drop --full"):
        run_train(replace(cfg, out=tmp_path / "full", freeze_backbone=False))


# ------------------------------------------------------------------------------------------------
# CLI end to end


def test_cli_train_then_predict_with_weights(photos: Path, tmp_path: Path, tiny_clip: Path) -> None:
    """`geotag train` (in process, through Typer) then `geotag predict --weights RUN` (a new process)."""
    from typer.testing import CliRunner

    from geotag.cli import app

    run = tmp_path / "run"
    common = [
        "--backbone-weights",
        str(tiny_clip),
        "--allow-mismatched-heads",
        "--workers",
        "0",
        "--device",
        "cpu",
    ]
    args = ["train", "--data", str(photos), "--out", str(run), "--epochs", "1", "--batch-size", "8"]
    args += ["--queue-size", "16", "--lr", "1e-3", "--warmup-steps", "1", "--val-fraction", "0.2", *common]
    trained = CliRunner().invoke(app, args)
    assert trained.exit_code == 0, trained.output
    steps = list_checkpoints(run)[-1][0]
    assert steps >= 1 and f"trained {steps} step(s)" in trained.output and "--weights" in trained.output
    preds = tmp_path / "preds.parquet"
    predicted = subprocess.run(
        [*GEOTAG, "predict", str(photos), "--out", str(preds), "--weights", str(run), *common],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert predicted.returncode == 0, predicted.stderr
    table = pq.read_table(preds, columns=["pred_lat", "pred_lon", "weights", "status"]).to_pylist()
    assert len(table) == 26 and all(r["status"] == "ok" for r in table)
    assert all(f"trained checkpoint step-{steps:08d}" in r["weights"] for r in table)
    gallery = pq.read_table(list_checkpoints(run)[-1][1] / "gallery.parquet").to_pydict()
    known = set(zip(np.round(gallery["lat"], 3), np.round(gallery["lon"], 3), strict=True))
    assert all((round(r["pred_lat"], 3), round(r["pred_lon"], 3)) in known for r in table)  # training coords
