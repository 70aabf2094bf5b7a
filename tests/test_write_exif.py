"""`geotag write-exif`: selection, round trips through `geotag scan`, undo, sidecars, and safety when
things go wrong (changed files, read-only files, full disks, crashes and kills)."""

from __future__ import annotations

import errno
import io
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from write_exif_util import EXIFTOOL, copy_tree, exiftool_dump, image_data, write_predictions

import geotag.engine.write_exif as engine
from geotag.engine.scan import run_scan
from geotag.engine.write_exif import WriteOptions, run_undo, run_write_exif
from geotag.errors import InputError
from geotag.io.exif import read_exif
from geotag.io.exif_write import (
    ExiftoolProcess,
    ExiftoolWriter,
    GpsFix,
    PythonJpegWriter,
    _dms_rationals,
    _Exif,
    build_sidecar,
    parse_xmp_coordinate,
    read_sidecar_gps,
    xmp_coordinate,
)
from geotag.io.journal import read_journal
from geotag.io.scan import image_id
from geotag.sample_data import PLACES, UNTAGGED, make_exif, render

GEOTAG = [sys.executable, "-m", "geotag.cli"]
needs_exiftool = pytest.mark.skipif(
    EXIFTOOL is None, reason="exiftool not installed (apt-get install libimage-exiftool-perl)"
)
WRITERS = [pytest.param("exiftool", marks=needs_exiftool), "python"]
# One point per quadrant: the hemisphere trap shows in the southern and western ones.
QUADRANTS = [
    (-33.856784, -70.123456),
    (48.858370, 2.294481),
    (-22.951916, 151.215297),
    (40.689247, -74.044502),
]


@pytest.fixture
def photos(sample_data: Path, tmp_path: Path) -> Path:
    """A writable copy of the rendered sample photos (JPEG, PNG, TIFF, WebP, HEIC, broken ones)."""
    copy_tree(sample_data, tmp_path / "photos")
    return tmp_path / "photos"


def _jpeg(path: Path, *, gps: bool = False, size: tuple[int, int] = (64, 48)) -> Path:
    """A small rendered JPEG without GPS (or with the sample EXIF GPS)."""
    from datetime import datetime

    place = PLACES[0] if gps else UNTAGGED[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    render(place, size).save(
        path, "JPEG", quality=85, exif=make_exif(place, datetime(2024, 1, 2, 3, 4, 5)).tobytes()
    )
    return path


def _snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()}


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*GEOTAG, "write-exif", *args], capture_output=True, text=True, env={**os.environ, **(env or {})}
    )


def _written_rows(photos: Path) -> list[dict]:
    rows = []
    files = [p for p in sorted(photos.rglob("*")) if p.is_file() and p.suffix.lower() != ".csv"]
    for i, path in enumerate(files):
        lat, lon = QUADRANTS[i % len(QUADRANTS)]
        rows.append({"path": path, "pred_lat": lat, "pred_lon": lon})
    return rows


# --------------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("writer", WRITERS)
def test_round_trip_through_scan_all_quadrants(photos: Path, tmp_path: Path, writer: str) -> None:
    """write-exif, then `geotag scan`: the written coordinates come back to 1e-6 degrees, signs included."""
    rows = [r for r in _written_rows(photos) if "not_a_photo" not in str(r["path"])]
    preds = write_predictions(tmp_path / "preds.parquet", rows)
    # the fallback, with exiftool hidden the way a machine without it looks: not on the PATH
    env = {"PATH": str(Path(sys.executable).parent)} if writer == "python" else {}
    proc = _cli(str(preds), "--overwrite-gps", "--journal", str(tmp_path / "j.jsonl"), env=env)
    assert proc.returncode == (0 if writer == "exiftool" else 1), proc.stderr
    assert f"with {'exiftool' if writer == 'exiftool' else 'python'}" in proc.stderr
    assert "journal:" in proc.stderr

    run_scan([photos], tmp_path / "scan.parquet", workers=1)
    scanned = {r["path"]: r for r in pq.read_table(tmp_path / "scan.parquet").to_pylist()}
    written = 0
    for row in rows:
        got = scanned[str(row["path"])]
        jpeg = row["path"].suffix.lower() in (".jpg", ".webp")  # what the python writer handles
        if writer == "python" and not jpeg:
            assert "only JPEG" in proc.stderr
            continue
        assert math.isclose(got["gt_lat"], row["pred_lat"], abs_tol=1e-6), row
        assert math.isclose(got["gt_lon"], row["pred_lon"], abs_tol=1e-6), row
        written += 1
    assert written >= (7 if writer == "python" else 11)


