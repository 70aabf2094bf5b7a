"""geo/zones, geo/clock, geo/photo_time, geo/timeline: parsing, zones with daylight saving, clock drift, and
matching by exiftool's rules, checked by hand (DST, southern-western, antimeridian, the 1800 s limits)."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geotag.errors import InputError
from geotag.geo.clock import ClockCorrection, parse_clock_offset
from geotag.geo.distance import haversine_np
from geotag.geo.fixes import Fixes
from geotag.geo.photo_time import camera_gps_offsets, resolve_photo_utc
from geotag.geo.timeline import (
    DEFAULT_FIX_ERROR_M,
    UERE_M,
    confidence,
    error_km,
    fix_error_m,
    match,
)
from geotag.geo.zones import Zone, format_offset, parse_exif_datetime, parse_exif_offset, parse_zone, zone_at


def utc(text: str) -> float:
    """`2024-03-31 01:30:00` (UTC) -> seconds since 1970."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def naive(text: str) -> float:
    """A wall-clock time as local seconds (as if UTC), the form DateTimeOriginal is carried in."""
    return utc(text)


def track(times: list[float], lats: list[float], lons: list[float], alts: list[float] | None = None) -> Fixes:
    return Fixes(
        t=np.array(times, dtype=float),
        lat=np.array(lats, dtype=float),
        lon=np.array(lons, dtype=float),
        alt=np.array(alts if alts is not None else [], dtype=float),
        sources=("track.gpx",),
    )


# --- clock offsets (exiftool -geosync) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("+1:30", 90.0),
        ("1:30", 90.0),
        ("-1:20", -80.0),
        ("-0:00:12", -12.0),
        ("1 02:00:00", 93600.0),
        ("-1 02:00:00", -93600.0),
        ("12", 12.0),
        ("+12.5", 12.5),
        ("-.5", -0.5),
        ("0:90", 90.0),
        ("90:00", 5400.0),
        ("+0:03:12", 192.0),
        ("  - 2:00:00.25 ", -7200.25),
    ],
)
def test_parse_clock_offset(text: str, seconds: float) -> None:
    assert parse_clock_offset(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "junk", ["", "abc", "1:2:3:4", "1 30", "+-5", "1:30x", "1::30", "1 2:3", "++1", "5 s"]
)
def test_parse_clock_offset_junk(junk: str) -> None:
    with pytest.raises(InputError, match="geosync"):
        parse_clock_offset(junk)


@given(
    st.sampled_from(["", "+", "-"]),
    st.integers(0, 9),
    st.integers(0, 23),
    st.integers(0, 59),
    st.integers(0, 59),
    st.integers(0, 99),
)
def test_parse_clock_offset_all_forms(sign: str, dd: int, hh: int, mm: int, ss: int, cs: int) -> None:
    value = (dd * 86400 + hh * 3600 + mm * 60 + ss + cs / 100) * (-1 if sign == "-" else 1)
    assert parse_clock_offset(f"{sign}{dd} {hh:02d}:{mm:02d}:{ss:02d}.{cs:02d}") == pytest.approx(value)
    value_hms = (hh * 3600 + mm * 60 + ss) * (-1 if sign == "-" else 1)
    assert parse_clock_offset(f"{sign}{hh}:{mm:02d}:{ss:02d}") == value_hms


def test_constant_correction_sign() -> None:
    # a plus means the GPS clock is ahead of the camera's: true UTC = camera UTC + offset
    c = ClockCorrection.constant("+1:30")
    assert c.apply([1000.0, np.nan]).tolist()[0] == 1090.0
    assert np.isnan(c.apply([np.nan])[0])
    assert "+0:01:30" in c.describe()
    assert ClockCorrection.constant(-12).apply(100.0) == 88.0


def test_drift_between_two_sync_points() -> None:
    # the camera read 10:00:00 when it was 10:00:10 and 12:00:00 when it was 12:00:40: it loses 30 s in 2 h
    c = ClockCorrection.from_sync_points(
        [
            (utc("2024-05-01 12:00:00"), utc("2024-05-01 12:00:40")),
            (utc("2024-05-01 10:00:00"), utc("2024-05-01 10:00:10")),
        ]
    )
    assert c.drifts
    camera = np.array(
        [utc(f"2024-05-01 {h}") for h in ("10:00:00", "11:00:00", "12:00:00", "13:00:00", "09:00:00")]
    )
    # between: linear (10 s -> 40 s); beyond: the same line extended (exiftool extrapolates the drift)
    assert (c.offset_at(camera)).tolist() == pytest.approx([10.0, 25.0, 40.0, 55.0, -5.0])
    assert c.apply(camera)[1] == pytest.approx(utc("2024-05-01 11:00:25"))
    assert "2 sync points" in c.describe()


