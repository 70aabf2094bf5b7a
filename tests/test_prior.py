"""A prior per photo (geotag/models/prior.py), model by model on tiny seeded weights: with no prior the
outputs are those of a predict call that names no prior, to the bit; with a prior that allows only a
region far from the unaided answer, the answer moves inside that region."""

from __future__ import annotations

import pytest
import torch

from geotag.geo.distance import haversine_torch
from geotag.models.base import GeoModel
from geotag.models.prior import KNN_PRIOR_FACTOR, Prior, candidate_log_prior, posterior

prior_util = pytest.importorskip("prior_util")
pytest.importorskip("transformers")

RADIUS_KM, SCALE_KM = 400.0, 100.0


class SoftDiscs:
    """Photo b may be within RADIUS_KM of centres[b]; beyond it the log-prior falls off as a half-Gaussian."""

    def __init__(self, centres: torch.Tensor) -> None:
        self.centres = centres.double()
        self.calls = 0

    def log_density(self, lat: torch.Tensor, lon: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        c = self.centres.to(lat.device)
        d = haversine_torch(lat.double(), lon.double(), c[:, 0, None], c[:, 1, None])  # (B, N)
        return (-0.5 * ((d - RADIUS_KM).clamp_min(0.0) / SCALE_KM) ** 2).float()


def candidates(name: str, model: GeoModel) -> torch.Tensor:
    """(B, N, 2) the places each photo's prediction could come from."""
    b = len(prior_util.images())
    if name == "knn":
        with torch.no_grad():
            _, idx = model.neighbours(model.forward(prior_util.images()), model.k * KNN_PRIOR_FACTOR)
        return model.gallery_coords[idx]
    shared = {"geoclip": "gps_gallery", "geoclip-lite": "gps_gallery", "experts": "points"}.get(
        name, "centroids"
    )
    points = getattr(model, shared).double()
    return points[None].expand(b, -1, -1)


@pytest.fixture(scope="module", params=list(prior_util.BUILDERS))
def built(request) -> tuple[str, GeoModel, dict[str, torch.Tensor]]:
    model = prior_util.BUILDERS[request.param]()
    return request.param, model, prior_util.outputs(model)


def test_every_distribution_model_accepts_a_prior(built) -> None:
    _, model, _ = built
    assert model.accepts_prior


def test_no_prior_is_bit_for_bit_the_plain_call(built) -> None:
    _, model, plain = built
    none = prior_util.outputs(model, prior=None)
    assert plain.keys() == none.keys()
    for key in plain:
        assert torch.equal(plain[key], none[key]), key


def test_a_prior_moves_the_prediction_into_its_region(built) -> None:
    name, model, plain = built
    cand = candidates(name, model)
    d = haversine_torch(
        plain["lat"].double()[:, None], plain["lon"].double()[:, None], cand[..., 0], cand[..., 1]
    )
    far = cand[torch.arange(len(cand)), d.argmax(dim=1)]  # per photo, its candidate farthest from the answer
    assert (d.max(dim=1).values > 3 * RADIUS_KM).all()
    prior = SoftDiscs(far)
    moved = prior_util.outputs(model, prior=prior)
    assert prior.calls >= 1
    dist = haversine_torch(moved["lat"].double(), moved["lon"].double(), far[:, 0], far[:, 1])
    assert (dist <= RADIUS_KM + 1.0).all(), (name, dist)
    assert torch.isfinite(moved["confidence"]).all() and torch.isfinite(moved["error_km"]).all()
    scores = moved["topk_score"]
    assert (scores[:, :-1] >= scores[:, 1:]).all() and (scores.sum(dim=1) <= 1 + 1e-5).all()


def test_a_flat_prior_keeps_the_ranking() -> None:
    model = prior_util.geoclip()
    plain = prior_util.outputs(model)

    class Flat:
        def log_density(self, lat: torch.Tensor, lon: torch.Tensor) -> torch.Tensor:
            return torch.zeros(len(prior_util.images()), lat.shape[-1])

    flat = prior_util.outputs(model, prior=Flat())
    assert torch.equal(plain["topk_lat"], flat["topk_lat"])
    torch.testing.assert_close(plain["topk_score"], flat["topk_score"])


def test_posterior_survives_a_prior_far_below_its_peak() -> None:
    probs = torch.tensor([[0.7, 0.2, 0.1]])
    post = posterior(probs, torch.tensor([[-5000.0, -4990.0, -5000.0]]))
    torch.testing.assert_close(post.sum(dim=1), torch.ones(1))
    assert post.argmax().item() == 1
    assert posterior(torch.tensor([[0.5, 0.0, 0.5]]), torch.zeros(1, 3))[0, 1] == 0.0


def test_the_interface_is_structural() -> None:
    assert isinstance(SoftDiscs(torch.zeros(1, 2)), Prior)
    lp = candidate_log_prior(SoftDiscs(torch.zeros(2, 2)), torch.tensor([[0.0, 0.0], [0.0, 10.0]]))
    assert lp.shape == (2, 2) and lp.dtype == torch.float32
    assert lp[0, 0] == 0.0 and lp[0, 1] < 0.0  # 10 degrees of longitude at the equator: 1,112 km
