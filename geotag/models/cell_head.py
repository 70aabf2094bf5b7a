"""What every geocell classifier shares, so TransLocator and GeoDecoder answer the same way.

Both models end in one classifier per partition of the cells (geo/cells.py, coarse -> fine). Their
answers follow one convention, kept here once:

- hierarchical inference (GeoEstimation, TransLocator, GeoDecoder): a fine cell's probability times those
  of its enclosing cells in every coarser partition, renormalised over the fine cells;
- the predicted point is the best fine cell's centroid (the spherical mean of its training coordinates);
  the top-k candidates are the k best fine cells;
- `confidence` is the renormalised hierarchical probability of the chosen cell; `error_km` the distance
  from the prediction within which half of the fine-cell probability lies, each cell's probability spread
  over a disc of its S2 level's mean area, and never less than the chosen cell's radius (one sure cell
  cannot place a photo more finely than the cell), a median-error estimate in the sense of
  docs/schema.md;
- test-time augmentation: 1, 2, 5 or 10 crops (10 = the authors' TenCrop), probabilities averaged;
- checkpoint folders: `config.json` (a format tag and version), `model.safetensors`, `cells.parquet`;
  the directed experts (a country classifier) share the folder format, the ranked answer and the
  registry builder's checks too.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import nn

from geotag.errors import InputError, WeightsError
from geotag.geo.cells import Geocells, cell_levels
from geotag.geo.distance import EARTH_RADIUS_KM, haversine_matrix_torch
from geotag.models.base import Prediction, Preprocess
from geotag.models.prior import Prior, candidate_log_prior, posterior

log = logging.getLogger(__name__)

TTA_CROPS = (1, 2, 5, 10)
T = TypeVar("T")


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
    prior: Prior | None = None,
) -> Prediction:
    """The answer of a cell classifier from its per-partition probabilities (coarse first, float32),
    by the conventions of the module docstring; extras hold the chosen fine cell's id as `cell`. A `prior`
    weighs every fine cell's centroid after the hierarchical product, before the ranking."""
    n_fine = len(tokens)
    if not 1 <= top_k <= n_fine:
        raise InputError(f"top-k must be between 1 and the number of fine cells {n_fine}, got {top_k}")
    device = probs[-1].device
    with torch.autocast(device_type=device.type, enabled=False):
        hier = hierarchical_probabilities([p.float() for p in probs], ancestors)
        hier = hier / hier.sum(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
        if prior is not None:
            hier = posterior(hier, candidate_log_prior(prior, centroids))
        scores, index = hier.topk(top_k, dim=1)
        coords = centroids[index]  # (B, k, 2) float64
        error_km = median_radius(hier, coords[:, 0], centroids, radii)
        if radii is not None:  # never finer than the chosen cell itself
            error_km = error_km.double().maximum(radii.to(error_km.device, torch.float64)[index[:, 0]])
    return ranked_prediction(coords, scores, error_km, {"cell": [tokens[i] for i in index[:, 0].tolist()]})


def create_headless_vit(config: Any, *, meta: bool = False) -> nn.Module:
    """A headless timm ViT of a cell model's configured shape (`config.backbone.arch` / `.overrides`,
    `config.img_size`); on the meta device when weights will be assigned."""
    import timm

    kwargs = {**config.backbone.overrides, "img_size": config.img_size, "num_classes": 0}
    if meta:
        with torch.device("meta"):
            return timm.create_model(config.backbone.arch, pretrained=False, **kwargs)
    return timm.create_model(config.backbone.arch, pretrained=False, **kwargs)


def tta_preprocess(config: Any) -> Preprocess:
    """What decode must produce for a cell model: `img_size`, or with test-time crops the larger image
    they are cut from (`img_size / tta_crop_pct`), normalised by the config's mean / std."""
    size = config.img_size
    if config.tta_crops > 1:
        size = round(size / config.tta_crop_pct)
    return Preprocess(size, config.mean, config.std, config.interpolation)


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
    from geotag.io.checked_json import Fields, inside, read_json_object

    info = read_json_object(folder, config_file)
    if info.get("format") != fmt:
        found = info.get("format") if isinstance(info.get("format"), str) else None
        raise WeightsError(f"{path} is not a {fmt} config (format {str(found)[:40]!r})")
    f = Fields(info, f"checkpoint {path}")
    if f.int("format_version", 0, 10**6) > version:
        raise WeightsError(f"{folder} was written by a newer geotag (format {info['format_version']})")
    f.obj("config")
    f.str("weights_label", default=None)
    for key in ("cells_file", "weights_file"):  # names inside the folder only
        if key in info:
            inside(folder, f.str(key), f"checkpoint {path}: {key}")
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

    from geotag.io.weights import read_safetensors

    try:
        state = read_safetensors(file)
    except (OSError, SafetensorError) as exc:
        raise WeightsError(f"cannot read the weights of checkpoint {folder}: {exc}") from exc
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected or any(p.is_meta for p in model.parameters()):
        raise WeightsError(
            f"checkpoint {folder} does not fit its config: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )


@dataclass(frozen=True)
class BackboneConfig:
    """A timm ViT and the pretrained tag its weights come from; `overrides` change its shape (tests)."""

    arch: str = "vit_base_patch16_224"
    tag: str = "augreg_in21k"
    overrides: dict[str, Any] = field(default_factory=dict)
    hub: str = ""  # the weights' hub repo when it is not timm/<arch>.<tag> (QuickGELU CLIP variants)

    @property
    def hub_id(self) -> str:
        return self.hub or f"timm/{self.arch}.{self.tag}"


class VitConfigDict:
    """to_dict / from_dict of a ViT cell model's config (a dataclass with a `backbone`): JSON lists back
    to tuples, the nested BackboneConfig rebuilt, unknown keys dropped."""

    TUPLE_FIELDS: ClassVar[tuple[str, ...]] = ("mean", "std", "scene_classes")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Any:
        backbone = BackboneConfig(**data.get("backbone", {}))
        return config_from_dict(cls, data, cls.TUPLE_FIELDS, backbone=backbone)


def make_checkpoint_folder(folder: str | os.PathLike[str]) -> Path:
    """The checkpoint folder, created if needed; one WeightsError line when it cannot be."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(f"cannot create checkpoint folder {folder}: {exc.strerror or exc}") from exc
    return folder


def write_folder_config(
    folder: Path, model: Any, fmt: str, version: int, fields: dict[str, Any], config_file: str = "config.json"
) -> Path:
    """config.json of a checkpoint: the format tag and versions, the model's name and configuration, then
    the model's own `fields` (files, cells, preprocessing, label)."""
    from geotag import __version__

    info = {
        "format": fmt,
        "format_version": version,
        "geotag_version": __version__,
        "model": model.name,
        "config": model.config.to_dict(),
        **fields,
    }
    (folder / config_file).write_text(json.dumps(info, indent=2))
    return folder


def config_from_dict(cls: type[T], data: Mapping[str, Any], tuples: Iterable[str], **nested: Any) -> T:
    """A config dataclass from its JSON dict: unknown keys dropped, lists back to tuples, nested configs
    (`nested`) given already built."""
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values = {k: v for k, v in data.items() if k in known}
    values.update(nested)
    for key in tuples:
        if key in values:
            values[key] = tuple(values[key])
    return cls(**values)


def registry_checkpoint(
    what: str,
    *,
    weights: Path | None,
    backbone_weights: Path | None,
    gallery: Path | None,
    no_gallery: str,
    no_weights: str,
    holds: str,
) -> Path:
    """The checkpoint a cell model's registry builder loads: `weights` (a checkpoint or a `geotag train`
    run folder: its newest) is required; a gallery is refused and backbone weights are ignored."""
    if gallery is not None:
        raise InputError(f"{what} {no_gallery} (that is for retrieval models)")
    if weights is None:
        raise WeightsError(no_weights)
    if backbone_weights is not None:
        log.info("--backbone-weights is ignored: the checkpoint holds %s", holds)
    from geotag.models.checkpoint import resolve_checkpoint

    return resolve_checkpoint(weights)


def checkpoint_builder(
    what: str, load: Callable[[Path], T], *, no_gallery: str, no_weights: str, holds: str
) -> Callable[..., T]:
    """The registry builder of a cell model (`build_model(what, weights=FOLDER)`): the checks of
    `registry_checkpoint`, then `load` of the checkpoint folder."""

    def build_for_registry(
        *,
        weights: Path | None = None,
        backbone_weights: Path | None = None,
        gallery: Path | None = None,
        allow_untrained: bool = False,
    ) -> T:
        folder = registry_checkpoint(
            what,
            weights=weights,
            backbone_weights=backbone_weights,
            gallery=gallery,
            no_gallery=no_gallery,
            no_weights=no_weights,
            holds=holds,
        )
        try:
            return load(folder)
        except (TypeError, ValueError, KeyError, AttributeError) as exc:  # config.json fields of wrong types
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise WeightsError(
                f"checkpoint {folder}: config.json does not describe a usable {what} ({type(exc).__name__}: "
                f"{first})"
            ) from exc

    build_for_registry.__doc__ = (
        f"`build_model({what!r}, weights=FOLDER)`: a trained checkpoint or run folder."
    )
    return build_for_registry


def mark_trained(model: nn.Module, info: dict[str, Any], heads: str, backbone_trained: bool) -> str:
    """Give `model` the weights label of a checkpoint written during training (trained_label.py: what
    it started from, what trained, the step); returns the label it had, to put back after the write so
    the next checkpoint starts from the same words."""
    from geotag.models.trained_label import trained_label

    built: str = model.weights_label  # type: ignore[assignment]
    step = info.get("train", {}).get("step")
    model.weights_label = trained_label(built, step, heads=heads, backbone_trained=backbone_trained)  # type: ignore[assignment]
    return built


class CheckpointFolderTask:
    """Mixin for a training task whose model lives in one checkpoint folder: `write_model` labels what
    was trained and calls `save(model, folder)`; `load_weights` reads the folder's `weights_file`."""

    trained = "heads"
    weights_file = "model.safetensors"
    save: Callable[[Any, Path], Path]

    def write_model(self, model: nn.Module, folder: Path, info: dict[str, Any]) -> None:
        built = mark_trained(model, info, self.trained, not getattr(self, "frozen", False))
        try:
            self.save(model, folder)
        finally:
            model.weights_label = built  # type: ignore[assignment]

    def load_weights(self, model: nn.Module, folder: Path) -> None:
        load_trained_state(model, folder, self.weights_file)


def load_trained_state(model: nn.Module, folder: Path, weights_file: str) -> None:
    """A training resume: the weights of `folder` into a built model, checked key by key."""
    from geotag.models.checkpoint import load_state_checked, read_weights

    load_state_checked(model, read_weights(folder / weights_file), source=str(folder))


def pick_builder(builders: Mapping[str, T], name: str, what: str) -> T:
    """The builder registered under `name`; one InputError line naming the choices otherwise."""
    if name not in builders:
        raise InputError(f"unknown {what} {name!r}; choose from {', '.join(builders)}")
    return builders[name]


def ranked_prediction(
    coords: torch.Tensor, scores: torch.Tensor, error_km: torch.Tensor, extras: dict[str, Any]
) -> Prediction:
    """A Prediction from the ranked candidates: (B, k, 2) coordinates, (B, k) scores, (B,) error radii."""
    coords = coords.cpu()
    return Prediction(
        lat=coords[:, 0, 0].contiguous(),
        lon=coords[:, 0, 1].contiguous(),
        confidence=scores[:, 0].cpu(),
        topk_lat=coords[..., 0].contiguous(),
        topk_lon=coords[..., 1].contiguous(),
        topk_score=scores.cpu(),
        extras=extras,
        error_km=error_km.double().cpu(),
    )


__all__ = [
    "TTA_CROPS",
    "BackboneConfig",
    "VitConfigDict",
    "CheckpointFolderTask",
    "assign_state",
    "cell_prediction",
    "cell_radius_km",
    "checkpoint_builder",
    "mark_trained",
    "config_from_dict",
    "create_headless_vit",
    "load_trained_state",
    "make_checkpoint_folder",
    "pick_builder",
    "ranked_prediction",
    "registry_checkpoint",
    "write_folder_config",
    "hierarchical_probabilities",
    "median_radius",
    "read_folder_config",
    "register_cell_buffers",
    "save_state",
    "tta_preprocess",
    "tta_views",
]
