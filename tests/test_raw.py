"""Camera RAW files (issue 28 item 1): walked, read (time, camera, GPS), decoded or given a clear reason,
written to XMP sidecars by default; files geotag does not read are counted, never passed over."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image
from write_exif_util import EXIFTOOL, copy_tree, write_predictions

from geotag.engine.scan import scan_file
from geotag.engine.write_exif import WriteOptions, run_write_exif
from geotag.io.exif import read_exif
from geotag.io.exif_write import read_sidecar_gps
from geotag.io.scan import RAW_EXTENSIONS, WalkReport, describe_skipped, iter_image_paths, iter_records

from conftest import REPO, fixture_dir

GEOTAG = [sys.executable, "-m", "geotag.cli"]

# The fixtures' README: camera and DateTimeOriginal of each container.
EXPECTED = {
    "CanonRaw.cr2": ("Canon", "Canon EOS 350D DIGITAL", datetime(2005, 8, 3, 18, 59, 18)),
    "CanonRaw.cr3": ("Canon", "Canon EOS M50", datetime(2018, 2, 21, 12, 8, 56)),
    "DNG.dng": ("Canon", "Canon EOS 350D DIGITAL", datetime(2005, 8, 3, 18, 59, 18)),
    "FujiFilm.raf": ("FUJIFILM", "FinePix S5Pro", datetime(2007, 5, 22, 13, 58, 30)),
    "Nikon.nef": ("NIKON CORPORATION", "NIKON D70", datetime(2004, 6, 9, 16, 2, 35)),
    "Panasonic.rw2": ("Panasonic", "DMC-LX3", datetime(2008, 8, 6, 15, 21, 56)),
}


@pytest.fixture
def raw_dir() -> Path:
    return fixture_dir("raw")


def test_every_exiftool_raw_type_is_walked(tmp_path: Path) -> None:
    for ext in RAW_EXTENSIONS:
        (tmp_path / f"a{ext.upper()}").write_bytes(b"x")
    (tmp_path / "clip.mov").write_bytes(b"x")
    (tmp_path / "b.MOV").write_bytes(b"x")
    (tmp_path / "notes.xyz").write_bytes(b"x")
    (tmp_path / ".hidden.mov").write_bytes(b"x")  # hidden files stay unseen, as documented
    walk = WalkReport()
    found = {p.suffix.lower() for p in iter_image_paths([tmp_path], report=walk)}
    skipped = walk.not_read
    assert found == RAW_EXTENSIONS
    assert {".nef", ".cr3", ".raf", ".arw", ".rw2", ".dng", ".orf", ".x3f", ".iiq", ".3fr"} <= found
    assert skipped == Counter({".mov": 2, ".xyz": 1})
    assert describe_skipped(skipped) == "skipped 3 files geotag does not read: .mov 2, .xyz 1"
    assert describe_skipped(Counter()) is None


def test_scan_reads_time_and_camera_of_each_fixture_raw(raw_dir: Path) -> None:
    rows = {Path(r.path).name: scan_file(r) for r in iter_records([raw_dir])}
    assert set(rows) == set(EXPECTED)
    for name, (make, model, taken) in EXPECTED.items():
        row = rows[name]
        assert (row["camera_make"], row["camera_model"], row["taken_at"]) == (make, model, taken), name
        assert row["gt_lat"] is None and row["gt_note"].startswith("no gps"), name
        if row["status"] == "ok":
            assert row["format"] == Path(name).suffix[1:].upper() and row["width"] > 1000, name
        else:  # the CR2 fixture's image is a placeholder LibRaw does not take: said, EXIF still read
            assert row["error"].startswith("not a readable image: LibRaw cannot read this CR2"), name


def _with_gps(src: Path, dst: Path, lat: float, lon: float) -> Path:
    shutil.copy(src, dst)
    dst.chmod(0o644)
    refs = [f"-GPSLatitudeRef={'S' if lat < 0 else 'N'}", f"-GPSLongitudeRef={'W' if lon < 0 else 'E'}"]
    values = [f"-GPSLatitude={abs(lat)}", f"-GPSLongitude={abs(lon)}"]
    # -m: exiftool calls these test containers' placeholder strips "[minor]" damage
    subprocess.run([EXIFTOOL, "-q", "-m", "-overwrite_original", *values, *refs, str(dst)], check=True)
    return dst


@pytest.mark.skipif(EXIFTOOL is None, reason="exiftool not installed")
@pytest.mark.parametrize("name", ["CanonRaw.cr3", "FujiFilm.raf", "Nikon.nef", "DNG.dng", "CanonRaw.cr2"])
def test_gps_of_raw_containers_is_read(raw_dir: Path, tmp_path: Path, name: str) -> None:
    """GPS written by exiftool (southern, western) reads back through each container's reader: the
    CR3's CMT4 box, the RAF's embedded JPEG, a TIFF-based RAW through exifread."""
    photo = _with_gps(raw_dir / name, tmp_path / name, -33.856, -151.215)
    info = read_exif(photo)
    assert info.gt_lat == pytest.approx(-33.856, abs=1e-5) and info.gt_lon == pytest.approx(
        -151.215, abs=1e-5
    )
    assert info.camera_model == EXPECTED[name][1] and info.taken_at == EXPECTED[name][2]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    import os

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([*GEOTAG, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def test_scan_cli_counts_what_it_does_not_read(raw_dir: Path, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    copy_tree(raw_dir, photos)
    (photos / "clip.mov").write_bytes(b"\0" * 10)
    (photos / "b.MOV").write_bytes(b"\0" * 10)
    (photos / "x.xyz").write_bytes(b"\0")
    proc = _cli("scan", str(photos), "--out", str(tmp_path / "s.parquet"), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr  # the CR2 placeholder cannot be read
    assert "skipped 3 files geotag does not read: .mov 2, .xyz 1" in proc.stderr
    assert "scanned 6 file(s): 0 with GPS, 1 unreadable" in proc.stderr
    assert "Warning" not in proc.stderr and "corrupted" not in proc.stderr  # LibRaw's stderr: in the rows


def test_run_predict_writes_one_row_per_raw_and_counts_the_rest(raw_dir: Path, tmp_path: Path) -> None:
    import torch
    from test_predict import TINY

    from geotag.config import PredictConfig
    from geotag.engine.predict import run_predict
    from geotag.models.registry import build_geoclip

    photos = tmp_path / "photos"
    copy_tree(raw_dir, photos)
    (photos / "clip.mov").write_bytes(b"\0")
    gallery = tmp_path / "g.csv"
    gallery.write_text("lat,lon\n10,20\n-30,40\n")
    torch.manual_seed(0)
    model = build_geoclip(vit=TINY, allow_untrained=True, gallery=gallery)
    out = tmp_path / "p.parquet"
    summary = run_predict(
        PredictConfig(paths=[photos], out=out, batch_size=4, workers=1, top_k=1), model=model
    )
    assert summary.not_read == Counter({".mov": 1})
    rows = {Path(r["path"]).name: r for r in pq.read_table(out).to_pylist()}
    assert set(rows) == set(EXPECTED) and summary.total == 6 and summary.failed == 3
    for name, row in rows.items():
        assert (row["pred_lat"] is not None) == (row["status"] == "ok"), name
        assert row["status"] == "ok" or row["error"], name
        assert row["camera_model"] == EXPECTED[name][1], name


def test_predict_gives_each_fixture_raw_one_row(raw_dir: Path, tmp_path: Path) -> None:
    """Decoded (the DNG's sensor data, the RW2's and the RAF's previews) or one error row that says why."""
    from geotag.engine.predict import read_item
    from geotag.models.base import Preprocess

    pre = Preprocess(32, (0.5,) * 3, (0.5,) * 3)
    items = {Path(r.path).name: read_item(r, pre, True, set()) for r in iter_records([raw_dir])}
    assert set(items) == set(EXPECTED)
    for name in ("DNG.dng", "Panasonic.rw2", "FujiFilm.raf"):
        assert items[name]["row"]["status"] == "ok" and tuple(items[name]["pixels"].shape) == (3, 32, 32), (
            name
        )
    for name in ("CanonRaw.cr3", "Nikon.nef"):  # 26-29 byte placeholder previews, no sensor data
        row = items[name]["row"]
        assert items[name]["pixels"] is None and row["status"] == "error", name
        assert "no decodable image in this" in row["error"] and "embedded preview" in row["error"], name
    assert "LibRaw cannot read this CR2 file" in items["CanonRaw.cr2"]["row"]["error"]


@pytest.mark.skipif(EXIFTOOL is None, reason="exiftool not installed")
def test_embedded_preview_is_decoded_upright(raw_dir: Path, tmp_path: Path) -> None:
    """A real JPEG put into a NEF's preview (as the fixtures' README says) is what predict decodes."""
    from geotag.io.decode import load_rgb

    preview = tmp_path / "preview.jpg"
    img = Image.new("RGB", (400, 300), (200, 30, 30))
    img.paste((20, 20, 220), (0, 0, 200, 300))  # left half blue, right half red
    img.save(preview, quality=95)
    nef = tmp_path / "copy.nef"
    shutil.copy(raw_dir / "Nikon.nef", nef)
    nef.chmod(0o644)
    subprocess.run(
        [EXIFTOOL, "-q", "-m", "-overwrite_original", f"-PreviewImage<={preview}", str(nef)], check=True
    )
    got = load_rgb(str(nef), min_side=224)
    assert got.size == (400, 300)
    left, right = got.getpixel((50, 150)), got.getpixel((350, 150))
    assert left[2] > 150 > left[0] and right[0] > 150 > right[2]


@pytest.mark.skipif(EXIFTOOL is None, reason="exiftool not installed")
def test_write_exif_puts_raw_positions_into_sidecars(raw_dir: Path, tmp_path: Path) -> None:
    photos = copy_tree(raw_dir, tmp_path / "photos")
    before = {p: p.read_bytes() for p in photos}
    preds = write_predictions(
        tmp_path / "p.parquet",
        [{"path": p, "pred_lat": -33.5 - i, "pred_lon": -70.25} for i, p in enumerate(photos)],
    )
    summary = run_write_exif(WriteOptions(predictions=preds, journal=tmp_path / "j.jsonl"))
    assert summary.written == len(photos) == 6 and not summary.failed, summary.failed
    for i, photo in enumerate(photos):
        assert photo.read_bytes() == before[photo]  # the RAW file itself is never touched by default
        lat, lon, _ = read_sidecar_gps(photo.with_name(photo.name + ".xmp").read_bytes())
        assert lat == pytest.approx(-33.5 - i) and lon == pytest.approx(-70.25), photo.name
    # Lightroom's naming, and --raw-in-file where exiftool can write the RAW
    for p in tmp_path.joinpath("photos").glob("*.xmp"):
        p.unlink()
    lr = run_write_exif(
        WriteOptions(predictions=preds, sidecar_name="photo.xmp", journal=tmp_path / "j2.jsonl")
    )
    assert all(p.with_suffix(".xmp").is_file() for p in photos)
    # CanonRaw.cr2 and CanonRaw.cr3 share Lightroom's CanonRaw.xmp: the first row wins, the other is skipped
    assert lr.written == 5 and lr.skipped == Counter({"an earlier row is for the same file": 1})
    for p in tmp_path.joinpath("photos").glob("*.xmp"):
        p.unlink()
    inside = run_write_exif(WriteOptions(predictions=preds, raw_in_file=True, journal=tmp_path / "j3.jsonl"))
    assert inside.written + len(inside.failed) == 6 and inside.written >= 4, inside.failed
    assert not list(tmp_path.joinpath("photos").glob("*.xmp"))
    for _, reason in inside.failed:  # exiftool finds these placeholder containers damaged ("[minor]")
        assert "[minor]" in reason and "--sidecar" in reason, reason
    written = [p for p in photos if p.read_bytes() != before[p]]
    assert len(written) == inside.written
    for p in written:
        info = read_exif(p)
        i = photos.index(p)
        assert info.gt_lat == pytest.approx(-33.5 - i, abs=1e-5) and info.gt_lon == pytest.approx(
            -70.25, abs=1e-5
        )


def test_raw_exif_readers_never_raise_on_garbage(tmp_path: Path) -> None:
    """A truncated CR3 or RAF, or a RAW extension on random bytes: a note, never an exception."""
    cases = {
        "a.cr3": b"\0\0\0\x18ftypcrx \0\0\0\x01crx isom\0\0\xff\xffmoov",
        "b.raf": b"FUJIFILMCCD-RAW 0201" + b"\0" * 64 + b"\xff\xff\xff\xf0\0\0\x10\0",
        "c.x3f": b"FOVb" + bytes(range(256)) * 4,
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        info = read_exif(tmp_path / name)
        assert info.gt_lat is None and info.gt_note, name