def test_three_sync_points_piecewise_and_duplicates() -> None:
    c = ClockCorrection.from_sync_points([(0, 0), (100, 110), (200, 200), (100, 120)])  # last at 100 wins
    assert c.offset_at([50, 100, 150, 300]).tolist() == pytest.approx([10.0, 20.0, 10.0, -20.0])
    one = ClockCorrection.from_sync_points([(1000.0, 1030.0)])
    assert not one.drifts and one.offset_s == 30.0
    with pytest.raises(InputError):
        ClockCorrection.from_sync_points([])


def test_exiftool_test7_geotime_with_drift() -> None:
    """exiftool's Geotag test 7: two Geosync points (GPS@image), Nikon.jpg's DateTimeOriginal
    2001:08:01 12:57:23 at -02:00; exiftool prints Geotime 2010:01:05 07:57:51.692 UTC (Geotag_7.out)."""
    points = []
    for gps, image in (
        ("2010:01:05 07:00:00Z", "2001:08:01 12:00:00-02:00"),
        ("2010:01:05 09:01:00Z", "2001:08:01 14:00:00-02:00"),
    ):
        (g, go), (i, io) = parse_exif_datetime(gps), parse_exif_datetime(image)
        points.append((i - io, g - go))
    local, offset = parse_exif_datetime("2001:08:01 12:57:23-02:00")
    got = ClockCorrection.from_sync_points(points).apply(local - offset)
    assert got == pytest.approx(utc("2010-01-05 07:57:51.692"), abs=5e-4)


# --- zones ------------------------------------------------------------------------------------------------


def test_parse_zone_forms() -> None:
    assert parse_zone("+02:00").offset_s == 7200
    assert parse_zone("-0330").offset_s == -12600
    assert parse_zone("+05").offset_s == 18000
    assert parse_zone("Z").offset_s == 0 and parse_zone("UTC").name == "+00:00"
    assert parse_zone("Europe/Berlin").name == "Europe/Berlin"
    for junk in ("Mars/Olympus", "+25:00", "+02:61", "", "auto", "../etc/passwd", "2", "+2:00:00"):
        with pytest.raises(InputError, match="--tz"):
            parse_zone(junk)


def test_parse_exif_offset_and_junk() -> None:
    assert parse_exif_offset("+02:00") == 7200
    assert parse_exif_offset("-05:30") == -19800
    assert parse_exif_offset(b"+09:00\x00") == 32400
    for junk in ("   :  ", "", None, "+15:00", "+02:75", "0200", b"\xff\xfe", 7200):
        assert parse_exif_offset(junk) is None
    assert format_offset(-12600) == "-03:30"


def test_parse_exif_datetime() -> None:
    assert parse_exif_datetime("2024:03:31 02:30:00") == (naive("2024-03-31 02:30:00"), None)
    assert parse_exif_datetime("2024:03:31 02:30:00.5Z") == (naive("2024-03-31 02:30:00") + 0.5, 0.0)
    assert parse_exif_datetime("2024-03-31T02:30:00+0200")[1] == 7200
    for junk in ("2024:13:01 00:00:00", "yesterday", "2024:03:31 02:30:00+99:00"):
        with pytest.raises(InputError):
            parse_exif_datetime(junk)


def test_dst_berlin_by_hand() -> None:
    """Europe/Berlin: CET (+1) until 2024-03-31 02:00 local, CEST (+2) until 2024-10-27 03:00 local.
    The non-existent 02:30 in March and the twice-happening 02:30 in October resolve as fold=0."""
    berlin = parse_zone("Europe/Berlin")
    cases = {
        "2024-03-31 01:30:00": "2024-03-31 00:30:00",
        "2024-03-31 02:30:00": "2024-03-31 01:30:00",  # does not exist: read at +01:00
        "2024-03-31 03:30:00": "2024-03-31 01:30:00",
        "2024-10-27 01:30:00": "2024-10-26 23:30:00",
        "2024-10-27 02:30:00": "2024-10-27 00:30:00",  # happens twice: the first (+02:00)
        "2024-10-27 03:30:00": "2024-10-27 02:30:00",
        "2024-07-01 12:00:00": "2024-07-01 10:00:00",
    }
    got = berlin.to_utc([naive(k) for k in cases] + [np.nan])
    assert got[:-1].tolist() == [utc(v) for v in cases.values()]
    assert np.isnan(got[-1])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(0, 2.2e9), min_size=1, max_size=40),
    st.sampled_from(["America/Santiago", "Australia/Lord_Howe", "Europe/Berlin", "America/St_Johns"]),
)
def test_zone_to_utc_agrees_with_zoneinfo(locals_: list[float], key: str) -> None:
    from zoneinfo import ZoneInfo

    local = np.floor(np.array(locals_))
    got = Zone.iana(key).to_utc(local)
    for value, result in zip(local, got, strict=True):
        wall = datetime.fromtimestamp(value, UTC).replace(tzinfo=ZoneInfo(key), fold=0)
        assert result == value - wall.utcoffset().total_seconds()


