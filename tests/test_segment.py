"""`geotag segment PHOTOS --out MAPS/`: whole-photo ADE20K maps for --seg-dir, batched, resumable, with
error rows; here with a tiny random SegFormer saved as a local folder (no download)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from typer.testing import CliRunner

from geotag.cli import app
from geotag.models.segmentation import DiskSegmentation, SegFormerProvider, load_map


def tiny_segformer_folder(folder: Path) -> Path:
    import transformers

    torch.manual_seed(0)
    config = transformers.SegformerConfig(
        num_labels=150,
        depths=[1, 1, 1, 1],
        sr_ratios=[8, 4, 2, 1],
        hidden_sizes=[8, 16, 16, 16],
        num_attention_heads=[1, 1, 1, 1],
        decoder_hidden_size=16,
    )
    model = transformers.SegformerForSemanticSegmentation(config).eval()
    return SegFormerProvider(model, size=32).save(folder)


def test_segment_writes_whole_photo_maps_resumes_and_reports_errors(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    (photos / "zz").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, (w, h) in {"wide": (96, 48), "tall": (40, 80), "square": (50, 50)}.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(photos / f"{name}.jpg")
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    Image.new("RGB", (30, 30)).save(photos / "zz" / "wide.png")  # same stem as wide.jpg
    seg = tiny_segformer_folder(tmp_path / "segformer")
    maps = tmp_path / "maps"
    args = ["segment", str(photos), "--out", str(maps), "--segmenter", str(seg), "--device", "cpu"]
    first = CliRunner().invoke(app, [*args, "--batch-size", "2"])
    assert first.exit_code == 1, first.output
    assert "3 map(s) written, 0 already there, 2 error(s)" in first.output
    assert "broken.jpg" in first.output and "same file stem" in first.output
    sizes = {p.stem: Image.open(p).size for p in maps.glob("*.png")}
    assert sizes == {"wide": (64, 32), "tall": (32, 64), "square": (32, 32)}  # aspect kept, short side 32
    labels = np.asarray(Image.open(maps / "wide.png"))
    assert labels.dtype == np.uint8 and labels.max() < 150
    assert not [p for p in maps.iterdir() if not p.name.endswith(".png")]  # no temporary left behind
    again = CliRunner().invoke(app, [*args])
    assert "0 map(s) written, 3 already there" in again.output
    found = DiskSegmentation(maps).find(None, str(photos / "tall.jpg"))
    assert load_map(found, 16).shape == (3, 16, 16)  # what --seg-dir reads


def test_segment_offline_without_weights_names_the_download(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The CLI turns this WeightsError into one line and exit 2 (cli.main), as for predict."""
    import pytest

    from geotag.engine.segment import load_provider
    from geotag.errors import WeightsError

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match="hf download nvidia/segformer-b0"):
        load_provider(None, "cpu")
