"""Benchmark the track readers on one large synthetic file per big format (GPX, CSV, Takeout Records.json,
and NMEA / KML / GeoJSON for comparison).

    .venv/bin/python bench/track_read.py [--points 20000] [--formats gpx,csv,records] [--repeat 1]
        [--dir DIR]

--formats takes gpx, gpxpy (the same GPX read by gpxpy, for comparison), csv, records, nmea, kml and
geojson.

Writes each file (a walk along a line, one fix a second, hdop and satellites where the format has
them) into a temporary folder, then times `read_track` on it (best of --repeat) and checks the point
count. Wall time ("read s", which sets fixes/s) and this process's CPU time ("cpu s": on a shared
machine the wall time also counts other people's work) are both shown. Prints a table and a one-line
summary. The issue's target: a 100,000-point GPX in a few seconds (`--points 100000`).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime, timedelta
from functools import reduce
from pathlib import Path

from rich.console import Console
from rich.table import Table

from geotag.io.tracks import read_track

START = datetime(2024, 5, 1, 6, 0, 0, tzinfo=UTC)


def points(n: int):
    for i in range(n):
        yield START + timedelta(seconds=i), 45.0 + i * 1e-5, 7.0 - i * 1e-5, 300.0 + (i % 500) * 0.1


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def write_gpx(path: Path, n: int) -> None:
    with open(path, "w") as f:
        f.write('<?xml version="1.0" encoding="UTF-8"?>\n<gpx version="1.1" creator="bench" ')
        f.write('xmlns="http://www.topografix.com/GPX/1/1">\n<trk><trkseg>\n')
        for t, lat, lon, alt in points(n):
            f.write(
                f'<trkpt lat="{lat:.6f}" lon="{lon:.6f}"><ele>{alt:.1f}</ele><time>{iso(t)}</time>'
                f"<sat>8</sat><hdop>1.1</hdop></trkpt>\n"
            )
        f.write("</trkseg></trk>\n</gpx>\n")


def write_csv(path: Path, n: int) -> None:
    with open(path, "w") as f:
        f.write("GPSDateTime,GPSLatitude,GPSLongitude,GPSAltitude\n")
        for t, lat, lon, alt in points(n):
            f.write(f"{t:%Y:%m:%d %H:%M:%S}Z,{lat:.6f},{lon:.6f},{alt:.1f}\n")


def write_records(path: Path, n: int) -> None:
    with open(path, "w") as f:
        f.write('{\n  "locations": [')
        for i, (t, lat, lon, alt) in enumerate(points(n)):
            item = {
                "latitudeE7": round(lat * 1e7),
                "longitudeE7": round(lon * 1e7),
                "accuracy": 12,
                "altitude": round(alt),
                "source": "WIFI",
                "timestamp": t.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            }
            f.write(("," if i else "") + "\n    " + json.dumps(item))
        f.write("\n  ]\n}\n")


def _nmea(body: str) -> str:
    return f"${body}*{reduce(lambda a, c: a ^ ord(c), body, 0):02X}\n"


def _dm(value: float, width: int) -> str:
    d = int(abs(value))
    return f"{d:0{width}d}{(abs(value) - d) * 60:07.4f}"


def write_nmea(path: Path, n: int) -> None:
    with open(path, "w") as f:
        for t, lat, lon, alt in points(n):
            hms, dmy = t.strftime("%H%M%S.00"), t.strftime("%d%m%y")
            la, lo = _dm(lat, 2), _dm(lon, 3)
            f.write(_nmea(f"GPGGA,{hms},{la},N,{lo},E,1,08,1.1,{alt:.1f},M,,,,"))
            f.write(_nmea(f"GPRMC,{hms},A,{la},N,{lo},E,0.5,90.0,{dmy},,,A"))


def write_kml(path: Path, n: int) -> None:
    with open(path, "w") as f:
        f.write('<?xml version="1.0" encoding="UTF-8"?>\n<kml xmlns="http://www.opengis.net/kml/2.2" ')
        f.write('xmlns:gx="http://www.google.com/kml/ext/2.2"><Document><Placemark><gx:Track>\n')
        for t, _, _, _ in points(n):
            f.write(f"<when>{iso(t)}</when>\n")
        for _, lat, lon, alt in points(n):
            f.write(f"<gx:coord>{lon:.6f} {lat:.6f} {alt:.1f}</gx:coord>\n")
        f.write("</gx:Track></Placemark></Document></kml>\n")


def write_geojson(path: Path, n: int) -> None:
    coords, times = [], []
    for t, lat, lon, alt in points(n):
        coords.append([round(lon, 6), round(lat, 6), alt])
        times.append(iso(t))
    feature = {
        "type": "Feature",
        "properties": {"coordTimes": times},
        "geometry": {"type": "LineString", "coordinates": coords},
    }
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))


def gpxpy_count(path: Path) -> int:
    """The reference: the same file read with gpxpy (what geotag's GPX reader is tested against)."""
    import gpxpy

    gpx = gpxpy.parse(path.read_text())
    return sum(1 for t in gpx.tracks for s in t.segments for p in s.points if p.time is not None)


WRITERS = {
    "gpx": ("GPX 1.1 (geotag, defusedxml)", "track.gpx", write_gpx),
    "gpxpy": ("GPX 1.1 via gpxpy (reference)", "track.gpx", write_gpx),
    "csv": ("CSV, exiftool columns", "track.csv", write_csv),
    "records": ("Takeout Records.json (ijson)", "Records.json", write_records),
    "nmea": ("NMEA GGA+RMC (pynmea2)", "track.nmea", write_nmea),
    "kml": ("KML gx:Track", "track.kml", write_kml),
    "geojson": ("GeoJSON coordTimes", "track.geojson", write_geojson),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--points", type=int, default=20_000, help="fixes per file (default 20,000)")
    parser.add_argument("--formats", default="gpx,csv,records", help=f"comma list of {','.join(WRITERS)}")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to write the files (default: a temp dir)"
    )
    args = parser.parse_args()
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    unknown = [f for f in formats if f not in WRITERS]
    if unknown:
        parser.error(f"unknown format(s): {', '.join(unknown)}")

    table = Table(title=f"track reading, {args.points:,} points per file", box=None)
    for column in ("format", "file MB", "read s", "cpu s", "fixes/s"):
        table.add_column(column, justify="left" if column == "format" else "right")
    rates = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for key in formats:
            label, filename, write = WRITERS[key]
            path = Path(tmp) / filename
            write(path, args.points)
            best = cpu = float("inf")
            for _ in range(max(1, args.repeat)):
                start, start_cpu = time.perf_counter(), time.process_time()
                count = gpxpy_count(path) if key == "gpxpy" else len(read_track(path))
                best = min(best, time.perf_counter() - start)
                cpu = min(cpu, time.process_time() - start_cpu)
            if count != args.points:
                raise SystemExit(f"{key}: read {count} fixes, wrote {args.points}")
            rate = args.points / best
            rates.append((key, best, rate))
            table.add_row(
                label, f"{path.stat().st_size / 1e6:.1f}", f"{best:.2f}", f"{cpu:.2f}", f"{rate:,.0f}"
            )
    Console().print(table)
    print(
        f"summary: {args.points:,} points per file; "
        + "; ".join(f"{key} {seconds:.2f} s ({rate:,.0f} fixes/s)" for key, seconds, rate in rates)
    )


if __name__ == "__main__":
    main()
