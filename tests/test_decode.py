"""Decoding: EXIF orientation, draft mode, truncated files, and agreement with the CLIP image processor."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image, ImageOps

from geotag.io.decode import decode_for_model, load_rgb, normalize, read_header, resize_center_crop
from geotag.models.registry import clip_preprocess

from conftest import fixture_dir


@pytest.mark.parametrize("n", range(1, 9))
def test_every_exif_orientation_comes_out_upright(n: int) -> None:
    folder = fixture_dir("exif-samples") / "jpg" / "orientation"
    for kind in ("landscape", "portrait"):
        img = load_rgb(folder / f"{kind}_{n}.jpg")
        assert (img.width > img.height) == (kind == "landscape"), (kind, n)


def test_draft_keeps_enough_pixels_and_is_smaller() -> None:
    path = fixture_dir("geotagged") / "exifr-IMG_20180725_163423.jpg"  # 4048 x 3036
    full = load_rgb(path)
    small = load_rgb(path, min_side=224)
    assert min(small.size) >= 224
    assert small.width * small.height * 16 <= full.width * full.height  # decoded at 1/4 scale or less


def test_truncated_jpeg_is_an_error(sample_data: Path) -> None:
    path = sample_data / "untagged" / "truncated.jpg"
    assert read_header(path)["format"] == "JPEG"  # the header alone looks fine
    with pytest.raises(OSError):
        decode_for_model(path, 64)


def test_heic_webp_tiff_png_decode(sample_data: Path) -> None:
    for name in ("asia/tokyo.heic", "europe/rome.webp", "americas/quito.tiff", "americas/new_york.png"):
        t = decode_for_model(sample_data / name, 64)
        assert t.shape == (3, 64, 64) and t.dtype == torch.uint8


def test_resize_center_crop_geometry() -> None:
    img = Image.new("RGB", (400, 100))
    out = resize_center_crop(img, 50)
    assert out.size == (50, 50)


@pytest.mark.parametrize("name", ["goexif-beijing.jpg", "opensfm-berlin-01.jpg", "exif-parser-sylt.jpg"])
def test_matches_clip_image_processor(name: str) -> None:
    """Training and inference must see the same pixels: without draft mode we match the CLIP processor
    to one grey level; draft mode (the fast default) stays within a few grey levels on average."""
    from transformers import CLIPImageProcessor

    path = fixture_dir("geotagged") / name
    pre = clip_preprocess(224)
    reference = CLIPImageProcessor()(
        images=ImageOps.exif_transpose(Image.open(path)).convert("RGB"), return_tensors="pt"
    )["pixel_values"]
    assert tuple(reference.shape[-2:]) == (pre.input_size, pre.input_size)
    exact = normalize(decode_for_model(path, 224, draft=False)[None], pre.mean, pre.std)
    one_grey_level = 1.01 / 255 / min(pre.std)
    assert (exact - reference).abs().max() <= one_grey_level
    fast = normalize(decode_for_model(path, 224, draft=True)[None], pre.mean, pre.std)
    assert (fast - reference).abs().mean() <= 4 * one_grey_level
