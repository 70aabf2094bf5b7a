"""Directed feature experts (after Gong & Brumley): find the features that give a place away, let an
expert for each kind of feature name the country, and take the vote.

Pipeline (GUIDE section 3):
- an instance segmentation model (segmentation.py: Mask2Former, COCO-panoptic by default) finds
  features in the photo; its classes map to four groups, as data for each label set (`GROUP_LABELS`):
  ground (roads, terrain), structures (buildings), vehicles, vegetation. Classes outside the groups
  (people, sky, furniture ...) are ignored;
- each feature becomes a square crop (its box grown by `context`, squared, kept inside the photo) and
  goes to the expert of its group: an image -> country classifier (a timm ViT-B/16 by default, or any
  geotag backbone, e.g. the offline EfficientNet-Lite, with a linear head);
- each crop votes for its expert's top country; the most frequent country wins, ties broken by the
  countries' summed probabilities over the crops; `confidence` is the winner's vote share, the top-k
  are the countries in that order, scored by vote share;
- the predicted point is the country's reference point, Natural Earth's label point (places.py), stored
  in the checkpoint so prediction needs no map data; `country` is the predicted ISO code; `error_km` is
  the distance from it within which half of the votes lie (cell_head.median_radius), never less than
  the country's size (the radius of a disc of its area: `country_sizes`).

Training (`ExpertsTask`) is image -> country classification of crops written by `geotag experts
extract` (geotag.engine.crops): each crop trains the expert of its group. The extraction records its crop
settings and segmenter in `extract.json`; the experts checkpoint copies them, so prediction cuts the
same kind of crops with the same segmenter.

Choices made here where the paper's details were not at hand (documented in docs/models.md):
- crops are square boxes with 10% context; at most `max_crops` (16) features per photo, the best
  scored first, each covering at least `min_area` (1%) of the photo;
- a photo with no feature of any group is judged whole: every expert sees the full frame and votes;
- the segmenter sees the photo's centre square at `image_size` (512 px), the size `predict` decodes to.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from geotag.errors import InputError, WeightsError
from geotag.models.base import GeoModel, Prediction, Preprocess
from geotag.models.cell_head import (
    CheckpointFolderTask,
    assign_state,
    checkpoint_builder,
    config_from_dict,
    make_checkpoint_folder,
    median_radius,
    ranked_prediction,
    read_folder_config,
    save_state,
    write_folder_config,
)
from geotag.models.prior import Prior, candidate_log_prior, posterior
from geotag.models.segmentation import (
    DEFAULT_INSTANCE_SEGMENTER,
    Detection,
    InstanceSegmenter,
    load_instance_segmenter,
)
from geotag.models.tasks import TrainTask
from geotag.models.translocator import BackboneConfig

if TYPE_CHECKING:
    from geotag.config import TrainConfig
    from geotag.io.samples import TrainSamples

log = logging.getLogger(__name__)

GROUPS = ("ground", "structures", "vehicles", "vegetation")
GROUP_LABELS: dict[str, dict[str, tuple[str, ...]]] = {
    "coco-panoptic": {  # the 133 classes of COCO panoptic (Mask2Former's *-coco-panoptic checkpoints)
        "ground": (
            "road",
            "pavement-merged",
            "railroad",
            "dirt-merged",
            "gravel",
            "sand",
            "snow",
            "mountain-merged",
            "rock-merged",
            "playingfield",
        ),
        "structures": (
            "building-other-merged",
            "house",
            "roof",
            "bridge",
            "tent",
            "wall-brick",
            "wall-stone",
            "fence-merged",
        ),
        "vehicles": ("car", "bus", "truck", "motorcycle", "bicycle", "train", "boat", "airplane"),
        "vegetation": ("tree-merged", "grass-merged", "flower"),
    },
    "ade20k": {  # the 150 classes of ADE20K (SceneParsing; Mask2Former's *-ade-* checkpoints)
        "ground": (
            "road",
            "sidewalk",
            "earth",
            "field",
            "sand",
            "path",
            "dirt track",
            "land",
            "mountain",
            "hill",
            "rock",
            "runway",
        ),
        "structures": ("building", "house", "skyscraper", "tower", "hovel", "bridge", "booth", "tent"),
        "vehicles": ("car", "bus", "truck", "van", "minibike", "bicycle", "boat", "ship", "airplane"),
        "vegetation": ("tree", "grass", "plant", "palm", "flower"),
    },
}
"""Which of a label set's classes belong to which group; "auto" looks a label up in every set."""