@settings(max_examples=60, deadline=None)
@given(
    lat=st.floats(-90, 90, allow_nan=False).filter(lambda v: abs(v) > 1e-9),
    lon=st.floats(-180, 180, allow_nan=False),
)
def test_python_writer_round_trip_property(lat: float, lon: float) -> None:
    """Any position, through the fallback's bytes and exifread: same value to 1e-6, never 60 seconds."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "JPEG")
    data = _Exif(buf.getvalue()).with_gps(GpsFix(lat, lon, model="m", confidence=0.5, error_km=1.5))
    import exifread

    tags = exifread.process_file(io.BytesIO(data), details=False)
    from geotag.io.exif import gps_from_tags

    got = gps_from_tags({k[4:]: v.values for k, v in tags.items() if k.startswith("GPS ")})
    if abs(lat) < 5e-7 and abs(lon) < 5e-7:
        return  # (0, 0) is the reader's placeholder; write-exif never writes it (see selection test)
    assert math.isclose(got[0], lat, abs_tol=1e-6) and math.isclose(got[1], lon, abs_tol=1e-6)
    for value in (lat, lon):
        assert _dms_rationals(value)[2][0] < 60 * 1_000_000


def test_coordinate_text_and_refs() -> None:
    fix = GpsFix(-33.5, -70.25)
    assert (fix.lat_ref, fix.lon_ref) == ("S", "W")
    assert GpsFix(0.0, 0.0).lat_ref == "N"
    assert xmp_coordinate(-33.856784, "N", "S") == "33,51.40704000S"
    assert parse_xmp_coordinate("33,51.40704000S") == pytest.approx(-33.856784, abs=1e-12)
    assert parse_xmp_coordinate("70,07,24.4416W") == pytest.approx(-70.123456, abs=1e-9)
    assert xmp_coordinate(179.99999999999, "E", "W") == "180,00.00000000E"  # rounds up cleanly
    assert GpsFix(1, 2, error_km=None).error_m is None and GpsFix(1, 2, error_km=2.5).error_m == 2500


# --------------------------------------------------------------------------------------------------
# Selection
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("writer", WRITERS)
def test_selection_rules(tmp_path: Path, writer: str) -> None:
    """Only status ok, a valid prediction, enough confidence and no GPS yet (row *and* file) is written."""
    d = tmp_path / "p"
    plain = [_jpeg(d / f"plain{i}.jpg") for i in range(3)]
    tagged = _jpeg(d / "tagged.jpg", gps=True)
    stale = _jpeg(d / "stale_row.jpg", gps=True)  # the file has GPS though the row says it has none
    rows = [
        {"path": plain[0], "pred_lat": -10.5, "pred_lon": -20.5, "confidence": 0.9},  # written
        {"path": plain[1], "pred_lat": -10.5, "pred_lon": -20.5, "confidence": 0.1},  # below min
        {"path": plain[2], "pred_lat": None, "pred_lon": None},  # no prediction
        {"path": plain[2], "status": "error", "pred_lat": 1.0, "pred_lon": 1.0},
        {"path": plain[2], "pred_lat": 0.0, "pred_lon": 0.0},  # the placeholder our reader drops
        {"path": plain[2], "pred_lat": 95.0, "pred_lon": 0.0},
        {"path": plain[2], "pred_lat": 5.0, "pred_lon": 5.0, "confidence": None},
        {"path": tagged, "pred_lat": 1.0, "pred_lon": 1.0, "gt_lat": 48.8, "gt_lon": 2.3},
        {"path": stale, "pred_lat": 1.0, "pred_lon": 1.0},
        {"path": d / "gone.jpg", "image_id": "0" * 32, "pred_lat": 1.0, "pred_lon": 1.0},
    ]
    preds = write_predictions(tmp_path / "preds.parquet", rows)
    before = _snapshot(d)
    summary = run_write_exif(
        WriteOptions(preds, min_confidence=0.5, writer=writer, journal=tmp_path / "j.jsonl")
    )
    assert summary.written == 1 and not summary.failed
    assert summary.skipped == {
        engine.SKIP_CONFIDENCE: 1,
        engine.SKIP_NO_PREDICTION: 1,
        engine.SKIP_STATUS: 1,
        engine.SKIP_ZERO: 1,
        engine.SKIP_BAD_PREDICTION: 1,
        engine.SKIP_NO_CONFIDENCE: 1,
        engine.SKIP_HAS_GPS: 2,
        engine.SKIP_MISSING: 1,
    }
    after = _snapshot(d)
    assert [p for p in before if before[p] != after[p]] == [str(plain[0])]
    assert read_exif(plain[0]).gt_lat == pytest.approx(-10.5, abs=1e-9)
    assert "wrote 1 file(s)" in summary.describe() and "2 already has GPS" in summary.describe()


@needs_exiftool  # the PNG and TIFF among the four rows need it
def test_dry_run_lists_and_changes_nothing(photos: Path, tmp_path: Path) -> None:
    preds = write_predictions(tmp_path / "preds.parquet", _written_rows(photos)[:4])
    before = _snapshot(photos)
    proc = _cli(str(preds), "--dry-run", "--overwrite-gps")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("would write ") == 4
    assert "-33.856784, -70.123456" in proc.stdout
    assert "dry run, nothing changed" in proc.stderr
    assert _snapshot(photos) == before
    assert not list(tmp_path.glob("*.jsonl"))


def test_file_changed_since_predictions_is_skipped(tmp_path: Path) -> None:
    photo = _jpeg(tmp_path / "a.jpg")
    preds = write_predictions(
        tmp_path / "preds.parquet", [{"path": photo, "pred_lat": -1.5, "pred_lon": -2.5}]
    )
    _jpeg(photo, size=(64, 49))  # edited after the predictions were made
    edited = photo.read_bytes()
    summary = run_write_exif(WriteOptions(preds, journal=tmp_path / "j.jsonl"))
    assert summary.skipped == {engine.SKIP_CHANGED: 1}
    assert photo.read_bytes() == edited and summary.journal is None


# --------------------------------------------------------------------------------------------------
# Undo
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("writer", WRITERS)
def test_undo_restores_exact_bytes_and_times(photos: Path, tmp_path: Path, writer: str) -> None:
    original = _snapshot(photos)
    preds = write_predictions(tmp_path / "preds.parquet", _written_rows(photos))
    journal = tmp_path / "j.jsonl"
    summary = run_write_exif(WriteOptions(preds, overwrite_gps=True, writer=writer, journal=journal))
    assert summary.written >= 6
    changed = [p for p, v in _snapshot(photos).items() if v != original[p]]
    assert len(changed) == summary.written
    assert all(_snapshot(photos)[p][1] == original[p][1] for p in original)  # mtimes kept

    header, records = read_journal(journal)
    assert header["writer"] == summary.writer and len(records) == summary.written
    assert {r["path"] for r in records} == set(changed)
    assert all(r["old_hash"] != r["new_hash"] and r["backup"] for r in records)

    undone = run_undo(journal)
    assert undone.restored == summary.written and not undone.failed
    assert _snapshot(photos) == original
    again = run_undo(journal)  # idempotent
    assert again.restored == 0 and again.skipped == {"already original": summary.written}


def test_undo_leaves_files_edited_after_the_write(tmp_path: Path) -> None:
    photos = [_jpeg(tmp_path / f"{i}.jpg") for i in range(2)]
    preds = write_predictions(
        tmp_path / "preds.parquet", [{"path": p, "pred_lat": -5, "pred_lon": -6} for p in photos]
    )
    journal = tmp_path / "j.jsonl"
    run_write_exif(WriteOptions(preds, journal=journal, writer="python"))
    photos[1].write_bytes(photos[1].read_bytes() + b"edited later")
    edited = photos[1].read_bytes()
    undone = run_undo(journal)
    assert undone.restored == 1 and undone.skipped == {"changed after write-exif; left alone": 1}
    assert photos[1].read_bytes() == edited


def test_two_runs_in_one_journal_unwind_in_order(tmp_path: Path) -> None:
    photo = _jpeg(tmp_path / "a.jpg")
    original = photo.read_bytes()
    journal = tmp_path / "j.jsonl"
    preds = write_predictions(tmp_path / "p1.parquet", [{"path": photo, "pred_lat": -1.0, "pred_lon": -1.0}])
    run_write_exif(WriteOptions(preds, journal=journal, writer="python"))
    preds = write_predictions(tmp_path / "p2.parquet", [{"path": photo, "pred_lat": 2.0, "pred_lon": 2.0}])
    assert (
        run_write_exif(WriteOptions(preds, journal=journal, writer="python", overwrite_gps=True)).written == 1
    )
    assert read_exif(photo).gt_lat == pytest.approx(2.0)
    assert run_undo(journal).restored == 2
    assert photo.read_bytes() == original


def test_backup_copies_when_hard_links_are_impossible(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A journal on another file system keeps copies (fsynced) instead of hard links; undo is the same."""
    import geotag.io.journal as journal_module

    def no_link(src: object, dst: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(journal_module.os, "link", no_link)
    photo = _jpeg(tmp_path / "a.jpg")
    original = photo.read_bytes()
    preds = write_predictions(
        tmp_path / "preds.parquet", [{"path": photo, "pred_lat": -1.0, "pred_lon": -1.0}]
    )
    journal = tmp_path / "j.jsonl"
    assert run_write_exif(WriteOptions(preds, journal=journal, writer="python")).written == 1
    backups = list((tmp_path / "j.jsonl.backup").iterdir())
    assert [b.read_bytes() for b in backups] == [original] and backups[0].stat().st_nlink == 1
    monkeypatch.undo()
    assert run_undo(journal).restored == 1 and photo.read_bytes() == original


def test_no_backup_undo_refuses_with_old_gps(tmp_path: Path) -> None:
    photo = _jpeg(tmp_path / "a.jpg", gps=True)
    preds = write_predictions(
        tmp_path / "preds.parquet", [{"path": photo, "pred_lat": -1.0, "pred_lon": -1.0}]
    )
    journal = tmp_path / "j.jsonl"
    proc = _cli(str(preds), "--overwrite-gps", "--no-backup", "--journal", str(journal), "--writer", "python")
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "j.jsonl.backup").exists()
    _, records = read_journal(journal)
    assert records[0]["old_gps"]["lat"] == pytest.approx(48.85837, abs=1e-6)
    proc = _cli("--undo", str(journal))
    assert proc.returncode == 1
    assert "--no-backup" in proc.stderr and "48.85837" in proc.stderr


