"""Each photo's capture time made UTC, with the zone used and where that zone came from.

Rules (issue 25, item 2), per photo, first that applies:

1. `exif`: the photo's OffsetTimeOriginal (EXIF 2.31), as exiftool's default Geotime
   (SubSecDateTimeOriginal) carries it;
2. `gps-time`: the offset of the photo's camera, derived from that camera's photos that carry both
   GPSDateStamp/GPSTimeStamp (UTC) and DateTimeOriginal (`camera_gps_offsets`);
3. `tz` (`--tz ZONE`) or `tz-auto` (`--tz auto`: the zone at the place of the fix nearest in time).

`ignore_photo_tz=True` (gpscorrelate's `--no-photo-tz`, for phones left on their home zone) puts `--tz`
first, before the photo's own offset and its camera's GPS time. The machine's zone is never used: a
photo no rule reaches gets NaN and zone_source None, and the engine refuses or notes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from geotag.errors import InputError
from geotag.geo.fixes import Fixes
from geotag.geo.zones import MAX_OFFSET_S, Zone, format_offset, parse_zone, zone_at

__all__ = ["ZONE_ROUND_S", "PhotoTimes", "camera_gps_offsets", "resolve_photo_utc"]

ZONE_ROUND_S = 900.0
"""Offsets derived from a camera's GPS time are rounded to the nearest 15 minutes, as zones are: what is
left over is the camera clock's error, which `--clock-offset` corrects, not the zone."""


@dataclass(frozen=True)
class PhotoTimes:
    """Per photo: `utc_s` (NaN where no zone is known), `zone` (the label recorded: `+02:00` or an IANA
    name; None where unknown), `zone_source` (`exif`, `gps-time`, `tz`, `tz-auto` or None)."""

    utc_s: np.ndarray
    zone: np.ndarray
    zone_source: np.ndarray

    def __iter__(self):  # noqa: ANN204  (lets callers unpack: utc, zone, source = resolve_photo_utc(...))
        return iter((self.utc_s, self.zone, self.zone_source))


def camera_gps_offsets(
    local_s: ArrayLike, gps_utc_s: ArrayLike, camera: ArrayLike | None = None
) -> tuple[np.ndarray, dict[object, float]]:
    """Each photo's camera zone offset in seconds from the camera's own GPS time, NaN where its camera has
    no photo with both times; and the offset per camera.

    A camera's offset is the median of `DateTimeOriginal - GPS time` over its photos that have both,
    rounded to the nearest 15 minutes (`ZONE_ROUND_S`); an offset beyond +-14 h is junk and dropped.
    `camera` names each photo's camera (make + model, or serial); None treats every photo alone."""
    local = np.asarray(local_s, dtype=np.float64)
    gps = np.asarray(gps_utc_s, dtype=np.float64)
    keys = np.arange(local.shape[0]) if camera is None else np.asarray(camera, dtype=object)
    diff = local - gps
    usable = np.isfinite(diff)
    per_camera: dict[object, float] = {}
    for key in dict.fromkeys(keys[usable].tolist()):
        offset = round(float(np.median(diff[usable & (keys == key)])) / ZONE_ROUND_S) * ZONE_ROUND_S
        if abs(offset) <= MAX_OFFSET_S:
            per_camera[key] = offset
    per_photo = np.array([per_camera.get(k, np.nan) for k in keys.tolist()], dtype=np.float64)
    return per_photo, per_camera


def _auto_zones(local: np.ndarray, fixes: Fixes) -> tuple[np.ndarray, np.ndarray]:
    """UTC seconds and zone names for `--tz auto`: the zone at the fix nearest in time. The photo's UTC is
    first guessed as its local time (at most 14 h off), then refined once with the zone found."""
    utc = np.full(local.shape, np.nan)
    names = np.full(local.shape, None, dtype=object)
    ok = np.isfinite(local) & (len(fixes) > 0)
    if not ok.any():
        return utc, names
    order = np.argsort(fixes.t, kind="stable")
    times = fixes.t[order]
    wall = local[ok]
    guess = wall.copy()
    for _ in range(2):
        right = np.clip(np.searchsorted(times, guess), 0, len(times) - 1)
        left = np.clip(right - 1, 0, len(times) - 1)
        nearest = np.where(np.abs(times[left] - guess) <= np.abs(times[right] - guess), left, right)
        index = order[nearest]
        zones = zone_at(fixes.lat[index], fixes.lon[index])
        guess = wall.copy()
        for name in {z for z in zones.tolist() if z is not None}:
            sel = zones == name
            guess[sel] = Zone.iana(name).to_utc(wall[sel])
    known = np.not_equal(zones, None)
    utc[ok] = np.where(known, guess, np.nan)
    names[ok] = zones
    return utc, names