EXPERT_BACKBONES: dict[str, BackboneConfig] = {
    "vit-b16": BackboneConfig("vit_base_patch16_224", "augreg_in21k")
}
"""timm experts by name (the paper's ViT-B/16); any geotag backbone name (backbones.py) works too."""
DEFAULT_EXPERT = "vit-b16"
CHECKPOINT_FORMAT = "geotag-experts"
CHECKPOINT_VERSION = 1
CONFIG_FILE, WEIGHTS_FILE, SEGMENTER_DIR = "config.json", "model.safetensors", "segmenter"
EXTRACT_FILE, CROPS_MANIFEST = "extract.json", "crops.csv"
COPY_SEGMENTER_MAX_BYTES = 200_000_000
"""A local segmenter folder up to this size is copied into each checkpoint (self-contained); a larger one
is recorded by path, so keeping a few checkpoints does not copy a Mask2Former-L (0.9 GB) each time."""


def label_groups(labels: Sequence[str], label_set: str = "auto") -> dict[str, str]:
    """{label: group} for the labels of a segmenter that fall in a group of `label_set`."""
    if label_set != "auto" and label_set not in GROUP_LABELS:
        raise InputError(f"unknown label set {label_set!r}; choose auto or {', '.join(GROUP_LABELS)}")
    sets = GROUP_LABELS.values() if label_set == "auto" else [GROUP_LABELS[label_set]]
    table = {name: group for groups in sets for group, names in groups.items() for name in names}
    return {label: table[label] for label in labels if label in table}


@dataclass(frozen=True)
class CropSettings:
    """How features become crops. `geotag experts extract` records them (extract.json) and experts
    checkpoints keep them, so training crops and prediction crops are cut alike."""

    segmenter: str | None = DEFAULT_INSTANCE_SEGMENTER  # hub id or folder of the instance segmenter
    label_set: str = "auto"
    min_score: float = 0.5
    max_crops: int = 16  # features per photo, best scored first
    min_area: float = 0.01  # a feature's box must cover this share of the photo
    context: float = 0.1  # box grown by this share of its size on each side, then squared
    image_size: int = 512  # the photo's centre square at this size is what the segmenter sees

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CropSettings:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class Features:
    """The features chosen in a batch of photos: which photo, which group, the box and what found it."""

    owner: torch.Tensor  # (N,) int64 index of the photo in the batch
    group: torch.Tensor  # (N,) int64 index into the groups
    boxes: torch.Tensor  # (N, 4) float32 x0, y0, x1, y1 in pixels
    labels: list[str]
    scores: list[float]


def select_features(
    detections: Sequence[Sequence[Detection]],
    groups: Mapping[str, int],
    height: int,
    width: int,
    settings: CropSettings,
    *,
    whole_if_none: bool = False,
) -> Features:
    """The detections that count: a label in a group, score >= min_score, box >= min_area of the photo,
    at most max_crops per photo (best first). `whole_if_none`: a photo with none is judged whole, one
    full-frame feature per group (label "whole image")."""
    owner, group, boxes, labels, scores = [], [], [], [], []
    for b, found in enumerate(detections):
        kept = 0
        for det in sorted(found, key=lambda d: -d.score):
            if kept >= settings.max_crops:
                break
            g = groups.get(det.label)
            x0, y0, x1, y1 = det.box
            if g is None or det.score < settings.min_score:
                continue
            if (x1 - x0) * (y1 - y0) < settings.min_area * height * width:
                continue
            owner.append(b)
            group.append(g)
            boxes.append(det.box)
            labels.append(det.label)
            scores.append(det.score)
            kept += 1
        if kept == 0 and whole_if_none:
            for g in sorted(set(groups.values())):
                owner.append(b)
                group.append(g)
                boxes.append((0.0, 0.0, float(width), float(height)))
                labels.append("whole image")
                scores.append(0.0)
    return Features(
        torch.tensor(owner, dtype=torch.int64),
        torch.tensor(group, dtype=torch.int64),
        torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        labels,
        scores,
    )


