"""cell_head's error radius accounts for the size of the cells, not only their centroids."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geotag.geo.cells import PartitionSpec, build_cells, leaf_ids, parent_ids
from geotag.geo.distance import EARTH_RADIUS_KM
from geotag.models.cell_head import cell_prediction, cell_radius_km, median_radius


def test_cell_radius_matches_the_mean_s2_cell_area() -> None:
    for level in (2, 8, 13):
        cell = parent_ids(leaf_ids(np.array([10.0]), np.array([20.0])), level)
        area = 4 * np.pi * EARTH_RADIUS_KM**2 / (6 * 4**level)
        assert cell_radius_km(cell)[0] == pytest.approx(np.sqrt(area / np.pi))


def test_a_sure_answer_in_a_large_cell_is_not_zero_km() -> None:
    """One level-2 cell with all the probability: the half-mass radius of its disc, r / sqrt(2) (about
    920 km), where treating cells as points said 0 km."""
    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(5, 15, 200), rng.uniform(10, 20, 200)
    cells = build_cells(lat, lon, [PartitionSpec("only", 0, 10_000)])
    assert len(cells.fine) == 1
    radii = torch.from_numpy(cell_radius_km(cells.fine.ids))
    cents = torch.tensor(np.stack([cells.fine.lat, cells.fine.lon], 1))
    probs = [torch.ones(1, 1)]
    anc = torch.from_numpy(cells.ancestors())
    pred = cell_prediction(probs, anc, cents, cells.fine.tokens(), 1, radii)
    assert pred.error_km[0].item() == pytest.approx(radii[0].item() / np.sqrt(2), rel=1e-4)
    assert 800 < pred.error_km[0].item() < 1100
    assert cell_prediction(probs, anc, cents, cells.fine.tokens(), 1).error_km[0].item() == 0.0


def test_small_cells_barely_change_the_radius() -> None:
    probs = torch.tensor([[0.3, 0.3, 0.4]])
    cents = torch.tensor([[0.0, 0.0], [0.0, 1.0], [0.0, 10.0]], dtype=torch.float64)
    point = cents[2:3]
    plain = median_radius(probs, point, cents)
    small = median_radius(probs, point, cents, torch.full((3,), 1.0))
    assert plain.item() == pytest.approx(small.item(), rel=1e-3)