def resolve_photo_utc(
    local_s: ArrayLike,
    exif_offset_s: ArrayLike | None = None,
    *,
    tz: Zone | str | None = None,
    ignore_photo_tz: bool = False,
    camera_offset_s: ArrayLike | None = None,
    gps_utc_s: ArrayLike | None = None,
    camera: ArrayLike | None = None,
    fixes: Fixes | None = None,
) -> PhotoTimes:
    """UTC seconds for naive local capture times, per photo, by the module's rules.

    `local_s`: DateTimeOriginal (+ SubSecTimeOriginal) as seconds since 1970 as if UTC, NaN where none.
    `exif_offset_s`: OffsetTimeOriginal in seconds (`parse_exif_offset`), NaN where none.
    `tz`: a `Zone`, a `--tz` string, `"auto"` (needs `fixes`), or None. `camera_offset_s`: each photo's
    camera offset from `camera_gps_offsets`, NaN where none; or, instead, `gps_utc_s` (each photo's own
    GPSDateStamp/GPSTimeStamp, NaN where none) and `camera` (each photo's camera key) and the offsets are
    derived here. Returns a `PhotoTimes` (it unpacks as
    `utc_s, zone, zone_source`)."""
    local = np.asarray(local_s, dtype=np.float64).reshape(-1)
    n = local.shape[0]
    if isinstance(tz, str) and tz.strip().lower() != "auto":
        tz = parse_zone(tz)  # a bad --tz is refused even when every photo has its own offset

    def column(values: ArrayLike | None) -> np.ndarray:
        if values is None:
            return np.full(n, np.nan)
        out = np.asarray(values, dtype=np.float64).reshape(-1)
        if out.shape[0] != n:
            raise ValueError(f"expected {n} values, got {out.shape[0]}")
        return out

    exif = column(exif_offset_s)
    if camera_offset_s is None and gps_utc_s is not None:
        camera_offset_s, _ = camera_gps_offsets(local, column(gps_utc_s), camera)
    camera = column(camera_offset_s)
    utc = np.full(n, np.nan)
    zone = np.full(n, None, dtype=object)
    source = np.full(n, None, dtype=object)
    has_time = np.isfinite(local)

    def take_offsets(offsets: np.ndarray, label: str) -> None:
        sel = has_time & np.isnan(utc) & np.isfinite(offsets)
        utc[sel] = local[sel] - offsets[sel]
        zone[sel] = [format_offset(o) for o in offsets[sel]]
        source[sel] = label

    def take_tz() -> None:
        sel = has_time & np.isnan(utc)
        if tz is None or not sel.any():
            return
        if isinstance(tz, str) and tz.strip().lower() == "auto":
            if fixes is None or not len(fixes):
                raise InputError("--tz auto needs a track: the zone is taken at the fix nearest in time")
            auto_utc, auto_zone = _auto_zones(local[sel], fixes)
            idx = np.flatnonzero(sel)
            found = np.isfinite(auto_utc)
            utc[idx[found]] = auto_utc[found]
            zone[idx[found]] = auto_zone[found]
            source[idx[found]] = "tz-auto"
            return
        assert isinstance(tz, Zone)
        utc[sel] = tz.to_utc(local[sel])
        zone[sel] = tz.name
        source[sel] = "tz"

    if ignore_photo_tz and tz is not None:
        take_tz()
    take_offsets(exif, "exif")
    take_offsets(camera, "gps-time")
    take_tz()
    return PhotoTimes(utc_s=utc, zone=zone, zone_source=source)
