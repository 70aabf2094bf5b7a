"""`geotag predict --model none --track` against exiftool's geotagging (issue 25, "Done when").

Two kinds of check:
- side by side with the exiftool installed here (skipped where there is none): the same photos and
  track, exiftool `-geotag` on copies; positions within 1 m and the same photos placed or left out at the
  --max-gap / --max-extrapolate limits, with a fixed zone, an IANA zone across a daylight-saving change,
  and a clock offset (`-geosync`);
- exiftool's own expected outputs (../shared/fixtures/tracks/exiftool, Geotag.t + Geotag_N.out) for the
  track formats geotag reads, end to end on a copy of its Writer.jpg given the test's Geotime.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image
from test_predict_time import geotag
from time_photos import EXIF_IFD, Route, distance_m, local, rows_by_name, write_gpx, write_photo

from conftest import fixture_dir

EXIFTOOL = shutil.which("exiftool")
needs_exiftool = pytest.mark.skipif(EXIFTOOL is None, reason="exiftool is not installed")
CAMERA = {"make": "Canon", "model": "Canon EOS R6"}


def exiftool_positions(folder: Path) -> dict[str, tuple[float, float, float | None]]:
    """Signed lat, lon (and altitude) of each photo exiftool wrote GPS into."""
    out = subprocess.run(
        [EXIFTOOL, "-j", "-n", "-Composite:GPSLatitude", "-Composite:GPSLongitude", "-GPS:GPSAltitude",
         "-GPS:GPSAltitudeRef", str(folder)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    found = {}
    for item in json.loads(out):
        if "GPSLatitude" in item:
            alt = item.get("GPSAltitude")
            if alt is not None and item.get("GPSAltitudeRef") == 1:
                alt = -alt
            found[Path(item["SourceFile"]).name] = (item["GPSLatitude"], item["GPSLongitude"], alt)
    return found


def run_exiftool(folder: Path, track: Path, args: list[str], tz: str | None = None) -> None:
    env = {**os.environ, "TZ": tz} if tz else dict(os.environ)
    subprocess.run(
        [EXIFTOOL, "-q", "-q", "-m", "-overwrite_original", "-geotag", str(track), *args, str(folder)],
        check=True, env=env, capture_output=True,
    )  # fmt: skip


def compare(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], photos: Path, track: Path, ours: list[str],
    theirs: list[str], tz_env: str | None = None,
) -> dict[str, tuple[float, float, float | None]]:  # fmt: skip
    copies = tmp_path / "exiftool"
    shutil.copytree(photos, copies)
    run_exiftool(copies, track, theirs, tz_env)
    expected = exiftool_positions(copies)
    out = tmp_path / "geotag.parquet"
    code, err = geotag(capsys, "predict", photos, "--out", out, "--model", "none", "--track", track, *ours)
    assert code == 0, err
    rows = rows_by_name(out)
    placed = {name for name, row in rows.items() if row["source"] == "track"}
    assert placed == set(expected), f"geotag placed {sorted(placed)}, exiftool {sorted(expected)}"
    for name, (lat, lon, alt) in expected.items():
        row = rows[name]
        assert distance_m((row["pred_lat"], row["pred_lon"]), (lat, lon)) < 1.0, name
        if alt is not None:
            assert row["pred_alt"] == pytest.approx(alt, abs=0.01), name
    for name in set(rows) - placed:
        assert "not placed by time" in rows[name]["gt_note"]
    return expected


def _sw_track(tmp_path: Path) -> tuple[Route, Path]:
    """Santiago de Chile (south and west): fixes every 30 s 10:00-10:20Z and 11:00-11:20Z (a 40 min gap)."""
    t0 = datetime(2024, 1, 15, 10, 0, tzinfo=UTC)
    route = Route(-33.45, -70.66, t0, east_ms=-7.0, north_ms=-3.0)
    times = [t0 + timedelta(seconds=30 * i) for i in range(41)]
    times += [t0 + timedelta(hours=1, seconds=30 * i) for i in range(41)]
    points = [(t, *route.at(t), 520.0 + (t - t0).total_seconds() / 60) for t in times]
    return route, write_gpx(tmp_path / "santiago.gpx", points)


def _shoot(folder: Path, t0: datetime, offsets_s: list[int], hours: float, slow_s: int = 0) -> None:
    folder.mkdir()
    for k, s in enumerate(offsets_s):
        write_photo(
            folder / f"p{k:02d}_{s}.jpg",
            local(t0 + timedelta(seconds=s), hours) - timedelta(seconds=slow_s),
            **CAMERA,
        )


# seconds from 10:00Z (the track: 0-1200 and 3600-4800): before it (1800 s and 1801 s early), inside, in
# the 2400 s gap (longer than --max-gap: the nearer fix, at most 1200 s away), after it (1800 / 1801 s late)
DEFAULT_LIMITS = [-1801, -1800, -600, 0, 17, 611, 1199, 1200, 1500, 2399, 3001, 3600, 4201, 6600, 6601]
# the same with --max-gap 600 --max-extrapolate 300: 300 s from a fix is still placed, 301 s not
TIGHT_LIMITS = [-301, -300, 5, 1200, 1500, 1501, 2099, 2100, 3300, 3599, 5100, 5101]


@needs_exiftool
def test_fixed_zone_and_the_limits_as_exiftool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    route, track = _sw_track(tmp_path)
    _shoot(tmp_path / "photos", route.t0, DEFAULT_LIMITS, hours=-3)
    expected = compare(
        tmp_path,
        capsys,
        tmp_path / "photos",
        track,
        ["--tz", "-03:00"],
        ["-geotime<${DateTimeOriginal}-03:00"],
    )
    assert {
        int(n.split("_")[1][:-4])
        for n in set(p.name for p in (tmp_path / "photos").iterdir()) - set(expected)
    } == {-1801, 6601}
    for name in expected:  # and both tools are right: the route is a straight line at constant speed
        s = int(name.split("_")[1][:-4])
        if 0 <= s <= 1200 or 3600 <= s <= 4800:
            row = rows_by_name(tmp_path / "geotag.parquet")[name]
            assert (
                distance_m((row["pred_lat"], row["pred_lon"]), route.at(route.t0 + timedelta(seconds=s)))
                < 0.5
            )


@needs_exiftool
def test_tight_limits_as_exiftool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    route, track = _sw_track(tmp_path)
    _shoot(tmp_path / "photos", route.t0, TIGHT_LIMITS, hours=-3)
    ours = ["--tz", "-03:00", "--max-gap", "600", "--max-extrapolate", "300"]
    theirs = ["-geotime<${DateTimeOriginal}-03:00", "-api", "GeoMaxIntSecs=600", "-api", "GeoMaxExtSecs=300"]
    expected = compare(tmp_path, capsys, tmp_path / "photos", track, ours, theirs)
    assert {int(n.split("_")[1][:-4]) for n in expected} == {-300, 5, 1200, 1500, 3300, 3599, 5100}


@needs_exiftool
def test_clock_offset_as_exiftool_geosync(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    route, track = _sw_track(tmp_path)
    _shoot(tmp_path / "photos", route.t0, [-1700, 100, 777, 1300, 3650, 4700], hours=-3, slow_s=192)
    ours = ["--tz", "-03:00", "--clock-offset", "+0:03:12"]
    theirs = ["-geotime<${DateTimeOriginal}-03:00", "-geosync=+0:03:12"]
    expected = compare(tmp_path, capsys, tmp_path / "photos", track, ours, theirs)
    assert len(expected) == 6
    rows = rows_by_name(tmp_path / "geotag.parquet")
    truth = route.at(route.t0 + timedelta(seconds=777))
    assert distance_m((rows["p02_777.jpg"]["pred_lat"], rows["p02_777.jpg"]["pred_lon"]), truth) < 0.5


@needs_exiftool
def test_iana_zone_across_daylight_saving_as_exiftool(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Berlin, 2024-03-31: 02:00 CET became 03:00 CEST at 01:00Z. exiftool takes the zone from TZ."""
    t0 = datetime(2024, 3, 31, 0, 20, tzinfo=UTC)
    route = Route(52.52, 13.40, t0, east_ms=12.0)
    times = [t0 + timedelta(seconds=20 * i) for i in range(241)]
    track = write_gpx(tmp_path / "berlin.gpx", [(t, *route.at(t), 34.0) for t in times])
    folder = tmp_path / "photos"
    folder.mkdir()
    for s in (600, 2350, 2399, 2401, 2470, 4000):  # 01:00Z is t0 + 2400 s
        when = t0 + timedelta(seconds=s)
        hours = 1 if when < datetime(2024, 3, 31, 1, 0, tzinfo=UTC) else 2
        write_photo(folder / f"b_{s}.jpg", local(when, hours), **CAMERA)
    expected = compare(tmp_path, capsys, folder, track, ["--tz", "Europe/Berlin"], [], tz_env="Europe/Berlin")
    assert len(expected) == 6
    rows = rows_by_name(tmp_path / "geotag.parquet")
    for name, row in rows.items():  # and by hand: the true position on the route
        s = int(name[2:-4])
        assert distance_m((row["pred_lat"], row["pred_lon"]), route.at(t0 + timedelta(seconds=s))) < 0.5
    assert rows["b_2399.jpg"]["taken_at"].hour == 1 and rows["b_2401.jpg"]["taken_at"].hour == 3


