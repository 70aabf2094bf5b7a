"""A prior per photo over the Earth, one interface for every model that predicts from a distribution.

Evidence from outside the pixels (a GPS fix ten minutes before the photo, a reachable region) says where
a photo can be. Each model evaluates the prior on its own candidate set, before it ranks them: GeoCLIP
and geoclip-lite on their whole GPS gallery (on the device), the cell models on every fine cell after
the hierarchical product, kNN on a wider set of neighbours, the experts on their countries' points. The
posterior is p(candidate | image) x prior(candidate), renormalised over the candidates; confidence and
error_km are read from the posterior. No model knows where a prior came from, and with no prior every
model's code path is the one it had before priors existed (tests/test_prior.py checks it bit for bit).

Anything with a `log_density` method of the signature below is a prior (geotag/geo/reach.py builds one
from travel fixes; it imports nothing from models/).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

KNN_PRIOR_FACTOR = 10
"""kNN under a prior retrieves this many times its neighbours (k or top-k, whichever is larger), so a
prior that rules out the nearest ones still has candidates to choose from."""


@runtime_checkable
class Prior(Protocol):
    """A per-photo log-prior for a batch of B photos, in batch order."""

    def log_density(self, lat: torch.Tensor, lon: torch.Tensor) -> torch.Tensor:
        """Log-prior (up to a constant per photo) at candidate positions in degrees.

        `lat`, `lon`: (N,) candidates shared by every photo (a gallery, cell centroids), or (B, N) per
        photo (kNN neighbours). Returns (B, N) float32 on the candidates' device; finite values are
        expected (a soft prior), -inf is allowed where a place is impossible as long as some candidate
        of each photo stays finite."""
        ...


def candidate_log_prior(prior: Prior, points: torch.Tensor) -> torch.Tensor:
    """The prior at candidates `points` ((N, 2) shared or (B, N, 2) per photo, lat/lon degrees): (B, N)
    float32 on the points' device."""
    lp = prior.log_density(points[..., 0], points[..., 1])
    return lp.to(device=points.device, dtype=torch.float32)


def posterior(probs: torch.Tensor, log_prior: torch.Tensor) -> torch.Tensor:
    """(B, N) probabilities times exp(log_prior), renormalised per row, computed in the log domain (a
    prior thousands of nats below its peak must not underflow a whole row to zero)."""
    logp = probs.float().clamp_min(0.0).log() + log_prior.float()
    return logp.softmax(dim=1).nan_to_num(0.0)


__all__ = ["KNN_PRIOR_FACTOR", "Prior", "candidate_log_prior", "posterior"]