def square_boxes(boxes: torch.Tensor, height: int, width: int, context: float) -> torch.Tensor:
    """(N, 4) boxes grown by `context` of their size on each side, made square (the longer side, at most
    the photo's shorter side) about their centre, and shifted to lie inside the photo."""
    if not len(boxes):
        return boxes.clone()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = (torch.maximum(w, h) * (1 + 2 * context)).clamp(min=1.0, max=float(min(height, width)))
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    x0 = (cx - side / 2).clamp(min=0.0)
    y0 = (cy - side / 2).clamp(min=0.0)
    x0 = torch.minimum(x0, width - side)
    y0 = torch.minimum(y0, height - side)
    return torch.stack([x0, y0, x0 + side, y0 + side], dim=1)


def cut_crops(images: torch.Tensor, owner: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, size, size) crops of `images` (B, C, H, W) at `boxes` of photo `owner`, resampled
    bilinearly (torchvision roi_align, pixel-aligned)."""
    from torchvision.ops import roi_align

    if not len(boxes):
        return images.new_zeros((0, images.shape[1], size, size), dtype=torch.float32)
    rois = torch.cat([owner.to(boxes.dtype)[:, None], boxes], dim=1).to(images.device)
    return roi_align(images.float(), rois, output_size=(size, size), spatial_scale=1.0, aligned=True)


def tally(probs: torch.Tensor, owner: torch.Tensor, n_images: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per photo: (votes (B, C), summed probability (B, C)) over its crops; a crop votes for its argmax."""
    votes = probs.new_zeros((n_images, probs.shape[1]))
    votes.index_put_((owner, probs.argmax(dim=1)), torch.ones_like(owner, dtype=probs.dtype), accumulate=True)
    summed = probs.new_zeros((n_images, probs.shape[1])).index_add_(0, owner, probs)
    return votes, summed


def rank_countries(votes: torch.Tensor, summed: torch.Tensor) -> torch.Tensor:
    """(B, C) country indices best first: most votes, ties broken by the larger summed probability
    (then by index, for determinism)."""
    by_prob = summed.argsort(dim=1, descending=True, stable=True)
    by_votes = votes.gather(1, by_prob).argsort(dim=1, descending=True, stable=True)
    return by_prob.gather(1, by_votes)


# ---------------------------------------------------------------------------------------------------
# The model


@dataclass(frozen=True)
class ExpertsConfig:
    """Everything but the weights; stored in a checkpoint's config.json."""

    countries: tuple[str, ...]  # ISO 3166-1 alpha-2 classes
    points: tuple[tuple[float, float], ...]  # each country's reference (lat, lon)
    groups: tuple[str, ...] = GROUPS
    expert: str = DEFAULT_EXPERT  # an EXPERT_BACKBONES name or a geotag backbone name
    overrides: dict[str, Any] = field(default_factory=dict)  # timm shape overrides (tiny test experts)
    crop_size: int = 224
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    interpolation: str = "bicubic"
    crops: CropSettings = field(default_factory=CropSettings)

    def __post_init__(self) -> None:
        if len(self.countries) < 1 or len(self.points) != len(self.countries):
            raise InputError("experts need at least one country class, each with a reference point")
        unknown = set(self.groups) - set(GROUPS)
        if unknown:
            raise InputError(f"unknown feature groups {sorted(unknown)}; groups are {', '.join(GROUPS)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExpertsConfig:
        crops = CropSettings.from_dict(data.get("crops", {}))
        points = tuple(tuple(p) for p in data.get("points", ()))
        return config_from_dict(cls, data, ("countries", "groups", "mean", "std"), crops=crops, points=points)


class Expert(nn.Module):
    """One group's image -> country classifier: backbone (pooled features) + linear head; takes [0, 1]
    crops and normalises them as its backbone expects."""

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        n_classes: int,
        mean: Sequence[float],
        std: Sequence[float],
    ):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(feature_dim, n_classes)
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, crops01: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone((crops01 - self.mean.to(crops01.dtype)) / self.std.to(crops01.dtype)))