def test_zone_at_offline() -> None:
    names = zone_at([52.52, -34.60, -33.45, np.nan], [13.40, -58.38, -70.66, 0.0])
    assert names.tolist() == ["Europe/Berlin", "America/Argentina/Buenos_Aires", "America/Santiago", None]


# --- photo UTC --------------------------------------------------------------------------------------------


def test_resolve_rules_and_precedence() -> None:
    local = np.full(5, naive("2024-07-01 12:00:00"))
    local[4] = np.nan
    exif = np.array([7200.0, np.nan, np.nan, -10800.0, np.nan])
    cam = np.array([np.nan, 3600.0, np.nan, np.nan, np.nan])
    times = resolve_photo_utc(local, exif, tz="Europe/Berlin", camera_offset_s=cam)
    assert times.zone_source.tolist() == ["exif", "gps-time", "tz", "exif", None]
    assert times.zone.tolist() == ["+02:00", "+01:00", "Europe/Berlin", "-03:00", None]
    assert times.utc_s[:4].tolist() == [utc(f"2024-07-01 {h}:00:00") for h in ("10", "11", "10", "15")]
    # --ignore-photo-tz: --tz wins over the photo's own offset and its camera's GPS time
    utc_s, zone, source = resolve_photo_utc(
        local, exif, tz="+05:00", camera_offset_s=cam, ignore_photo_tz=True
    )
    assert (
        source[:4].tolist() == ["tz"] * 4 and zone[0] == "+05:00" and utc_s[0] == utc("2024-07-01 07:00:00")
    )
    # no zone known: NaN and None, never the machine's zone
    none = resolve_photo_utc(local[:1])
    assert np.isnan(none.utc_s[0]) and none.zone_source[0] is None


def test_camera_offset_from_gps_time_rounded_to_15_minutes() -> None:
    local = np.array(
        [
            naive("2024-07-01 14:03:10"),
            naive("2024-07-01 15:00:00"),
            naive("2024-07-01 16:00:00"),
            naive("2024-07-01 09:00:00"),
        ]
    )
    gps = np.array([utc("2024-07-01 12:00:00"), np.nan, utc("2024-07-01 13:56:40"), np.nan])
    per_photo, per_camera = camera_gps_offsets(local, gps, ["D850", "D850", "D850", "phone"])
    # D850 reads 2 h 3 min 10 s and 2 h 3 min 20 s ahead of GPS: zone +02:00; the 3 min are clock error
    assert per_camera == {"D850": 7200.0}
    assert per_photo[:3].tolist() == [7200.0] * 3 and np.isnan(per_photo[3])
    alone, _ = camera_gps_offsets(local, gps)  # no camera given: each photo alone
    assert np.isnan(alone[1]) and alone[0] == 7200.0
    direct = resolve_photo_utc(local, gps_utc_s=gps, camera=["D850", "D850", "D850", "phone"])
    assert direct.zone_source.tolist() == ["gps-time"] * 3 + [None]
    assert direct.utc_s[1] == utc("2024-07-01 13:00:00")


def test_tz_auto_takes_the_zone_of_the_nearest_fix() -> None:
    fixes = track(
        [utc("2024-01-10 15:00:00"), utc("2024-01-10 16:00:00")], [-34.60, -34.61], [-58.38, -58.40]
    )
    got = resolve_photo_utc([naive("2024-01-10 12:30:00"), np.nan], tz="auto", fixes=fixes)
    assert got.zone_source.tolist() == ["tz-auto", None]
    assert got.zone[0] == "America/Argentina/Buenos_Aires" and got.utc_s[0] == utc("2024-01-10 15:30:00")
    with pytest.raises(InputError, match="auto"):
        resolve_photo_utc([0.0], tz="auto")


