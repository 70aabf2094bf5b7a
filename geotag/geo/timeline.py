"""Photos placed on timed fixes by exiftool's `-geotag` rules (Geotag.pm SetGeoValues), vectorised.

For a photo at UTC time T against fixes sorted by time (all sources and segments merged by time, as
exiftool merges every file it loads into one time-keyed table):

- T before the first fix: the first fix if `T >= t_first - max_extrapolate`, else nothing; after the last
  fix likewise (`T <= t_last + max_extrapolate`).
- Otherwise the two fixes around T: t0 <= T < t1 (T at the last fix: the last two). If `t1 - t0 <=
  max_gap` (exactly max_gap still interpolates), linear interpolation in time of latitude, longitude and
  altitude; if the later fix is the first fix of its source (a new track file: its earliest fix), the
  gap allowed is `max_extrapolate` instead (exiftool's "first" flag; both default to 1800 s). A longer
  gap: the nearer of the two fixes (the later one on a tie) if at most `max_extrapolate` away, else none.
- A photo exactly at a fix gets that fix's position (interpolation weight 0 or 1).
- Longitude is interpolated around the circle: where the two longitudes differ by more than 180 degrees,
  the short way across the antimeridian, the result in [-180, 180) (179.9 and -179.9 meet at -180.0,
  never at 0). This is what exiftool's `%cyclical` code means to do, and does eastward (179.9 then
  -179.9); westward (-179.8 then 179.95) its `$v0 < $v1 ? $v0 += 360 : $v1 += 360` parses in Perl as
  `(... ? $v0 += 360 : $v1) += 360`, adds 720 degrees and writes a wrong longitude (60.1 E a third of
  the way). geotag takes the short way both ways: where it knowingly differs from exiftool.
- Altitude, NaN-aware as exiftool: interpolated when both fixes have it; else between the nearest fixes
  with an altitude within the gap allowed on each side; else the altitude of a fix near the nearest fix
  (within max_extrapolate; exiftool then prefers the earlier one); before / after the track, scanning
  into the track.
- Fixes at the same time: the last one in source order wins (exiftool keys fixes by time, so a later
  file's fix replaces an earlier one). Fixes without a time or a position are ignored.

What geotag does not take from exiftool: KML TimeSpan interpolation and date-less (time-only) fixes,
which `Fixes` cannot express. error radius and confidence: `error_km` and `confidence` below.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from geotag.errors import InputError
from geotag.geo.fixes import Fixes

__all__ = [
    "CONFIDENCE_RADIUS_KM",
    "DEFAULT_FIX_ERROR_M",
    "DEFAULT_MAX_EXTRAPOLATE_S",
    "DEFAULT_MAX_GAP_S",
    "DEFAULT_SPEED_KMH",
    "UERE_M",
    "Placement",
    "confidence",
    "error_km",
    "fix_error_m",
    "match",
]

DEFAULT_MAX_GAP_S = 1800.0
"""exiftool's GeoMaxIntSecs: the longest gap between two fixes that is interpolated."""
DEFAULT_MAX_EXTRAPOLATE_S = 1800.0
"""exiftool's GeoMaxExtSecs: the farthest a photo may be from the fix it takes outside interpolation."""

NONE, INTERPOLATED, NEAREST = "none", "interpolated", "nearest"
TOO_EARLY, TOO_LATE = "too far before the track", "too far after the track"
IN_GAP, NO_TIME, NO_FIXES = "too far from the nearest fix", "no UTC time", "no fixes"


@dataclass(frozen=True)
class Placement:
    """Per photo: the position (`lat`, `lon`, `alt`; NaN where unplaced or no altitude), `method`
    (`none`, `interpolated`, `nearest`), the fixes used (`fix_before_s`, `fix_after_s`: UTC seconds, NaN
    where unused; a nearest fix fills the side it lies on), `dt_s` (seconds to the nearest fix used),
    `fix_index` (that fix's row in the `Fixes` given, -1 where unplaced), `source` (its `Fixes.source`,
    -1 where unplaced) and `reason` (why a photo is unplaced, empty where placed)."""

    lat: np.ndarray
    lon: np.ndarray
    alt: np.ndarray
    method: np.ndarray
    fix_before_s: np.ndarray
    fix_after_s: np.ndarray
    dt_s: np.ndarray
    fix_index: np.ndarray
    source: np.ndarray
    reason: np.ndarray

    def __len__(self) -> int:
        return int(self.lat.shape[0])

    @property
    def placed(self) -> np.ndarray:
        return self.method != NONE