class DirectedExperts(GeoModel):
    """Segmenter + one expert per group + the vote; see the module docstring."""

    name = "experts"
    accepts_prior = True

    def __init__(
        self,
        config: ExpertsConfig,
        experts: Mapping[str, nn.Module],
        segmenter: InstanceSegmenter | None = None,
        weights_label: str = "",
    ) -> None:
        super().__init__()
        if set(experts) != set(config.groups):
            raise InputError(f"experts for {sorted(experts)} but groups {list(config.groups)}")
        self.config = config
        self.experts = nn.ModuleDict({g: experts[g] for g in config.groups})
        self.segmenter: InstanceSegmenter | None = None
        self.segmenter_missing: str | None = None  # why none could be loaded (raised in prepare)
        self.group_of: dict[str, int] = {}
        self.weights_label = weights_label
        self.crop_mode = False  # True while training on crops: preprocess() gives the crop size
        points = torch.tensor(config.points, dtype=torch.float64).reshape(-1, 2)
        self.register_buffer("points", points, persistent=False)
        sizes = torch.tensor(country_sizes(config.countries, points.numpy()), dtype=torch.float64)
        self.register_buffer("country_radius", sizes, persistent=False)  # the floor of error_km
        if segmenter is not None:
            self.set_segmentation(segmenter)

    # -- configuration ------------------------------------------------------------------------------

    def preprocess(self) -> Preprocess:
        """[0, 1] pixels (mean 0, std 1): the segmenter and the experts normalise for themselves. The
        photo's centre square at the segmenter size, or a crop at the experts' size in `crop_mode`."""
        size = self.config.crop_size if self.crop_mode else self.config.crops.image_size
        return Preprocess(size, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), self.config.interpolation)

    def use_segmenter(self, source: str) -> None:
        """--segmenter: an instance segmenter (Mask2Former, COCO-panoptic labels) from a hub id or folder."""
        from geotag.models.segmentation import load_instance_segmenter

        self.set_segmentation(load_instance_segmenter(source))

    def set_segmentation(self, provider: object) -> None:
        """Another instance segmenter (a Mask2Former from segmentation.py, or any InstanceSegmenter)."""
        if not isinstance(provider, InstanceSegmenter):
            raise InputError(
                "the experts model needs an instance segmenter (Mask2Former), not a semantic one"
            )
        table = label_groups(provider.labels, self.config.crops.label_set)
        self.group_of = {
            label: self.config.groups.index(g) for label, g in table.items() if g in self.config.groups
        }
        if not self.group_of:
            raise InputError(
                f"segmenter {provider.name}: none of its classes is in a feature group of label set "
                f"{self.config.crops.label_set!r}"
            )
        self.segmenter = provider.to(self.points.device)
        self.segmenter_missing = None

    def prepare(self) -> None:
        if self.segmenter is None:
            raise WeightsError(self.segmenter_missing or "the experts model has no instance segmenter")

    # -- network ------------------------------------------------------------------------------------

    def forward(self, crops: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
        """(N, C) country logits of [0, 1] crops, each from the expert of its group index."""
        logits = crops.new_zeros((crops.shape[0], len(self.config.countries)), dtype=torch.float32)
        for g, name in enumerate(self.config.groups):
            rows = (group == g).nonzero().flatten()
            if len(rows):
                logits[rows] = self.experts[name](crops[rows]).float()
        return logits

    def features(self, images: torch.Tensor) -> Features:
        """The features of a [0, 1] batch that go to the experts (whole frames where none is found)."""
        self.prepare()
        assert self.segmenter is not None
        h, w = images.shape[-2:]
        found = self.segmenter.detect(images)
        return select_features(found, self.group_of, h, w, self.config.crops, whole_if_none=True)

    # -- inference ----------------------------------------------------------------------------------

    def predict(self, images: torch.Tensor, top_k: int, *, prior: Prior | None = None) -> Prediction:
        feats = self.features(images)
        h, w = images.shape[-2:]
        boxes = square_boxes(feats.boxes, h, w, self.config.crops.context)
        crops = cut_crops(images, feats.owner, boxes, self.config.crop_size).to(images.dtype)
        group = feats.group.to(images.device)
        owner = feats.owner.to(images.device)
        logits = self.forward(crops, group)
        with torch.autocast(device_type=images.device.type, enabled=False):
            probs = logits.float().softmax(dim=1)
            votes, summed = tally(probs, owner, images.shape[0])
            if prior is None:
                order = rank_countries(votes, summed)
                share = votes / votes.sum(dim=1, keepdim=True).clamp_min(1)
            else:
                order, share = self.countries_under_prior(summed, prior)
            k = min(top_k, len(self.config.countries))
            best = order[:, :k]
            coords = self.points[best]  # (B, k, 2) float64
            error_km = median_radius(share, coords[:, 0], self.points)
            error_km = error_km.double().maximum(self.country_radius[best[:, 0]])  # never below the country
            scores = share.gather(1, best)
        return ranked_prediction(
            coords, scores, error_km, {"country": [self.config.countries[i] for i in best[:, 0].tolist()]}
        )

    def countries_under_prior(self, summed: torch.Tensor, prior: Prior) -> tuple[torch.Tensor, torch.Tensor]:
        """(order, share) from the crops' mean country probabilities (not the hard votes, which leave
        most countries at zero for a prior to lift) times the prior at each country's point."""
        mean = summed / summed.sum(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
        share = posterior(mean, candidate_log_prior(prior, self.points))
        return share.argsort(dim=1, descending=True, stable=True), share


# ---------------------------------------------------------------------------------------------------
# Builders


def _timm_expert_backbone(config: ExpertsConfig, meta: bool) -> tuple[nn.Module, int]:
    import timm

    spec = EXPERT_BACKBONES[config.expert]
    kwargs = {**config.overrides, "img_size": config.crop_size, "num_classes": 0}
    if meta:
        with torch.device("meta"):
            vit = timm.create_model(spec.arch, pretrained=False, **kwargs)
    else:
        vit = timm.create_model(spec.arch, pretrained=False, **kwargs)
    return vit, int(vit.num_features)


def create_experts(
    config: ExpertsConfig,
    *,
    backbone_weights: Path | None = None,
    allow_untrained: bool = False,
    empty: bool = False,
) -> tuple[dict[str, Expert], str]:
    """One expert per group, each starting from the same pretrained backbone; `empty`: shapes only (a
    checkpoint's weights follow). Returns (experts, label of the backbone weights)."""
    experts: dict[str, Expert] = {}
    n = len(config.countries)
    if config.expert in EXPERT_BACKBONES:
        from geotag.models.translocator import load_vit_weights, resolve_vit_weights

        spec = dataclasses.replace(EXPERT_BACKBONES[config.expert], overrides=dict(config.overrides))
        state, source = (None, "") if empty else resolve_vit_weights(spec, backbone_weights)
        if state is None and not (allow_untrained or empty):
            raise WeightsError(
                f"no weights for the experts' ViT ({spec.hub_id}: not passed, not in the Hugging Face cache, "
                f"hub unreachable or HF_HUB_OFFLINE set): run `hf download {spec.hub_id} model.safetensors`, "
                "pass --backbone-weights PATH, or train experts on an offline backbone "
                "(--variant efficientnet_lite0.imagenet)"
            )
        for group in config.groups:
            vit, dim = _timm_expert_backbone(config, meta=empty)
            if state is not None:
                load_vit_weights(vit, state, source)
            experts[group] = Expert(vit, dim, n, config.mean, config.std)
        label = source or ("" if empty else "UNTRAINED ViT (random init)")
        return experts, label
    from geotag.models.backbones import BACKBONES, create_backbone

    if config.expert not in BACKBONES:
        names = ", ".join([*EXPERT_BACKBONES, *sorted(BACKBONES)])
        raise InputError(f"unknown expert backbone {config.expert!r}; choose {names}")
    label = ""
    for group in config.groups:
        module, _, dim = create_backbone(
            config.expert, weights=backbone_weights, allow_untrained=allow_untrained or empty
        )
        experts[group] = Expert(module, dim, n, config.mean, config.std)
        label = module.weights_label
    return experts, label


def expert_preprocess(expert: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """crop_size / mean / std / interpolation of an expert backbone (timm pretrained cfg or geotag
    backbone spec), so training and inference normalise alike."""
    if expert in EXPERT_BACKBONES:
        from geotag.models.translocator import pretrained_preprocess

        return pretrained_preprocess(EXPERT_BACKBONES[expert])
    from geotag.models.backbones import backbone_spec

    pre = backbone_spec(expert).preprocess
    return {"crop_size": pre.input_size, "mean": pre.mean, "std": pre.std, "interpolation": pre.interpolation}


def build_experts(
    config: ExpertsConfig,
    *,
    backbone_weights: Path | None = None,
    allow_untrained: bool = False,
    segmenter: InstanceSegmenter | None = None,
) -> DirectedExperts:
    """A fresh model (untrained heads) over `config`'s countries; the segmenter may follow later."""
    experts, label = create_experts(
        config, backbone_weights=backbone_weights, allow_untrained=allow_untrained
    )
    if "UNTRAINED" in label:
        log.warning("expert backbones are UNTRAINED (random init): predictions are meaningless")
    label = f"{label} experts; country heads UNTRAINED (random init)"
    return DirectedExperts(config, experts, segmenter, label)


# ---------------------------------------------------------------------------------------------------
# Checkpoints: config.json, model.safetensors and (for a local segmenter) segmenter/


def save_checkpoint(model: DirectedExperts, folder: str | os.PathLike[str]) -> Path:
    """Write everything `load_experts` needs; a segmenter that lives in a local folder is copied in
    (a hub id is recorded: the large public checkpoints are fetched once into the HF cache)."""
    folder = make_checkpoint_folder(folder)
    save_state(model, folder / WEIGHTS_FILE, CHECKPOINT_FORMAT, skip_prefixes=("segmenter.",))
    source = model.config.crops.segmenter
    segmenter_dir = None
    local = Path(source) if source else None
    if local is not None and local.is_dir() and (local / "config.json").is_file():
        size = sum(f.stat().st_size for f in local.rglob("*") if f.is_file())
        if size <= COPY_SEGMENTER_MAX_BYTES:
            shutil.copytree(local, folder / SEGMENTER_DIR, dirs_exist_ok=True)
            segmenter_dir = SEGMENTER_DIR
    elif source is None and hasattr(model.segmenter, "save"):
        model.segmenter.save(folder / SEGMENTER_DIR)  # type: ignore[union-attr]
        segmenter_dir = SEGMENTER_DIR
    pre = dataclasses.replace(model.preprocess(), input_size=model.config.crops.image_size)
    fields = {
        "weights_file": WEIGHTS_FILE,
        "segmenter_dir": segmenter_dir,
        "preprocess": dataclasses.asdict(pre),
        "weights_label": model.weights_label,
    }
    return write_folder_config(folder, model, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, fields, CONFIG_FILE)


def read_checkpoint_info(folder: Path) -> dict[str, Any]:
    return read_folder_config(Path(folder), CHECKPOINT_FORMAT, CHECKPOINT_VERSION, "experts", CONFIG_FILE)


def load_experts(
    folder: str | os.PathLike[str], *, segmenter: InstanceSegmenter | str | None = "auto"
) -> DirectedExperts:
    """An experts model from a checkpoint folder. `segmenter="auto"`: the checkpoint's own segmenter
    folder, else its recorded source (HF cache or download); if none can be had, loading succeeds and
    `prepare()` raises the reason."""
    folder = Path(folder)
    info = read_checkpoint_info(folder)
    config = ExpertsConfig.from_dict(info["config"])
    experts, _ = create_experts(config, allow_untrained=True, empty=True)
    model = DirectedExperts(config, experts)
    assign_state(model, folder / info.get("weights_file", WEIGHTS_FILE), folder)
    model.weights_label = f"checkpoint {folder.resolve().name} ({info.get('weights_label') or 'no label'})"
    if isinstance(segmenter, InstanceSegmenter):
        model.set_segmentation(segmenter)
        return model.eval()
    if segmenter is None:
        model.segmenter_missing = "no instance segmenter was given"
        return model.eval()
    own = folder / SEGMENTER_DIR if info.get("segmenter_dir") else None
    source = (
        segmenter
        if segmenter != "auto"
        else (str(own) if own is not None and own.is_dir() else config.crops.segmenter)
    )
    if source is None:
        model.segmenter_missing = "the checkpoint names no instance segmenter"
        return model.eval()
    try:
        model.set_segmentation(load_instance_segmenter(source, min_score=0.0))
    except WeightsError as exc:
        model.segmenter_missing = str(exc)
        log.info("instance segmenter not loaded: %s", exc)
    return model.eval()


# `build_model("experts", weights=FOLDER)`: a trained checkpoint (or a `geotag train` run folder).
build_for_registry = checkpoint_builder(
    "experts",
    load_experts,
    no_gallery="classify countries and take no --gallery",
    no_weights="experts need a checkpoint folder: pass --weights FOLDER (from `geotag experts extract` + "
    "`geotag train --model experts`); no pretrained experts are published to download",
    holds="the experts",
)


# ---------------------------------------------------------------------------------------------------
# Training: image -> country on the crops of `geotag experts extract`


def reference_points(
    countries: Sequence[str], lat: np.ndarray, lon: np.ndarray, labels: np.ndarray
) -> list[tuple[float, float]]:
    """Each country's Natural Earth label point (places.py); a country the table lacks takes the
    spherical mean of its training coordinates."""
    from geotag.geo.cells import spherical_mean
    from geotag.geo.places import country_label_points

    table = country_label_points()
    keep = labels >= 0
    means = spherical_mean(lat[keep], lon[keep], labels[keep], len(countries))
    return [table.get(c, (float(means[i, 0]), float(means[i, 1]))) for i, c in enumerate(countries)]


def country_sizes(countries: Sequence[str], points: np.ndarray) -> list[float]:
    """Each country's size (km): the radius of the disc of its area (places.py, Natural Earth), the floor
    of a country answer's error radius. A country the borders lack (or all, without them) takes half the
    distance from its reference point to the nearest other one; a lone country, 1,000 km."""
    from geotag.geo.distance import haversine_np
    from geotag.geo.places import country_radius_km

    table = country_radius_km()
    out = []
    for i, code in enumerate(countries):
        if code in table:
            out.append(table[code])
            continue
        others = np.delete(points, i, axis=0)
        d = haversine_np(points[i, 0], points[i, 1], others[:, 0], others[:, 1]) if len(others) else []
        out.append(float(np.min(d)) / 2.0 if len(d) else LONE_COUNTRY_KM)
    return out


LONE_COUNTRY_KM = 1000.0


def crop_groups(cfg: TrainConfig, train: TrainSamples) -> np.ndarray:
    """Group index per training crop: the `group` column of the manifests in cfg.data (matched by
    absolute path), else the crop's folder name (extract writes CROPS/<group>/...)."""
    from geotag.io.samples import manifest_groups

    by_path = manifest_groups(cfg.data, cfg.image_root)
    out = np.full(len(train), -1, dtype=np.int64)
    for i, path in enumerate(train.paths.to_pylist()):
        name = by_path.get(path) or Path(path).parent.name
        if name not in GROUPS:
            raise InputError(
                f"training crop {path} has no feature group (a `group` column of {', '.join(GROUPS)}, or a "
                "folder named after one): make crops with `geotag experts extract`"
            )
        out[i] = GROUPS.index(name)
    return out


def crop_settings(cfg: TrainConfig) -> CropSettings:
    """The extraction's settings (extract.json beside the first manifest that has one), else defaults."""
    from geotag.io.samples import read_beside

    found = read_beside(cfg.data, EXTRACT_FILE)
    return CropSettings.from_dict(found.get("crops", {})) if found is not None else CropSettings()


class ExpertsTask(CheckpointFolderTask, TrainTask):
    """Each crop trains its group's expert (cross-entropy over the countries). Countries are the
    manifest's `country` column, or the point-in-polygon country of the crop's photo; crops with none
    are ignored. End to end by default (the poster's setting); --freeze-backbone trains the heads only."""

    name = "experts"
    trained = "country heads"
    save = staticmethod(save_checkpoint)

    def __init__(self, expert: str | None = None, *, model_kwargs: dict[str, Any] | None = None) -> None:
        self.expert = expert or DEFAULT_EXPERT
        self.model_kwargs = model_kwargs or {}
        self.targets = torch.empty(0, dtype=torch.int64)
        self.groups = torch.empty(0, dtype=torch.int64)

    @classmethod
    def from_train_config(cls, cfg: TrainConfig) -> ExpertsTask:
        """`geotag train --model experts`: `--variant` names the expert backbone (vit-b16 by default, or a
        geotag backbone such as efficientnet_lite0.imagenet; an unknown name is an error)."""
        from geotag.models.backbones import BACKBONES

        if cfg.variant is not None and cfg.variant not in EXPERT_BACKBONES and cfg.variant not in BACKBONES:
            choices = ", ".join([*EXPERT_BACKBONES, *BACKBONES])
            raise InputError(f"unknown expert backbone {cfg.variant!r}; choose from {choices}")
        return cls(cfg.variant)

    def build(self, cfg: TrainConfig, train: TrainSamples, checkpoint: Path | None) -> GeoModel:
        from geotag.geo.places import countries as lookup

        names = [c.strip().upper() if c else None for c in train.country.to_pylist()]
        missing = [i for i, c in enumerate(names) if c is None]
        if missing:
            found, _ = lookup(train.lat[missing].tolist(), train.lon[missing].tolist())
            for i, code in zip(missing, found, strict=True):
                names[i] = code
        if checkpoint is not None:
            config = ExpertsConfig.from_dict(read_checkpoint_info(checkpoint)["config"])
        else:
            classes = tuple(sorted({c for c in names if c}))
            if not classes:
                raise InputError("no training crop has a country (a `country` column, or a position on land)")
            index = {c: i for i, c in enumerate(classes)}
            labels = np.array([index.get(c, -1) if c else -1 for c in names], dtype=np.int64)
            points = reference_points(classes, train.lat, train.lon, labels)
            kwargs = {**expert_preprocess(self.expert), **self.model_kwargs}
            config = ExpertsConfig(
                countries=classes,
                points=tuple(points),
                expert=self.expert,
                crops=crop_settings(cfg),
                **kwargs,
            )
        index = {c: i for i, c in enumerate(config.countries)}
        self.targets = torch.tensor([index.get(c, -1) if c else -1 for c in names], dtype=torch.int64)
        self.groups = torch.from_numpy(crop_groups(cfg, train))
        model = build_experts(
            config, backbone_weights=cfg.backbone_weights, allow_untrained=cfg.allow_untrained
        )
        model.crop_mode = True
        return model

    def _backbones(self, model: GeoModel) -> list[nn.Module]:
        return [e.backbone for e in model.experts.values()]  # type: ignore[union-attr,operator]

    def configure(self, model: GeoModel, freeze_backbone: bool) -> None:
        self.frozen = freeze_backbone
        model.requires_grad_(True)
        if freeze_backbone:
            for backbone in self._backbones(model):
                backbone.requires_grad_(False)

    def frozen_modules(self, model: GeoModel) -> list[nn.Module]:
        return self._backbones(model) if self.frozen else []

    def layered_modules(self, model: GeoModel) -> list[nn.Module]:
        return [b for b in self._backbones(model) if hasattr(b, "blocks")]

    def loss(self, model: GeoModel, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        images = batch["images"]
        group = self.groups[batch["index"]].to(images.device)
        target = self.targets[batch["index"]].to(images.device)
        logits = model(images, group)
        out: dict[str, torch.Tensor] = {}
        if not bool((target >= 0).any()):
            out["loss"] = logits.sum() * 0.0
            return out
        per_crop = F.cross_entropy(logits, target.clamp_min(0), reduction="none") * (target >= 0)
        out["loss"] = per_crop.sum() / (target >= 0).sum()
        for g, name in enumerate(GROUPS):
            rows = (group == g) & (target >= 0)
            if bool(rows.any()):
                out[f"ce_{name}"] = per_crop[rows].mean().detach()
        return out

    @torch.no_grad()
    def predict(self, model: GeoModel, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        images = batch["images"]
        group = self.groups[batch["index"]].to(images.device)
        best = model(images, group).argmax(dim=1)
        points = model.points[best].cpu()  # type: ignore[index]
        return points[:, 0], points[:, 1]


__all__ = [
    "GROUPS",
    "GROUP_LABELS",
    "CropSettings",
    "DirectedExperts",
    "ExpertsConfig",
    "ExpertsTask",
    "build_experts",
    "cut_crops",
    "label_groups",
    "load_experts",
    "rank_countries",
    "save_checkpoint",
    "select_features",
    "square_boxes",
    "tally",
]
