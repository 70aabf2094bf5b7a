"""Camera clock corrections in exiftool's `-geosync` terms: a constant offset, or drift between sync points.

Sign (exiftool's): the offset is GPS time minus camera time, so a plus means the GPS clock is ahead of
the camera's and `true UTC = camera UTC + offset`. "Camera UTC" is the photo's DateTimeOriginal made UTC
with its zone (geotag.geo.photo_time), before any correction; exiftool likewise adds Geosync to Geotime.

Drift (exiftool's ApplySyncCorr, Geotag.pm): each sync point is (camera UTC, true UTC) and gives the offset
at that camera time. With two or more points the offset is interpolated linearly between the two sync
points around a photo's camera time and, before the first or after the last point, extrapolated along the
line through the first two or the last two points (a clock that drifts keeps drifting). With one point
the offset is constant. Two sync points at the same camera time: the later one given wins (exiftool keys
its points by camera time).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from geotag.errors import InputError

__all__ = ["ClockCorrection", "parse_clock_offset"]

SECONDS_PER_DAY = 86400.0
_GEOSYNC = re.compile(
    r"^\s*(?P<sign>[+-])?\s*"
    r"(?:(?:(?:(?P<days>\d+)\s+)?(?P<hours>\d+):)?(?P<minutes>\d+):)?"
    r"(?P<seconds>\d+(?:\.\d*)?|\.\d+)\s*$"
)


def parse_clock_offset(text: str) -> float:
    """An offset in exiftool's `-geosync` syntax `[+|-][[[DD ]HH:]MM:]SS[.ss]`, in seconds.

    `"+1:30"` = 90, `"-0:00:12"` = -12, `"1 02:00:00"` = 93600, `"12"` = 12 (a lone number is seconds,
    as exiftool reads Geosync), `"+12.5"` = 12.5. Fields are not range-checked (`"0:90"` is 90 s and
    `"90:00"` 5400 s, as exiftool adds them up). exiftool also reads looser forms (it takes the last
    four numbers of whatever it is given); geotag asks for the documented form, InputError otherwise."""
    match = _GEOSYNC.match(text) if isinstance(text, str) else None
    if not match:
        raise InputError(
            f"clock offset {text!r}: use exiftool's -geosync form [+|-][[[DD ]HH:]MM:]SS[.ss], "
            "e.g. +1:30 (GPS 90 s ahead of the camera) or -0:03:12"
        )
    parts = match.groupdict()
    seconds = float(parts["seconds"])
    for name, unit in (("minutes", 60.0), ("hours", 3600.0), ("days", SECONDS_PER_DAY)):
        if parts[name] is not None:
            seconds += unit * int(parts[name])
    return -seconds if parts["sign"] == "-" else seconds


def _format_seconds(seconds: float) -> str:
    sign = "-" if seconds < 0 else "+"
    rest = abs(seconds)
    days, rest = divmod(rest, SECONDS_PER_DAY)
    hours, rest = divmod(rest, 3600.0)
    minutes, secs = divmod(rest, 60.0)
    text = f"{int(hours)}:{int(minutes):02d}:{secs:06.3f}".rstrip("0").rstrip(".")
    return f"{sign}{int(days)} {text}" if days else f"{sign}{text}"


@dataclass(frozen=True)
class ClockCorrection:
    """A constant offset (`times` empty) or sync points (`times` camera UTC, `offsets` at those times)."""

    offset_s: float = 0.0
    times: tuple[float, ...] = ()
    offsets: tuple[float, ...] = ()

    @classmethod
    def constant(cls, offset_s: float | str) -> ClockCorrection:
        """A fixed offset in seconds, or a `-geosync` string (`"+0:03:12"`)."""
        value = parse_clock_offset(offset_s) if isinstance(offset_s, str) else float(offset_s)
        if not np.isfinite(value):
            raise InputError(f"clock offset {offset_s!r} is not a finite number of seconds")
        return cls(offset_s=value)

    @classmethod
    def from_sync_points(cls, points: Iterable[tuple[float, float]]) -> ClockCorrection:
        """Sync points `(camera UTC seconds, true UTC seconds)`: the camera's reading of a moment and the
        moment itself (a photo of a GPS screen or a clock). One point gives a constant offset; two or more
        a piecewise-linear drift correction (module docstring)."""
        by_time: dict[float, float] = {}
        for camera_s, true_s in points:
            camera_s, true_s = float(camera_s), float(true_s)
            if not (np.isfinite(camera_s) and np.isfinite(true_s)):
                raise InputError("a clock sync point needs both the camera's time and the true time")
            by_time[camera_s] = true_s - camera_s  # exiftool keys its points by camera time: last wins
        if not by_time:
            raise InputError("no clock sync points given")
        if len(by_time) == 1:
            return cls(offset_s=next(iter(by_time.values())))
        times = tuple(sorted(by_time))
        offsets = tuple(by_time[t] for t in times)
        return cls(offset_s=offsets[-1], times=times, offsets=offsets)

    @property
    def drifts(self) -> bool:
        return len(self.times) > 1

    def offset_at(self, camera_utc_s: ArrayLike) -> np.ndarray:
        """The offset in seconds to add at each camera UTC time (NaN stays NaN)."""
        t = np.asarray(camera_utc_s, dtype=np.float64)
        if not self.drifts:
            return np.where(np.isnan(t), np.nan, self.offset_s)
        times = np.asarray(self.times)
        offsets = np.asarray(self.offsets)
        # exiftool's binary search: i0 is the last sync point at or before t, kept within [0, n - 2]
        i0 = np.clip(np.searchsorted(times, t, side="right") - 1, 0, len(times) - 2)
        t0, t1 = times[i0], times[i0 + 1]
        f = (t - t0) / (t1 - t0)
        return offsets[i0 + 1] * f + offsets[i0] * (1 - f)

    def apply(self, camera_utc_s: ArrayLike) -> np.ndarray:
        """True UTC seconds for camera UTC seconds: `camera + offset_at(camera)` (vectorised)."""
        t = np.asarray(camera_utc_s, dtype=np.float64)
        return t + self.offset_at(t)

    def describe(self) -> str:
        """One line for printing and for the predictions file's metadata."""
        if not self.drifts:
            return f"{_format_seconds(self.offset_s)} (GPS ahead of the camera by {self.offset_s:g} s)"
        from datetime import UTC, datetime

        points = ", ".join(
            f"{datetime.fromtimestamp(t, UTC):%Y-%m-%d %H:%M:%S}Z {_format_seconds(o)}"
            for t, o in zip(self.times, self.offsets, strict=True)
        )
        return f"drift between {len(self.times)} sync points (camera UTC, offset): {points}"

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready record (for the predictions file's metadata)."""
        return {
            "offset_s": self.offset_s,
            "sync_times_s": list(self.times),
            "sync_offsets_s": list(self.offsets),
        }
