"""geotag's matching against `exiftool -geotag` itself: the same GPX tracks and photos, the positions exiftool
writes read back, with a fixed zone, an IANA zone (exiftool reads it from TZ), clock offsets (-geosync),
drift between two sync points, other GeoMaxIntSecs / GeoMaxExtSecs, two track files and the antimeridian.
Skips where exiftool is not installed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import gpxpy
import gpxpy.gpx
import numpy as np
import pytest
from PIL import Image

from geotag.geo.clock import ClockCorrection
from geotag.geo.distance import haversine_np
from geotag.geo.fixes import Fixes
from geotag.geo.photo_time import resolve_photo_utc
from geotag.geo.timeline import match
from geotag.geo.zones import parse_exif_datetime

EXIFTOOL = shutil.which("exiftool")
pytestmark = pytest.mark.skipif(EXIFTOOL is None, reason="exiftool is not installed")

T0 = datetime(2024, 3, 10, 12, 0, tzinfo=UTC)


def exiftool_major() -> int:
    out = subprocess.run([EXIFTOOL, "-ver"], capture_output=True, text=True, check=True).stdout  # type: ignore[list-item]
    return int(out.strip().split(".")[0])


def write_gpx(
    path: Path, points: list[tuple[datetime, float, float, float | None]], segments: int = 1
) -> Path:
    """A GPX 1.1 track written with gpxpy; points split into `segments` track segments."""
    gpx = gpxpy.gpx.GPX()
    trk = gpxpy.gpx.GPXTrack()
    gpx.tracks.append(trk)
    for part in np.array_split(np.arange(len(points)), segments):
        seg = gpxpy.gpx.GPXTrackSegment()
        trk.segments.append(seg)
        for i in part:
            when, lat, lon, ele = points[int(i)]
            seg.points.append(gpxpy.gpx.GPXTrackPoint(lat, lon, elevation=ele, time=when))
    path.write_text(gpx.to_xml())
    return path


def fixes_from_gpx(paths: list[Path]) -> Fixes:
    """Fixes from GPX files read with gpxpy, merged by time (one source per file)."""
    parts = []
    for path in paths:
        rows = [
            (p.time.timestamp(), p.latitude, p.longitude, np.nan if p.elevation is None else p.elevation)
            for trk in gpxpy.parse(path.read_text()).tracks
            for seg in trk.segments
            for p in seg.points
        ]
        t, lat, lon, alt = (np.array(c, dtype=float) for c in zip(*rows, strict=True))
        parts.append(Fixes(t=t, lat=lat, lon=lon, alt=alt, sources=(str(path),)))
    return Fixes.concat(parts)


def make_photos(folder: Path, stamps: list[str]) -> list[Path]:
    """Tiny JPEGs whose only time is DateTimeOriginal `stamps[i]` (EXIF form)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, stamp in enumerate(stamps):
        exif = Image.Exif()
        exif.get_ifd(0x8769)[0x9003] = stamp
        path = folder / f"p{i:03d}.jpg"
        Image.new("RGB", (8, 8), (90, 120, 150)).save(path, exif=exif)
        paths.append(path)
    return paths


