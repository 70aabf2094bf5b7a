"""How finely a set of coordinates can place a photo: the floor of a model's error radius.

A model that answers with one of a fixed set of points (GeoCLIP's GPS gallery) cannot say where a photo
is more finely than the distance between those points, however sure it is: its `error_km` is floored at
the gallery's typical spacing, the median distance from a point to its nearest other point.
"""

from __future__ import annotations

import numpy as np

from geotag.geo.distance import EARTH_RADIUS_KM

SPACING_SAMPLE = 4096
"""Points whose nearest neighbour is searched (a fixed, evenly spread subset of a larger gallery): the
median of 4,096 distances is within a few per cent of the full one, at 1/25 of the cost for 100K."""
BLOCK = 1 << 24  # elements of one (sample x gallery) cosine block: 128 MB in float64


def unit_vectors_np(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """(n, 3) float64 unit vectors of (lat, lon) degrees."""
    phi, lam = np.radians(lat), np.radians(lon)
    return np.stack([np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)], axis=1)


def median_spacing_km(coords: np.ndarray, sample: int = SPACING_SAMPLE) -> float:
    """Median great-circle distance (km) from a point of `coords` (n, 2 lat, lon) to its nearest distinct
    point; 0.0 for fewer than two distinct points. Repeated coordinates count once."""
    points = np.unique(np.asarray(coords, dtype=np.float64).reshape(-1, 2), axis=0)
    if len(points) < 2:
        return 0.0
    xyz = unit_vectors_np(points[:, 0], points[:, 1])
    pick = np.unique(np.linspace(0, len(points) - 1, min(sample, len(points))).round().astype(np.int64))
    rows = max(1, BLOCK // len(points))
    nearest = []
    for lo in range(0, len(pick), rows):
        idx = pick[lo : lo + rows]
        dot = xyz[idx] @ xyz.T  # float64: a 1 km step is 1e-8 below 1, below float32's resolution
        dot[np.arange(len(idx)), idx] = -2.0  # not itself
        best = dot.max(axis=1)
        chord = np.sqrt(np.clip(2.0 - 2.0 * best, 0.0, 4.0))
        nearest.append(2.0 * EARTH_RADIUS_KM * np.arcsin(np.clip(chord / 2.0, 0.0, 1.0)))
    return float(np.median(np.concatenate(nearest)))
