"""Track readers (geotag.io.tracks): every format on a real or hand-made sample, malformed samples of each
format give one line naming the file and the record, merging, folder walks and the quality filter.

exiftool's own geotag test files (../shared/fixtures/tracks/exiftool) are checked twice: point counts and
first / last fixes against what the files say, and a linear interpolation of our fixes at each test's
Geotime against the position exiftool's expected output (Geotag_N.out) holds.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from datetime import UTC, datetime
from functools import reduce
from pathlib import Path

import numpy as np
import pytest

from geotag.errors import InputError, TrackError
from geotag.io.tracks import detect_format, filter_quality, read_track, read_tracks

from conftest import fixture_dir


def utc(text: str) -> float:
    """UTC seconds of an ISO time; a naive one is UTC."""
    dt = datetime.fromisoformat(text)
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def dms(d: float, m: float, s: float, hemi: str) -> float:
    v = d + m / 60 + s / 3600
    return -v if hemi in "SW" else v


def at(fixes, t: float) -> tuple[float, float, float]:
    """exiftool's rule inside a track: linear interpolation between the fixes around t."""
    return (
        float(np.interp(t, fixes.t, fixes.lat)),
        float(np.interp(t, fixes.t, fixes.lon)),
        float(np.interp(t, fixes.t, fixes.alt)),
    )


def exiftool_dir() -> Path:
    return fixture_dir("tracks") / "exiftool"


def one_line_error(path: Path, *, record: str) -> str:
    with pytest.raises(TrackError) as info:
        read_track(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path)), message  # (a KMZ names its member: day.kmz!doc.kml)
    assert record in message, message
    return message


# --- exiftool's samples ----------------------------------------------------------------------------


def test_exiftool_gpx_10():
    f = read_track(exiftool_dir() / "Geotag.gpx")
    assert len(f) == 9 and f.sources == (str(exiftool_dir() / "Geotag.gpx"),)
    assert f.t[0] == utc("2003-05-24T17:09:04") and (f.lat[0], f.lon[0]) == (43.642824, -116.061502)
    assert f.t[-1] == utc("2003-05-24T17:10:05") and (f.lat[-1], f.lon[-1]) == (43.641, -116.062231)
    assert f.alt[-1] == pytest.approx(1472.396484) and set(f.segment) == {0}
    lat, lon, alt = at(f, utc("2003-05-24T17:09:31"))  # Geotag_2.out
    assert lat == pytest.approx(dms(43, 38, 30.66, "N"), abs=1e-5)
    assert lon == pytest.approx(dms(116, 3, 44.05, "W"), abs=1e-5)
    assert alt == pytest.approx(1485.648936, abs=1e-3)


def test_exiftool_magellan_log():
    f = read_track(exiftool_dir() / "Geotag.log")
    assert len(f) == 12
    assert f.t[0] == pytest.approx(utc("2009-04-03T11:08:33.53"))
    assert f.lat[0] == pytest.approx(44 + 15.163 / 60) and f.lon[0] == pytest.approx(-(76 + 31.126 / 60))
    assert f.t[-1] == pytest.approx(utc("2009-04-03T11:15:15.54")) and f.alt[-1] == 85
    lat, lon, alt = at(f, utc("2009-04-03T11:11:30"))  # Geotag_3.out (Geotime 06:11:30-05:00)
    assert lat == pytest.approx(dms(44, 14, 10.30, "N"), abs=1e-5)
    assert lon == pytest.approx(dms(76, 30, 56.52, "W"), abs=1e-5)
    assert alt == pytest.approx(103.647, abs=1e-3)


def test_exiftool_nmea_with_attitude_sentences():
    f = read_track(exiftool_dir() / "Geotag2.log")  # its PTNTHPR checksums are wrong: unused, unread
    assert len(f) == 3
    assert f.t[0] == utc("2010-04-24T11:27:23") and f.t[-1] == utc("2010-04-24T11:28:02")
    assert f.lat[0] == pytest.approx(50 + 40.3182 / 60) and f.lon[0] == pytest.approx(5 + 5.9469 / 60)
    lat, lon, _ = at(f, utc("2010-04-24T11:27:30"))  # Geotag_8.out
    assert lat == pytest.approx(dms(50, 40, 16.53, "N"), abs=1e-5)
    assert lon == pytest.approx(dms(5, 6, 0.43, "E"), abs=1e-5)


def test_exiftool_kml_location_history():
    f = read_track(exiftool_dir() / "Geotag.kml")
    assert len(f) == 3
    assert f.t[0] == pytest.approx(utc("2013-11-13T09:03:34.245"))  # written as 01:03:34.245-08:00
    assert (f.lat[0], f.lon[0]) == (34.166232, -106.026069)
    assert f.t[-1] == pytest.approx(utc("2013-11-13T09:05:35.277"))
    lat, lon, _ = at(f, utc("2013-11-13T09:04:31"))  # Geotag_9.out
    assert lat == pytest.approx(dms(34, 9, 55.90, "N"), abs=1e-5)
    assert lon == pytest.approx(dms(106, 1, 37.01, "W"), abs=1e-5)


def test_exiftool_garmin_xml():
    f = read_track(exiftool_dir() / "Geotag.xml")
    assert detect_format(exiftool_dir() / "Geotag.xml") == "garmin-xml"
    assert len(f) == 2 and f.t[1] - f.t[0] == 1800
    assert f.t[0] == utc("2004-08-28T13:45:00") and (f.lat[0], f.lon[0], f.alt[0]) == (
        43.64986,
        -79.58321,
        142.893,
    )
    lat, lon, alt = at(f, utc("2004-08-28T13:57:16"))  # Geotag_6.out
    assert lat == pytest.approx(dms(43, 38, 59.51, "N"), abs=1e-5)
    assert lon == pytest.approx(dms(79, 34, 59.54, "W"), abs=1e-5)
    assert alt == pytest.approx(145.9518987, abs=1e-4)


def test_garmin_xml_malformed(tmp_path):
    bad = tmp_path / "Geotag.xml"
    text = (exiftool_dir() / "Geotag.xml").read_text()
    bad.write_text(text.replace("<Latitude>43.64987</Latitude>", "<Latitude>43,64987</Latitude>"))
    one_line_error(bad, record="Trackpoint 2")
    bad.write_text(text.replace("</Run>", ""))
    assert "not well-formed XML" in one_line_error(bad, record="line 23")


