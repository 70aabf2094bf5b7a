"""Time zones: parse `--tz`, EXIF OffsetTimeOriginal, the zone at a point, and local times made UTC.

A photo's DateTimeOriginal is a naive wall-clock time. geotag carries it as "local seconds": seconds since
1970 as if the wall clock read UTC, float64, NaN where a photo has none. A `Zone` turns local seconds into
UTC seconds, vectorised. Daylight saving comes from zoneinfo (with the `tzdata` package where the system
has no zone database). Where a wall-clock time is ambiguous or does not exist, the zone resolves it as
zoneinfo does with fold=0:

- ambiguous (a fall-back hour that happens twice, e.g. 02:30 on 2024-10-27 in Europe/Berlin): the first
  occurrence, i.e. the offset in force before the change (daylight time, +02:00 there);
- non-existent (a spring-forward hour, e.g. 02:30 on 2024-03-31 in Europe/Berlin): read with the offset
  in force before the change (+01:00), so it lands one hour later in wall-clock terms (03:30 +02:00).

The machine's own zone is never used: where no zone is known the result is NaN and the caller decides.
timezonefinder (the zone at a coordinate, offline) is imported lazily: only `--tz auto` pays for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
from numpy.typing import ArrayLike

from geotag.errors import InputError

__all__ = [
    "Zone",
    "format_offset",
    "parse_exif_datetime",
    "parse_exif_offset",
    "parse_zone",
    "zone_at",
]

_EPOCH = datetime(1970, 1, 1)
_OFFSET = re.compile(r"^([+-])(\d{2}):?(\d{2})?$")
_EXIF_OFFSET = re.compile(r"^\s*([+-])(\d{1,2}):(\d{2})\s*$")
_EXIF_DATETIME = re.compile(
    r"^\s*(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(\.\d+)?\s*(Z|[+-]\d{2}:?\d{2})?\s*$"
)
_DATETIME_LIMIT_S = 6.0e10  # about year 3870 (and -1870): well inside what datetime can represent
MAX_OFFSET_S = 14 * 3600
"""The widest offset any zone has (Line Islands, +14:00); EXIF offsets beyond it are junk."""


def format_offset(offset_s: float) -> str:
    """`+02:00`, `-03:30`, `+00:00` for an offset in seconds (whole minutes)."""
    minutes = int(round(offset_s / 60.0))
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


@dataclass(frozen=True)
class Zone:
    """A fixed UTC offset (`offset_s`) or an IANA zone (`tz`); `name` is how it is shown and recorded."""

    name: str
    offset_s: float | None = None
    tz: tzinfo | None = field(default=None, compare=False)

    @classmethod
    def fixed(cls, offset_s: float) -> Zone:
        return cls(name=format_offset(offset_s), offset_s=float(offset_s))

    @classmethod
    def iana(cls, key: str) -> Zone:
        return cls(name=key, tz=ZoneInfo(key))

    def offsets(self, local_s: ArrayLike) -> np.ndarray:
        """The UTC offset in seconds in force at each local (wall-clock) time; NaN where the time is NaN.

        An IANA zone is asked once per distinct wall-clock hour (at its first and last second); only an
        hour whose two answers differ (the hour of a change) is asked per photo, so 100,000 photos cost
        a few thousand zoneinfo calls. The fold=0 rule of the module docstring applies."""
        local = np.asarray(local_s, dtype=np.float64)
        if self.offset_s is not None:
            return np.where(np.isnan(local), np.nan, self.offset_s)
        out = np.full(local.shape, np.nan)
        ok = np.isfinite(local) & (np.abs(local) < _DATETIME_LIMIT_S)  # years 1 to 9999 only: else NaN
        if not ok.any():
            return out
        seconds = np.floor(local[ok]).astype(np.int64)
        hours, inverse = np.unique(seconds // 3600, return_inverse=True)
        start = np.array([self._offset_at(int(h) * 3600) for h in hours])
        end = np.array([self._offset_at(int(h) * 3600 + 3599) for h in hours])
        result = start[inverse]
        changing = (start != end)[inverse]
        if changing.any():
            result[changing] = [self._offset_at(int(s)) for s in seconds[changing]]
        out[ok] = result
        return out

    def _offset_at(self, local_second: int) -> float:
        wall = (_EPOCH + timedelta(seconds=local_second)).replace(tzinfo=self.tz, fold=0)
        return wall.utcoffset().total_seconds()  # type: ignore[union-attr]

    def to_utc(self, local_s: ArrayLike) -> np.ndarray:
        """UTC seconds for local wall-clock seconds (vectorised; NaN stays NaN)."""
        local = np.asarray(local_s, dtype=np.float64)
        return local - self.offsets(local)


def parse_zone(text: str) -> Zone:
    """`--tz`: an IANA name (`Europe/Berlin`), a fixed offset (`+02:00`, `-0330`, `+05`), `Z` or `UTC`.

    `auto` is not a zone: the caller handles `--tz auto` (see geotag.geo.photo_time). Anything else is an
    InputError naming the value."""
    value = text.strip()
    if value.upper() in ("Z", "UTC", "GMT"):
        return Zone.fixed(0.0)
    match = _OFFSET.match(value)
    if match:
        sign, hours, minutes = match.group(1), int(match.group(2)), int(match.group(3) or 0)
        offset = (hours * 3600 + minutes * 60) * (-1 if sign == "-" else 1)
        if minutes >= 60 or abs(offset) > MAX_OFFSET_S:
            raise InputError(f"--tz {text!r}: offset out of range (-14:00 to +14:00)")
        return Zone.fixed(offset)
    if value and not value.startswith(("+", "-")) and ".." not in value:
        try:
            return Zone.iana(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
    raise InputError(
        f"--tz {text!r}: not a time zone (use an IANA name such as Europe/Berlin, an offset such as "
        "+02:00, or UTC)"
    )


def parse_exif_offset(text: object) -> float | None:
    """EXIF OffsetTimeOriginal (`+02:00`, `-05:00`) in seconds; None for the junk cameras write
    (`"   :  "`, empty, bytes that do not decode, beyond +-14:00)."""
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    if not isinstance(text, str):
        return None
    match = _EXIF_OFFSET.match(text.strip("\x00"))
    if not match:
        return None
    hours, minutes = int(match.group(2)), int(match.group(3))
    offset = (hours * 3600 + minutes * 60) * (-1 if match.group(1) == "-" else 1)
    if minutes >= 60 or abs(offset) > MAX_OFFSET_S:
        return None
    return float(offset)


def parse_exif_datetime(text: str) -> tuple[float, float | None]:
    """`YYYY:MM:DD HH:MM:SS[.ss][Z|+HH:MM]` (EXIF style, also with `-` and `T`) -> (local seconds as if UTC,
    offset seconds or None). For `--sync PHOTO=TIME` and exiftool-style times; InputError otherwise."""
    match = _EXIF_DATETIME.match(text.replace("-", ":", 2) if re.match(r"^\s*\d{4}-", text) else text)
    if not match:
        raise InputError(f"{text!r}: not a date and time (use YYYY:MM:DD HH:MM:SS[.ss][Z|+HH:MM])")
    y, mo, d, h, mi, s = (int(match.group(i)) for i in range(1, 7))
    try:
        local = (datetime(y, mo, d, h, mi, s) - _EPOCH).total_seconds()
    except ValueError as exc:
        raise InputError(f"{text!r}: {exc}") from None
    local += float(match.group(7) or 0.0)
    zone = match.group(8)
    if zone is None:
        return local, None
    if zone == "Z":
        return local, 0.0
    offset = parse_exif_offset(zone if ":" in zone else f"{zone[:3]}:{zone[3:]}")
    if offset is None:
        raise InputError(f"{text!r}: time zone offset out of range")
    return local, offset


@cache
def _finder():  # noqa: ANN202  (timezonefinder is an optional import)
    from timezonefinder import TimezoneFinder

    return TimezoneFinder()


def zone_at(lat: ArrayLike, lon: ArrayLike) -> np.ndarray:
    """The IANA zone name at each point (timezonefinder, offline), as an object array; None where the
    point is not a coordinate. At sea it is an `Etc/GMT+N` zone. Points are looked up once per distinct
    0.001 degree cell (about 100 m, far below any zone border's precision)."""
    lat_a = np.atleast_1d(np.asarray(lat, dtype=np.float64))
    lon_a = np.atleast_1d(np.asarray(lon, dtype=np.float64))
    out = np.full(lat_a.shape, None, dtype=object)
    ok = np.isfinite(lat_a) & np.isfinite(lon_a) & (np.abs(lat_a) <= 90) & (np.abs(lon_a) <= 180)
    if not ok.any():
        return out
    cells = np.round(np.stack([lat_a[ok], lon_a[ok]], axis=1), 3)
    unique, inverse = np.unique(cells, axis=0, return_inverse=True)
    finder = _finder()
    names = np.array([finder.timezone_at(lat=float(a), lng=float(o)) for a, o in unique], dtype=object)
    out[ok] = names[inverse.reshape(-1)]
    return out