# --- matching by hand -------------------------------------------------------------------------------------


def test_dst_change_positions_by_hand() -> None:
    """A walk in Berlin on 2024-03-31 across the change (01:00 UTC): fixes every 20 minutes, photos given in
    local time with --tz Europe/Berlin on both sides of the change."""
    t = [
        utc("2024-03-31 00:20:00"),
        utc("2024-03-31 00:40:00"),
        utc("2024-03-31 01:00:00"),
        utc("2024-03-31 01:20:00"),
    ]
    fixes = track(t, [52.50, 52.51, 52.52, 52.53], [13.40, 13.42, 13.44, 13.46], [30, 40, 50, 60])
    local = [naive("2024-03-31 01:30:00"), naive("2024-03-31 03:10:00"), naive("2024-03-31 01:50:00")]
    photo_utc, _, _ = resolve_photo_utc(local, tz="Europe/Berlin")
    assert photo_utc.tolist() == [
        utc("2024-03-31 00:30:00"),
        utc("2024-03-31 01:10:00"),
        utc("2024-03-31 00:50:00"),
    ]
    p = match(photo_utc, fixes)
    assert p.method.tolist() == ["interpolated"] * 3
    assert p.lat.tolist() == pytest.approx([52.505, 52.525, 52.515])
    assert p.lon.tolist() == pytest.approx([13.41, 13.45, 13.43])
    assert p.alt.tolist() == pytest.approx([35.0, 55.0, 45.0])
    # the autumn change (01:00 UTC, 03:00 CEST -> 02:00 CET): 02:20 local happens twice, fold=0 takes the
    # first (00:20 UTC); 03:20 local is CET (02:20 UTC); 01:50 local is CEST (23:50 UTC the day before)
    t = [utc(f"2024-10-27 {hm}:00") for hm in ("00:00", "00:30", "01:00", "01:30", "02:00")]
    fixes = track(t, [52.50, 52.51, 52.52, 52.53, 52.54], [13.40, 13.42, 13.44, 13.46, 13.48])
    local = [naive(f"2024-10-27 {hm}:00") for hm in ("02:20", "03:20", "01:50", "02:50")]
    autumn = resolve_photo_utc(local, tz="Europe/Berlin")
    expected_utc = [
        "2024-10-27 00:20:00",
        "2024-10-27 02:20:00",
        "2024-10-26 23:50:00",
        "2024-10-27 00:50:00",
    ]
    assert autumn.utc_s.tolist() == [utc(u) for u in expected_utc]
    p = match(autumn.utc_s, fixes)
    assert p.method.tolist() == ["interpolated", "nearest", "nearest", "interpolated"]
    assert p.lat.tolist() == pytest.approx([52.50 + 0.01 * 2 / 3, 52.54, 52.50, 52.51 + 0.01 * 2 / 3])
    assert p.lon.tolist() == pytest.approx([13.40 + 0.02 * 2 / 3, 13.48, 13.40, 13.42 + 0.02 * 2 / 3])
    assert p.dt_s.tolist() == [600.0, 1200.0, 600.0, 600.0]


def test_southern_western_interpolation_by_hand() -> None:
    """Buenos Aires to Santiago (negative lat and lon): a quarter of the time is a quarter of the way."""
    fixes = track(
        [utc("2024-01-10 15:00:00"), utc("2024-01-10 15:20:00")],
        [-34.60, -33.44],
        [-58.38, -70.66],
        [25.0, 570.0],
    )
    p = match([utc("2024-01-10 15:05:00")], fixes)
    assert p.lat[0] == pytest.approx(-34.60 + 0.25 * 1.16)
    assert p.lon[0] == pytest.approx(-58.38 - 0.25 * 12.28)
    assert p.alt[0] == pytest.approx(25 + 0.25 * 545)
    assert p.fix_before_s[0] == utc("2024-01-10 15:00:00") and p.fix_after_s[0] == utc("2024-01-10 15:20:00")
    assert p.dt_s[0] == 300.0 and p.fix_index[0] == 0