def exiftool_geotag(folder: Path, args: list[str], env_tz: str = "UTC") -> dict[str, tuple[float, ...]]:
    """Run exiftool -geotag on every photo in `folder`, return name -> (lat, lon, alt) as written (alt NaN
    where none), missing names where exiftool placed nothing."""
    env = {**os.environ, "TZ": env_tz}
    cmd = [EXIFTOOL, "-q", "-q", "-m", "-overwrite_original", *args, str(folder)]
    subprocess.run(cmd, check=False, capture_output=True, env=env, timeout=120)  # type: ignore[list-item]
    out = subprocess.run(
        [
            EXIFTOOL,
            "-j",
            "-n",
            "-Composite:GPSLatitude",
            "-Composite:GPSLongitude",
            "-Composite:GPSAltitude",
            str(folder),
        ],  # type: ignore[list-item]
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout
    found = {}
    for row in json.loads(out):
        if "GPSLatitude" in row:
            found[Path(row["SourceFile"]).name] = (
                row["GPSLatitude"],
                row["GPSLongitude"],
                row.get("GPSAltitude", np.nan),
            )
    return found


def compare(
    photos: list[Path], theirs: dict[str, tuple[float, ...]], ours, differ: frozenset = frozenset()
) -> None:  # noqa: ANN001
    """Same photos placed, positions within 1 m, same altitudes; `differ`: names whose position is known to
    differ (checked by the caller)."""
    names = [p.name for p in photos]
    placed = {n for n, ok in zip(names, ours.placed.tolist(), strict=True) if ok}
    assert placed == set(theirs), (
        f"placed differently: geotag only {placed - set(theirs)}, exiftool only {set(theirs) - placed}"
    )
    strict_alt = exiftool_major() >= 13  # 12.x skips the altitude fallback 13.x has (geotag follows 13.x)
    for i, name in enumerate(names):
        if name not in theirs or name in differ:
            continue
        lat, lon, alt = theirs[name]
        metres = float(haversine_np(lat, lon, ours.lat[i], ours.lon[i])) * 1000
        assert metres < 1.0, (
            f"{name}: {metres:.2f} m from exiftool ({lat}, {lon}) vs ({ours.lat[i]}, {ours.lon[i]})"
        )
        if np.isfinite(alt) and np.isfinite(ours.alt[i]):
            assert abs(alt - ours.alt[i]) < 0.01, name
        elif strict_alt or np.isfinite(alt):
            assert np.isnan(alt) == np.isnan(ours.alt[i]), f"{name}: altitude {alt} vs {ours.alt[i]}"


def buenos_aires_track(folder: Path) -> list[Path]:
    """Southern-western walk: gaps of 600, exactly 1800, 1801, 599 and 4200 s; one fix without altitude."""
    offsets = [0, 600, 2400, 4201, 4800, 9000]
    lats = [-34.60, -34.61, -34.63, -34.65, -34.66, -34.70]
    lons = [-58.40, -58.42, -58.45, -58.47, -58.49, -58.55]
    eles = [25.0, 30.0, None, 40.0, 45.0, 50.0]
    pts = [(T0 + timedelta(seconds=o), a, b, e) for o, a, b, e in zip(offsets, lats, lons, eles, strict=True)]
    return [write_gpx(folder / "ba.gpx", pts, segments=2)]


PHOTO_OFFSETS = [
    -1801,
    -1800,
    -1799,
    0,
    300,
    600,
    1500,
    2400,
    3000,
    3300,
    3301,
    4201,
    4500,
    6599,
    6600,
    6601,
    7199,
    7200,
    9000,
    10799,
    10800,
    10801,
]


def stamps_for(utc_times: list[datetime], zone: ZoneInfo | timedelta) -> list[str]:
    out = []
    for when in utc_times:
        local = when + zone if isinstance(zone, timedelta) else when.astimezone(zone)
        out.append(local.strftime("%Y:%m:%d %H:%M:%S"))
    return out


def ours_for(stamps: list[str], fixes: Fixes, tz: str, correction: ClockCorrection | None = None, **limits):  # noqa: ANN001, ANN003, ANN201
    local = np.array([parse_exif_datetime(s)[0] for s in stamps])
    camera_utc = resolve_photo_utc(local, tz=tz).utc_s
    photo_utc = correction.apply(camera_utc) if correction else camera_utc
    return match(photo_utc, fixes, **limits)


def test_fixed_zone_limits_and_southern_western(tmp_path: Path) -> None:
    tracks = buenos_aires_track(tmp_path)
    stamps = stamps_for([T0 + timedelta(seconds=o) for o in PHOTO_OFFSETS], timedelta(hours=2))
    photos = make_photos(tmp_path / "photos", stamps)
    theirs = exiftool_geotag(
        tmp_path / "photos", ["-geotag", str(tracks[0]), "-geotime<${DateTimeOriginal}+02:00"]
    )
    ours = ours_for(stamps, fixes_from_gpx(tracks), "+02:00")
    compare(photos, theirs, ours)
    assert 0 < len(theirs) < len(photos)  # the limits left some out


@pytest.mark.parametrize("geosync", ["+1:30", "-0:03:12", "1 00:00:05", "+12.5"])
def test_clock_offset_as_geosync(tmp_path: Path, geosync: str) -> None:
    tracks = buenos_aires_track(tmp_path)
    correction = ClockCorrection.constant(geosync)
    # the camera's clock is off by the offset: it reads true UTC minus the offset
    camera = [T0 + timedelta(seconds=o - correction.offset_s) for o in PHOTO_OFFSETS]
    stamps = stamps_for(camera, timedelta(hours=-3))
    photos = make_photos(tmp_path / "photos", stamps)
    theirs = exiftool_geotag(
        tmp_path / "photos",
        ["-geotag", str(tracks[0]), f"-geosync={geosync}", "-geotime<${DateTimeOriginal}-03:00"],
    )
    compare(photos, theirs, ours_for(stamps, fixes_from_gpx(tracks), "-03:00", correction))
    assert len(theirs) > 5


def test_iana_zone_across_both_dst_changes(tmp_path: Path) -> None:
    """exiftool reads a zone-less Geotime in the process's zone: TZ=Europe/Berlin against --tz Europe/Berlin,
    photos on both sides of the 2024-03-31 and 2024-10-27 changes."""
    berlin = ZoneInfo("Europe/Berlin")
    pts = []
    for day in (datetime(2024, 3, 31, tzinfo=UTC), datetime(2024, 10, 27, tzinfo=UTC)):
        for k in range(0, 19):  # 23:00 the day before to 02:00 UTC, every 10 minutes
            when = day - timedelta(hours=1) + timedelta(minutes=10 * k)
            pts.append((when, 52.50 + 0.001 * k, 13.40 + 0.002 * k, 30.0 + k))
    tracks = [write_gpx(tmp_path / "berlin.gpx", pts)]
    utc_times = [
        day - timedelta(hours=1) + timedelta(minutes=m)
        for day in (datetime(2024, 3, 31, tzinfo=UTC), datetime(2024, 10, 27, tzinfo=UTC))
        for m in (5, 47, 59, 61, 95, 133, 170, 200)
    ]
    # and wall-clock times that do not exist (spring) or happen twice (autumn): both read as fold=0
    stamps = [*stamps_for(utc_times, berlin), "2024:03:31 02:30:00", "2024:10:27 02:30:00"]
    photos = make_photos(tmp_path / "photos", stamps)
    theirs = exiftool_geotag(
        tmp_path / "photos",
        ["-geotag", str(tracks[0]), "-geotime<${DateTimeOriginal}"],
        env_tz="Europe/Berlin",
    )
    compare(photos, theirs, ours_for(stamps, fixes_from_gpx(tracks), "Europe/Berlin"))
    assert len(theirs) == len(photos)


def test_other_limits_and_two_track_files(tmp_path: Path) -> None:
    """-api GeoMaxIntSecs=600 GeoMaxExtSecs=900, two files with an 800 s gap between them (exiftool allows
    GeoMaxExtSecs before the first fix of a file) and an 800 s gap inside the second."""
    a = [(T0 + timedelta(seconds=o), -33.44 - o / 1e5, -70.66 + o / 1e5, 500.0) for o in (0, 300, 600)]
    b = [
        (T0 + timedelta(seconds=o), -33.40 - o / 1e5, -70.60 + o / 1e5, 600.0 + o / 100)
        for o in (1400, 1700, 2500, 2600)
    ]
    tracks = [write_gpx(tmp_path / "a.gpx", a), write_gpx(tmp_path / "b.gpx", b)]
    offsets = [-901, -900, 300, 650, 1000, 1001, 1399, 2000, 2100, 2101, 3500, 3501]
    stamps = stamps_for([T0 + timedelta(seconds=o) for o in offsets], timedelta(hours=-4))
    photos = make_photos(tmp_path / "photos", stamps)
    args = [
        "-geotag",
        str(tracks[0]),
        "-geotag",
        str(tracks[1]),
        "-api",
        "GeoMaxIntSecs=600",
        "-api",
        "GeoMaxExtSecs=900",
        "-geotime<${DateTimeOriginal}-04:00",
    ]
    theirs = exiftool_geotag(tmp_path / "photos", args)
    ours = ours_for(stamps, fixes_from_gpx(tracks), "-04:00", max_gap=600, max_extrapolate=900)
    compare(photos, theirs, ours)
    assert ours.method[offsets.index(1000)] == "interpolated"  # across the files' 800 s gap
    assert ours.method[offsets.index(2100)] == "nearest"  # the same gap inside one file


def test_antimeridian_as_exiftool(tmp_path: Path) -> None:
    """Eastward across 180 (179.9 -> -179.9) geotag and exiftool agree. Westward (-179.8 -> 179.95) exiftool's
    `$v0 < $v1 ? $v0 += 360 : $v1 += 360` parses as `($v0 < $v1 ? $v0 += 360 : $v1) += 360` in Perl and adds
    720 degrees to the first longitude, so it writes 60.1 E for a photo a third of the way; geotag takes
    the short way both ways."""
    lons = [179.8, 179.9, -179.9, -179.8, 179.95]
    pts = [(T0 + timedelta(seconds=60 * k), -17.0 - 0.01 * k, lon, 0.0) for k, lon in enumerate(lons)]
    tracks = [write_gpx(tmp_path / "fiji.gpx", pts)]
    offsets = [30, 60, 90, 100, 120, 150, 200, 210, 239]
    stamps = stamps_for([T0 + timedelta(seconds=o) for o in offsets], timedelta(hours=12))
    photos = make_photos(tmp_path / "photos", stamps)
    theirs = exiftool_geotag(
        tmp_path / "photos", ["-geotag", str(tracks[0]), "-geotime<${DateTimeOriginal}+12:00"]
    )
    ours = ours_for(stamps, fixes_from_gpx(tracks), "+12:00")
    westward = {i: o for i, o in enumerate(offsets) if 180 < o < 240}
    compare(photos, theirs, ours, differ=frozenset(photos[i].name for i in westward))
    assert abs(ours.lon[offsets.index(90)]) == pytest.approx(180.0)
    for i, o in westward.items():
        f = (o - 180) / 60
        short = (-179.8 + 360) * (1 - f) + 179.95 * f
        assert ours.lon[i] == pytest.approx(short - 360 if short >= 180 else short)
        perl = (-179.8 + 720) * (1 - f) + 179.95 * f - 360  # exiftool's result, reproduced
        assert theirs[photos[i].name][1] == pytest.approx(perl, abs=1e-6)
        assert theirs[photos[i].name][0] == pytest.approx(ours.lat[i], abs=1e-9)


def test_drift_between_two_geosync_points(tmp_path: Path) -> None:
    tracks = buenos_aires_track(tmp_path)
    # camera reads 13:59:00+02:00 at 12:00:00Z and 16:58:00+02:00 at 15:00:00Z: 60 s slow, then 120 s
    syncs = [
        ("2024:03:10 12:00:00Z", "2024:03:10 13:59:00+02:00"),
        ("2024:03:10 15:00:00Z", "2024:03:10 16:58:00+02:00"),
    ]
    points = []
    for gps, image in syncs:
        (g, go), (i, io) = parse_exif_datetime(gps), parse_exif_datetime(image)
        points.append((i - io, g - go))
    correction = ClockCorrection.from_sync_points(points)
    stamps = stamps_for([T0 + timedelta(seconds=o) for o in PHOTO_OFFSETS], timedelta(hours=2))
    photos = make_photos(tmp_path / "photos", stamps)
    args = ["-geotag", str(tracks[0])]
    for gps, image in syncs:
        args.append(f"-geosync={gps}@{image}")
    theirs = exiftool_geotag(tmp_path / "photos", [*args, "-geotime<${DateTimeOriginal}+02:00"])
    compare(photos, theirs, ours_for(stamps, fixes_from_gpx(tracks), "+02:00", correction))
    assert len(theirs) > 5


def test_stamps_are_exif_form() -> None:
    assert re.fullmatch(r"\d{4}:\d\d:\d\d \d\d:\d\d:\d\d", stamps_for([T0], timedelta(0))[0])
