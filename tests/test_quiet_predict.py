"""`-q predict` is quiet (issue 28 item 7): what libtiff prints while a worker decodes a TIFF goes into
that photo's row (naming the photo, never Pillow's "tempfile.tif") and the -v log, not onto stderr."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image
from test_scan_warnings import _damaged_tiff
from tiny_weights import save_tiny_hf_clip

from conftest import REPO


def _predict(folder: Path, out: Path, tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    weights = tmp_path / "clip"
    if not weights.exists():
        save_tiny_hf_clip(weights)
    gallery = tmp_path / "gallery.csv"
    gallery.write_text("lat,lon\n10,20\n-30,40\n48.8,2.3\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    args = ["predict", str(folder), "--out", str(out), "--gallery", str(gallery), "--top-k", "1"]
    args += ["--backbone-weights", str(weights), "--allow-mismatched-heads", "--workers", "1"]
    return subprocess.run(
        [sys.executable, "-m", "geotag.cli", *flags, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=tmp_path,
    )


def test_quiet_predict_prints_no_libtiff_lines(tmp_path: Path) -> None:
    """The damaged TIFF comes after the worker's first chunk of photos (LOADER_CHUNK): from then on the
    worker has multiprocessing's feeder thread and torch's resource sharer, which the capture allows."""
    from geotag.engine.pipeline import LOADER_CHUNK

    photos = tmp_path / "photos"
    photos.mkdir()
    n = LOADER_CHUNK + 8
    for i in range(n):
        Image.new("RGB", (64, 48), (10, 120 + i, 30)).save(photos / f"a{i:03d}.jpg")
    _damaged_tiff(photos).rename(photos / "z_damaged.tiff")
    out = tmp_path / "p.parquet"
    proc = _predict(photos, out, tmp_path, "-q")
    assert proc.returncode == 1, proc.stderr  # the damaged TIFF fails
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"predicted {n + 1} file(s)"), proc.stderr
    rows = {Path(r["path"]).name: r for r in pq.read_table(out).to_pylist()}
    bad = rows["z_damaged.tiff"]
    assert bad["status"] == "error" and "z_damaged.tiff: Using code not yet in table" in bad["error"]
    assert "decoder stderr: z_damaged.tiff: Using code not yet in table" in bad["gt_note"]
    assert "tempfile.tif" not in bad["gt_note"] + bad["error"]
    assert sum(r["status"] == "ok" for r in rows.values()) == n

    verbose = _predict(photos, tmp_path / "v.parquet", tmp_path, "-v")
    said = [ln for ln in verbose.stderr.splitlines() if "Using code not yet in table" in ln]
    assert said and all("z_damaged.tiff" in ln and "tempfile.tif" not in ln for ln in said), verbose.stderr


def test_pillow_warnings_while_decoding_go_to_the_row(tmp_path: Path, monkeypatch) -> None:
    """A Python warning raised by Pillow while predict decodes (here its decompression-bomb warning)
    lands in the row's gt_note, not on stderr."""
    import warnings

    from geotag.engine.predict import decode_into_row
    from geotag.models.base import Preprocess

    photo = tmp_path / "big.png"
    Image.new("RGB", (64, 64)).save(photo)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # 4,096 px: over the limit, under 2x: a warning
    row = {"path": str(photo), "status": "ok", "gt_note": None}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning escaping decode_into_row fails the test
        pixels = decode_into_row(row, Preprocess(32, (0.5,) * 3, (0.5,) * 3), True)
    assert pixels is not None and row["status"] == "ok"
    assert "DecompressionBombWarning" in row["gt_note"]