def test_exiftool_igc():
    f = read_track(exiftool_dir() / "Geotag.igc")
    assert len(f) == 10
    assert f.t[0] == utc("2010-01-05T07:23:15") and f.t[-1] == utc("2010-01-05T08:52:56")  # Geotag_7.out
    assert f.lat[0] == pytest.approx(49 + 16.430 / 60) and f.lon[0] == pytest.approx(6 + 43.910 / 60)
    assert f.alt[0] == 443
    lat, lon, alt = at(f, utc("2010-01-05T07:57:51.69167"))
    assert lat == pytest.approx(dms(49, 10, 45.9657779460145, "N"), abs=1e-6)
    assert lon == pytest.approx(dms(6, 51, 35.6260862642929, "E"), abs=1e-6)
    assert alt == pytest.approx(848.896982535614, abs=1e-2)


def test_exiftool_fit():
    f = read_track(exiftool_dir() / "Garmin.fit")
    # five records: the first has no position; the last is dated 2019 in the file itself
    assert len(f) == 4
    assert f.t[-1] == utc("2026-04-01T14:00:54") and f.t[0] == utc("2019-11-24T21:28:43")
    assert f.lat[-1] == pytest.approx(390516088 * 180 / 2**31) and f.lon[-1] < 0
    lat, lon, alt = at(f, utc("2026-04-01T14:00:44.5"))  # Geotag_13.out (10:00:44.5-04:00)
    assert lat == pytest.approx(dms(32, 43, 57.97, "N"), abs=1e-5)
    assert lon == pytest.approx(dms(117, 9, 14.62, "W"), abs=1e-5)
    assert alt == pytest.approx(64.86, abs=0.01)


def test_truncated_or_corrupt_fit_is_one_line(tmp_path):
    data = (exiftool_dir() / "Garmin.fit").read_bytes()
    bad = tmp_path / "cut.fit"
    bad.write_bytes(data[:1500])
    one_line_error(bad, record="not a readable FIT file")
    for offset in range(14, len(data), 97):  # flip one byte at a time: an error line, never a traceback
        flipped = bytearray(data)
        flipped[offset] ^= 0xFF
        bad.write_bytes(bytes(flipped))
        one_line_error(bad, record="not a readable FIT file")


# --- GPX -------------------------------------------------------------------------------------------

GPX11 = """<?xml version="1.0" encoding="UTF-8"?>
<gpx version="1.1" creator="test" xmlns="http://www.topografix.com/GPX/1/1">
  <wpt lat="-33.80" lon="151.20"><time>2024-05-01T09:59:00Z</time><name>timed</name></wpt>
  <wpt lat="-33.81" lon="151.21"><name>untimed</name></wpt>
  <rte><rtept lat="-33.90" lon="151.30"><time>2024-05-01T12:00:00+02:00</time></rtept></rte>
  <trk><trkseg>
    <trkpt lat="-33.8688" lon="151.2093"><ele>12.5</ele><time>2024-05-01T10:00:00Z</time>
      <sat>7</sat><hdop>1.2</hdop><pdop>2.5</pdop></trkpt>
    <trkpt lat="-33.8690" lon="151.2100"><ele>13</ele><time>2024-05-01T10:00:10.5Z</time>
      <hdop>9</hdop></trkpt>
  </trkseg><trkseg>
    <trkpt lat="-33.8700" lon="151.2200"><time>2024-05-01T10:05:00</time><sat>3</sat></trkpt>
  </trkseg></trk>
</gpx>
"""


def test_gpx_11_tracks_routes_waypoints_quality(tmp_path):
    path = tmp_path / "walk.gpx"
    path.write_text(GPX11)
    warnings: list[str] = []
    f = read_track(path, warnings)
    assert len(f) == 5
    assert list(f.t) == [
        utc("2024-05-01T09:59:00"),
        utc("2024-05-01T10:00:00"),
        utc("2024-05-01T10:00:00"),  # the route point, 12:00+02:00
        utc("2024-05-01T10:00:10.5"),
        utc("2024-05-01T10:05:00"),  # naive: UTC
    ]
    first = int(np.flatnonzero((f.t == utc("2024-05-01T10:00:00")) & (f.segment == 1))[0])
    assert (f.lat[first], f.lon[first], f.alt[first]) == (-33.8688, 151.2093, 12.5)
    assert (f.sats[first], f.hdop[first], f.pdop[first]) == (7, 1.2, 2.5)
    assert sorted(f.segment.tolist()) == [
        -1,
        0,
        1,
        1,
        2,
    ]  # waypoint; in file order: route, trkseg 1 (2), trkseg 2
    assert warnings == [f"{path}: 1 point(s) without a time; not used"]


def _gpxpy_fixes(path: Path) -> list[tuple]:
    """The timed points as gpxpy reads them: the reference our faster GPX reader is held to."""
    gpxpy = pytest.importorskip("gpxpy")
    gpx = gpxpy.parse(
        path.read_text(encoding="latin-1" if "ISO-8859-1" in path.read_text("latin-1") else None)
    )
    points = [p for t in gpx.tracks for s in t.segments for p in s.points]
    points += [p for r in gpx.routes for p in r.points] + list(gpx.waypoints)
    return sorted(
        (
            p.time.replace(tzinfo=p.time.tzinfo or UTC).timestamp(),
            p.latitude,
            p.longitude,
            p.elevation,
            p.horizontal_dilution,
            p.position_dilution,
            p.satellites,
        )
        for p in points
        if p.time is not None
    )


def test_gpx_reader_agrees_with_gpxpy(tmp_path):
    made = tmp_path / "walk.gpx"
    made.write_text(GPX11)
    for path in (exiftool_dir() / "Geotag.gpx", made):
        f = read_track(path)

        def value(x: float) -> float | None:
            return None if math.isnan(x) else float(x)

        ours = sorted(
            (
                float(f.t[i]),
                float(f.lat[i]),
                float(f.lon[i]),
                value(f.alt[i]),
                value(f.hdop[i]),
                value(f.pdop[i]),
                None if math.isnan(f.sats[i]) else int(f.sats[i]),
            )
            for i in range(len(f))
        )
        assert ours == _gpxpy_fixes(path)


