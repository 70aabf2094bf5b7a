"""Great-circle distance (haversine, numpy and torch), GeoScore and the default accuracy thresholds.

The anchors disagree: some use the geodesic on the WGS84 ellipsoid, some R = 6,378.137 km (equatorial),
some R = 6,371 km, and some count a hit with `d < t`, others with `d <= t`. We fix one convention for
every number geotag prints (GUIDE section 6): haversine on a sphere of the IUGG mean radius
R = 6,371.0088 km, and a prediction is correct at threshold t when `d <= t`. The spherical model errs by
at most about 0.5 % against the ellipsoid, far below the thresholds' spacing.

Numerics: the haversine form is stable for tiny distances (no `acos` of a number close to 1), and the
argument of `asin` is clipped to [0, 1] so that rounding near the antipode cannot produce NaN.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:  # torch is imported lazily: eval and the CLI must not pay for it
    import torch

EARTH_RADIUS_KM = 6371.0088
"""IUGG mean Earth radius (2R_a + R_b) / 3, in km."""

DEFAULT_THRESHOLDS_KM = (1, 25, 200, 750, 2500)
"""Street, city, region, country, continent: the thresholds of Im2GPS, YFCC4k and their successors."""

GEOSCORE_SCALE_KM = 1492.7
"""GeoGuessr's decay length: a guess d km away scores 5000 * exp(-d / 1492.7)."""

GEOSCORE_MAX = 5000.0


def haversine_np(lat1: ArrayLike, lon1: ArrayLike, lat2: ArrayLike, lon2: ArrayLike) -> np.ndarray:
    """Great-circle distance in km between points given in degrees; broadcasts like numpy."""
    phi1 = np.radians(np.asarray(lat1, dtype=np.float64))
    phi2 = np.radians(np.asarray(lat2, dtype=np.float64))
    dphi = phi2 - phi1
    dlmb = np.radians(np.asarray(lon2, dtype=np.float64) - np.asarray(lon1, dtype=np.float64))
    a = np.sin(dphi / 2) ** 2 + np.cos(phi1) * np.cos(phi2) * np.sin(dlmb / 2) ** 2
    return 2.0 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def _haversine_a(
    lat1: torch.Tensor, lon1: torch.Tensor, lat2: torch.Tensor, lon2: torch.Tensor
) -> torch.Tensor:
    import torch

    phi1, phi2 = torch.deg2rad(lat1), torch.deg2rad(lat2)
    dphi = phi2 - phi1
    dlmb = torch.deg2rad(lon2 - lon1)
    return torch.sin(dphi / 2) ** 2 + torch.cos(phi1) * torch.cos(phi2) * torch.sin(dlmb / 2) ** 2


def haversine_torch(
    lat1: torch.Tensor, lon1: torch.Tensor, lat2: torch.Tensor, lon2: torch.Tensor
) -> torch.Tensor:
    """Great-circle distance in km (degrees in), element-wise with broadcasting, on any device.

    Use float64 for evaluation-grade numbers: in float32 the result is good to about a metre only for
    distances under a few hundred km.
    """
    import torch

    a = _haversine_a(lat1, lon1, lat2, lon2)
    return 2.0 * EARTH_RADIUS_KM * torch.asin(torch.sqrt(torch.clamp(a, 0.0, 1.0)))


def haversine_matrix_torch(
    lat_a: torch.Tensor, lon_a: torch.Tensor, lat_b: torch.Tensor, lon_b: torch.Tensor
) -> torch.Tensor:
    """Pairwise distances in km: (A,) points against (B,) points gives an (A, B) matrix."""
    return haversine_torch(lat_a[:, None], lon_a[:, None], lat_b[None, :], lon_b[None, :])


def geoscore(d_km: ArrayLike) -> np.ndarray:
    """GeoGuessr-style score in [0, 5000]: 5000 at 0 km, halved about every 1,035 km."""
    return GEOSCORE_MAX * np.exp(-np.asarray(d_km, dtype=np.float64) / GEOSCORE_SCALE_KM)
