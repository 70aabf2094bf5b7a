"""Helpers of the time-evidence tests: tiny JPEGs with chosen capture times, cameras and GPS; GPX tracks;
and a route whose true position at any moment is known (so every placement has a truth)."""

from __future__ import annotations

import math
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

from PIL import Image

EXIF_IFD, GPS_IFD = 0x8769, 0x8825
R_M = 6_371_008.8


def _dms(value: float) -> tuple[Fraction, Fraction, Fraction]:
    value = abs(value)
    d = int(value)
    m = int((value - d) * 60)
    s = Fraction(round(((value - d) * 60 - m) * 60 * 1_000_000), 1_000_000)
    return Fraction(d), Fraction(m), s


def write_photo(
    path: Path,
    taken: datetime | None,
    *,
    offset: str | None = None,
    subsec: str | None = None,
    make: str | None = None,
    model: str | None = None,
    serial: str | None = None,
    gps: tuple[float, float] | None = None,
    colour: tuple[int, int, int] = (90, 120, 150),
) -> Path:
    """A 16x12 JPEG whose EXIF holds what is given (DateTimeOriginal naive local time, explicit N/S/E/W)."""
    exif = Image.Exif()
    if make:
        exif[0x010F] = make
    if model:
        exif[0x0110] = model
    ifd = exif.get_ifd(EXIF_IFD)
    if taken is not None:
        ifd[0x9003] = taken.strftime("%Y:%m:%d %H:%M:%S")
    if offset:
        ifd[0x9011] = offset
    if subsec:
        ifd[0x9291] = subsec
    if serial:
        ifd[0xA431] = serial
    if gps is not None:
        g = exif.get_ifd(GPS_IFD)
        g[0] = b"\x02\x03\x00\x00"
        g[1], g[2] = ("N" if gps[0] >= 0 else "S"), _dms(gps[0])
        g[3], g[4] = ("E" if gps[1] >= 0 else "W"), _dms(gps[1])
    Image.new("RGB", (16, 12), colour).save(path, "JPEG", exif=exif.tobytes())
    return path


class Route:
    """A straight walk or drive: from (lat0, lon0) at t0 (UTC) east and north at constant m/s."""

    def __init__(self, lat0: float, lon0: float, t0: datetime, east_ms: float, north_ms: float = 0.0) -> None:
        self.lat0, self.lon0, self.t0, self.east, self.north = lat0, lon0, t0, east_ms, north_ms

    def at(self, when: datetime) -> tuple[float, float]:
        s = (when - self.t0).total_seconds()
        lat = self.lat0 + math.degrees(self.north * s / R_M)
        lon = self.lon0 + math.degrees(self.east * s / (R_M * math.cos(math.radians(self.lat0))))
        return lat, lon


def write_gpx(path: Path, points: list[tuple[datetime, float, float, float | None]]) -> Path:
    """A GPX 1.1 track, one segment; times in UTC with a Z."""
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<gpx version="1.1" creator="geotag tests" xmlns="http://www.topografix.com/GPX/1/1"><trk><trkseg>',
    ]
    for when, lat, lon, ele in points:
        ele_xml = f"<ele>{ele:.2f}</ele>" if ele is not None else ""
        lines.append(
            f'<trkpt lat="{lat:.8f}" lon="{lon:.8f}">{ele_xml}'
            f"<time>{when.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}</time></trkpt>"
        )
    lines.append("</trkseg></trk></gpx>")
    path.write_text("\n".join(lines))
    return path


def distance_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    la1, lo1, la2, lo2 = map(math.radians, (*a, *b))
    h = math.sin((la2 - la1) / 2) ** 2 + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    return 2 * R_M * math.asin(math.sqrt(h))


def run_cli(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "geotag.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def rows_by_name(path: Path) -> dict[str, dict[str, Any]]:
    import pyarrow.parquet as pq

    return {Path(r["path"]).name: r for r in pq.read_table(path).to_pylist()}


def local(when_utc: datetime, hours: float) -> datetime:
    """The naive wall-clock time at UTC offset `hours`."""
    return (when_utc + timedelta(hours=hours)).replace(tzinfo=None)