def test_gpx_malformed(tmp_path):
    bad = tmp_path / "track.gpx"
    bad.write_text(GPX11.replace("</trkseg></trk>", "</trkseg>"))
    msg = one_line_error(bad, record="line 14")
    assert "not well-formed XML" in msg
    bad.write_text(GPX11.replace('lat="-33.8690"', 'lat="-95.1"'))
    assert "latitude -95.1 out of range" in one_line_error(bad, record="trkpt 2")
    bad.write_text(GPX11.replace("2024-05-01T10:00:10.5Z", "yesterday"))
    assert "'yesterday' does not parse" in one_line_error(bad, record="trkpt 2")
    bad.write_text(GPX11.replace("<ele>13</ele>", "<ele>high</ele>"))
    one_line_error(bad, record="trkpt 2")


def test_gpx_entities_refused(tmp_path):
    bomb = tmp_path / "bomb.gpx"
    bomb.write_text(
        '<?xml version="1.0"?><!DOCTYPE gpx [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
        '<gpx version="1.1"><wpt lat="1" lon="1"><name>&b;</name></wpt></gpx>'
    )
    with pytest.raises(TrackError, match="entity"):
        read_track(bomb)


def test_gpx_without_times_is_a_warning(tmp_path):
    path = tmp_path / "plan.gpx"
    path.write_text('<gpx version="1.1"><trk><trkseg><trkpt lat="1" lon="2"/></trkseg></trk></gpx>')
    result = read_tracks([path])
    assert len(result.fixes) == 0
    assert result.warnings == (f"{path}: no point with a time; not used",)


# --- NMEA ------------------------------------------------------------------------------------------


def nmea(body: str) -> str:
    return f"${body}*{reduce(lambda a, c: a ^ ord(c), body, 0):02X}"


def test_nmea_gga_takes_rmc_dates_and_crosses_midnight(tmp_path):
    lines = [
        nmea("GPGGA,235958.00,3352.1280,S,15112.5580,E,1,08,0.9,25.0,M,,,,"),  # before any RMC
        nmea("GPGSA,A,3,01,02,03,04,05,06,07,08,,,,,1.8,0.9,1.5"),
        nmea("GPRMC,235958.00,A,3352.1280,S,15112.5580,E,0.1,0.0,311223,,,A"),
        nmea("GPGGA,235959.00,3352.1290,S,15112.5590,E,1,07,1.1,26.0,M,,,,"),
        nmea("GPGGA,000001.00,3352.1300,S,15112.5600,E,1,06,1.3,27.0,M,,,,"),  # next day, no RMC
        nmea("GPRMC,000002.00,V,,,,,,,010124,,,N"),  # void: no position
        nmea("GPGGA,000003.00,3352.1310,S,15112.5610,E,0,00,,,M,,,,"),  # fix quality 0
        "$GPGSV,3,1,11,03,03,111,00,04,15,270,00,06,01,010,00,13,06,292,00*74",
    ]
    path = tmp_path / "log.nmea"
    path.write_text("\n".join(lines) + "\n")
    warnings: list[str] = []
    f = read_track(path, warnings)
    assert len(f) == 3
    assert list(f.t) == [utc("2023-12-31T23:59:58"), utc("2023-12-31T23:59:59"), utc("2024-01-01T00:00:01")]
    assert f.lat[0] == pytest.approx(-(33 + 52.128 / 60)) and f.lon[0] == pytest.approx(151 + 12.558 / 60)
    assert (f.sats[0], f.hdop[0], f.pdop[0], f.alt[0]) == (8, 0.9, 1.8, 25.0)  # GGA + GSA + RMC merged
    assert math.isnan(f.pdop[1]) and f.alt[2] == 27.0
    assert any("2 void or fixless" in w for w in warnings)


def test_nmea_bad_checksum(tmp_path):
    path = tmp_path / "log.nmea"
    good = nmea("GPRMC,092204.999,A,4250.5589,S,14718.5084,E,0.00,89.68,211200,,")
    bad = good[:-2] + ("00" if good[-2:] != "00" else "01")
    path.write_text("\n".join([good, good.replace("092204", "092205")[:-2] + "00", bad]) + "\n")
    one_line_error(path, record="line 2: bad checksum")


def test_nmea_bad_field(tmp_path):
    path = tmp_path / "log.nmea"
    path.write_text(
        nmea("GPRMC,092204.999,A,4250.5589,S,14718.5084,E,0.00,89.68,211200,,")
        + "\n"
        + nmea("GPRMC,0922x4.999,A,4250.5589,S,14718.5084,E,0.00,89.68,211200,,")
        + "\n"
    )
    one_line_error(path, record="line 2")


# --- KML / KMZ -------------------------------------------------------------------------------------

KML = """<?xml version="1.0" encoding="UTF-8"?>
<kml xmlns="http://www.opengis.net/kml/2.2" xmlns:gx="http://www.google.com/kml/ext/2.2">
<Document><Folder>
  <Placemark><name>start</name><TimeStamp><when>2024-02-03T08:00:00-03:00</when></TimeStamp>
    <Point><coordinates>-58.3816,-34.6037,25</coordinates></Point></Placemark>
  <Placemark><name>no time</name><Point><coordinates>-58.40,-34.61,0</coordinates></Point></Placemark>
  <Placemark><gx:Track>
    <when>2024-02-03T11:05:00Z</when><when>2024-02-03T11:06:00Z</when>
    <gx:coord>-58.3820 -34.6040 30</gx:coord><gx:coord>-58.3830 -34.6050 31</gx:coord>
  </gx:Track></Placemark>
</Folder></Document></kml>
"""


def test_kmz_timestamped_placemarks_and_track_keep_southern_western_signs(tmp_path):
    path = tmp_path / "day.kmz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("files/readme.txt", "not the kml")
        zf.writestr("doc.kml", KML)
    warnings: list[str] = []
    f = read_track(path, warnings)
    assert len(f) == 3
    assert list(f.t) == [utc("2024-02-03T11:00:00"), utc("2024-02-03T11:05:00"), utc("2024-02-03T11:06:00")]
    assert (f.lat[0], f.lon[0], f.alt[0]) == (-34.6037, -58.3816, 25)
    assert (f.lat[2], f.lon[2], f.alt[2]) == (-34.6050, -58.3830, 31)
    assert f.segment.tolist() == [-1, 0, 0]
    assert warnings == [f"{path}: 1 point(s) without a time; not used"]


