"""What every track reader shares: bounded file access, a compact fix builder, time and coordinate parsing.

Readers append fixes to a `Builder` (array-backed, 8 bytes a value, so a 10-million-point location
history stays small) together with the record each fix came from (a line number or a point index);
`Builder.fixes` checks every coordinate at once and, when one is out of range, names that record.
"""

from __future__ import annotations

import math
import os
import re
from array import array
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import numpy as np

from geotag.errors import TrackError
from geotag.geo.fixes import Fixes
from geotag.io.bounded import NotAPhotoFile, open_regular

# A track file larger than this is refused before it is read (the biggest Google Takeout histories we
# know of are a few hundred MB; 2 GiB leaves room and still bounds memory).
MAX_TRACK_BYTES = 2 * 1024**3
# A KMZ member is decompressed only up to this size (a zip bomb stops here, not in memory).
MAX_ZIP_MEMBER_BYTES = 512 * 1024**2

NAN = math.nan


def fail(name: str, where: str | None, what: str) -> TrackError:
    """The one-line error: `track.gpx: line 14: not well-formed XML` (newlines in data are flattened)."""
    text = f"{name}: {where}: {what}" if where else f"{name}: {what}"
    return TrackError(" ".join(text.split()))


@contextmanager
def open_bounded(path: Path, limit: int | None = None) -> Iterator[BinaryIO]:
    """The file opened for reading (geotag.io.bounded: non-blocking open, so a FIFO named as a track
    never hangs), refused when it is no regular file or larger than `limit` (MAX_TRACK_BYTES when not
    given)."""
    limit = MAX_TRACK_BYTES if limit is None else limit
    name = str(path)
    try:
        f = open_regular(path, limit)
    except NotAPhotoFile as e:
        if e.reason == "too large":
            size = os.stat(path).st_size
            raise fail(name, None, f"{size:,} bytes; track files over {limit:,} bytes are not read") from None
        raise fail(name, None, "not a regular file") from None
    except OSError as e:
        raise fail(name, None, f"cannot be read ({e.strerror or e})") from None
    with f:
        yield f


def read_bounded(path: Path, limit: int | None = None) -> bytes:
    limit = MAX_TRACK_BYTES if limit is None else limit
    with open_bounded(path, limit) as f:
        return f.read(limit + 1)


def decode_text(data: bytes, name: str) -> str:
    """UTF-8 (a BOM is dropped), else Latin-1 for old loggers; UTF-16 is refused as exiftool does."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise fail(name, None, "UTF-16 text is not read; save the track as UTF-8")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


_EXIF_DATETIME = re.compile(r"^(\d{4}):(\d{2}):(\d{2})[ T]")


def parse_time(text: str) -> float | None:
    """ISO 8601 (or EXIF `YYYY:MM:DD HH:MM:SS`) to UTC seconds; a naive time is UTC, as exiftool reads
    GPS logs (its GetTime and GetUnixTime(val, 2)). None when it does not parse or has no time of day."""
    s = text.strip()
    if not s or len(s) > 64:
        return None
    m = _EXIF_DATETIME.match(s)
    if m:
        s = f"{m[1]}-{m[2]}-{m[3]}T{s[m.end() :]}"
    if len(s) <= 10:  # a date alone (2024-05-01, 20240501) is not a moment
        return None
    try:
        dt = datetime.fromisoformat(s.replace("z", "Z"))
    except ValueError:
        return None
    return datetime_seconds(dt)


def datetime_seconds(dt: datetime) -> float:
    """UTC seconds of an aware datetime, or of a naive one taken as UTC."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


