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
    """One level-2 cell with all the probability: its radius r (about 1,300 km), where treating cells
    as points said 0 km."""
    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(5, 15, 200), rng.uniform(10, 20, 200)
    cells = build_cells(lat, lon, [PartitionSpec("only", 0, 10_000)])
    assert len(cells.fine) == 1
    radii = torch.from_numpy(cell_radius_km(cells.fine.ids))
    cents = torch.tensor(np.stack([cells.fine.lat, cells.fine.lon], 1))
    probs = [torch.ones(1, 1)]
    anc = torch.from_numpy(cells.ancestors())
    pred = cell_prediction(probs, anc, cents, cells.fine.tokens(), 1, radii)
    # the half-mass radius of its disc, r / sqrt(2), is below the cell itself: the floor, r, wins
    assert pred.error_km[0].item() == pytest.approx(radii[0].item(), rel=1e-6)
    assert 1200 < pred.error_km[0].item() < 1400
    assert cell_prediction(probs, anc, cents, cells.fine.tokens(), 1).error_km[0].item() == 0.0


def test_small_cells_barely_change_the_radius() -> None:
    probs = torch.tensor([[0.3, 0.3, 0.4]])
    cents = torch.tensor([[0.0, 0.0], [0.0, 1.0], [0.0, 10.0]], dtype=torch.float64)
    point = cents[2:3]
    plain = median_radius(probs, point, cents)
    small = median_radius(probs, point, cents, torch.full((3,), 1.0))
    assert plain.item() == pytest.approx(small.item(), rel=1e-3)


def test_error_radius_is_never_below_the_chosen_cell() -> None:
    """Three fine cells of different levels; whichever wins, error_km >= its radius, and a spread answer
    keeps its larger half-mass radius."""
    lat, lon = np.array([10.0, 40.0, -30.0]), np.array([20.0, -70.0, 140.0])
    ids = np.array(
        [parent_ids(leaf_ids(lat[i : i + 1], lon[i : i + 1]), lv)[0] for i, lv in enumerate((4, 9, 13))]
    )
    radii = torch.from_numpy(cell_radius_km(ids))
    cents = torch.tensor(np.stack([lat, lon], 1))
    anc = torch.arange(3).reshape(3, 1)
    tokens = ["a", "b", "c"]
    for best in range(3):
        probs = torch.full((1, 3), 0.01)
        probs[0, best] = 0.98
        pred = cell_prediction([probs], anc, cents, tokens, 1, radii)
        assert pred.error_km[0].item() >= radii[best].item() - 1e-9
        assert pred.error_km[0].item() == pytest.approx(radii[best].item())  # a sure answer: the floor
    spread = cell_prediction([torch.tensor([[0.4, 0.35, 0.25]])], anc, cents, tokens, 1, radii)
    assert spread.error_km[0].item() > 5000  # half the mass is an ocean away: far above the cell
