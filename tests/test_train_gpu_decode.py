"""`train --gpu-decode`: workers hand JPEG bytes over and decode_pending decodes them on the device
(torchvision's decode_jpeg; here on the CPU, which takes the same code path as nvJPEG) with the CPU
path's geometry: draft-size block means, EXIF orientation, the same seeded crop box."""

from __future__ import annotations

import csv
import sys
from datetime import datetime
from pathlib import Path

import pytest
import torch

from geotag.engine import train as train_mod
from geotag.engine.train import run_train
from geotag.engine.train_data import TrainDataset, collate_train, decode_pending, load_samples
from geotag.models.base import Preprocess
from geotag.sample_data import Place, make_exif, render

from conftest import write_tagged_photos

sys.path.insert(0, str(Path(__file__).parent))
from ddp_worker import config, tiny_task  # noqa: E402

PRE = Preprocess(input_size=64, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def _photos(folder: Path) -> Path:
    """Large enough for draft mode (800 x 600 -> 1/8), rotated by EXIF, plus a PNG (CPU path)."""
    for i in range(6):
        place = Place(f"P{i}", 10.0 * i + 1, 20.0 * i + 1, f"p{i}.jpg", tagged=True)
        exif = make_exif(place, datetime(2024, 1, 1))
        exif[0x0112] = (1, 6, 3, 8, 1, 1)[i]
        render(place, size=(800, 600)).save(folder / place.file, exif=exif.tobytes(), quality=90)
    png = Place("Q", 5.0, 5.0, "q.png", tagged=True)
    render(png, size=(300, 200)).save(folder / "q.png")
    return folder


@pytest.mark.parametrize("augment", [False, True])
def test_gpu_path_gives_the_cpu_pixels(tmp_path: Path, augment: bool) -> None:
    photos = _photos(tmp_path)
    samples = load_samples([photos])
    assert len(samples) == 6  # the PNG has no GPS: not a sample
    cpu = TrainDataset(samples, PRE, augment=augment, seed=3)
    gpu = TrainDataset(samples, PRE, augment=augment, seed=3, gpu_decode=True)
    cpu.epoch = gpu.epoch = 2
    items = [gpu[i] for i in range(len(samples))]
    assert all("jpeg" in it and it["pixels"] is None for it in items)
    assert sorted(it["orientation"] for it in items) == [1, 1, 1, 3, 6, 8]
    batch = decode_pending(collate_train(items), PRE, torch.device("cpu"), seed=3, epoch=2, augment=augment)
    want = collate_train([cpu[i] for i in range(len(samples))])
    assert batch["pixels"].shape == want["pixels"].shape == (6, 3, 64, 64)
    assert torch.equal(batch["index"], want["index"]) and torch.equal(batch["latlon"], want["latlon"])
    diff = (batch["pixels"].float() - want["pixels"].float()).abs()
    assert diff.mean() < 1.0, diff.mean()  # measured 0.16-0.18 (max 5): chroma and DC, not geometry
    rotated = (batch["pixels"].float() - want["pixels"].flip(-1).float()).abs().mean()
    assert rotated > 4 * diff.mean()  # a wrong orientation or crop box would show


def test_mixed_batch_keeps_order_and_drops_what_fails(tmp_path: Path) -> None:
    photos = _photos(tmp_path)
    samples = load_samples([photos])
    gpu = TrainDataset(samples, PRE, augment=False, seed=0, gpu_decode=True)
    cpu = TrainDataset(samples, PRE, augment=False, seed=0)
    items = [gpu[0], cpu[1], gpu[2]]
    items[2] = {**items[2], "jpeg": torch.frombuffer(bytearray(b"\xff\xd8\xff\xd9"), dtype=torch.uint8)}
    batch = decode_pending(collate_train(items), PRE, torch.device("cpu"), seed=0, epoch=0, augment=False)
    assert batch["index"].tolist() == [0, 1] and batch["failed"] == 1
    assert torch.equal(batch["pixels"][1], cpu[1]["pixels"])


def test_training_with_gpu_decode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole loop with the decoder forced on (CPU decode_jpeg): it trains, and its losses follow
    the Pillow run's closely."""
    (tmp_path / "photos").mkdir()
    photos = write_tagged_photos(tmp_path / "photos")
    torch.set_num_threads(1)
    plain = run_train(config(photos, tmp_path / "plain"), task=tiny_task())
    monkeypatch.setattr(train_mod.gpu_decode, "available", lambda device: True)
    decoded = run_train(config(photos, tmp_path / "gpu", gpu_decode=True), task=tiny_task())
    assert decoded.steps == plain.steps == 4 and not decoded.notes
    losses = []
    for run in ("plain", "gpu"):
        with (tmp_path / run / "metrics.csv").open() as fh:
            losses.append([float(r["train_loss"]) for r in csv.DictReader(fh) if r["kind"] == "val"])
    assert losses[0] == pytest.approx(losses[1], rel=0.05)


def test_without_cuda_the_option_falls_back(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    photos = write_tagged_photos(tmp_path / "photos")
    s = run_train(config(photos, tmp_path / "run", gpu_decode=True, max_steps=1), task=tiny_task())
    assert any("--gpu-decode needs a CUDA device" in n for n in s.notes)