@dataclass(frozen=True)
class _Track:
    """Fixes ready to match: finite, sorted, one per time; `row` maps back to the caller's table."""

    t: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    alt: np.ndarray
    row: np.ndarray
    first: np.ndarray
    prev_alt: np.ndarray  # the last index <= i with an altitude, -1 where none
    next_alt: np.ndarray  # the first index >= i with an altitude, len where none


def _prepare(fixes: Fixes) -> _Track:
    ok = np.isfinite(fixes.t) & np.isfinite(fixes.lat) & np.isfinite(fixes.lon)
    rows = np.flatnonzero(ok)
    t = fixes.t[rows]
    if t.shape[0] > 1 and not np.all(t[1:] >= t[:-1]):
        rows = rows[np.argsort(t, kind="stable")]  # stable: fixes at one time keep source order
        t = fixes.t[rows]
    source = fixes.source[rows]
    # exiftool flags the first fix of each file it loads: here the earliest fix of each source
    uniq, first_pos, inverse = np.unique(source, return_index=True, return_inverse=True)
    first = t == t[first_pos][inverse.reshape(-1)] if len(uniq) else np.zeros(0, dtype=bool)
    keep = np.ones(t.shape[0], dtype=bool)
    keep[:-1] = t[1:] != t[:-1]  # equal times: the last (in source order) replaces the others
    rows, t, first = rows[keep], t[keep], first[keep]
    alt = fixes.alt[rows]
    n = t.shape[0]
    index = np.arange(n)
    has_alt = np.isfinite(alt)
    prev_alt = np.maximum.accumulate(np.where(has_alt, index, -1)) if n else index
    next_alt = np.minimum.accumulate(np.where(has_alt, index, n)[::-1])[::-1] if n else index
    return _Track(t, fixes.lat[rows], fixes.lon[rows], alt, rows, first, prev_alt, next_alt)


def _check_limit(name: str, value: float) -> float:
    value = float(value)
    if not np.isfinite(value) or value < 0:
        raise InputError(f"{name} must be a number of seconds >= 0, not {value!r}")
    return value


