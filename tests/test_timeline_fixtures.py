"""exiftool's own geotag tests (../shared/fixtures/tracks/exiftool, its README and Geotag.t): each track is
read in the test with the format's library, matched with geotag's rules at the test's Geotime and Geosync,
and compared with the position exiftool 13.58 expects (Geotag_N.out, degrees-minutes-seconds)."""

from __future__ import annotations

import re
import warnings
from datetime import datetime
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest

from geotag.geo.clock import ClockCorrection
from geotag.geo.distance import haversine_np
from geotag.geo.fixes import Fixes
from geotag.geo.timeline import match
from geotag.geo.zones import parse_exif_datetime

from conftest import fixture_dir

DMS = re.compile(r"(\d+) deg (\d+)' ([\d.]+)\"(?: ([NSEW]))?")


def expected(name: str) -> dict[str, float]:
    """lat, lon (signed) and alt (where written) from a Geotag_N.out."""
    text = (fixture_dir("tracks") / "exiftool" / name).read_text()
    values: dict[str, float] = {}
    refs = dict(re.findall(r"GPS (Latitude|Longitude) Ref: (\w+)", text))
    for axis in ("Latitude", "Longitude"):
        d, m, s, hemi = DMS.search(text.split(f"GPS {axis}:")[1]).groups()
        sign = -1 if (hemi or refs.get(axis, "N"))[0] in "SW" else 1
        values[axis.lower()[:3]] = sign * (int(d) + int(m) / 60 + float(s) / 3600)
    alt = re.search(r"GPS Altitude: ([\d.]+) m", text)
    if alt:
        values["alt"] = float(alt.group(1))
    return values


def geotime(text: str) -> float:
    local, offset = parse_exif_datetime(text)
    return local - (offset or 0.0)


def fixes_of(rows: list[tuple[float, float, float, float]], name: str) -> Fixes:
    t, lat, lon, alt = (np.array(c, dtype=float) for c in zip(*rows, strict=True))
    return Fixes(t=t, lat=lat, lon=lon, alt=alt, sources=(name,)).sorted()


def check(fixes: Fixes, when: float, out: str, alt_tol: float = 0.01) -> None:
    want = expected(out)
    p = match([when], fixes)
    assert p.placed[0]
    metres = float(haversine_np(want["lat"], want["lon"], p.lat[0], p.lon[0])) * 1000
    assert metres < 1.0, f"{out}: {metres:.2f} m from exiftool"
    if "alt" in want:
        assert p.alt[0] == pytest.approx(want["alt"], abs=alt_tol)


def track_file(name: str) -> Path:
    return fixture_dir("tracks") / "exiftool" / name


def test_2_gpx() -> None:
    gpxpy = pytest.importorskip("gpxpy")
    gpx = gpxpy.parse(track_file("Geotag.gpx").read_text())
    rows = [
        (p.time.timestamp(), p.latitude, p.longitude, p.elevation if p.elevation is not None else np.nan)
        for trk in gpx.tracks
        for seg in trk.segments
        for p in seg.points
    ]
    check(fixes_of(rows, "Geotag.gpx"), geotime("2003:05:24 17:09:31Z"), "Geotag_2.out", alt_tol=1e-5)


def magellan_rows() -> list[tuple[float, float, float, float]]:
    pynmea2 = pytest.importorskip("pynmea2")
    from pynmea2.nmea_utils import dm_to_sd

    rows = []
    for line in track_file("Geotag.log").read_text().splitlines():
        msg = pynmea2.parse(line.strip())  # $PMGNTRK,lat,N,lon,W,alt,M,hhmmss.ss,A,,ddmmyy
        if msg.data[0] != "TRK":
            continue  # $PMGNCMD,END
        _, lat, ns, lon, ew, alt, _, hms, _, _, dmy = msg.data[:11]
        when = datetime.strptime(f"{dmy} {hms}+0000", "%d%m%y %H%M%S.%f%z").timestamp()
        rows.append(
            (
                when,
                dm_to_sd(lat) * (-1 if ns == "S" else 1),
                dm_to_sd(lon) * (-1 if ew == "W" else 1),
                float(alt),
            )
        )
    return rows


def test_3_and_4_magellan() -> None:
    fixes = fixes_of(magellan_rows(), "Geotag.log")
    check(fixes, geotime("2009:04:03 06:11:30-05:00"), "Geotag_3.out")
    # test 4: 08:00:00-05:00 is too far beyond the track, exiftool writes nothing
    late = match([geotime("2009:04:03 08:00:00-05:00")], fixes)
    assert not late.placed[0] and late.reason[0] == "too far after the track"