def _fastkml_fixes(path: Path) -> list[tuple]:
    """Timed points as fastkml reads them: the reference our KML reader is held to."""
    kml = pytest.importorskip("fastkml.kml")
    doc = kml.KML.parse(path, strict=False)
    out = []

    def walk(container) -> None:
        for feature in getattr(container, "features", None) or []:
            geometry = getattr(feature, "kml_geometry", None)
            if type(geometry).__name__ == "Track":
                for item in geometry.track_items:
                    lon, lat, *alt = item.coord.coords[0]
                    out.append((item.when.dt.timestamp(), lat, lon, alt[0] if alt else None))
            elif type(geometry).__name__ == "Point" and getattr(feature.times, "timestamp", None):
                lon, lat, *alt = geometry.geometry.coords[0]
                out.append((feature.times.timestamp.dt.timestamp(), lat, lon, alt[0] if alt else None))
            walk(feature)

    walk(doc)
    return sorted(out)


@pytest.mark.filterwarnings("ignore")  # fastkml warns that lxml is absent
def test_kml_reader_agrees_with_fastkml(tmp_path):
    made = tmp_path / "day.kml"
    made.write_text(KML)
    for path in (exiftool_dir() / "Geotag.kml", made):
        f = read_track(path)
        ours = sorted(
            (
                float(f.t[i]),
                float(f.lat[i]),
                float(f.lon[i]),
                None if math.isnan(f.alt[i]) else float(f.alt[i]),
            )
            for i in range(len(f))
        )
        assert ours == _fastkml_fixes(path)


def test_kml_malformed(tmp_path):
    bad = tmp_path / "day.kml"
    for broken, record, what in (
        ("<when>2024-02-03T11:06:00Z</when>", "gx:Track point 2", "<when>yesterday</when>"),
        ("<gx:coord>-58.3830 -34.6050 31</gx:coord>", "gx:Track point 2", "<gx:coord>west south</gx:coord>"),
        ("<gx:coord>-58.3830 -34.6050 31</gx:coord>", "gx:Track point 1", ""),
        ("-58.3816,-34.6037,25", "Placemark 1", "abc,def"),
        ("2024-02-03T08:00:00-03:00", "Placemark 1", "soon"),
    ):
        bad.write_text(KML.replace(broken, what))
        one_line_error(bad, record=record)
    bad.write_text(KML.replace("2024-02-03T08:00:00-03:00", "2024-02-03"))  # a date is no moment: unused
    assert len(read_track(bad)) == 2
    bad.write_text(
        KML.replace("<gx:coord>-58.3830 -34.6050 31</gx:coord>", "<gx:coord>-58.3830 -94.6 31</gx:coord>")
    )
    assert "latitude -94.6 out of range" in one_line_error(bad, record="gx:Track point 2")
    bad.write_text(KML.replace("</Folder>", ""))
    one_line_error(bad, record="line 11")


def test_kmz_limits(tmp_path, monkeypatch):
    path = tmp_path / "big.kmz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("doc.kml", KML + " " * 5000)
    monkeypatch.setattr("geotag.io.tracks.kml.MAX_ZIP_MEMBER_BYTES", 4096)
    assert "limit" in one_line_error(path, record="doc.kml")
    notzip = tmp_path / "broken.kmz"
    notzip.write_bytes(b"PK\x03\x04 this is not a zip")
    one_line_error(notzip, record="KMZ")


# --- GeoJSON ---------------------------------------------------------------------------------------


def test_geojson_lines_with_coord_times_and_timed_points(tmp_path):
    doc = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"coordTimes": ["2024-03-01T10:00:00Z", "2024-03-01T10:00:05Z"]},
                "geometry": {
                    "type": "LineString",
                    "coordinates": [[-122.41, 37.77, 10], [-122.42, 37.78, 11]],
                },
            },
            {
                "type": "Feature",
                "properties": {"coordTimes": [["2024-03-01T11:00:00Z"], ["2024-03-01T12:00:00+01:00"]]},
                "geometry": {"type": "MultiLineString", "coordinates": [[[-122.5, 37.7]], [[-122.6, 37.6]]]},
            },
            {
                "type": "Feature",
                "properties": {"time": "2024-03-01T09:00:00Z"},
                "geometry": {"type": "Point", "coordinates": [-122.3, 37.9]},
            },
            {
                "type": "Feature",
                "properties": {"timestamp": 1709280000000},
                "geometry": {"type": "Point", "coordinates": [-122.2, 37.95]},
            },
            {
                "type": "Feature",
                "properties": {"name": "no time"},
                "geometry": {"type": "Point", "coordinates": [-122.2, 37.95]},
            },
        ],
    }
    path = tmp_path / "ride.geojson"
    path.write_text(json.dumps(doc))
    f = read_track(path)
    assert len(f) == 6
    assert f.t[0] == 1709280000.0 == utc("2024-03-01T08:00:00") and f.t[1] == utc("2024-03-01T09:00:00")
    assert f.t.tolist()[2:] == [
        utc("2024-03-01T10:00:00"),
        utc("2024-03-01T10:00:05"),
        utc("2024-03-01T11:00:00"),
        utc("2024-03-01T11:00:00"),
    ]
    assert (f.lat[2], f.lon[2], f.alt[2]) == (37.77, -122.41, 10)
    assert f.segment.tolist() == [-1, -1, 0, 0, 1, 2]


def test_geojson_times_property_and_malformed(tmp_path):
    path = tmp_path / "line.json"
    feature = {
        "type": "Feature",
        "properties": {"times": ["2024-03-01T10:00:00Z"]},
        "geometry": {"type": "LineString", "coordinates": [[2.35, 48.85], [2.36, 48.86]]},
    }
    path.write_text(json.dumps(feature))
    assert "2 coordinates but 1 times" in one_line_error(path, record="feature 1")
    feature["properties"]["times"] = ["2024-03-01T10:00:00Z", "soon"]
    path.write_text(json.dumps(feature))
    one_line_error(path, record="feature 1 point 2")
    broken = tmp_path / "broken.geojson"
    broken.write_text('{"type": "Feature",\n "geometry": }')
    one_line_error(broken, record="line 2")