def _interp_lon(v0: np.ndarray, v1: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Across the antimeridian when the longitudes differ by > 180 (exiftool's rule and threshold, without
    its Perl precedence slip on westward crossings: module docstring)."""
    wrap = np.abs(v1 - v0) > 180
    low0 = v0 < v1
    v0 = np.where(wrap & low0, v0 + 360, v0)
    v1 = np.where(wrap & ~low0, v1 + 360, v1)
    out = v1 * f + v0 * (1 - f)
    return np.where(wrap & (out >= 180), out - 360, out)


def _scan(track: _Track, start: np.ndarray, direction: int, limit: np.ndarray | float) -> np.ndarray:
    """exiftool's ScanOutwards for altitude: from fix `start` (excluded) in `direction`, the first fix
    with an altitude no more than `limit` seconds from fix `start`; -1 where none."""
    n = track.t.shape[0]
    if direction < 0:
        prev = start - 1
        found = np.where(prev >= 0, track.prev_alt[np.clip(prev, 0, max(n - 1, 0))], -1)
    else:
        nxt = start + 1
        found = np.where(nxt < n, track.next_alt[np.clip(nxt, 0, max(n - 1, 0))], n)
        found = np.where(found >= n, -1, found)
    safe = np.clip(found, 0, max(n - 1, 0))
    near = np.abs(track.t[safe] - track.t[np.clip(start, 0, max(n - 1, 0))]) <= limit
    return np.where((found >= 0) & near, found, -1)


def _alt_near(track: _Track, start: np.ndarray, direction: np.ndarray, limit: float) -> np.ndarray:
    """exiftool's FindFix('alt'): scan from the fix used in `direction` (+1 / -1; 0 both, the earlier
    fix preferred, as exiftool's code ends up choosing); NaN where none."""
    back = _scan(track, start, -1, limit)
    ahead = _scan(track, start, +1, limit)
    both = np.where(back >= 0, back, ahead)
    chosen = np.where(direction > 0, ahead, np.where(direction < 0, back, both))
    return np.where(chosen >= 0, track.alt[np.clip(chosen, 0, None)], np.nan)


def match(
    photo_utc_s: ArrayLike,
    fixes: Fixes,
    *,
    max_gap: float = DEFAULT_MAX_GAP_S,
    max_extrapolate: float = DEFAULT_MAX_EXTRAPOLATE_S,
) -> Placement:
    """Place each photo (UTC seconds, NaN where unknown) on `fixes` by exiftool's rules (module docstring).

    `max_gap` is exiftool's GeoMaxIntSecs, `max_extrapolate` its GeoMaxExtSecs (seconds, both 1800 by
    default). Vectorised: one searchsorted over the fixes, no Python loop per photo."""
    max_gap = _check_limit("--max-gap", max_gap)
    ext = _check_limit("--max-extrapolate", max_extrapolate)
    tp = np.asarray(photo_utc_s, dtype=np.float64).reshape(-1)
    n = tp.shape[0]
    lat, lon, alt = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    before_s, after_s, dt = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    method = np.full(n, NONE, dtype=object)
    reason = np.full(n, "", dtype=object)
    used = np.full(n, -1, dtype=np.int64)
    track = _prepare(fixes)
    m = track.t.shape[0]
    valid = np.isfinite(tp)
    reason[~valid] = NO_TIME
    if m == 0:
        reason[valid] = NO_FIXES
        return Placement(
            lat, lon, alt, method, before_s, after_s, dt, used, np.full(n, -1, dtype=np.int32), reason
        )
    t = track.t
    direction = np.zeros(n, dtype=np.int64)  # exiftool's iDir for the altitude scan of a nearest fix

    early = valid & (tp < t[0])
    late = valid & (tp > t[-1])
    reason[early & (tp < t[0] - ext)] = TOO_EARLY
    reason[late & (tp > t[-1] + ext)] = TOO_LATE
    for sel, k, d in ((early & (tp >= t[0] - ext), 0, 1), (late & (tp <= t[-1] + ext), m - 1, -1)):
        used[sel], direction[sel], method[sel] = k, d, NEAREST

    inside = valid & ~early & ~late
    i0 = np.clip(np.searchsorted(t, np.where(inside, tp, t[0]), side="right") - 1, 0, max(m - 2, 0))
    i1 = np.minimum(i0 + 1, m - 1)
    t0, t1 = t[i0], t[i1]
    max_secs = np.where(track.first[i1] & (max_gap != 0), ext, max_gap)
    nearer = np.where(tp - t0 < t1 - tp, i0, i1)
    gap = inside & (t1 - t0 > max_secs)
    far = gap & (np.abs(tp - t[nearer]) > ext)
    reason[far] = IN_GAP
    in_gap = gap & ~far
    used[in_gap], method[in_gap] = nearer[in_gap], NEAREST

    interp = inside & ~gap
    with np.errstate(invalid="ignore", divide="ignore"):
        f = np.where(t1 == t0, 0.0, (tp - t0) / (t1 - t0))
    s = interp
    lat[s] = track.lat[i1[s]] * f[s] + track.lat[i0[s]] * (1 - f[s])
    lon[s] = _interp_lon(track.lon[i0[s]], track.lon[i1[s]], f[s])
    before_s[s], after_s[s] = t0[s], t1[s]
    dt[s] = np.minimum(tp[s] - t0[s], t1[s] - tp[s])
    used[s], method[s] = nearer[s], INTERPOLATED
    if np.isfinite(track.alt).any():
        a0, a1 = track.alt[i0[s]], track.alt[i1[s]]
        alt_s = a1 * f[s] + a0 * (1 - f[s])
        missing = np.isnan(alt_s)
        if missing.any():  # the nearest fixes with an altitude on each side, within the gap allowed
            j0 = np.where(np.isfinite(a0), i0[s], _scan(track, i0[s], -1, max_secs[s]))
            j1 = np.where(np.isfinite(a1), i1[s], _scan(track, i1[s], +1, max_secs[s]))
            ok = missing & (j0 >= 0) & (j1 >= 0)
            tj0, tj1 = t[np.clip(j0, 0, None)], t[np.clip(j1, 0, None)]
            with np.errstate(invalid="ignore", divide="ignore"):
                g = np.where(tj1 == tj0, 0.0, (tp[s] - tj0) / (tj1 - tj0))
            alt_b = track.alt[np.clip(j1, 0, None)] * g + track.alt[np.clip(j0, 0, None)] * (1 - g)
            alt_s = np.where(ok, alt_b, alt_s)
        alt[s] = alt_s

    near = method == NEAREST
    k = used[near]
    lat[near], lon[near] = track.lat[k], track.lon[k]
    dt[near] = np.abs(tp[near] - t[k])
    on_left = t[k] <= tp[near]
    before_s[near] = np.where(on_left, t[k], np.nan)
    after_s[near] = np.where(on_left, np.nan, t[k])
    if np.isfinite(track.alt).any():
        alt[near] = track.alt[k]
        still = near & np.isnan(alt)
        if still.any():
            alt[still] = _alt_near(track, used[still], direction[still], ext)
        gap_alt = interp & np.isnan(alt)  # no altitude interpolated: one near the nearest fix
        if gap_alt.any():
            alt[gap_alt] = _alt_near(track, used[gap_alt], np.zeros(int(gap_alt.sum()), dtype=np.int64), ext)

    placed = used >= 0
    fix_index = np.where(placed, track.row[np.clip(used, 0, None)], -1)
    source = np.where(placed, fixes.source[np.clip(fix_index, 0, None)], -1).astype(np.int32)
    return Placement(lat, lon, alt, method, before_s, after_s, dt, fix_index, source, reason)


UERE_M = 5.0
"""User equivalent range error: a fix's horizontal error is taken as HDOP x 5 m where only HDOP is known
(a common figure for civilian GPS; PDOP is used the same way when HDOP is missing)."""
DEFAULT_FIX_ERROR_M = 10.0
"""A fix's horizontal error where the source gives neither an accuracy nor a dilution of precision."""
DEFAULT_SPEED_KMH = 50.0
"""The speed bound for the time to the nearest fix (`--speed-kmh`): town driving, fast cycling."""
CONFIDENCE_RADIUS_KM = 25.0
"""`confidence` is the chance of being within 25 km, as GeoCLIP's confidence is (docs/schema.md)."""


def fix_error_m(fixes: Fixes) -> np.ndarray:
    """Each fix's horizontal error in metres: `accuracy_m` where given, else HDOP (or PDOP) x `UERE_M`,
    else `DEFAULT_FIX_ERROR_M`."""
    dop = np.where(np.isfinite(fixes.hdop), fixes.hdop, fixes.pdop)
    out = np.where(np.isfinite(dop), dop * UERE_M, DEFAULT_FIX_ERROR_M)
    return np.where(np.isfinite(fixes.accuracy_m), fixes.accuracy_m, out)


def error_km(placement: Placement, fixes: Fixes, speed_kmh: float = DEFAULT_SPEED_KMH) -> np.ndarray:
    """An error radius in km per photo: the nearest fix's error (`fix_error_m`) plus `speed_kmh` x the
    time to that fix (nobody moved faster than the bound since or until the fix). NaN where unplaced.
    Meant as the schema's median radius: a cautious one, since the speed term is a bound."""
    speed = float(speed_kmh)
    if not np.isfinite(speed) or speed < 0:
        raise InputError(f"--speed-kmh must be a number >= 0, not {speed_kmh!r}")
    placed = placement.fix_index >= 0
    radius_m = np.full(len(placement), np.nan)
    radius_m[placed] = fix_error_m(fixes)[placement.fix_index[placed]]
    return radius_m / 1000.0 + speed * placement.dt_s / 3600.0


def confidence(err_km: ArrayLike) -> np.ndarray:
    """The probability of lying within 25 km when `err_km` is the median radius of a circular normal
    error (Rayleigh distance): `1 - 2 ** -((25 / err_km) ** 2)`. 1 at 0 km, 0.5 at 25 km, 0.16 at 50 km;
    monotone decreasing; NaN stays NaN."""
    e = np.asarray(err_km, dtype=np.float64)
    with np.errstate(divide="ignore", over="ignore"):
        ratio = np.where(e > 0, CONFIDENCE_RADIUS_KM / e, np.inf)
        out = 1.0 - np.exp2(-np.square(ratio))
    return np.where(np.isnan(e), np.nan, out)
