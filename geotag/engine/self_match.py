"""Mark rows whose visual answer came from the photo's own position in the model's gallery.

A kNN gallery that holds the photo (or a copy, or another upload at the very same spot) gives its own
coordinates back: a perfect score that says nothing about untagged photos. The model flags what it can
see (`image`, `copy`: geotag.models.knn); here, once the ground truth is known, a row whose candidates
include its true position is marked `truth`, so eval and the report score such rows apart.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from geotag.geo.distance import haversine_np

SAME_SPOT_KM = 0.001
"""A candidate this close to the ground truth (1 m) is the photo's own position, not a neighbour's."""


def mark_truth_matches(rows: Iterable[dict[str, Any]]) -> None:
    """Set `self_match = "truth"` on rows of a self-match-aware model (the key is present) whose top-k
    candidates include the ground truth; other rows are left as they are."""
    for row in rows:
        if "self_match" not in row or row["self_match"] is not None:
            continue
        lat, lon, topk = row.get("gt_lat"), row.get("gt_lon"), row.get("topk") or []
        if lat is None or lon is None or not topk:
            continue
        cand = [(c["lat"], c["lon"]) for c in topk if c.get("lat") is not None and c.get("lon") is not None]
        if cand and min(haversine_np(lat, lon, a, b) for a, b in cand) <= SAME_SPOT_KM:
            row["self_match"] = "truth"
