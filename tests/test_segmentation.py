"""Segmentation providers: the ADE20K palette, a tiny SegFormer, precomputed maps on disk, offline loading."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from geotag.errors import ImageError, InputError, WeightsError
from geotag.models import segmentation as seg
from geotag.models.segmentation import (
    ADE20K_PALETTE,
    DiskSegmentation,
    SegFormerProvider,
    load_segformer,
    render_labels,
)

transformers = pytest.importorskip("transformers")


def tiny_segformer(num_labels: int = 150, seed: int = 0) -> torch.nn.Module:
    """A few-thousand-parameter SegFormer built from a small config (nothing is downloaded)."""
    torch.manual_seed(seed)
    config = transformers.SegformerConfig(
        num_labels=num_labels,
        depths=[1, 1, 1, 1],
        sr_ratios=[8, 4, 2, 1],
        hidden_sizes=[8, 16, 16, 16],
        num_attention_heads=[1, 1, 1, 1],
        decoder_hidden_size=16,
    )
    return transformers.SegformerForSemanticSegmentation(config).eval()


@pytest.fixture
def empty_hub(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_palette_is_the_standard_ade20k_one() -> None:
    assert ADE20K_PALETTE.shape == (150, 3) and ADE20K_PALETTE.dtype == np.uint8
    assert ADE20K_PALETTE[:3].tolist() == [[120, 120, 120], [180, 120, 120], [6, 230, 230]]
    assert ADE20K_PALETTE[-1].tolist() == [92, 0, 255] and ADE20K_PALETTE[12].tolist() == [150, 5, 61]
    assert len(seg.ADE20K_CLASSES) == 150 and seg.ADE20K_CLASSES[2] == "sky"


def test_render_labels_uses_the_palette_and_blacks_out_unknowns() -> None:
    labels = torch.tensor([[[0, 2], [149, 255]]])
    out = render_labels(labels)
    assert out.shape == (1, 3, 2, 2) and out.dtype == torch.float32
    assert (out[0, :, 0, 1] * 255).round().tolist() == [6, 230, 230]
    assert (out[0, :, 1, 0] * 255).round().tolist() == [92, 0, 255]
    assert out[0, :, 1, 1].tolist() == [0.0, 0.0, 0.0]


def test_segformer_provider_labels_and_colour() -> None:
    provider = SegFormerProvider(tiny_segformer(), size=64)
    rgb = torch.rand(2, 3, 48, 40)
    labels = provider.labels(rgb)
    assert labels.shape == (2, 48, 40) and labels.dtype == torch.int64
    assert labels.min() >= 0 and labels.max() < 150
    colour = provider.colour(rgb)
    assert colour.shape == (2, 3, 48, 40)
    torch.testing.assert_close(colour, render_labels(labels))
    assert torch.equal(provider.labels(rgb), labels)  # deterministic


def test_segformer_needs_150_labels() -> None:
    with pytest.raises(WeightsError, match="150"):
        SegFormerProvider(tiny_segformer(num_labels=19))


def test_segformer_folder_round_trip(tmp_path: Path) -> None:
    provider = SegFormerProvider(tiny_segformer(), size=64)
    folder = provider.save(tmp_path / "segformer")
    loaded = load_segformer(folder)
    assert loaded.size == 64
    rgb = torch.rand(1, 3, 32, 32)
    assert torch.equal(loaded.labels(rgb), provider.labels(rgb))


def test_offline_hub_id_fails_fast_with_one_line(empty_hub) -> None:
    start = time.perf_counter()
    with pytest.raises(WeightsError) as info:
        load_segformer(seg.DEFAULT_SEGFORMER)
    assert time.perf_counter() - start < 3
    message = str(info.value)
    assert (
        "\n" not in message and f"hf download {seg.DEFAULT_SEGFORMER}" in message and "--seg-dir" in message
    )
    with pytest.raises(WeightsError, match="not a folder"):
        load_segformer(empty_hub / "no-such-folder")


def test_segformer_from_a_fake_hub_cache(empty_hub, tmp_path) -> None:
    """A cached snapshot (refs/main -> snapshots/<rev>) is found without any network."""
    provider = SegFormerProvider(tiny_segformer(), size=64)
    repo = empty_hub / "models--nvidia--segformer-b0-finetuned-ade-512-512"
    provider.save(repo / "snapshots" / ("0" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    loaded = load_segformer(seg.DEFAULT_SEGFORMER)
    rgb = torch.rand(1, 3, 32, 32)
    assert torch.equal(loaded.labels(rgb), provider.labels(rgb))


def test_disk_maps_by_image_id_then_stem(tmp_path: Path) -> None:
    labels = np.zeros((50, 100), dtype=np.uint8)  # wide map: the centre crop keeps columns 25..74
    labels[:, 25:50] = 2  # sky
    labels[:, 50:75] = 200  # unlabelled
    Image.fromarray(labels, mode="L").save(tmp_path / "abc123.png")
    colour = np.zeros((40, 40, 3), dtype=np.uint8)
    colour[...] = (1, 2, 3)
    Image.fromarray(colour).save(tmp_path / "IMG_0001.png")
    disk = DiskSegmentation(tmp_path)
    assert disk.needs_keys
    maps = disk.load(["abc123", "not-a-known-id"], ["/photos/x.jpg", "/photos/IMG_0001.JPG"], size=10)
    assert maps.shape == (2, 3, 10, 10)
    assert (maps[0, :, 5, 0] * 255).round().tolist() == [6, 230, 230]  # left half of the crop: sky
    assert maps[0, :, 5, 9].tolist() == [0.0, 0.0, 0.0]  # right half: unlabelled -> black
    assert (maps[1, :, 0, 0] * 255).round().tolist() == [1, 2, 3]  # an RGB map is used as is
    with pytest.raises(ImageError, match="nope.png, other.png"):
        disk.load(["nope"], ["/photos/other.jpg"], size=10)
    with pytest.raises(InputError, match="not found"):
        DiskSegmentation(tmp_path / "missing")