def test_antimeridian_by_hand() -> None:
    fixes = track([0.0, 100.0, 200.0], [-17.0, -17.2, -17.4], [179.9, -179.9, -179.7])
    p = match([50.0, 25.0, 75.0, 150.0], fixes)
    assert p.lon[0] == pytest.approx(-180.0) and abs(p.lon[0]) == pytest.approx(180.0)  # +-180, never 0
    assert p.lat[0] == pytest.approx(-17.1)
    assert p.lon[1:].tolist() == pytest.approx([179.95, -179.95, -179.8])
    assert haversine_np(p.lat[0], p.lon[0], -17.1, 180.0) < 1e-6
    back = match([50.0], track([0.0, 100.0], [0.0, 0.0], [-179.9, 179.9]))  # westward
    assert back.lon[0] == pytest.approx(-180.0)


@pytest.mark.parametrize(
    ("gap", "expected"), [(1799.0, "interpolated"), (1800.0, "interpolated"), (1801.0, "nearest")]
)
def test_max_gap_limit(gap: float, expected: str) -> None:
    fixes = track([0.0, gap], [10.0, 11.0], [20.0, 21.0])
    p = match([gap / 3], fixes)
    assert p.method[0] == expected
    if expected == "interpolated":
        assert p.lat[0] == pytest.approx(10 + 1 / 3)
    else:
        assert p.lat[0] == 10.0 and p.dt_s[0] == pytest.approx(gap / 3)


@pytest.mark.parametrize(("away", "placed"), [(1799.0, True), (1800.0, True), (1801.0, False)])
def test_max_extrapolate_limit(away: float, placed: bool) -> None:
    fixes = track([10_000.0, 10_060.0, 20_000.0], [1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    # before the track, after it, and inside a long gap (nearest fix `away` seconds off)
    p = match([10_000.0 - away, 20_000.0 + away, 10_060.0 + away], fixes)
    assert p.placed.tolist() == [placed] * 3
    if placed:
        assert p.lat.tolist() == [1.0, 3.0, 2.0] and p.dt_s.tolist() == [away] * 3
        assert p.fix_after_s[0] == 10_000.0 and np.isnan(p.fix_before_s[0])
    else:
        assert p.reason.tolist() == [
            "too far before the track",
            "too far after the track",
            "too far from the nearest fix",
        ]


def test_gap_tie_takes_the_later_fix_and_exact_fix() -> None:
    fixes = track([0.0, 4000.0], [1.0, 2.0], [1.0, 2.0])
    assert match([2000.0], fixes, max_extrapolate=2000).lat[0] == 2.0
    exact = match([0.0, 4000.0], track([0.0, 10.0, 4000.0], [1.0, 1.5, 2.0], [1.0, 1.5, 2.0]))
    assert exact.lat.tolist() == [1.0, 2.0] and exact.dt_s.tolist() == [0.0, 0.0]


def test_first_fix_of_a_source_allows_max_extrapolate() -> None:
    """exiftool flags the first fix of each track file: the gap before it may be up to GeoMaxExtSecs."""
    a = Fixes(t=np.array([0.0, 100.0]), lat=np.array([1.0, 2.0]), lon=np.array([1.0, 2.0]), sources=("a",))
    b = Fixes(t=np.array([900.0, 1000.0]), lat=np.array([3.0, 4.0]), lon=np.array([3.0, 4.0]), sources=("b",))
    merged = Fixes.concat([a, b])
    p = match([500.0], merged, max_gap=600, max_extrapolate=900)
    assert p.method[0] == "interpolated" and p.lat[0] == pytest.approx(2.5)
    one = Fixes(t=merged.t, lat=merged.lat, lon=merged.lon, sources=("a",))  # same fixes, one file
    q = match([500.0], one, max_gap=600, max_extrapolate=900)
    assert q.method[0] == "nearest" and q.lat[0] == 3.0  # 400 s either way: the later fix
    assert merged.sources[p.source[0]] == "b"  # the nearer fix of the two (a tie: the later)


def test_duplicate_times_last_source_wins_and_rows_map_back() -> None:
    a = Fixes(t=np.array([0.0, 100.0]), lat=np.array([1.0, 2.0]), lon=np.array([1.0, 2.0]), sources=("a",))
    b = Fixes(t=np.array([100.0, 200.0]), lat=np.array([5.0, 6.0]), lon=np.array([5.0, 6.0]), sources=("b",))
    merged = Fixes.concat([a, b])
    p = match([100.0, 50.0], merged)
    assert p.lat.tolist() == [5.0, 3.0]
    assert merged.sources[p.source[0]] == "b"
    shuffled = merged.take(np.array([3, 1, 0, 2]))  # unsorted input: indices still name the caller's rows
    q = match([150.0], shuffled)
    assert shuffled.t[q.fix_index[0]] in (100.0, 200.0) and q.lat[0] == pytest.approx(5.5)


def test_altitude_nan_aware() -> None:
    fixes = track([0.0, 100.0, 200.0, 300.0], [0, 1, 2, 3], [0, 1, 2, 3], [10.0, np.nan, 30.0, np.nan])
    p = match([150.0, 50.0, 400.0, -100.0], fixes)
    # 150: fix 1 has none: between fix 0 (10 m) and fix 2 (30 m) by time -> 25 m; 50 -> 15 m
    assert p.alt[:2].tolist() == pytest.approx([25.0, 15.0])
    # after the track: the last fix has none, so the nearest with one scanning back into the track
    assert p.alt[2] == 30.0 and p.alt[3] == 10.0
    assert np.isnan(match([1.0], track([0.0, 2.0], [0, 0], [0, 0])).alt[0])


def test_no_fixes_and_no_time() -> None:
    p = match([np.nan, 5.0], Fixes.empty())
    assert p.reason.tolist() == ["no UTC time", "no fixes"] and not p.placed.any()
    q = match([np.nan], track([0.0], [1.0], [1.0]))
    assert q.reason[0] == "no UTC time" and q.fix_index[0] == -1 and q.source[0] == -1
    with pytest.raises(InputError):
        match([0.0], Fixes.empty(), max_gap=-1)
    assert len(match([], track([0.0], [1.0], [1.0]))) == 0
    with pytest.raises(InputError, match="--tz"):
        resolve_photo_utc([0.0], [3600.0], tz="Nowhere/Land")


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1e5, 1e5), min_size=2, max_size=30, unique=True), st.floats(-2e5, 2e5))
def test_placed_position_lies_between_its_fixes(times: list[float], photo: float) -> None:
    times = sorted(times)
    lats = np.linspace(-60, 60, len(times))
    p = match([photo], track(times, lats.tolist(), [0.0] * len(times)), max_gap=1e9, max_extrapolate=1e9)
    assert p.placed[0]
    assert lats.min() - 1e-9 <= p.lat[0] <= lats.max() + 1e-9
    if times[0] <= photo <= times[-1]:
        assert p.method[0] == "interpolated"
        assert p.lat[0] == pytest.approx(np.interp(photo, times, lats), abs=1e-9)