# ------------------------------------------------------------------------- exiftool's own test outputs

_DMS = r"(\d+) deg (\d+)' ([\d.]+)\""


def _expected(out_file: Path) -> tuple[float, float, float | None]:
    """(lat, lon, alt) from a Geotag_N.out: EXIF lines with Ref lines, XMP lines with N/S/E/W after the
    value, or test 7's verbose `GPS:GPSLatitude = 'D M S'` lines."""
    text = out_file.read_text()
    values = {}
    for axis, neg in (("Latitude", "S"), ("Longitude", "W")):
        m = re.search(rf"GPS {axis}: {_DMS}(?: ([NSEW]))?", text)
        if m:
            d, mi, s, ref = m.groups()
            if ref is None:
                ref = re.search(rf"GPS {axis} Ref: (\w+)", text).group(1)[0]  # type: ignore[union-attr]
        else:
            d, mi, s = re.search(rf"GPS:GPS{axis} = '(\S+) (\S+) (\S+)'", text).groups()  # type: ignore[union-attr]
            ref = re.search(rf"GPS:GPS{axis}Ref = '(\w)'", text).group(1)  # type: ignore[union-attr]
        value = float(d) + float(mi) / 60 + float(s) / 3600
        values[axis] = -value if ref == neg else value
    alt = re.search(r"GPS Altitude: ([\d.]+) m|GPS:GPSAltitude = '([\d.]+)'", text)
    altitude = float(alt.group(1) or alt.group(2)) if alt else None
    return values["Latitude"], values["Longitude"], altitude