def test_journal_torn_last_line_is_ignored(tmp_path: Path) -> None:
    photo = _jpeg(tmp_path / "a.jpg")
    original = photo.read_bytes()
    preds = write_predictions(
        tmp_path / "preds.parquet", [{"path": photo, "pred_lat": -1.0, "pred_lon": -1.0}]
    )
    journal = tmp_path / "j.jsonl"
    run_write_exif(WriteOptions(preds, journal=journal, writer="python"))
    with open(journal, "ab") as fh:
        fh.write(b'{"op":"photo","path":"/x')  # a power cut mid-append
    assert run_undo(journal).restored == 1 and photo.read_bytes() == original


# --------------------------------------------------------------------------------------------------
# Safety: read-only, full disk, crashes, kills
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("writer", WRITERS)
def test_read_only_file_is_left_alone(tmp_path: Path, writer: str) -> None:
    photo = _jpeg(tmp_path / "a.jpg")
    photo.chmod(0o444)
    preds = write_predictions(
        tmp_path / "preds.parquet", [{"path": photo, "pred_lat": -1.0, "pred_lon": -1.0}]
    )
    before = photo.read_bytes()
    proc = _cli(str(preds), "--writer", writer, "--journal", str(tmp_path / "j.jsonl"))
    assert proc.returncode == 1
    assert "read-only file" in proc.stderr and "failed 1" in proc.stderr
    assert photo.read_bytes() == before