# --- CSV -------------------------------------------------------------------------------------------


def test_csv_exiftool_columns_and_zones(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text(
        "GPSDateTime,GPSLatitude,GPSLongitude,GPSAltitude,Notes\n"
        "2024:05:01 10:00:00Z,-22.9068,-43.1729,5.5,beach\n"
        "2024:05:01 07:00:10-03:00,22 54 25 S,43 10 23 W,6,\n"
        "2024:05:01 10:00:20,-22.9070,-43.1731,,naive is UTC\n"
    )
    f = read_track(path)
    assert f.t.tolist() == [
        utc("2024-05-01T10:00:00"),
        utc("2024-05-01T10:00:10"),
        utc("2024-05-01T10:00:20"),
    ]
    assert (f.lat[0], f.lon[0], f.alt[0]) == (-22.9068, -43.1729, 5.5)
    assert f.lat[1] == pytest.approx(-(22 + 54 / 60 + 25 / 3600)) and f.lon[1] < 0 and math.isnan(f.alt[2])


def test_csv_plain_and_date_time_columns(tmp_path):
    plain = tmp_path / "plain.csv"
    plain.write_text("time;latitude;longitude;ele;hdop;sats\n2024-05-01T12:00:00+02:00;45.1;7.6;300;0.8;9\n")
    f = read_track(plain)
    assert f.t[0] == utc("2024-05-01T10:00:00") and (f.lat[0], f.lon[0], f.alt[0], f.hdop[0], f.sats[0]) == (
        45.1,
        7.6,
        300,
        0.8,
        9,
    )
    split = tmp_path / "split.csv"
    split.write_text(
        "GPSDateStamp,GPSTimeStamp,GPSLatitude,GPSLatitudeRef,GPSLongitude,GPSLongitudeRef\n"
        "2024:05:01,10:00:00.5,12.5,S,77.0,W\n"
    )
    f = read_track(split)
    assert f.t[0] == utc("2024-05-01T10:00:00.5") and (f.lat[0], f.lon[0]) == (-12.5, -77.0)


def test_csv_malformed(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("time,lat,lon\n2024-05-01T10:00:00Z,45.1,7.6\n2024-05-01T10:00:05Z,north,7.6\n")
    assert "'north' is no number" in one_line_error(path, record="line 3")
    path.write_text("time,lat,lon\n2024-05-01T10:00:00Z,45.1,7.6\nlater,45.1,7.6\n")
    one_line_error(path, record="line 3")
    path.write_text("time,lat,lon\n2024-05-01T10:00:00Z,45.1,190.5\n")
    assert "longitude 190.5 out of range" in one_line_error(path, record="line 2")


# --- TCX -------------------------------------------------------------------------------------------

TCX = """<?xml version="1.0" encoding="UTF-8"?>
<TrainingCenterDatabase xmlns="http://www.garmin.com/xmlschemas/TrainingCenterDatabase/v2">
 <Activities><Activity Sport="Running"><Id>2024-06-01T06:00:00Z</Id><Lap StartTime="2024-06-01T06:00:00Z">
  <Track>
   <Trackpoint><Time>2024-06-01T06:00:00Z</Time><HeartRateBpm><Value>90</Value></HeartRateBpm></Trackpoint>
   <Trackpoint><Time>2024-06-01T06:00:01.000Z</Time>
     <Position><LatitudeDegrees>-41.2865</LatitudeDegrees><LongitudeDegrees>174.7762</LongitudeDegrees></Position>
     <AltitudeMeters>15.2</AltitudeMeters></Trackpoint>
   <Trackpoint><Time>2024-06-01T06:00:05Z</Time>
     <Position><LatitudeDegrees>-41.2866</LatitudeDegrees><LongitudeDegrees>174.7763</LongitudeDegrees></Position>
   </Trackpoint>
  </Track></Lap></Activity></Activities>
</TrainingCenterDatabase>
"""


def test_tcx(tmp_path):
    path = tmp_path / "run.tcx"
    path.write_text(TCX)
    f = read_track(path)
    assert len(f) == 2 and f.t.tolist() == [utc("2024-06-01T06:00:01"), utc("2024-06-01T06:00:05")]
    assert (f.lat[0], f.lon[0], f.alt[0]) == (-41.2865, 174.7762, 15.2) and math.isnan(f.alt[1])
    path.write_text(TCX.replace("2024-06-01T06:00:05Z", "06:00:05"))
    one_line_error(path, record="Trackpoint 3")


# --- IGC -------------------------------------------------------------------------------------------


def test_igc_crosses_midnight_and_malformed(tmp_path):
    path = tmp_path / "flight.igc"
    path.write_text(
        "AXXXABC\nHFDTEDATE:311223,01\n"
        "B2359583352128S15112558EA0010000120\n"
        "B0000023352130S15112560EV0010000000\n"
    )
    f = read_track(path)
    assert f.t.tolist() == [utc("2023-12-31T23:59:58"), utc("2024-01-01T00:00:02")]
    assert f.lat[0] == pytest.approx(-(33 + 52.128 / 60)) and f.alt[0] == 120 and math.isnan(f.alt[1])
    path.write_text("AXXXABC\nHFDTE311223\nB2359583352128S15112558EA0010000120\nB00000X3352130S1511\n")
    one_line_error(path, record="line 4")


# --- Google location history -----------------------------------------------------------------------


def test_takeout_records_json(tmp_path):
    path = tmp_path / "Records.json"
    path.write_text(
        json.dumps(
            {
                "locations": [
                    {
                        "latitudeE7": 488583700,
                        "longitudeE7": 22944810,
                        "accuracy": 14,
                        "altitude": 80,
                        "timestamp": "2022-07-01T10:00:00.123Z",
                    },
                    {
                        "latitudeE7": -338688000,
                        "longitudeE7": -1512093000 + 2**32,
                        "accuracy": 30,
                        "timestampMs": "1656669660000",
                    },
                    {"timestampMs": "1656669670000", "activity": []},
                ]
            }
        )
    )
    f = read_track(path)
    assert len(f) == 2
    assert f.t[0] == pytest.approx(utc("2022-07-01T10:00:00.123")) and f.t[1] == 1656669660.0
    assert (f.lat[0], f.lon[0], f.accuracy_m[0], f.alt[0]) == pytest.approx((48.85837, 2.294481, 14, 80))
    assert (f.lat[1], f.lon[1]) == pytest.approx((-33.8688, -151.2093))  # overflowed E7 wrapped back
    path.write_text(json.dumps({"locations": [{"latitudeE7": 1, "longitudeE7": 2, "timestamp": "noon"}]}))
    one_line_error(path, record="location 1")


def test_takeout_timeline_export(tmp_path):
    path = tmp_path / "Timeline.json"
    path.write_text(
        json.dumps(
            {
                "semanticSegments": [
                    {
                        "startTime": "2024-04-01T08:00:00.000+02:00",
                        "endTime": "2024-04-01T09:00:00.000+02:00",
                        "timelinePath": [
                            {"point": "48.8566°, 2.3522°", "time": "2024-04-01T08:00:00.000+02:00"},
                            {"point": "48.8606°, 2.3376°", "time": "2024-04-01T08:30:00.000+02:00"},
                        ],
                    },
                    {
                        "startTime": "2024-04-01T09:00:00.000+02:00",
                        "endTime": "2024-04-01T10:00:00.000+02:00",
                        "visit": {"topCandidate": {"placeLocation": {"latLng": "48.8606°, 2.3376°"}}},
                    },
                    {
                        "startTime": "2024-04-01T10:00:00.000+02:00",
                        "endTime": "2024-04-01T10:20:00.000+02:00",
                        "activity": {
                            "start": {"latLng": "48.8606°, 2.3376°"},
                            "end": {"latLng": "-33.1°, -70.2°"},
                        },
                    },
                ],
                "rawSignals": [
                    {"wifiScan": {"deliveryTime": "2024-04-01T08:10:00.000+02:00"}},
                    {
                        "position": {
                            "LatLng": "48.85°, 2.34°",
                            "accuracyMeters": 12,
                            "altitudeMeters": 40.5,
                            "timestamp": "2024-04-01T08:15:00.000+02:00",
                        }
                    },
                ],
                "userLocationProfile": {"frequentPlaces": []},
            }
        )
    )
    f = read_track(path)
    assert detect_format(path) == "takeout-timeline"
    hours = (f.t - utc("2024-04-01T06:00:00")) / 60
    assert hours.tolist() == [0, 15, 30, 60, 120, 120, 140]
    assert (f.lat[1], f.lon[1], f.accuracy_m[1], f.alt[1]) == (48.85, 2.34, 12, 40.5)
    assert (f.lat[-1], f.lon[-1]) == (-33.1, -70.2)
    path.write_text(
        json.dumps(
            {
                "semanticSegments": [
                    {
                        "startTime": "2024-04-01T08:00:00Z",
                        "timelinePath": [{"point": "north", "time": "2024-04-01T08:00:00Z"}],
                    }
                ]
            }
        )
    )
    one_line_error(path, record="semanticSegment 1 point 1")


def test_takeout_ios_export(tmp_path):
    path = tmp_path / "location-history.json"
    path.write_text(
        json.dumps(
            [
                {
                    "startTime": "2024-04-01T08:00:00.000+02:00",
                    "endTime": "2024-04-01T09:00:00.000+02:00",
                    "timelinePath": [
                        {"point": "geo:48.856600,2.352200", "durationMinutesOffsetFromStartTime": "0"},
                        {"point": "geo:48.860600,2.337600", "durationMinutesOffsetFromStartTime": "25"},
                    ],
                },
            ]
        )
    )
    f = read_track(path)
    assert f.t.tolist() == [utc("2024-04-01T06:00:00"), utc("2024-04-01T06:25:00")]
    assert (f.lat[1], f.lon[1]) == (48.8606, 2.3376)


# --- several files, folders, unknown formats, quality ----------------------------------------------


def test_read_tracks_merges_by_time_and_walks_folders(tmp_path):
    a = tmp_path / "logs" / "a.csv"
    b = tmp_path / "logs" / "sub" / "b.gpx"
    b.parent.mkdir(parents=True)
    a.write_text("time,lat,lon\n2024-05-01T10:00:00Z,1,1\n2024-05-01T10:10:00Z,3,3\n")
    b.write_text(
        '<gpx version="1.1"><trk><trkseg><trkpt lat="2" lon="2"><time>2024-05-01T10:05:00Z</time>'
        "</trkpt></trkseg></trk></gpx>"
    )
    (tmp_path / "logs" / "manifest.json").write_text('{"photos": []}')
    (tmp_path / "logs" / ".hidden.gpx").write_text("<gpx")
    (tmp_path / "logs" / "notes.md").write_text("ignored")
    result = read_tracks([tmp_path / "logs"])
    assert result.files == (str(a), str(b))
    assert result.fixes.lat.tolist() == [1, 2, 3]
    assert [result.fixes.sources[s] for s in result.fixes.source] == [str(a), str(b), str(a)]
    assert result.warnings == (
        f"{tmp_path / 'logs' / 'manifest.json'}: not a track format geotag reads; skipped",
    )
    again = read_tracks([b, tmp_path / "logs"])  # a file named and found again is read once
    assert again.files == (str(b), str(a)) and len(again.fixes) == 3


def test_unknown_and_missing(tmp_path):
    odd = tmp_path / "notes.json"
    odd.write_text('{"photos": []}')
    with pytest.raises(TrackError) as info:
        read_track(odd)
    assert str(info.value).startswith(f"{odd}: not a track format geotag reads (GPX, NMEA 0183")
    assert isinstance(info.value, InputError) and info.value.exit_code == 2
    with pytest.raises(TrackError, match="no such file"):
        read_tracks([tmp_path / "absent.gpx"])


def test_filter_quality_keeps_unknown(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text(
        "time,lat,lon,hdop,sats,accuracy\n"
        "2024-05-01T10:00:00Z,1,1,0.9,9,\n"
        "2024-05-01T10:00:01Z,1,1,5.0,9,\n"
        "2024-05-01T10:00:02Z,1,1,1.0,3,\n"
        "2024-05-01T10:00:03Z,1,1,,,\n"
        "2024-05-01T10:00:04Z,1,1,,,80\n"
    )
    f = read_track(path)
    assert len(filter_quality(f)) == 5
    assert (filter_quality(f, max_hdop=2).t - f.t[0]).tolist() == [0, 2, 3, 4]
    assert (filter_quality(f, min_sats=4).t - f.t[0]).tolist() == [0, 1, 3, 4]
    assert (filter_quality(f, max_hdop=2, min_sats=4, max_accuracy_m=50).t - f.t[0]).tolist() == [0, 3]
    assert len(filter_quality(f, max_pdop=1)) == 5  # no pdop known: all kept


# --- damaged files: one error line, never a traceback ----------------------------------------------


def test_damaged_files_give_track_errors_only(tmp_path):
    import random

    samples = {
        "a.gpx": GPX11.encode(),
        "a.kml": KML.encode(),
        "a.tcx": TCX.encode(),
        "a.nmea": (exiftool_dir() / "Geotag2.log").read_bytes(),
        "a.log": (exiftool_dir() / "Geotag.log").read_bytes(),
        "a.igc": (exiftool_dir() / "Geotag.igc").read_bytes(),
        "a.csv": b"time,lat,lon,alt\n2024-05-01T10:00:00Z,-22.9,-43.1,5\n2024-05-01T10:00:10Z,-22.8,-43.2,6\n"
        b"2024-05-01T10:00:20Z,-22.7,-43.3,7\n",
        "a.geojson": json.dumps(
            {
                "type": "Feature",
                "properties": {"coordTimes": ["2024-03-01T10:00:00Z", "2024-03-01T10:00:05Z"]},
                "geometry": {
                    "type": "LineString",
                    "coordinates": [[-122.41, 37.77, 10], [-122.42, 37.78, 11]],
                },
            }
        ).encode(),
        "Records.json": json.dumps(
            {
                "locations": [
                    {"latitudeE7": 488583700, "longitudeE7": 22944810, "timestamp": "2022-07-01T10:00:00Z"}
                ]
            }
        ).encode(),
    }
    rng = random.Random(25)
    for name, data in samples.items():
        path = tmp_path / name
        for _ in range(40):
            damaged = bytearray(data)
            if rng.random() < 0.4:
                damaged = damaged[: rng.randrange(len(damaged))]
            else:
                for _ in range(rng.randint(1, 3)):
                    damaged[rng.randrange(len(damaged))] = rng.choice(b'0123456789-.,:TZ <>/"{}[]$*\n\xff')
            path.write_bytes(bytes(damaged))
            try:
                read_track(path, [])
            except TrackError as e:
                assert "\n" not in str(e) and str(e).startswith(str(path))


def test_unknown_xml_encoding_and_bad_nmea_date(tmp_path):
    gpx = tmp_path / "odd.gpx"
    gpx.write_text(GPX11.replace('encoding="UTF-8"', 'encoding="UBF-8"'))
    one_line_error(gpx, record="line 1")
    log = tmp_path / "log.nmea"
    log.write_text(nmea("GPRMC,092204.999,A,4250.5589,S,14718.5084,E,0.00,89.68,3x1200,,") + "\n")
    assert "date" in one_line_error(log, record="line 1")


def test_size_cap_and_empty_folder(tmp_path, monkeypatch):
    path = tmp_path / "big.csv"
    path.write_text("time,lat,lon\n" + "2024-05-01T10:00:00Z,1,1\n" * 100)
    monkeypatch.setattr("geotag.io.tracks._base.MAX_TRACK_BYTES", 1000)
    assert "track files over 1,000 bytes are not read" in one_line_error(path, record="bytes")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert read_tracks([empty]).warnings == (f"{empty}: no track files in this folder",)


def test_geojson_shapes_checked(tmp_path):
    path = tmp_path / "odd.geojson"
    path.write_text(
        json.dumps(
            {
                "type": "Feature",
                "properties": {},
                "geometry": {"type": "MultiLineString", "coordinates": None},
            }
        )
    )
    one_line_error(path, record="feature 1")


def test_nmea_unknown_hemisphere_is_an_error(tmp_path):
    log = tmp_path / "log.nmea"
    log.write_text(nmea("GPRMC,092204.999,A,4250.5589,X,14718.5084,E,0.00,89.68,211200,,") + "\n")
    assert "hemisphere" in one_line_error(log, record="line 1")


def test_igc_unknown_hemisphere_is_an_error(tmp_path):
    path = tmp_path / "flight.igc"
    path.write_text("AXXXABC\nHFDTE311223\nB2359583352128X15112558EA0010000120\n")
    assert "hemisphere" in one_line_error(path, record="line 3")


def test_nmea_without_any_date_is_a_warning(tmp_path):
    log = tmp_path / "gga.nmea"
    log.write_text(nmea("GPGGA,092204.00,3352.1280,S,15112.5580,E,1,08,0.9,25.0,M,,,,") + "\n")
    result = read_tracks([log])
    assert len(result.fixes) == 0
    assert result.warnings == (
        f"{log}: no point with a time; not used",
        f"{log}: 1 fix(es) without a date (no RMC or ZDA sentence in the file); not used",
    )


def test_bench_track_read_tiny_prints_its_table():
    import subprocess
    import sys

    from conftest import REPO

    proc = subprocess.run(
        [
            sys.executable,
            "bench/track_read.py",
            "--points",
            "300",
            "--formats",
            "gpx,gpxpy,csv,records,nmea,kml,geojson",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| format" not in proc.stdout  # a rich table, not markdown
    assert "GPX 1.1 via gpxpy (reference)" in proc.stdout and "Takeout Records.json" in proc.stdout
    summary = [
        line for line in proc.stdout.splitlines() if line.startswith("summary: 300 points per file; gpx ")
    ]
    assert summary and "records" in summary[0] and "nmea" in summary[0], proc.stdout[-2000:]


def test_zip_without_kml(tmp_path):
    archive = tmp_path / "takeout.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("Takeout/Location History/Records.json", '{"locations": []}')
    assert "unzip other archives first" in one_line_error(archive, record="zip")


def test_time_and_degree_parsing():
    from geotag.io.tracks._base import parse_degrees, parse_time

    assert (
        parse_time("2024-05-01T12:00:00+02:00")
        == parse_time("2024-05-01T10:00:00Z")
        == utc("2024-05-01T10:00:00")
    )
    assert parse_time("2024-05-01T10:00:00") == utc("2024-05-01T10:00:00")  # naive: UTC
    assert parse_time("2024:05:01 06:30:00-0330") == utc(
        "2024-05-01T10:00:00"
    )  # EXIF style, zone without colon
    assert parse_time("20240501T100000Z") == utc("2024-05-01T10:00:00")
    assert parse_time("2024-05-01T10:00:00.123456789Z") == pytest.approx(utc("2024-05-01T10:00:00.123456"))
    assert parse_time("2024-05-01") is None and parse_time("noon") is None and parse_time("") is None
    assert parse_degrees("-33.87") == -33.87 and parse_degrees("33.87 S") == -33.87
    assert parse_degrees("33 52 12 S") == pytest.approx(-(33 + 52 / 60 + 12 / 3600))
    assert parse_degrees("151 deg 12' 30.5\" E") == pytest.approx(151 + 12 / 60 + 30.5 / 3600)
    assert math.isnan(parse_degrees("north")) and math.isnan(parse_degrees("33 75 0"))


# --- exiftool reads the same samples the same way ---------------------------------------------------

GPX_ZONES = """<?xml version="1.0"?>
<gpx version="1.1" xmlns="http://www.topografix.com/GPX/1/1"><trk><trkseg>
<trkpt lat="-12.0464" lon="-77.0428"><ele>150</ele><time>2024-05-01T05:00:00-05:00</time></trkpt>
<trkpt lat="-12.0500" lon="-77.0500"><ele>160</ele><time>2024-05-01T10:00:30Z</time></trkpt>
</trkseg><trkseg>
<trkpt lat="-12.0600" lon="-77.0550"><ele>170</ele><time>2024-05-01T10:01:30</time></trkpt>
</trkseg></trk></gpx>
"""


def _exiftool_samples(tmp_path: Path) -> list[tuple[Path, list[str]]]:
    """(track, [UTC Geotimes strictly between its fixes]) for formats exiftool 12.57 reads."""
    files = {
        "zones.gpx": (GPX_ZONES, ["2024-05-01T10:00:10", "2024-05-01T10:01:00"]),
        "log.csv": (
            "GPSDateTime,GPSLatitude,GPSLongitude,GPSAltitude\n2024:05:01 10:00:00Z,-22.9068,-43.1729,5.5\n"
            "2024:05:01 07:00:10-03:00,-22.9070,-43.1740,6\n2024:05:01 10:00:20,-22.9080,-43.1750,7\n",
            ["2024-05-01T10:00:05", "2024-05-01T10:00:15"],
        ),
        "log.nmea": (
            "\n".join(
                [
                    nmea("GPRMC,235958.00,A,3352.1280,S,15112.5580,E,0.1,0.0,311223,,,A"),
                    nmea("GPGGA,235958.00,3352.1280,S,15112.5580,E,1,08,0.9,25.0,M,,,,"),
                    nmea("GPRMC,235959.00,A,3352.1290,S,15112.5590,E,0.1,0.0,311223,,,A"),
                    nmea("GPRMC,000004.00,A,3352.1300,S,15112.5600,E,0.1,0.0,010124,,,A"),
                    nmea("GPGGA,000004.00,3352.1300,S,15112.5600,E,1,06,1.3,27.0,M,,,,"),
                ]
            )
            + "\n",
            ["2023-12-31T23:59:58.5", "2024-01-01T00:00:02"],
        ),
        "day.kml": (KML, ["2024-02-03T11:02:30", "2024-02-03T11:05:30"]),
        "run.tcx": (TCX, ["2024-06-01T06:00:03"]),
        "flight.igc": (
            "AXXXABC\nHFDTE311223\nB2359583352128S15112558EA0010000120\nB0000023352130S15112560EA0010000140\n",
            ["2024-01-01T00:00:00"],
        ),
        "Records.json": (
            json.dumps(
                {
                    "locations": [
                        {
                            "latitudeE7": 488583700,
                            "longitudeE7": 22944810,
                            "timestamp": "2022-07-01T10:00:00Z",
                        },
                        {
                            "latitudeE7": 488600000,
                            "longitudeE7": 22950000,
                            "timestamp": "2022-07-01T12:01:00+02:00",
                        },
                    ]
                },
                indent=2,
            )
            + "\n",
            ["2022-07-01T10:00:30"],
        ),
    }
    out = []
    for name, (text, times) in files.items():
        (tmp_path / name).write_text(text)
        out.append((tmp_path / name, times))
    return out


def test_exiftool_reads_the_samples_the_same(tmp_path):
    """exiftool -geotag on each sample at Geotimes inside it (one exiftool run, -execute per case) places
    the photo where linear interpolation of our fixes does: the same times, zones, dates and positions."""
    import subprocess

    from PIL import Image

    from geotag.io.exif_write import find_exiftool

    exiftool = find_exiftool()
    if exiftool is None:
        pytest.skip("exiftool not installed")
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (8, 8)).save(photo)
    args: list[str] = []
    expected: dict[str, tuple[float, float]] = {}
    for track, times in _exiftool_samples(tmp_path):
        fixes = read_track(track)
        for k, when in enumerate(times):
            out = tmp_path / f"{track.name}_{k}.jpg"
            geotime = when.replace("-", ":", 2).replace("T", " ") + "Z"
            args += ["-geotag", str(track), f"-geotime={geotime}", "-o", str(out), str(photo), "-execute"]
            expected[out.name] = at(fixes, utc(when))[:2]
    subprocess.run([exiftool, "-q", "-q", *args], check=True, capture_output=True, timeout=120)
    outs = sorted(tmp_path.glob("*_?.jpg"))
    assert len(outs) == len(expected)
    shown = subprocess.run(
        [exiftool, "-j", "-n", "-GPSLatitude", "-GPSLongitude", *map(str, outs)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    for tags in json.loads(shown.stdout):
        name = Path(tags["SourceFile"]).name
        assert (tags["GPSLatitude"], tags["GPSLongitude"]) == pytest.approx(expected[name], abs=1e-6), name


def test_a_fifo_named_as_a_track_is_refused_without_hanging(tmp_path: Path) -> None:
    """Opened non-blocking (geotag.io.bounded): a FIFO is one line, never a read that waits for a writer."""
    fifo = tmp_path / "track.gpx"
    os.mkfifo(fifo)
    with pytest.raises(TrackError, match="not a regular file"):
        read_track(fifo)
