"""What every geocell classifier shares, so TransLocator and GeoDecoder answer the same way.

Both models end in one classifier per partition of the cells (geo/cells.py, coarse -> fine). Their
answers follow one convention, kept here once:

- hierarchical inference (GeoEstimation, TransLocator, GeoDecoder): a fine cell's probability times those
  of its enclosing cells in every coarser partition, renormalised over the fine cells;
- the predicted point is the best fine cell's centroid (the spherical mean of its training coordinates);
  the top-k candidates are the k best fine cells;
- `confidence` is the renormalised hierarchical probability of the chosen cell; `error_km` the distance
  from the prediction within which half of the fine-cell probability lies, each cell's probability spread
  over a disc of its S2 level's mean area (so one sure 3,000 km cell still says about 1,000 km, not 0),
  a median-error estimate in the sense of docs/schema.md;
- test-time augmentation: 1, 2, 5 or 10 crops (10 = the authors' TenCrop), probabilities averaged;
- checkpoint folders: `config.json` (a format tag and version), `model.safetensors`, `cells.parquet`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from geotag.errors import InputError, WeightsError
from geotag.geo.cells import Geocells, cell_levels
from geotag.geo.distance import EARTH_RADIUS_KM, haversine_matrix_torch
from geotag.models.base import Prediction

TTA_CROPS = (1, 2, 5, 10)


def hierarchical_probabilities(probs: Sequence[torch.Tensor], ancestors: torch.Tensor) -> torch.Tensor:
    """(B, n_fine): each fine cell's probability times its ancestors' (GeoEstimation / TransLocator).

    `probs[p]` is (B, n_p), coarse first; `ancestors` (n_fine, P) gives each fine cell's index in every
    partition (its last column is the fine index itself). Not renormalised.
    """
    out = probs[-1][:, ancestors[:, -1]]
    for p in range(len(probs) - 1):
        out = out * probs[p][:, ancestors[:, p]]
    return out


def register_cell_buffers(module: nn.Module, cells: Geocells) -> None:
    """Give `module` what `cell_prediction` needs: `cell_tokens` (fine cell ids), and non-persistent
    buffers `centroids` (n_fine, 2) float64, `cell_radii` (n_fine,) km and `ancestors` (n_fine, P), so
    they follow `.to(device)` but never enter a checkpoint (the cells file holds them)."""
    fine = cells.fine
    module.cell_tokens = fine.tokens()  # type: ignore[assignment]
    centroids = torch.from_numpy(np.stack([fine.lat, fine.lon], axis=1).astype(np.float64))
    module.register_buffer("centroids", centroids, persistent=False)
    module.register_buffer("cell_radii", torch.from_numpy(cell_radius_km(fine.ids)), persistent=False)
    module.register_buffer("ancestors", torch.from_numpy(cells.ancestors()), persistent=False)


def cell_radius_km(ids: np.ndarray) -> np.ndarray:
    """Radius (km) of a disc with the mean area of S2 cells at each cell's level: 4 pi R^2 / (6 * 4^L)."""
    levels = cell_levels(np.asarray(ids, dtype=np.uint64)).astype(np.float64)
    return EARTH_RADIUS_KM * np.sqrt(2.0 / 3.0) / 2.0**levels


