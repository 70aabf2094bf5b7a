"""Training losses shared by the models: GeoCLIP's contrastive loss with its GPS queue, and geocell
cross-entropy with PIGEON's haversine label smoothing.

Details users of the anchors' code had to ask for (GUIDE section 6), made explicit here:

- GeoCLIP's queue: the released training code (geoclip/train/train.py) builds `torch.cat([gps, queue])`
  before it calls `dequeue_and_enqueue(gps)`; `torch.cat` copies, so a batch never meets its own
  coordinates among the negatives. The real difference is the start: the released queue is 4096 columns
  of `normalize(randn(2, 4096))`, i.e. fake "coordinates" on a 1-degree circle round (0, 0), which act as
  negatives until real batches replace them. `GPSQueue` is a ring buffer that is read (a copy) before it
  is written, starts empty and only ever returns coordinates it was given.
- GPS noise: about 150 m on the batch's own coordinates (augmentation of the positives), about 1,000 m
  on queue entries (applied once, when a coordinate enters the queue, so the state is checkpointable).
- PIGEON label smoothing: targets exp(-(d(cell, x) - d(true cell, x)) / tau), normalised to sum 1
  (PIGEON's own code forgot the normalisation). After normalisation the d(true cell, x) term cancels,
  so the targets are exactly softmax(-d(cell, x) / tau), which is how they are computed (no overflow).
  Note what the formula implies: when another cell's centroid is nearer to x than the true cell's
  centroid, that cell gets the largest target.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from geotag.geo.distance import EARTH_RADIUS_KM, haversine_matrix_torch

METRES_PER_DEGREE = EARTH_RADIUS_KM * 1000.0 * math.pi / 180.0
BATCH_NOISE_M = 150.0
QUEUE_NOISE_M = 1000.0
QUEUE_SIZE = 4096
DEFAULT_TAU_KM = 65.0
"""PIGEON's smoothing length (65-75 km in the paper)."""
TRANSLOCATOR_WEIGHTS = (0.5, 0.3, 0.2)
"""Per-partition loss weights, coarse to fine (TransLocator)."""


