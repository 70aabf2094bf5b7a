"""Haversine (numpy and torch), GeoScore: known distances and hypothesis properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geotag.geo.distance import (
    DEFAULT_THRESHOLDS_KM,
    EARTH_RADIUS_KM,
    geoscore,
    haversine_matrix_torch,
    haversine_np,
    haversine_torch,
)

HALF_CIRCUMFERENCE = math.pi * EARTH_RADIUS_KM

lats = st.floats(min_value=-90.0, max_value=90.0, allow_nan=False)
lons = st.floats(min_value=-180.0, max_value=180.0, allow_nan=False)
points = st.tuples(lats, lons)


def test_constants() -> None:
    assert EARTH_RADIUS_KM == 6371.0088
    assert DEFAULT_THRESHOLDS_KM == (1, 25, 200, 750, 2500)


def test_paris_london() -> None:
    d = float(haversine_np(48.8566, 2.3522, 51.5074, -0.1278))
    assert d == pytest.approx(343.56, abs=0.05)


def test_one_degree_on_the_equator() -> None:
    expected = EARTH_RADIUS_KM * math.pi / 180  # 111.19508 km
    assert float(haversine_np(0.0, 0.0, 0.0, 1.0)) == pytest.approx(expected, rel=1e-12)
    assert float(haversine_np(0.0, 0.0, 1.0, 0.0)) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(111.195, abs=1e-3)


@pytest.mark.parametrize(
    ("lat1", "lon1", "lat2", "lon2"),
    [(0, 0, 0, 180), (90, 0, -90, 0), (10, 20, -10, -160), (-33.8688, 151.2093, 33.8688, -28.7907)],
)
def test_antipodes_are_half_the_circumference(lat1: float, lon1: float, lat2: float, lon2: float) -> None:
    d = float(haversine_np(lat1, lon1, lat2, lon2))
    assert not math.isnan(d)
    assert d == pytest.approx(HALF_CIRCUMFERENCE, abs=1e-3)


def test_zero_and_tiny_distances() -> None:
    assert float(haversine_np(12.5, -70.25, 12.5, -70.25)) == 0.0
    tiny = 1e-9  # degrees: about 0.1 mm
    expected = EARTH_RADIUS_KM * math.radians(tiny)
    assert float(haversine_np(45.0, 7.0, 45.0 + tiny, 7.0)) == pytest.approx(expected, rel=1e-6)


def test_longitude_wraps_across_the_date_line() -> None:
    across = float(haversine_np(0.0, 179.5, 0.0, -179.5))
    assert across == pytest.approx(EARTH_RADIUS_KM * math.radians(1.0), rel=1e-12)


def test_vectorised_and_broadcast() -> None:
    lat = np.array([0.0, 10.0, -45.0])
    d = haversine_np(lat, 0.0, 0.0, 0.0)
    assert d.shape == (3,)
    assert d[0] == 0.0
    assert np.allclose(d[1:], EARTH_RADIUS_KM * np.radians([10.0, 45.0]), rtol=1e-12)


def test_geoscore() -> None:
    assert float(geoscore(0.0)) == 5000.0
    assert float(geoscore(1492.7)) == pytest.approx(5000 / math.e)
    scores = geoscore(np.array([0.0, 100.0, 20_000.0]))
    assert np.all(np.diff(scores) < 0) and np.all(scores > 0)


def test_torch_agrees_with_numpy() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    lat1, lat2 = rng.uniform(-90, 90, (2, 2000))
    lon1, lon2 = rng.uniform(-180, 180, (2, 2000))
    ref = haversine_np(lat1, lon1, lat2, lon2)
    t = [torch.from_numpy(x) for x in (lat1, lon1, lat2, lon2)]
    got = haversine_torch(*t).numpy()
    assert np.max(np.abs(got - ref)) < 1e-6
    antipode = haversine_torch(*(torch.tensor([v], dtype=torch.float64) for v in (10.0, 20.0, -10.0, -160.0)))
    assert not torch.isnan(antipode).any()


def test_torch_matrix_matches_pairs() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    lat_a, lon_a = rng.uniform(-90, 90, 5), rng.uniform(-180, 180, 5)
    lat_b, lon_b = rng.uniform(-90, 90, 7), rng.uniform(-180, 180, 7)
    m = haversine_matrix_torch(*(torch.from_numpy(x) for x in (lat_a, lon_a, lat_b, lon_b)))
    assert m.shape == (5, 7)
    ref = haversine_np(lat_a[:, None], lon_a[:, None], lat_b[None, :], lon_b[None, :])
    assert np.max(np.abs(m.numpy() - ref)) < 1e-6


@settings(max_examples=300, deadline=None)
@given(points, points)
def test_symmetric_non_negative_bounded(a: tuple[float, float], b: tuple[float, float]) -> None:
    ab = float(haversine_np(*a, *b))
    ba = float(haversine_np(*b, *a))
    assert ab >= 0.0
    assert ab <= HALF_CIRCUMFERENCE + 1e-9
    assert ab == pytest.approx(ba, abs=1e-6)


@settings(max_examples=300, deadline=None)
@given(points, points, points)
def test_triangle_inequality(a: tuple[float, float], b: tuple[float, float], c: tuple[float, float]) -> None:
    ab, bc, ac = (float(haversine_np(*p, *q)) for p, q in ((a, b), (b, c), (a, c)))
    # asin loses precision near the antipode (about 1e-4 km), hence the tolerance
    assert ac <= ab + bc + 1e-3
