"""Reachable regions (geotag/geo/reach.py): radius from speed x time to the nearest fixes before and
after a photo, a flat prior inside it, a half-Gaussian falloff beyond it, flat where no fix applies."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geotag.errors import InputError
from geotag.geo.distance import haversine_np
from geotag.geo.fixes import Fixes
from geotag.geo.reach import EDGE_FRACTION, ReachPrior, reach_prior
from geotag.models.prior import Prior

AREZZO = (43.4633, 11.8796)
T0 = 1_700_000_000.0


def fixes(*rows: tuple[float, float, float], accuracy_m: float = 10.0) -> Fixes:
    t, lat, lon = (np.array(c, dtype=np.float64) for c in zip(*rows, strict=True))
    return Fixes(t=t, lat=lat, lon=lon, accuracy_m=np.full(len(t), accuracy_m))


def east_of(start: tuple[float, float], km: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Points `km` east of `start` along its parallel (close enough to a great circle for 100s of km)."""
    dlon = np.degrees(km / (6371.0088 * np.cos(np.radians(start[0]))))
    lat = torch.full((len(km),), start[0], dtype=torch.float64)
    return lat, torch.as_tensor(start[1] + dlon)


def test_radius_is_fix_error_plus_speed_times_time() -> None:
    f = fixes((T0, *AREZZO))
    prior = reach_prior(np.array([T0 + 600.0, T0 - 3600.0]), f, max_speed_kmh=120.0)
    # 10 min after at 120 km/h: 20 km (+10 m); 1 h before the fix: 120 km, as the "after" fix
    np.testing.assert_allclose(prior.radius_km[0], [20.01, np.nan])
    np.testing.assert_allclose(prior.radius_km[1], [np.nan, 120.01])
    np.testing.assert_allclose(prior.edge_km[1, 1], EDGE_FRACTION * 120.01)


def test_flat_inside_soft_beyond_never_a_cliff() -> None:
    prior = reach_prior(np.array([T0 + 600.0]), fixes((T0, *AREZZO)), max_speed_kmh=120.0)
    km = np.array([0.0, 10.0, 19.9, 25.0, 30.0, 40.0, 100.0, 1000.0])
    lat, lon = east_of(AREZZO, km)
    d = haversine_np(lat.numpy(), lon.numpy(), *AREZZO)
    lp = prior.log_density(lat, lon)[0].double().numpy()
    assert lp.shape == (len(km),)
    np.testing.assert_array_equal(lp[:3], 0.0)
    assert (np.diff(lp[3:]) < 0).all()  # strictly falling beyond the radius
    r, edge = 20.01, max(1.0, EDGE_FRACTION * 20.01)
    np.testing.assert_allclose(lp[3:], -0.5 * ((d[3:] - r) / edge) ** 2, rtol=1e-4)
    assert -1.0 < lp[3] < 0.0  # 5 km over a 20 km radius: down by less than e
    assert lp[-1] < -1e3  # 1,000 km in 10 minutes: all but impossible, but finite
    assert np.isfinite(lp).all()


def test_fixes_before_and_after_both_constrain() -> None:
    east = (AREZZO[0], AREZZO[1] + 1.0)  # about 81 km east
    f = fixes((T0, *AREZZO), (T0 + 7200.0, *east))
    prior = reach_prior(np.array([T0 + 1800.0]), f, max_speed_kmh=100.0)  # 50 km from A, 150 km from B
    np.testing.assert_allclose(prior.radius_km[0], [50.01, 150.01])
    lat, lon = east_of(AREZZO, np.array([0.0, 100.0, -100.0]))
    lp = prior.log_density(lat, lon)[0]
    assert lp[0] == 0.0  # at A: within both radii
    assert lp[2] < lp[1] < 0.0  # 100 km west of A is also beyond B's radius: punished by both


def test_outside_the_window_or_without_time_the_prior_is_flat() -> None:
    f = fixes((T0, *AREZZO))
    prior = reach_prior(np.array([T0 + 7 * 3600.0, np.nan, T0 + 3000.0]), f, window_s=6 * 3600.0)
    assert prior.has_fix.tolist() == [False, False, True]
    lat, lon = east_of(AREZZO, np.array([0.0, 5000.0]))
    lp = prior.log_density(lat, lon)
    assert lp[:2].eq(0.0).all() and lp[2, 1] < -100


def test_no_fixes_at_all() -> None:
    prior = reach_prior(np.array([T0]), Fixes.empty())
    assert not prior.has_fix.any()
    assert prior.log_density(torch.zeros(3), torch.zeros(3)).eq(0.0).all()


def test_per_photo_candidates_take_and_dtype() -> None:
    prior = reach_prior(np.array([T0 + 60.0, T0 - 60.0]), fixes((T0, *AREZZO)))
    cand_lat = torch.tensor([[AREZZO[0], 0.0], [0.0, AREZZO[0]]])
    cand_lon = torch.tensor([[AREZZO[1], 0.0], [0.0, AREZZO[1]]])
    lp = prior.log_density(cand_lat, cand_lon)
    assert lp.dtype == torch.float32 and lp.shape == (2, 2)
    assert lp[0, 0] == 0.0 and lp[1, 1] == 0.0 and lp[0, 1] < -100 and lp[1, 0] < -100
    one = prior.take([1])
    assert len(one) == 1 and one.log_density(cand_lat[1:], cand_lon[1:]).equal(lp[1:])


def test_it_is_a_model_prior() -> None:
    assert isinstance(reach_prior(np.array([T0]), fixes((T0, *AREZZO))), Prior)
    assert isinstance(ReachPrior(*(np.zeros((1, 2)),) * 4), Prior)


@pytest.mark.parametrize(
    ("speed", "window"), [(0.0, 3600.0), (-5.0, 3600.0), (100.0, 0.0), (float("nan"), 1.0)]
)
def test_bad_settings_are_one_clear_error(speed: float, window: float) -> None:
    with pytest.raises(InputError, match="--max-speed|--prior-window"):
        reach_prior(np.array([T0]), fixes((T0, *AREZZO)), max_speed_kmh=speed, window_s=window)


def test_knn_under_a_reach_prior_lands_in_reach() -> None:
    prior_util = pytest.importorskip("prior_util")
    model = prior_util.knn()
    plain = prior_util.outputs(model)
    # each photo was seen, 20 minutes before, at the position of its 40th nearest gallery photo
    with torch.no_grad():
        _, idx = model.neighbours(model.forward(prior_util.images()), 40)
    seen = model.gallery_coords[idx[:, -1]].numpy()
    days = T0 + 86400.0 * np.arange(len(seen))  # one track, a photo a day
    prior = reach_prior(days + 1200.0, Fixes(t=days, lat=seen[:, 0], lon=seen[:, 1]), max_speed_kmh=100.0)
    moved = prior_util.outputs(model, prior=prior)
    before = haversine_np(plain["lat"].numpy(), plain["lon"].numpy(), seen[:, 0], seen[:, 1])
    after = haversine_np(moved["lat"].numpy(), moved["lon"].numpy(), seen[:, 0], seen[:, 1])
    assert (before > 100).all() and (after <= 33.4).all()