def test_6_garmin_xml_with_geosync() -> None:
    ns = {"g": "http://www.garmin.com/xmlschemas/ForerunnerLogbook"}
    root = ElementTree.parse(track_file("Geotag.xml")).getroot()
    rows = []
    for point in root.iterfind(".//g:Trackpoint", ns):
        when = datetime.fromisoformat(point.findtext("g:Time", namespaces=ns).replace("Z", "+00:00"))
        pos = point.find("g:Position", ns)
        rows.append(
            (
                when.timestamp(),
                float(pos.findtext("g:Latitude", namespaces=ns)),
                float(pos.findtext("g:Longitude", namespaces=ns)),
                float(pos.findtext("g:Altitude", namespaces=ns)),
            )
        )
    # Geosync 1:30; Geotime from Panasonic.jpg's DateTimeOriginal 2004:08:28 15:55:46 at +02:00
    when = ClockCorrection.constant("1:30").apply(geotime("2004:08:28 15:55:46+02:00"))
    check(fixes_of(rows, "Geotag.xml"), float(when), "Geotag_6.out", alt_tol=1e-6)


def test_7_igc_with_drift_correction() -> None:
    igc = pytest.importorskip("aerofiles.igc")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with track_file("Geotag.igc").open() as handle:
            parsed = igc.Reader().read(handle)
    rows = [
        (r["datetime"].timestamp(), r["lat"], r["lon"], float(r["gps_alt"])) for r in parsed["fix_records"][1]
    ]
    points = []
    for gps, image in (
        ("2010:01:05 07:00:00Z", "2001:08:01 12:00:00-02:00"),
        ("2010:01:05 09:01:00Z", "2001:08:01 14:00:00-02:00"),
    ):
        points.append((geotime(image), geotime(gps)))
    when = ClockCorrection.from_sync_points(points).apply(geotime("2001:08:01 12:57:23-02:00"))
    p = match([float(when)], fixes_of(rows, "Geotag.igc"))
    # Geotag_7.out gives exiftool's full precision: GPS:GPSLatitude = '49 10 45.9657779460145' N, ...
    lat = 49 + 10 / 60 + 45.9657779460145 / 3600
    lon = 6 + 51 / 60 + 35.6260862642929 / 3600
    assert p.lat[0] == pytest.approx(lat, abs=1e-9) and p.lon[0] == pytest.approx(lon, abs=1e-9)
    assert p.alt[0] == pytest.approx(848.896982535614, abs=1e-6)


def test_8_nmea_rmc() -> None:
    pynmea2 = pytest.importorskip("pynmea2")
    rows = []
    for line in track_file("Geotag2.log").read_text().splitlines():
        if "RMC" in line:
            msg = pynmea2.parse(line.strip())
            rows.append((msg.datetime.timestamp(), msg.latitude, msg.longitude, np.nan))
    check(fixes_of(rows, "Geotag2.log"), geotime("2010:04:24 06:27:30-05:00"), "Geotag_8.out")


def test_9_kml_gx_track() -> None:
    ns = {"kml": "http://www.opengis.net/kml/2.2", "gx": "http://www.google.com/kml/ext/2.2"}
    root = ElementTree.parse(track_file("Geotag.kml")).getroot()
    rows = []
    for trk in root.iterfind(".//gx:Track", ns):
        whens = [datetime.fromisoformat(w.text).timestamp() for w in trk.iterfind("kml:when", ns)]
        coords = [[float(v) for v in c.text.split()] for c in trk.iterfind("gx:coord", ns)]
        rows += [(w, c[1], c[0], c[2]) for w, c in zip(whens, coords, strict=True)]
    # (exiftool writes no altitude here: all are 0 and it notes an altitude only where one is non-zero)
    check(fixes_of(rows, "Geotag.kml"), geotime("2013:11:13 09:04:31Z"), "Geotag_9.out")


def test_13_garmin_fit() -> None:
    fitdecode = pytest.importorskip("fitdecode")
    rows = []
    with fitdecode.FitReader(str(track_file("Garmin.fit"))) as reader:
        for frame in reader:
            if isinstance(frame, fitdecode.FitDataMessage) and frame.name == "record":
                v = {f.name: f.value for f in frame.fields}
                if v.get("position_lat") is None or v.get("position_long") is None:
                    continue
                alt = v.get("enhanced_altitude", v.get("altitude"))
                rows.append(
                    (
                        v["timestamp"].timestamp(),
                        v["position_lat"] * 180 / 2**31,
                        v["position_long"] * 180 / 2**31,
                        np.nan if alt is None else float(alt),
                    )
                )
    check(fixes_of(rows, "Garmin.fit"), geotime("2026:04:01 10:00:44.5-04:00"), "Geotag_13.out")