def jitter_gps(
    latlon: torch.Tensor, sigma_m: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(N, 2) degrees moved by an isotropic Gaussian offset of `sigma_m` metres (north and east).

    Latitude is clamped to the poles and longitude wrapped into [-180, 180); near a pole the east offset
    is computed with cos(lat) floored at 0.01, so it stays finite.
    """
    if sigma_m <= 0 or not len(latlon):
        return latlon.clone()
    noise = torch.randn(latlon.shape, generator=generator, dtype=torch.float64) * sigma_m
    noise = noise.to(latlon.device)
    lat = latlon[:, 0].double()
    dlat = noise[:, 0] / METRES_PER_DEGREE
    dlon = noise[:, 1] / (METRES_PER_DEGREE * torch.cos(torch.deg2rad(lat)).clamp(min=0.01))
    new_lat = (lat + dlat).clamp(-90.0, 90.0)
    new_lon = torch.remainder(latlon[:, 1].double() + dlon + 180.0, 360.0) - 180.0
    return torch.stack([new_lat, new_lon], dim=1).to(latlon.dtype)


class GPSQueue:
    """A ring buffer of the last `size` training coordinates, jittered when they enter.

    `entries()` returns a copy of the filled part (none at first), so reading it before `push` keeps
    the current batch out of its own negatives. The state is three tensors (`state_dict`), saved with
    every checkpoint so a resumed run sees the same negatives.
    """

    def __init__(self, size: int = QUEUE_SIZE, noise_m: float = QUEUE_NOISE_M) -> None:
        if size < 0:
            raise ValueError("queue size must be >= 0")
        self.size = size
        self.noise_m = noise_m
        self.coords = torch.zeros(size, 2, dtype=torch.float32)
        self.ptr = 0  # next slot to write
        self.count = 0  # filled slots, at most size

    def __len__(self) -> int:
        return self.count

    def entries(self) -> torch.Tensor:
        """(count, 2) coordinates in the queue, oldest first."""
        if self.count < self.size:
            return self.coords[: self.count].clone()
        return torch.cat([self.coords[self.ptr :], self.coords[: self.ptr]])

    def push(self, latlon: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Add a batch of (N, 2) coordinates (jittered by `noise_m`), overwriting the oldest."""
        if self.size == 0 or not len(latlon):
            return
        new = jitter_gps(latlon.detach().float().cpu(), self.noise_m, generator)[-self.size :]
        n = len(new)
        first = min(n, self.size - self.ptr)
        self.coords[self.ptr : self.ptr + first] = new[:first]
        if n > first:
            self.coords[: n - first] = new[first:]
        self.ptr = (self.ptr + n) % self.size
        self.count = min(self.size, self.count + n)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            "coords": self.coords.clone(),
            "ptr": torch.tensor(self.ptr, dtype=torch.int64),
            "count": torch.tensor(self.count, dtype=torch.int64),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        coords = state["coords"].float()
        if coords.shape != self.coords.shape:
            raise ValueError(f"queue of shape {tuple(coords.shape)} does not fit size {self.size}")
        self.coords = coords.clone()
        self.ptr, self.count = int(state["ptr"]), int(state["count"])


def contrastive_loss(
    image_features: torch.Tensor, gps_features: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """GeoCLIP's image-to-GPS InfoNCE: row i's positive is GPS column i; the other batch columns and
    any extra (queue) columns after the first B are negatives. Runs in float32."""
    img = F.normalize(image_features.float(), dim=1)
    gps = F.normalize(gps_features.float(), dim=1)
    logits = logit_scale.float().exp() * (img @ gps.T)
    target = torch.arange(len(img), device=img.device)
    return F.cross_entropy(logits, target)


def smoothed_cell_targets(
    lat: torch.Tensor,
    lon: torch.Tensor,
    cell_lat: torch.Tensor,
    cell_lon: torch.Tensor,
    tau_km: float = DEFAULT_TAU_KM,
) -> torch.Tensor:
    """PIGEON haversine label smoothing: (B, C) targets summing to 1 per row (see module docstring)."""
    d = haversine_matrix_torch(lat.double(), lon.double(), cell_lat.double(), cell_lon.double())
    return torch.softmax(-d / tau_km, dim=1).float()


def cell_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    soft_target: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean cross-entropy over rows whose cell is known (`target >= 0`); 0 when none is.

    With `soft_target` (B, C) the loss is -sum(q log p), else the hard-label CE.
    """
    keep = target >= 0
    if not bool(keep.any()):
        return logits.sum() * 0.0
    logp = F.log_softmax(logits[keep].float(), dim=1)
    if soft_target is None:
        return F.nll_loss(logp, target[keep])
    return -(soft_target[keep] * logp).sum(dim=1).mean()


def hierarchical_cell_loss(
    logits: Sequence[torch.Tensor],
    targets: torch.Tensor,
    weights: Sequence[float] = TRANSLOCATOR_WEIGHTS,
    *,
    lat: torch.Tensor | None = None,
    lon: torch.Tensor | None = None,
    centroids: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
    tau_km: float | None = None,
) -> dict[str, torch.Tensor]:
    """Weighted sum of per-partition cell CEs (coarse to fine): {"cells": total, "cell_<k>": each}.

    `targets` is (B, P) class indices (-1 where a partition dropped the point's cell). With `tau_km`,
    each partition uses smoothed targets built from the true coordinates and that partition's cell
    centroids.
    """
    if len(logits) != len(weights) or targets.shape[1] != len(logits):
        raise ValueError(f"{len(logits)} partitions, {len(weights)} weights, targets {tuple(targets.shape)}")
    out: dict[str, torch.Tensor] = {}
    total = logits[0].new_zeros((), dtype=torch.float32)
    for k, (part_logits, w) in enumerate(zip(logits, weights, strict=True)):
        soft = None
        if tau_km is not None:
            if lat is None or lon is None or centroids is None:
                raise ValueError("label smoothing needs lat, lon and the cell centroids")
            c_lat, c_lon = centroids[k]
            soft = smoothed_cell_targets(lat, lon, c_lat, c_lon, tau_km).to(part_logits.device)
        loss = cell_cross_entropy(part_logits, targets[:, k], soft)
        out[f"cell_{k}"] = loss.detach()
        total = total + w * loss
    out["cells"] = total
    return out
