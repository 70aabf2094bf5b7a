"""write-exif of positions placed by time (`source` track / sibling): written as exiftool's -geotag
writes them (position with refs, altitude with its ref, GPSDateStamp / GPSTimeStamp in UTC,
GPSMapDatum), marked with how they were found, with both writers, in sidecars and dry runs; undo and
the measured-GPS rule as for any estimate."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from write_exif_util import EXIFTOOL, write_predictions

from geotag.engine.reviewed import apply_decisions
from geotag.engine.write_exif import WriteOptions, run_undo, run_write_exif, select_fix
from geotag.io.decisions import Decision
from geotag.io.exif import read_exif
from geotag.io.exif_write import GpsFix, _parse_photo, read_sidecar_gps
from geotag.sample_data import PLACES, UNTAGGED, make_exif, render

GEOTAG = [sys.executable, "-m", "geotag.cli"]
needs_exiftool = pytest.mark.skipif(
    EXIFTOOL is None, reason="exiftool not installed (apt-get install libimage-exiftool-perl)"
)
WRITERS = [pytest.param("exiftool", marks=needs_exiftool), "python"]

# South and west, below sea level (a mine in the Atacama would do; the numbers are what count).
LAT, LON, ALT = -23.456789, -68.123456, -12.5
# Local 01:30 on 1 March at +02:00 is 23:30:15.25 UTC on 29 February: the UTC date is the day before.
LOCAL = datetime(2024, 3, 1, 1, 30, 15, 250000)
UTC_TIME = LOCAL.replace(tzinfo=timezone(timedelta(hours=2))).astimezone(UTC)


def _photo(path: Path, *, gps: bool = False) -> Path:
    place = PLACES[0] if gps else UNTAGGED[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    render(place, (64, 48)).save(path, "JPEG", quality=85, exif=make_exif(place, LOCAL).tobytes())
    return path


def _track_row(photo: Path, **extra: object) -> dict[str, object]:
    return {
        "path": photo,
        "pred_lat": LAT,
        "pred_lon": LON,
        "pred_alt": ALT,
        "source": "track",
        "model": None,
        "confidence": 0.99,
        "error_km": 0.015,
        "taken_at_utc": UTC_TIME,
        "fix_before": UTC_TIME - timedelta(seconds=12),
        "fix_after": UTC_TIME + timedelta(seconds=20),
        "fix_dt_s": 12.0,
        "fix_source": "walk.gpx",
        **extra,
    }


def _exiftool_json(path: Path) -> dict[str, object]:
    assert EXIFTOOL is not None
    out = subprocess.run(
        [EXIFTOOL, "-n", "-j", "-G1", "-GPS:all", str(path)], capture_output=True, check=True
    )
    return json.loads(out.stdout)[0]


def test_wording_says_how_the_position_was_found() -> None:
    base = GpsFix(1.0, 2.0, error_km=0.012, time_utc=UTC_TIME, fix_dt_s=12.0)
    interp = GpsFix(**{**base.__dict__, "source": "track", "interpolated": True})
    nearest = GpsFix(**{**base.__dict__, "source": "track", "fix_dt_s": 95.4})
    sibling = GpsFix(**{**base.__dict__, "source": "sibling", "interpolated": True, "fix_dt_s": 40.0})
    assert "track interpolation, 12 s from a fix" in interp.method
    assert "nearest track fix, 95 s away" in nearest.method
    assert "sibling photos interpolation, 40 s from one" in sibling.method
    for fix in (interp, nearest, sibling):
        assert "(not measured by this camera)" in fix.method and "error radius 12 m" in fix.method
        assert "model=" not in fix.method and "confidence" not in fix.method
    # a model's estimate keeps its wording; `fused` is a model's too
    for source in (None, "model", "fused"):
        fix = GpsFix(1.0, 2.0, model="geoclip", confidence=0.5, source=source, time_utc=UTC_TIME)
        assert fix.method.endswith("estimate (not measured); model=geoclip; confidence=0.500")
        assert not fix.by_time


def test_select_fix_reads_the_time_columns() -> None:
    row = {**_track_row(Path("x.jpg")), "status": "ok", "gt_lat": None, "gt_lon": None}
    fix, why = select_fix(row, WriteOptions(Path("p.parquet")))
    assert why is None and fix is not None and fix.by_time and fix.interpolated
    assert (fix.alt, fix.time_utc, fix.gps_date, fix.gps_time_text) == (
        ALT,
        UTC_TIME,
        "2024:02:29",
        "23:30:15.25",
    )
    fix, _ = select_fix({**row, "fix_after": None, "pred_alt": None}, WriteOptions(Path("p.parquet")))
    assert fix is not None and not fix.interpolated and fix.alt is None


@pytest.mark.parametrize("writer", WRITERS)
def test_track_row_written_like_exiftool_geotag(tmp_path: Path, writer: str) -> None:
    photo = _photo(tmp_path / "photos" / "cam.jpg")
    preds = write_predictions(tmp_path / "p.parquet", [_track_row(photo)])
    summary = run_write_exif(WriteOptions(preds, writer=writer))
    assert summary.written == 1, summary.describe()
    # geotag's own reader (exifread): signed position, altitude below sea level
    info = read_exif(photo)
    assert info.gt_lat == pytest.approx(LAT, abs=1e-6) and info.gt_lon == pytest.approx(LON, abs=1e-6)
    assert info.gt_alt == pytest.approx(ALT, abs=0.01)
    # the bytes themselves, through the python parser (independent of exiftool)
    tags = _parse_photo(photo.read_bytes()).gps_tags()
    assert (tags["GPSLatitudeRef"], tags["GPSLongitudeRef"], tags["GPSAltitudeRef"]) == ("S", "W", [1])
    assert tags["GPSDateStamp"] == "2024:02:29" and tags["GPSMapDatum"] == "WGS-84"
    assert tags["GPSTimeStamp"] == pytest.approx([23, 30, 15.25])
    assert "track interpolation, 12 s from a fix" in tags["GPSProcessingMethod"]
    assert tags["GPSHPositioningError"] == [pytest.approx(15.0)]
    if EXIFTOOL is not None:  # and what exiftool reads back, numerically
        got = _exiftool_json(photo)
        assert (
            got["GPS:GPSLatitude"] == pytest.approx(abs(LAT), abs=1e-7) and got["GPS:GPSLatitudeRef"] == "S"
        )
        assert (
            got["GPS:GPSLongitude"] == pytest.approx(abs(LON), abs=1e-7) and got["GPS:GPSLongitudeRef"] == "W"
        )
        assert got["GPS:GPSAltitude"] == pytest.approx(12.5) and got["GPS:GPSAltitudeRef"] == 1
        assert got["GPS:GPSDateStamp"] == "2024:02:29" and got["GPS:GPSMapDatum"] == "WGS-84"
        assert str(got["GPS:GPSTimeStamp"]).startswith("23:30:15.2")
        assert "not measured by this camera" in got["GPS:GPSProcessingMethod"]


@needs_exiftool
def test_same_tags_as_exiftool_geotag(tmp_path: Path) -> None:
    """exiftool -geotag on a copy, with a GPX whose fixes put the photo where the row does: the
    tags both write agree (what exiftool writes besides, geotag writes too)."""
    import shutil

    ours = _photo(tmp_path / "a" / "cam.jpg")
    theirs = tmp_path / "b" / "cam.jpg"
    theirs.parent.mkdir()
    shutil.copy2(ours, theirs)
    gpx = tmp_path / "t.gpx"
    t0, t1 = UTC_TIME - timedelta(seconds=10), UTC_TIME + timedelta(seconds=10)
    gpx.write_text(
        '<?xml version="1.0"?><gpx version="1.1" creator="t" xmlns="http://www.topografix.com/GPX/1/1">'
        "<trk><trkseg>"
        f'<trkpt lat="{LAT - 0.001}" lon="{LON - 0.001}"><ele>{ALT - 1}</ele>'
        f"<time>{t0:%Y-%m-%dT%H:%M:%S.%f}Z</time></trkpt>"
        f'<trkpt lat="{LAT + 0.001}" lon="{LON + 0.001}"><ele>{ALT + 1}</ele>'
        f"<time>{t1:%Y-%m-%dT%H:%M:%S.%f}Z</time></trkpt>"
        "</trkseg></trk></gpx>"
    )
    subprocess.run(
        [
            EXIFTOOL,
            "-q",
            "-geotag",
            str(gpx),
            "-geotime<${DateTimeOriginal}.25+02:00",
            "-overwrite_original",
            str(theirs),
        ],
        check=True,
        capture_output=True,
    )
    preds = write_predictions(tmp_path / "p.parquet", [_track_row(ours)])
    assert run_write_exif(WriteOptions(preds, writer="exiftool")).written == 1
    a, b = _exiftool_json(ours), _exiftool_json(theirs)
    for key in b:
        if key.startswith("GPS:") and key != "GPS:GPSVersionID":
            value = b[key]
            assert key in a, f"exiftool -geotag writes {key}, geotag does not"
            if isinstance(value, float):
                assert a[key] == pytest.approx(value, abs=1e-6), key
            elif key == "GPS:GPSTimeStamp":
                assert float(str(a[key]).split(":")[2]) == pytest.approx(float(str(value).split(":")[2]))
            else:
                assert a[key] == value, key


@pytest.mark.parametrize("writer", WRITERS)
def test_undo_is_byte_exact(tmp_path: Path, writer: str) -> None:
    photo = _photo(tmp_path / "photos" / "cam.jpg")
    before, mtime = photo.read_bytes(), photo.stat().st_mtime_ns
    preds = write_predictions(tmp_path / "p.parquet", [_track_row(photo, source="sibling", fix_after=None)])
    summary = run_write_exif(WriteOptions(preds, writer=writer))
    assert summary.written == 1 and photo.read_bytes() != before
    assert summary.journal is not None
    record = [json.loads(x) for x in summary.journal.read_text().splitlines()][-1]
    assert record["new_gps"]["source"] == "sibling" and record["new_gps"]["alt"] == ALT
    assert "nearest sibling photo, 12 s away" in record["new_gps"]["method"]
    undo = run_undo(summary.journal)
    assert undo.restored == 1, undo.describe()
    assert photo.read_bytes() == before and photo.stat().st_mtime_ns == mtime


@pytest.mark.parametrize("writer", WRITERS)
def test_measured_gps_is_not_replaced(tmp_path: Path, writer: str) -> None:
    photo = _photo(tmp_path / "photos" / "tagged.jpg", gps=True)
    before = photo.read_bytes()
    preds = write_predictions(tmp_path / "p.parquet", [_track_row(photo)])  # the row knows no GPS
    summary = run_write_exif(WriteOptions(preds, writer=writer))
    assert summary.written == 0 and sum(summary.skipped.values()) == 1
    assert "already has GPS" in next(iter(summary.skipped))
    assert photo.read_bytes() == before
    # --overwrite-gps replaces it, with the time tags of the track
    summary = run_write_exif(WriteOptions(preds, writer=writer, overwrite_gps=True))
    assert summary.written == 1, summary.describe()
    assert _parse_photo(photo.read_bytes()).gps_tags()["GPSDateStamp"] == "2024:02:29"


@pytest.mark.parametrize("writer", WRITERS)
def test_no_altitude_no_time_writes_what_is_known(tmp_path: Path, writer: str) -> None:
    photo = _photo(tmp_path / "photos" / "cam.jpg")
    row = _track_row(photo, pred_alt=None, fix_before=None, fix_dt_s=95.4)
    preds = write_predictions(tmp_path / "p.parquet", [row])
    assert run_write_exif(WriteOptions(preds, writer=writer)).written == 1
    tags = _parse_photo(photo.read_bytes()).gps_tags()
    assert "GPSAltitude" not in tags and "GPSAltitudeRef" not in tags
    assert tags["GPSMapDatum"] == "WGS-84"
    assert "nearest track fix, 95 s away" in tags["GPSProcessingMethod"]


@pytest.mark.parametrize("writer", WRITERS)
def test_model_rows_are_written_as_before(tmp_path: Path, writer: str) -> None:
    """A visual estimate gets no time stamps, datum or altitude (the model knows none)."""
    photo = _photo(tmp_path / "photos" / "cam.jpg")
    row = {"path": photo, "pred_lat": LAT, "pred_lon": LON, "source": "model", "taken_at_utc": UTC_TIME}
    preds = write_predictions(tmp_path / "p.parquet", [row])
    assert run_write_exif(WriteOptions(preds, writer=writer)).written == 1
    tags = _parse_photo(photo.read_bytes()).gps_tags()
    assert not {"GPSDateStamp", "GPSTimeStamp", "GPSMapDatum", "GPSAltitude"} & set(tags)
    assert "estimate (not measured); model=geoclip" in tags["GPSProcessingMethod"]


def test_sidecar_and_dry_run_say_the_same(tmp_path: Path) -> None:
    photo = _photo(tmp_path / "photos" / "cam.jpg")
    before = photo.read_bytes()
    preds = write_predictions(tmp_path / "p.parquet", [_track_row(photo)])
    dry = subprocess.run(
        [*GEOTAG, "write-exif", str(preds), "--dry-run", "--writer", "python"], capture_output=True, text=True
    )
    assert dry.returncode == 0, dry.stderr
    assert "-23.456789, -68.123456" in dry.stdout
    assert "track interpolation, 12 s from a fix, error radius 15 m, altitude -12.5 m" in dry.stdout
    assert "GPS time 2024:02:29 23:30:15.25 UTC" in dry.stdout
    summary = run_write_exif(WriteOptions(preds, sidecar=True, writer="python"))
    assert summary.written == 1 and photo.read_bytes() == before
    lat, lon, props = read_sidecar_gps(photo.with_name("cam.jpg.xmp").read_bytes())
    assert lat == pytest.approx(LAT, abs=1e-7) and lon == pytest.approx(LON, abs=1e-7)
    assert props["GPSAltitude"] == "1250/100" and props["GPSAltitudeRef"] == "1"
    assert props["GPSTimeStamp"] == "2024-02-29T23:30:15.25Z" and props["GPSMapDatum"] == "WGS-84"
    assert "track interpolation, 12 s from a fix" in props["GPSProcessingMethod"]
    if EXIFTOOL is not None:
        got = json.loads(
            subprocess.run(
                [EXIFTOOL, "-n", "-j", "-XMP-exif:all", str(photo.with_name("cam.jpg.xmp"))],
                capture_output=True,
                check=True,
            ).stdout
        )[0]
        assert got["GPSLatitude"] == pytest.approx(LAT, abs=1e-7) and got["GPSAltitude"] == pytest.approx(
            12.5
        )
        assert got["GPSAltitudeRef"] == 1 and str(got["GPSDateTime"]).startswith("2024:02:29 23:30:15.25")


def test_a_moved_track_position_is_written_as_an_estimate() -> None:
    row = {**_track_row(Path("x.jpg")), "image_id": "abc", "status": "ok"}
    keep = Decision(row=0, image_id="abc", action="accept", lat=LAT, lon=LON)
    moved = Decision(row=0, image_id="abc", action="accept", lat=1.0, lon=2.0, source="moved")
    (kept,) = apply_decisions(iter([row]), {0: keep})
    (out,) = apply_decisions(iter([row]), {0: moved})
    fix, _ = select_fix(kept, WriteOptions(Path("p.parquet")))
    assert fix is not None and fix.by_time
    fix, _ = select_fix(out, WriteOptions(Path("p.parquet")))
    assert fix is not None and not fix.by_time and "model=track (reviewed, moved)" in fix.method


@needs_exiftool
def test_overwrite_gives_the_photos_xmp_the_same_time_tags(tmp_path: Path) -> None:
    """--overwrite-gps on a photo that keeps GPS in XMP too: the XMP copy gets the same position,
    altitude, UTC date-time and datum, so the two never disagree; undo puts the bytes back."""
    assert EXIFTOOL is not None
    photo = _photo(tmp_path / "photos" / "x.jpg")
    subprocess.run(
        [
            EXIFTOOL,
            "-q",
            "-overwrite_original",
            "-XMP-exif:GPSLatitude=10.5",
            "-XMP-exif:GPSLongitude=20.5",
            "-XMP-exif:GPSAltitude=99",
            str(photo),
        ],
        check=True,
    )
    before = photo.read_bytes()
    preds = write_predictions(tmp_path / "p.parquet", [_track_row(photo)])
    summary = run_write_exif(WriteOptions(preds, writer="exiftool", overwrite_gps=True))
    assert summary.written == 1, summary.failed
    out = subprocess.run([EXIFTOOL, "-n", "-j", "-XMP-exif:all", str(photo)], capture_output=True, check=True)
    xmp = json.loads(out.stdout)[0]
    assert (xmp["GPSLatitude"], xmp["GPSLongitude"]) == (pytest.approx(LAT), pytest.approx(LON))
    assert (xmp["GPSAltitude"], xmp["GPSAltitudeRef"], xmp["GPSMapDatum"]) == (12.5, 1, "WGS-84")
    assert str(xmp["GPSDateTime"]).startswith("2024:02:29 23:30:15.25")
    assert summary.journal is not None and run_undo(summary.journal).restored == 1
    assert photo.read_bytes() == before
