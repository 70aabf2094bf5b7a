"""Reachable regions: where a photo can be, given GPS fixes shortly before and after it (issue 26).

A traveller seen at a fix dt seconds from the photo was, when the photo was taken, within

    r = fix error + max_speed x |dt|

of that fix. Each photo takes the last fix before it and the first fix after it (the nearest in time
on each side bind the tightest) within `window_s`, and its log-prior at a place d km from a fix is

    log p = -1/2 x (max(d - r, 0) / edge)^2,     edge = max(MIN_EDGE_KM, EDGE_FRACTION x r),

summed over its (one or two) fixes: flat inside the radius, a half-Gaussian falloff beyond it, never
a cliff (a speed bound is an average, and a wrong clock or fix should cost a photo, not erase it). At
(1 + EDGE_FRACTION) r the prior is down by a factor e^-0.5 = 0.61, at 2 r by e^-8 (EDGE_FRACTION 0.25).
A photo with no fix in its window, or no time, gets a flat prior (0 everywhere).

Defaults are for ground travel: DEFAULT_MAX_SPEED_KMH 150 (a motorway, or an intercity train averaged
over an hour); raise --max-speed to 300 for high-speed rail, to 900 for flights. Fixes further than
DEFAULT_WINDOW_S (6 h) from the photo are ignored: at 150 km/h they allow 900 km and more, too little
to be worth their cost. The result is a models.prior.Prior (it has `log_density`): any model that takes
a prior evaluates it on its own candidates. Pure numpy and torch, no file access.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from geotag.errors import InputError
from geotag.geo.distance import EARTH_RADIUS_KM
from geotag.geo.fixes import Fixes
from geotag.geo.timeline import fix_error_m

__all__ = [
    "DEFAULT_MAX_SPEED_KMH",
    "DEFAULT_WINDOW_S",
    "EDGE_FRACTION",
    "MIN_EDGE_KM",
    "ReachPrior",
    "reach_prior",
]

DEFAULT_MAX_SPEED_KMH = 150.0
DEFAULT_WINDOW_S = 6 * 3600.0
EDGE_FRACTION = 0.25
MIN_EDGE_KM = 1.0


@dataclass(frozen=True)
class ReachPrior:
    """Per photo (B rows) up to F fixes: position (degrees), reachable radius and edge width (km);
    NaN marks no fix. A models.prior.Prior: `log_density` evaluates it on any candidate set."""

    lat: np.ndarray  # (B, F)
    lon: np.ndarray
    radius_km: np.ndarray
    edge_km: np.ndarray

    def __len__(self) -> int:
        return self.lat.shape[0]

    @property
    def has_fix(self) -> np.ndarray:
        """(B,) True where at least one fix constrains the photo."""
        return np.isfinite(self.lat).any(axis=1)

    def take(self, rows: np.ndarray | list[int]) -> ReachPrior:
        """The prior of some photos, in the order given (a batch)."""
        idx = np.asarray(rows, dtype=np.int64)
        return ReachPrior(self.lat[idx], self.lon[idx], self.radius_km[idx], self.edge_km[idx])

    def log_density(self, lat: torch.Tensor, lon: torch.Tensor) -> torch.Tensor:
        """(B, N) float32 log-prior at candidates (N,) shared or (B, N) per photo, on their device.

        Distances come from float64 unit vectors (one matmul against the fixes, then acos) rather than a
        haversine per pair: a 100K gallery costs a (N x 3) @ (3 x B F) product, not B F trig passes."""
        device = lat.device
        b, f = self.lat.shape
        out = torch.zeros((b, lat.shape[-1]), dtype=torch.float32, device=device)
        valid = np.isfinite(self.lat)
        if not valid.any():
            return out
        cand = _unit(lat.double(), lon.double())  # (N, 3) or (B, N, 3)
        fix = _unit(*(torch.as_tensor(np.nan_to_num(c), device=device) for c in (self.lat, self.lon)))
        if cand.dim() == 2:
            dot = (cand @ fix.reshape(-1, 3).T).T.reshape(b, f, -1)  # (B, F, N)
        else:
            dot = torch.einsum("bnk,bfk->bfn", cand, fix)
        d = EARTH_RADIUS_KM * torch.acos(dot.clamp_(-1.0, 1.0))
        radius, edge = (
            torch.as_tensor(np.nan_to_num(c, nan=1.0), device=device) for c in (self.radius_km, self.edge_km)
        )
        term = -0.5 * ((d - radius[..., None]).clamp_min_(0.0) / edge[..., None]).square_()
        keep = torch.as_tensor(valid, device=device)[..., None]
        return out + torch.where(keep, term, 0.0).sum(dim=1).float()


def _unit(lat: torch.Tensor, lon: torch.Tensor) -> torch.Tensor:
    """Degrees to unit vectors on the sphere, float64, shape (..., 3)."""
    la, lo = torch.deg2rad(lat.double()), torch.deg2rad(lon.double())
    return torch.stack([la.cos() * lo.cos(), la.cos() * lo.sin(), la.sin()], dim=-1)


def _check(name: str, value: float) -> float:
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        raise InputError(f"{name} must be a number > 0, not {value!r}")
    return value


def reach_prior(
    photo_t: np.ndarray,
    fixes: Fixes,
    *,
    max_speed_kmh: float = DEFAULT_MAX_SPEED_KMH,
    window_s: float = DEFAULT_WINDOW_S,
) -> ReachPrior:
    """The reachable-region prior of photos taken at `photo_t` (UTC seconds, NaN: unknown) from the
    last fix before and the first fix after each (at most `window_s` away); see the module docstring."""
    speed = _check("--max-speed", max_speed_kmh)
    window = _check("--prior-window", window_s)
    t = np.asarray(photo_t, dtype=np.float64).reshape(-1)
    shape = (len(t), 2)
    lat, lon, radius = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan)
    ok = np.isfinite(fixes.t) & np.isfinite(fixes.lat) & np.isfinite(fixes.lon)
    order = np.flatnonzero(ok)[np.argsort(fixes.t[ok], kind="stable")]
    if len(order):
        ft = fixes.t[order]
        err_km = fix_error_m(fixes)[order] / 1000.0
        after = np.searchsorted(ft, np.nan_to_num(t, nan=-np.inf), side="left")  # first fix at or after
        for col, index in ((0, after - 1), (1, after)):
            inside = (index >= 0) & (index < len(ft)) & np.isfinite(t)
            j = np.clip(index, 0, len(ft) - 1)
            dt = np.abs(ft[j] - t)
            use = inside & (dt <= window)
            src = order[j[use]]
            lat[use, col], lon[use, col] = fixes.lat[src], fixes.lon[src]
            radius[use, col] = err_km[j[use]] + speed * dt[use] / 3600.0
    edge = np.maximum(MIN_EDGE_KM, EDGE_FRACTION * radius)
    return ReachPrior(lat, lon, radius, np.where(np.isfinite(radius), edge, np.nan))