# --- error radius and confidence --------------------------------------------------------------------------


def test_error_km_and_confidence() -> None:
    fixes = Fixes(
        t=np.array([0.0, 3600.0, 7200.0]),
        lat=np.zeros(3),
        lon=np.zeros(3),
        hdop=np.array([2.0, np.nan, np.nan]),
        accuracy_m=np.array([np.nan, np.nan, 40.0]),
    )
    assert fix_error_m(fixes).tolist() == [2 * UERE_M, DEFAULT_FIX_ERROR_M, 40.0]
    p = match([0.0, 600.0, 7200.0 + 1800, 10**6], fixes, max_gap=4000)
    err = error_km(p, fixes, speed_kmh=60)
    assert err[0] == pytest.approx(0.010)
    assert err[1] == pytest.approx(0.010 + 10.0)  # 600 s at 60 km/h from the fix at 0
    assert err[2] == pytest.approx(0.040 + 30.0)
    assert np.isnan(err[3])
    c = confidence(err)
    assert c[0] == pytest.approx(1.0) and c[1] > c[2] and np.isnan(c[3])
    assert confidence([25.0])[0] == pytest.approx(0.5) and confidence([0.0])[0] == 1.0
    grid = confidence(np.linspace(0, 500, 200))
    assert np.all(np.diff(grid) <= 0)


def test_clock_offset_moves_the_match() -> None:
    """The camera is 3 min 12 s slow (GPS ahead): --clock-offset +0:03:12 puts the photo where it was."""
    fixes = track([0.0, 600.0], [0.0, 1.0], [0.0, 0.0])
    camera_utc = np.array([300.0 - 192.0])
    corrected = ClockCorrection.constant("+0:03:12").apply(camera_utc)
    assert match(corrected, fixes).lat[0] == pytest.approx(0.5)
    assert math.isclose(match(camera_utc, fixes).lat[0], 0.18)


def test_bench_runs_small() -> None:
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "bench/timeline_match.py", "--photos", "2000", "--fixes", "20000", "--repeat", "1"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "synthetic track, sorted" in proc.stdout and "zones: Europe/Berlin" in proc.stdout
    assert "2,000 photos against 20,000 fixes matched in" in proc.stdout
