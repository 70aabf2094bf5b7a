"""Simple (VP8 / VP8L) WebP gets GPS too (issue 15, item 10): EXIF needs the extended format, so the
file gains a VP8X header and an EXIF chunk around the very same bitstream, and undo gives the old
bytes back."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from write_exif_util import write_predictions

from geotag.engine.write_exif import WriteOptions, run_undo, run_write_exif
from geotag.io.exif import read_exif
from geotag.io.exif_write import webp_image_chunks

WRITERS = [
    "python",
    pytest.param(
        "exiftool",
        marks=pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool not installed"),
    ),
]


def _webps(folder: Path) -> dict[str, Path]:
    """Lossy (VP8), lossless (VP8L), lossless with alpha (VP8L) and lossy with alpha (VP8X + ALPH)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (37, 23, 3), dtype=np.uint8))
    rgba = Image.fromarray(rng.integers(0, 256, (29, 41, 4), dtype=np.uint8))
    out = {}
    for name, image, kwargs in [
        ("lossy", rgb, {"quality": 80}),
        ("lossless", rgb, {"lossless": True}),
        ("lossless_alpha", rgba, {"lossless": True}),
        ("lossy_alpha", rgba, {"quality": 80}),
    ]:
        path = folder / f"{name}.webp"
        image.save(path, "WEBP", **kwargs)
        out[name] = path
    return out


def _pixels(path: Path) -> tuple[str, tuple[int, int], bytes]:
    with Image.open(path) as im:
        return im.mode, im.size, im.tobytes()


@pytest.mark.parametrize("writer", WRITERS)
def test_simple_and_extended_webp_round_trip(tmp_path: Path, writer: str) -> None:
    photos = _webps(tmp_path / "photos")
    assert {p.read_bytes()[12:16] for p in photos.values()} == {b"VP8 ", b"VP8L", b"VP8X"}
    before = {name: (p.read_bytes(), _pixels(p)) for name, p in photos.items()}
    spots = {"lossy": (-33.8568, 151.2153), "lossless": (64.1466, -21.9426)}
    rows = [
        {"path": p, "pred_lat": spots.get(n, (-1.5, -2.5))[0], "pred_lon": spots.get(n, (-1.5, -2.5))[1]}
        for n, p in photos.items()
    ]
    journal = tmp_path / "j.jsonl"
    summary = run_write_exif(
        WriteOptions(write_predictions(tmp_path / "p.parquet", rows), journal=journal, writer=writer)
    )
    assert summary.failed == [] and summary.written == 4

    for name, path in photos.items():
        data = path.read_bytes()
        assert data[12:16] == b"VP8X" and data[20] & 0x08, f"{name}: no VP8X header with the EXIF flag"
        assert int.from_bytes(data[4:8], "little") == len(data) - 8  # RIFF size fixed
        assert webp_image_chunks(data) == webp_image_chunks(before[name][0])  # bitstream byte-identical
        assert _pixels(path) == before[name][1]  # Pillow decodes the same pixels (alpha kept)
        with Image.open(path) as im:
            assert im.size == (
                1 + int.from_bytes(data[24:27], "little"),
                1 + int.from_bytes(data[27:30], "little"),
            )
        info = read_exif(path)  # geotag's own reader
        lat, lon = spots.get(name, (-1.5, -2.5))
        assert info.gt_lat == pytest.approx(lat, abs=1e-6) and info.gt_lon == pytest.approx(lon, abs=1e-6)
        if shutil.which("exiftool"):  # and an independent one, which also validates the structure
            out = subprocess.run(
                [
                    "exiftool",
                    "-j",
                    "-n",
                    "-validate",
                    "-Composite:GPSLatitude",
                    "-Composite:GPSLongitude",
                    str(path),
                ],
                capture_output=True,
                check=True,
                text=True,
            ).stdout
            got = json.loads(out)[0]
            assert got["Validate"] == "0 0 0", got  # errors, warnings, minor warnings (-n)
            assert (got["GPSLatitude"], got["GPSLongitude"]) == (
                pytest.approx(lat, abs=1e-6),
                pytest.approx(lon, abs=1e-6),
            )

    undone = run_undo(journal)
    assert undone.restored == 4
    for name, path in photos.items():
        assert path.read_bytes() == before[name][0], f"{name}: undo is not byte-identical"


@pytest.mark.parametrize("writer", WRITERS)
def test_real_extended_webp_with_gps_overwritten_and_undone(tmp_path: Path, writer: str) -> None:
    from conftest import fixture_dir

    photo = tmp_path / "real.webp"
    shutil.copyfile(fixture_dir("metadata-extractor-gps") / "webp" / "Issue 473 (Java).webp", photo)
    original = photo.read_bytes()
    preds = write_predictions(
        tmp_path / "p.parquet", [{"path": photo, "pred_lat": 48.8584, "pred_lon": 2.2945}]
    )
    journal = tmp_path / "j.jsonl"
    summary = run_write_exif(WriteOptions(preds, journal=journal, writer=writer, overwrite_gps=True))
    assert summary.failed == [] and summary.written == 1
    info = read_exif(photo)
    assert (info.gt_lat, info.gt_lon) == (pytest.approx(48.8584, abs=1e-6), pytest.approx(2.2945, abs=1e-6))
    assert webp_image_chunks(photo.read_bytes()) == webp_image_chunks(original)
    assert run_undo(journal).restored == 1 and photo.read_bytes() == original