@pytest.mark.parametrize("where", ["fsync", "journal"])
def test_full_disk_leaves_photo_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    photo = _jpeg(tmp_path / "a.jpg")
    before = (photo.read_bytes(), photo.stat().st_mtime_ns)
    preds = write_predictions(
        tmp_path / "preds.parquet", [{"path": photo, "pred_lat": -1.0, "pred_lon": -1.0}]
    )

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    if where == "fsync":
        monkeypatch.setattr(engine.os, "fsync", full)
    else:
        monkeypatch.setattr(engine.Journal, "append_many", full)
    summary = run_write_exif(WriteOptions(preds, journal=tmp_path / "j.jsonl", writer="python"))
    assert summary.failed == [(str(photo), "disk full")]
    assert (photo.read_bytes(), photo.stat().st_mtime_ns) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith((".tmp", "geotag-tmp"))] == []


def test_crash_between_journal_and_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash after the journal record, before the rename: that photo is untouched, earlier ones
    complete; undo restores the earlier ones and knows the last one is original."""
    photos = [_jpeg(tmp_path / f"{i}.jpg") for i in range(3)]
    originals = [p.read_bytes() for p in photos]
    preds = write_predictions(
        tmp_path / "preds.parquet", [{"path": p, "pred_lat": -3, "pred_lon": -4} for p in photos]
    )
    real = engine.replace_checked
    calls = []

    def crash_on_second(fd: int, tmp: Path, target: Path, **kwargs: bool) -> None:
        calls.append(target)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the process dies here
        real(fd, tmp, target, **kwargs)

    monkeypatch.setattr(engine, "replace_checked", crash_on_second)
    journal = tmp_path / "j.jsonl"
    with pytest.raises(KeyboardInterrupt):
        run_write_exif(WriteOptions(preds, journal=journal, writer="python"))
    monkeypatch.undo()
    assert photos[0].read_bytes() != originals[0] and read_exif(photos[0]).gt_lat == pytest.approx(-3)
    assert photos[1].read_bytes() == originals[1]
    assert photos[2].read_bytes() == originals[2]
    assert len(read_journal(journal)[1]) == 3  # the batch was journalled before its first rename
    assert not list(tmp_path.glob(".*tmp"))
    undone = run_undo(journal)
    assert undone.restored == 1 and undone.skipped == {"already original": 2}
    assert [p.read_bytes() for p in photos] == originals


def test_stale_temp_file_from_a_killed_run_is_removed(tmp_path: Path) -> None:
    photo = _jpeg(tmp_path / "a.jpg")
    stale = tmp_path / ".a.jpg.k1ll3d.geotag-tmp"  # a temp folder a killed run left
    stale.mkdir()
    (stale / "new.tmp").write_bytes(b"half a file")
    preds = write_predictions(
        tmp_path / "preds.parquet", [{"path": photo, "pred_lat": -1.0, "pred_lon": -1.0}]
    )
    assert run_write_exif(WriteOptions(preds, journal=tmp_path / "j.jsonl", writer="python")).written == 1
    assert not stale.exists()


@pytest.mark.slow
def test_kill_9_leaves_every_photo_whole(tmp_path: Path) -> None:
    """SIGKILL in the middle of a real run: every photo is either original or completely written
    (the journal's new hash, readable GPS), and undo brings all of them back."""
    folder = tmp_path / "many"
    first = _jpeg(folder / "0000.jpg", size=(320, 240))
    data = first.read_bytes()
    photos = [first] + [folder / f"{i:04d}.jpg" for i in range(1, 300)]
    for p in photos[1:]:
        p.write_bytes(data)
    original = {str(p): data for p in photos}
    preds = write_predictions(
        tmp_path / "preds.parquet", [{"path": p, "pred_lat": -7.5, "pred_lon": -8.5} for p in photos]
    )
    journal = tmp_path / "j.jsonl"
    proc = subprocess.Popen(
        [*GEOTAG, "write-exif", str(preds), "--journal", str(journal)], stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        # a batch of 64 is journalled before its renames: once the second batch is being journalled,
        # the first 64 photos are written, so the kill lands among finished and unfinished work
        if journal.exists() and journal.read_bytes().count(b"\n") > 70:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _, records = read_journal(journal)
    new_hashes = {r["new_hash"] for r in records}
    written = 0
    for p in photos:
        h = image_id(p)
        if p.read_bytes() == original[str(p)]:
            continue
        assert h in new_hashes, f"{p.name} is neither original nor a journalled, complete write"
        assert read_exif(p).gt_lat == pytest.approx(-7.5)
        written += 1
    assert written >= 20
    run_undo(journal)
    assert all(p.read_bytes() == data for p in photos)


# --------------------------------------------------------------------------------------------------
# Sidecars
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["photo.jpg.xmp", "photo.xmp"])
@pytest.mark.parametrize("writer", WRITERS)
def test_sidecar_written_photo_untouched(photos: Path, tmp_path: Path, style: str, writer: str) -> None:
    rows = [
        r for r in _written_rows(photos) if r["path"].suffix.lower() in (".jpg", ".png", ".heic", ".tiff")
    ]
    rows = [r for r in rows if "untagged" not in str(r["path"])]
    preds = write_predictions(tmp_path / "preds.parquet", rows)
    before = _snapshot(photos)
    journal = tmp_path / "j.jsonl"
    summary = run_write_exif(
        WriteOptions(
            preds, sidecar=True, sidecar_name=style, overwrite_gps=True, writer=writer, journal=journal
        )
    )
    assert summary.written == len(rows) and not summary.failed
    after = _snapshot(photos)
    assert {p: after[p] for p in before} == before  # photos untouched, bytes and mtimes
    sidecars = []
    for row in rows:
        photo = row["path"]
        sidecar = (
            photo.with_name(photo.name + ".xmp") if style == "photo.jpg.xmp" else photo.with_suffix(".xmp")
        )
        lat, lon, props = read_sidecar_gps(sidecar.read_bytes())
        assert (lat, lon) == (
            pytest.approx(row["pred_lat"], abs=1e-9),
            pytest.approx(row["pred_lon"], abs=1e-9),
        )
        assert (
            "model=geoclip" in props["GPSProcessingMethod"] and props["GPSHPositioningError"] == "2500000/100"
        )
        sidecars.append((sidecar, row))
    if EXIFTOOL:  # what Lightroom / darktable / digiKam will read: exiftool's view of the sidecar
        dump = exiftool_dump([s for s, _ in sidecars])
        for sidecar, row in sidecars:
            tags = dump[str(sidecar)]
            assert tags["XMP-exif:GPSLatitude"].endswith("S" if row["pred_lat"] < 0 else "N")
            assert tags["XMP-exif:GPSLongitude"].endswith("W" if row["pred_lon"] < 0 else "E")
            assert tags["XMP-exif:GPSVersionID"] == "2.3.0.0"
            assert tags["XMP-exif:GPSHPositioningError"] == "25000 m"
    assert run_undo(journal).restored == len(rows)
    assert _snapshot(photos) == before  # created sidecars are removed again


DARKTABLE_SIDECAR = b"""<?xml version="1.0" encoding="UTF-8"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 4.4.0-Exiv2">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:darktable="http://darktable.sf.net/"
    xmlns:exif="http://ns.adobe.com/exif/1.0/"
    xmp:Rating="3"
    darktable:xmp_version="5"
    exif:GPSLatitude="10,30.00000000N">
   <darktable:history>
    <rdf:Seq>
     <rdf:li darktable:operation="exposure" darktable:enabled="1"/>
    </rdf:Seq>
   </darktable:history>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"""


def test_sidecar_merges_into_existing_and_respects_its_gps(tmp_path: Path) -> None:
    photo = _jpeg(tmp_path / "a.jpg")
    sidecar = tmp_path / "a.jpg.xmp"
    sidecar.write_bytes(DARKTABLE_SIDECAR)
    preds = write_predictions(
        tmp_path / "preds.parquet", [{"path": photo, "pred_lat": -12.25, "pred_lon": -45.5}]
    )
    journal = tmp_path / "j.jsonl"
    summary = run_write_exif(WriteOptions(preds, sidecar=True, journal=journal, writer="python"))
    assert summary.skipped == {engine.SKIP_SIDECAR_GPS: 1} and sidecar.read_bytes() == DARKTABLE_SIDECAR

    summary = run_write_exif(
        WriteOptions(preds, sidecar=True, overwrite_gps=True, journal=journal, writer="python")
    )
    assert summary.written == 1
    merged = sidecar.read_bytes()
    lat, lon, props = read_sidecar_gps(merged)
    assert (lat, lon) == (pytest.approx(-12.25), pytest.approx(-45.5))
    assert merged.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<x:xmpmeta')
    for kept in (b'xmp:Rating="3"', b'darktable:operation="exposure"', b'darktable:xmp_version="5"'):
        assert kept in merged
    assert b"10,30.00000000N" not in merged  # one position only
    if EXIFTOOL:
        tags = exiftool_dump([sidecar])[str(sidecar)]
        assert tags["XMP-xmp:Rating"] == 3 and tags["XMP-exif:GPSLatitude"].endswith("S")
    assert run_undo(journal).restored == 1
    assert sidecar.read_bytes() == DARKTABLE_SIDECAR


def test_build_sidecar_fresh_is_plain_xmp() -> None:
    data = build_sidecar(None, GpsFix(-1.5, 2.5, model="geoclip", confidence=0.25, error_km=None))
    lat, lon, props = read_sidecar_gps(data)
    assert (lat, lon) == (-1.5, 2.5) and "GPSHPositioningError" not in props
    assert (
        props["GPSProcessingMethod"].startswith("geotag ")
        and "confidence=0.250" in props["GPSProcessingMethod"]
    )


# --------------------------------------------------------------------------------------------------
# exiftool specifics
# --------------------------------------------------------------------------------------------------


@needs_exiftool
def test_overwrite_updates_xmp_gps_too(tmp_path: Path) -> None:
    """A photo that keeps GPS in EXIF and XMP gets both updated, with the right hemisphere in each;
    the fallback writer refuses such a file rather than leave the two disagreeing."""
    photo = _jpeg(tmp_path / "a.jpg", gps=True)
    subprocess.run(
        [
            EXIFTOOL,
            "-q",
            "-overwrite_original",
            "-XMP-exif:GPSLatitude=48.8 N",
            "-XMP-exif:GPSLongitude=2.3 E",
            str(photo),
        ],
        check=True,
    )
    preds = write_predictions(
        tmp_path / "preds.parquet", [{"path": photo, "pred_lat": -33.25, "pred_lon": -70.5}]
    )
    summary = run_write_exif(
        WriteOptions(preds, overwrite_gps=True, writer="python", journal=tmp_path / "j1.jsonl")
    )
    assert summary.failed and "XMP" in summary.failed[0][1]
    summary = run_write_exif(WriteOptions(preds, overwrite_gps=True, journal=tmp_path / "j.jsonl"))
    assert summary.written == 1
    out = subprocess.run(
        [
            EXIFTOOL,
            "-j",
            "-n",
            "-XMP-exif:GPSLatitude",
            "-XMP-exif:GPSLongitude",
            "-GPSLatitudeRef",
            str(photo),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    tags = json.loads(out.stdout)[0]
    assert tags["GPSLatitude"] == pytest.approx(-33.25) and tags["GPSLongitude"] == pytest.approx(-70.5)
    assert tags["GPSLatitudeRef"] == "S"


@needs_exiftool
def test_overwrite_without_error_radius_drops_a_stale_one(tmp_path: Path) -> None:
    photo = _jpeg(tmp_path / "a.jpg")
    journal = tmp_path / "j.jsonl"
    preds = write_predictions(tmp_path / "p1.parquet", [{"path": photo, "pred_lat": -1.0, "pred_lon": -1.0}])
    run_write_exif(WriteOptions(preds, journal=journal))
    preds = write_predictions(
        tmp_path / "p2.parquet", [{"path": photo, "pred_lat": -2.0, "pred_lon": -2.0, "error_km": None}]
    )
    assert run_write_exif(WriteOptions(preds, journal=journal, overwrite_gps=True)).written == 1
    tags = exiftool_dump([photo])[str(photo)]
    assert "GPS:GPSHPositioningError" not in tags and "error radius" not in tags["GPS:GPSProcessingMethod"]


@needs_exiftool
def test_awkward_file_names(tmp_path: Path) -> None:
    """Names exiftool's argument file could mangle: blanks, '#', backslashes, line breaks, '$@'."""
    names = [
        " lead.jpg",
        "#hash.jpg",
        "back\\slash.jpg",
        "ünï cödé.jpg",
        "trail .jpg",
        "new\nline.jpg",
        "$@.jpg",
    ]
    photos = [_jpeg(tmp_path / n) for n in names]
    preds = write_predictions(
        tmp_path / "preds.parquet", [{"path": p, "pred_lat": -9.0, "pred_lon": -9.0} for p in photos]
    )
    summary = run_write_exif(WriteOptions(preds, journal=tmp_path / "j.jsonl", writer="exiftool"))
    assert summary.written == len(names), summary.failed
    assert all(read_exif(p).gt_lon == pytest.approx(-9.0) for p in photos)


@needs_exiftool
def test_exiftool_process_survives_a_kill_and_a_hang(tmp_path: Path) -> None:
    """A dead exiftool is restarted on the next command; a hung one is killed after the timeout
    (the file being written then fails, alone) and replaced."""
    from geotag.io.exif_write import ExiftoolError

    proc = ExiftoolProcess(EXIFTOOL, timeout=1.0)
    try:
        assert proc.execute(["-ver"])[0].strip()
        proc._proc.kill()  # type: ignore[union-attr]
        proc._proc.wait()  # type: ignore[union-attr]
        assert proc.execute(["-ver"])[0].strip()
    finally:
        proc.close()
    hung = tmp_path / "hung-exiftool"
    hung.write_text("#!/bin/sh\nexec sleep 600\n")
    hung.chmod(0o755)
    slow = ExiftoolProcess(str(hung), timeout=0.5)
    with pytest.raises(ExiftoolError, match="no answer"):
        slow.start()
    assert slow._proc is None  # killed, not left behind
    with pytest.raises(InputError, match="does not answer"):
        ExiftoolWriter(str(hung), timeout=0.5)


def test_python_writer_keeps_everything_but_the_exif_segment(tmp_path: Path) -> None:
    photo = _jpeg(tmp_path / "a.jpg", gps=True)
    out = tmp_path / "b.jpg"
    writer = PythonJpegWriter()
    fix = GpsFix(-1.25, -2.5, model="geoclip", confidence=0.5, error_km=3.0)
    existing = writer.read_gps(photo)
    assert existing.has_gps and existing.lat == pytest.approx(48.85837, abs=1e-6)
    writer.write(photo, out, fix, existing)
    writer.verify(out, fix, existing)
    assert image_data(out) == image_data(photo)
    info, old = read_exif(out), read_exif(photo)
    assert (info.camera_make, info.taken_at) == (old.camera_make, old.taken_at)


# --------------------------------------------------------------------------------------------------
# CLI edges
# --------------------------------------------------------------------------------------------------


def test_cli_usage_errors_exit_2(tmp_path: Path) -> None:
    assert _cli(str(tmp_path / "missing.parquet")).returncode == 2
    proc = _cli()
    assert proc.returncode == 2 and "predictions file" in proc.stderr
    (tmp_path / "j.jsonl").write_text("hello\n")
    proc = _cli("--undo", str(tmp_path / "j.jsonl"))
    assert proc.returncode == 2 and "not a geotag write-exif journal" in proc.stderr
    photo = _jpeg(tmp_path / "a.jpg")
    preds = write_predictions(tmp_path / "preds.parquet", [{"path": photo, "pred_lat": 1.0, "pred_lon": 1.0}])
    assert _cli(str(preds), "--undo", str(tmp_path / "j.jsonl")).returncode == 2
    assert _cli(str(preds), "--writer", "magic").returncode == 2
    assert _cli(str(preds), "--sidecar", "--sidecar-name", "x.xmp").returncode == 2
    proc = _cli(str(preds), "--journal", str(tmp_path / "j.jsonl"))  # not a journal: never appended to
    assert proc.returncode == 2 and (tmp_path / "j.jsonl").read_text() == "hello\n"
    proc = _cli(str(preds), "--writer", "exiftool", env={"GEOTAG_EXIFTOOL": "none"})
    assert proc.returncode == 2 and "exiftool not found" in proc.stderr
    pq.write_table(pq.read_table(preds).drop(["pred_lat"]), tmp_path / "bad.parquet")
    proc = _cli(str(tmp_path / "bad.parquet"))
    assert proc.returncode == 2 and "pred_lat" in proc.stderr
    assert read_exif(photo).gt_lat is None  # nothing was written by any of these


def test_radius_is_written_in_plain_kilometres() -> None:
    """Issue 28: `error_km=7.07e-13` was written; the text is the dry run's, the tag the same radius."""
    from geotag.engine.write_exif import FileResult
    from geotag.io.exif_write import provenance_text, radius_text

    assert [radius_text(km) for km in (13_500.0, 25.0, 0.35, 7.07e-13)] == [
        "13,500 km",
        "25 km",
        "0.35 km",
        "0.00 km",
    ]
    text = provenance_text("knn", 0.9, 25.0)
    assert text.endswith("; model=knn; confidence=0.900; error radius 25 km") and "e-" not in text
    fix = GpsFix(1.0, 2.0, model="knn", confidence=0.9, error_km=25.0)
    assert fix.error_m == 25_000.0 and fix.method == text
    line = FileResult("/p.jpg", "would write", target="/p.jpg", fix=fix).describe(dry_run=True)
    assert "error radius 25 km" in line