def median_radius(
    probs: torch.Tensor,
    points: torch.Tensor,
    centroids: torch.Tensor,
    radii: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per row, the distance (km) from `points[row]` (lat, lon) within which half of the probability of
    the candidates at `centroids` (n, 2) lies. With `radii`, each candidate stands for a disc of that
    radius: its distance is the root mean square distance to the disc, sqrt(d^2 + r^2 / 2) (exact for the
    half-mass radius of one disc around the point, r / sqrt(2))."""
    cents = centroids.float()
    d = haversine_matrix_torch(points[:, 0].float(), points[:, 1].float(), cents[:, 0], cents[:, 1])
    if radii is not None:
        d = (d.square() + radii.float().square()[None, :] / 2).sqrt()
    d, order = d.sort(dim=1)
    mass = probs.gather(1, order).cumsum(dim=1)
    k = (mass < 0.5).sum(dim=1, keepdim=True).clamp_max(d.shape[1] - 1)
    return d.gather(1, k)[:, 0]


def cell_prediction(
    probs: Sequence[torch.Tensor],
    ancestors: torch.Tensor,
    centroids: torch.Tensor,
    tokens: Sequence[str],
    top_k: int,
    radii: torch.Tensor | None = None,
) -> Prediction:
    """The answer of a cell classifier from its per-partition probabilities (coarse first, float32),
    by the conventions of the module docstring; extras hold the chosen fine cell's id as `cell`."""
    n_fine = len(tokens)
    if not 1 <= top_k <= n_fine:
        raise InputError(f"top-k must be between 1 and the number of fine cells {n_fine}, got {top_k}")
    device = probs[-1].device
    with torch.autocast(device_type=device.type, enabled=False):
        hier = hierarchical_probabilities([p.float() for p in probs], ancestors)
        hier = hier / hier.sum(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
        scores, index = hier.topk(top_k, dim=1)
        coords = centroids[index]  # (B, k, 2) float64
        error_km = median_radius(hier, coords[:, 0], centroids, radii)
    coords = coords.cpu()
    return Prediction(
        lat=coords[:, 0, 0].contiguous(),
        lon=coords[:, 0, 1].contiguous(),
        confidence=scores[:, 0].cpu(),
        topk_lat=coords[..., 0].contiguous(),
        topk_lon=coords[..., 1].contiguous(),
        topk_score=scores.cpu(),
        extras={"cell": [tokens[i] for i in index[:, 0].tolist()]},
        error_km=error_km.double().cpu(),
    )


def tta_views(x: torch.Tensor, crop: int, n: int) -> torch.Tensor:
    """(n_views, B, C, crop, crop): the test-time crops of a batch: 1 (the centre), 2 (centre + its
    mirror), 5 (four corners + centre) or 10 (those five and their mirrors, torchvision's TenCrop)."""
    if n not in TTA_CROPS:
        raise InputError(f"tta_crops must be one of {TTA_CROPS}, got {n}")
    h, w = x.shape[-2:]
    top, left = (h - crop) // 2, (w - crop) // 2
    centre = x[..., top : top + crop, left : left + crop]
    if n == 1:
        return centre[None]
    if n == 2:
        return torch.stack([centre, centre.flip(-1)])
    views = [
        x[..., :crop, :crop],
        x[..., :crop, w - crop :],
        x[..., h - crop :, :crop],
        x[..., h - crop :, w - crop :],
        centre,
    ]
    if n == 10:
        views += [v.flip(-1) for v in views]
    return torch.stack(views)


# ---------------------------------------------------------------------------------------------------
# Checkpoint folders


def read_folder_config(
    folder: Path, fmt: str, version: int, what: str, config_file: str = "config.json"
) -> dict[str, Any]:
    """A model folder's config.json, checked for its format tag and version; one WeightsError line if
    the folder is not such a checkpoint or was written by a newer geotag."""
    path = folder / config_file
    if not folder.is_dir() or not path.is_file():
        raise WeightsError(f"{folder} is not a {what} checkpoint folder (no {config_file})")
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise WeightsError(f"cannot read {path}: {exc}") from exc
    if info.get("format") != fmt:
        raise WeightsError(f"{path} is not a {fmt} config (format {info.get('format')!r})")
    if int(info.get("format_version", 0)) > version:
        raise WeightsError(f"{folder} was written by a newer geotag (format {info['format_version']})")
    return info


def save_state(model: nn.Module, file: Path, fmt: str, skip_prefixes: Iterable[str] = ()) -> None:
    """The model's state dict (minus `skip_prefixes`: weights that live elsewhere) as safetensors."""
    from safetensors.torch import save_file

    skip = tuple(skip_prefixes)
    state = {
        k: v.detach().cpu().contiguous()
        for k, v in model.state_dict().items()
        if not (skip and k.startswith(skip))
    }
    save_file(state, str(file), metadata={"format": fmt})


def assign_state(model: nn.Module, file: Path, folder: Path) -> None:
    """Load a checkpoint's weights into a model built on the meta device (no random init): every key must
    fit and no parameter may stay on meta; one WeightsError line otherwise."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(file), device="cpu")
    except (OSError, SafetensorError) as exc:
        raise WeightsError(f"cannot read the weights of checkpoint {folder}: {exc}") from exc
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected or any(p.is_meta for p in model.parameters()):
        raise WeightsError(
            f"checkpoint {folder} does not fit its config: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )


__all__ = [
    "TTA_CROPS",
    "assign_state",
    "cell_prediction",
    "cell_radius_km",
    "hierarchical_probabilities",
    "median_radius",
    "read_folder_config",
    "register_cell_buffers",
    "save_state",
    "tta_views",
]