class Builder:
    """Fixes gathered one at a time into typed arrays, each with the record it came from.

    `record` is the line number (line formats) or the 1-based index of the point of kind
    `kinds[kind]` (e.g. "trkpt 14"), so an error after the fact can still name the record.
    """

    def __init__(self, name: str, kinds: tuple[str, ...] = ("line",)) -> None:
        self.name = name
        self.kinds = kinds
        self.t = array("d")
        self.lat = array("d")
        self.lon = array("d")
        self.alt = array("d")
        self.hdop = array("d")
        self.pdop = array("d")
        self.sats = array("d")
        self.accuracy = array("d")
        self.segment = array("i")
        self.record = array("q")
        self.kind = array("b")
        self.untimed = 0  # points that had a position but no time (not used)
        self.notes: list[str] = []  # warnings about this file (records skipped, and why)

    def __len__(self) -> int:
        return len(self.t)

    def add(
        self,
        t: float,
        lat: float,
        lon: float,
        alt: float = NAN,
        hdop: float = NAN,
        pdop: float = NAN,
        sats: float = NAN,
        accuracy: float = NAN,
        segment: int = -1,
        record: int = 0,
        kind: int = 0,
    ) -> None:
        self.t.append(t)
        self.lat.append(lat)
        self.lon.append(lon)
        self.alt.append(alt)
        self.hdop.append(hdop)
        self.pdop.append(pdop)
        self.sats.append(sats)
        self.accuracy.append(accuracy)
        self.segment.append(segment)
        self.record.append(record)
        self.kind.append(kind)

    def where(self, i: int) -> str:
        return f"{self.kinds[self.kind[i]]} {self.record[i]}"

    def fixes(self, source: str) -> Fixes:
        """The gathered fixes, sorted by time; the first out-of-range position raises naming its record.

        The columns are views of the builder's arrays (no copy), and a track already in time order is
        not re-sorted: a long history costs its fixes' bytes once, not twice."""
        t, lat, lon = _view(self.t), _view(self.lat), _view(self.lon)
        bad_lat = ~(np.abs(lat) <= 90.0)  # NaN compares false, so it is bad too
        bad_lon = ~(np.abs(lon) <= 180.0)
        bad_t = ~np.isfinite(t)
        bad = bad_lat | bad_lon | bad_t
        if bad.any():
            i = int(np.argmax(bad))
            if bad_lat[i]:
                what = f"latitude {lat[i]:g} out of range (-90..90)"
            elif bad_lon[i]:
                what = f"longitude {lon[i]:g} out of range (-180..180)"
            else:
                what = "time out of range"
            raise fail(self.name, self.where(i), what)
        fixes = Fixes(
            t=t,
            lat=lat,
            lon=lon,
            alt=_view(self.alt),
            hdop=_view(self.hdop),
            pdop=_view(self.pdop),
            sats=_view(self.sats),
            accuracy_m=_view(self.accuracy),
            source=np.zeros(len(t), dtype=np.int32),
            segment=_view(self.segment, np.intc).astype(np.int32, copy=False),
            sources=(source,),
        )
        if len(t) > 1 and bool((np.diff(t) < 0).any()):
            fixes = fixes.sorted()
        return fixes


def _view(a: array, dtype: type = np.float64) -> np.ndarray:
    return np.frombuffer(a, dtype=dtype) if len(a) else np.empty(0, dtype=dtype)


_DMS_NUMBER = re.compile(r"[-+]?\d+(?:\.\d*)?|[-+]?\.\d+")


def parse_degrees(text: str) -> float:
    """Decimal degrees from `-33.87`, `33.87 S`, `33 52.2 S` or `33 deg 52' 12.5" S` (exiftool's flexible
    coordinates, its FAQ 14); NaN when no number is found. S or W (or a minus) makes it negative."""
    s = text.strip()
    try:
        return float(s)
    except ValueError:
        pass
    numbers = _DMS_NUMBER.findall(s)
    if not numbers or len(numbers) > 3:
        return NAN
    values = [float(n) for n in numbers]
    negative = values[0] < 0 or numbers[0].startswith("-") or bool(re.search(r"[SWsw]\s*$", s))
    value = abs(values[0])
    for k, v in enumerate(values[1:], start=1):
        if v < 0 or v >= 60:
            return NAN
        value += v / 60**k
    return -value if negative else value