def _writer_copy(
    src: Path, dest: Path, taken: str, subsec: str | None = None, make: str = "", model: str = ""
) -> Path:
    """Writer.jpg with an EXIF APP1 segment inserted after its SOI (its image bytes untouched)."""
    exif = Image.Exif()
    if make:
        exif[0x010F], exif[0x0110] = make, model
    exif.get_ifd(EXIF_IFD)[0x9003] = taken
    if subsec:
        exif.get_ifd(EXIF_IFD)[0x9291] = subsec
    payload = exif.tobytes()
    payload = payload if payload.startswith(b"Exif\0\0") else b"Exif\0\0" + payload
    data = src.read_bytes()
    dest.write_bytes(data[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + data[2:])
    return dest


CASES = {
    # test: (track, DateTimeOriginal, SubSecTimeOriginal, geotag's options); Geotime = DateTimeOriginal + zone
    2: ("Geotag.gpx", "2003:05:24 17:09:31", None, ["--tz", "UTC"]),
    3: ("Geotag.log", "2009:04:03 06:11:30", None, ["--tz", "-05:00"]),
    6: ("Geotag.xml", "PANASONIC", None, ["--tz", "+02:00", "--clock-offset", "1:30"]),
    8: ("Geotag2.log", "2010:04:24 06:27:30", None, ["--tz", "-05:00"]),
    9: ("Geotag.kml", "2013:11:13 09:04:31", None, ["--tz", "Z"]),
    13: ("Garmin.fit", "2026:04:01 10:00:44", "5", ["--tz", "-04:00"]),
}


@pytest.mark.parametrize("number", sorted(CASES))
def test_exiftool_geotag_tests(number: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from geotag.io.exif import read_exif

    src = fixture_dir("tracks") / "exiftool"
    track, taken, subsec, options = CASES[number]
    if taken == "PANASONIC":  # test 6: Geotime from Panasonic.jpg's DateTimeOriginal, +02:00
        taken = read_exif(src / "Panasonic.jpg").taken_at.strftime("%Y:%m:%d %H:%M:%S")  # type: ignore[union-attr]
    (tmp_path / "p").mkdir()
    _writer_copy(src / "Writer.jpg", tmp_path / "p" / "Writer.jpg", taken, subsec)
    out = tmp_path / "o.parquet"
    code, err = geotag(
        capsys, "predict", tmp_path / "p", "--out", out, "--model", "none", "--track", src / track, *options
    )
    assert code == 0, err
    row = rows_by_name(out)["Writer.jpg"]
    lat, lon, alt = _expected(src / f"Geotag_{number}.out")
    assert row["source"] == "track"
    assert distance_m((row["pred_lat"], row["pred_lon"]), (lat, lon)) < 1.0
    if alt is not None:
        assert row["pred_alt"] == pytest.approx(alt, abs=0.01)


def test_exiftool_test_4_too_far_after_the_track(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = fixture_dir("tracks") / "exiftool"
    (tmp_path / "p").mkdir()
    _writer_copy(src / "Writer.jpg", tmp_path / "p" / "Writer.jpg", "2009:04:03 08:00:00")
    out = tmp_path / "o.parquet"
    args = ["--track", src / "Geotag.log", "--tz", "-05:00"]
    assert geotag(capsys, "predict", tmp_path / "p", "--out", out, "--model", "none", *args)[0] == 0
    row = rows_by_name(out)["Writer.jpg"]
    assert row["pred_lat"] is None and "not placed by time: too far after the track" in row["gt_note"]


def test_exiftool_test_7_drift_from_two_sync_photos(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Geosync '2010:01:05 07:00:00Z@2001:08:01 12:00:00-02:00' and '09:01:00Z@14:00:00-02:00': two
    photos of the camera's clock become `--sync` points; Nikon.jpg's time is placed with the drift."""
    from geotag.io.exif import read_exif

    src = fixture_dir("tracks") / "exiftool"
    nikon = read_exif(src / "Nikon.jpg")
    camera = {"make": nikon.camera_make or "", "model": nikon.camera_model or ""}
    folder = tmp_path / "p"
    folder.mkdir()
    taken = nikon.taken_at.strftime("%Y:%m:%d %H:%M:%S")  # type: ignore[union-attr]
    _writer_copy(src / "Writer.jpg", folder / "Writer.jpg", taken, **camera)
    _writer_copy(src / "Writer.jpg", folder / "sync1.jpg", "2001:08:01 12:00:00", **camera)
    _writer_copy(src / "Writer.jpg", folder / "sync2.jpg", "2001:08:01 14:00:00", **camera)
    out = tmp_path / "o.parquet"
    code, err = geotag(
        capsys, "predict", folder, "--out", out, "--model", "none",
        "--track", src / "Geotag.igc", "--tz", "-02:00",
        "--sync", "sync1.jpg=2010:01:05 07:00:00Z",  # a file name, or a path
        "--sync", f"{folder / 'sync2.jpg'}=2010:01:05 09:01:00Z",
    )  # fmt: skip
    assert code == 0, err
    assert "drift between 2 sync points" in err
    row = rows_by_name(out)["Writer.jpg"]
    # exiftool: Geotime 2010:01:05 07:57:51.692 UTC
    assert (
        abs(row["taken_at_utc"].timestamp() - datetime(2010, 1, 5, 7, 57, 51, 692000, tzinfo=UTC).timestamp())
        < 0.001
    )
    lat, lon, alt = _expected(src / "Geotag_7.out")
    assert distance_m((row["pred_lat"], row["pred_lon"]), (lat, lon)) < 1.0
    assert row["pred_alt"] == pytest.approx(alt, abs=0.01)
