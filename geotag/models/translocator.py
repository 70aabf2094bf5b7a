"""TransLocator (Pramanick et al., "Where in the World is this Image? Transformer-based Geo-localization in
the Wild", ECCV 2022): a dual-branch ViT over an image and its semantic segmentation map.

Architecture (GUIDE section 3):
- two timm ViT-B/16 branches, both initialised from the same pretrained weights: one sees the RGB crop,
  the other the ADE20K segmentation map of the same crop rendered as a colour image (segmentation.py);
- multimodal feature fusion (MFF): after every transformer block the two [CLS] tokens are fused and the
  fused token is written back into both branches; the other tokens stay in their own branch;
- heads on the fused, final-normed [CLS]: one geocell classifier per partition of the cells (coarse /
  middle / fine S2 cells, geo/cells.py) and, in the full model, a scene classifier (indoor / natural /
  urban, the top of the Places365 hierarchy);
- training loss: cross-entropy per head, 0.5 / 0.3 / 0.2 coarse -> fine plus the scene term, as in the
  authors' code (`translocator_loss`);
- inference: hierarchical, each fine cell's probability times those of its enclosing middle and coarse
  cells; the answer is the mean training coordinate (spherical mean) of the best fine cell.

The paper's ablation rows are named configurations (`VARIANTS`): `vit` (RGB only), `vit+seg` (both
branches, fused only at the end), `vit+seg+mff` (fused after every block) and `vit+seg+mff+scene`.

Choices the paper leaves open, made explicit here:
- Fusion operator: the paper adds the two [CLS] tokens: `fusion="sum"` (default). `fusion="mean"`
  halves that sum, so the residual stream keeps the scale the pretrained blocks expect (`geotag train
  --fusion mean`; both measured in docs/training.md).
- Preprocessing comes from the backbone's pretrained config (timm `augreg_in21k`: mean = std = 0.5,
  bicubic) and is stored in the checkpoint, so training and inference agree; the authors' loader used
  ImageNet statistics with an in21k ViT.
- Test-time augmentation (`tta_crops`: 1, 2, 5 or 10 crops of the 256-px image, 10 = the authors'
  TenCrop) averages probabilities, not logits as the authors' code did.
- `confidence` is the normalised hierarchical probability of the chosen fine cell; `error_km` the
  distance from the prediction within which half of the fine-cell probability mass lies (each cell spread
  over a disc of its S2 level's mean area, cell_head.py): a median-error estimate in the sense of
  docs/schema.md.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from geotag.errors import InputError, WeightsError
from geotag.geo.cells import Geocells
from geotag.models.base import GeoModel, Prediction, Preprocess
from geotag.models.cell_head import (
    TTA_CROPS,
    BackboneConfig,
    VitConfigDict,
    assign_state,
    cell_prediction,
    checkpoint_builder,
    create_headless_vit,
    hierarchical_probabilities,  # noqa: F401 - re-exported: callers import it from here
    make_checkpoint_folder,
    median_radius,
    pick_builder,
    read_folder_config,
    register_cell_buffers,
    save_state,
    tta_preprocess,
    tta_views,
    write_folder_config,
)
from geotag.models.prior import Prior
from geotag.models.segmentation import (
    DEFAULT_SEGFORMER,
    SegFormerProvider,
    SegmentationProvider,
    load_segformer,
    render_labels,
)

log = logging.getLogger(__name__)

SCENES = ("indoor", "natural", "urban")
LEVEL_WEIGHTS = (0.5, 0.3, 0.2)
"""Loss weight per partition, coarse -> fine (the authors' training code; GUIDE section 6)."""
CHECKPOINT_FORMAT = "geotag-translocator"
CHECKPOINT_VERSION = 1
CONFIG_FILE, WEIGHTS_FILE, CELLS_FILE, SEGMENTER_DIR = (
    "config.json",
    "model.safetensors",
    "cells.parquet",
    "segmenter",
)


@dataclass(frozen=True)
class Variant:
    """One row of the paper's ablation table."""

    use_seg: bool
    mff: bool
    scene: bool
    description: str


VARIANTS: dict[str, Variant] = {
    "vit": Variant(False, False, False, "ViT: RGB branch only"),
    "vit+seg": Variant(
        True, False, False, "+Seg: RGB and segmentation branches, [CLS] fused after the last block"
    ),
    "vit+seg+mff": Variant(True, True, False, "+MFF: [CLS] tokens fused after every block"),
    "vit+seg+mff+scene": Variant(True, True, True, "TransLocator: +MFF and a scene head (multi-task)"),
}
DEFAULT_VARIANT = "vit+seg+mff+scene"


@dataclass(frozen=True)
class TransLocatorConfig(VitConfigDict):
    """Everything but the cells and the weights; stored in a checkpoint's config.json."""

    variant: str = DEFAULT_VARIANT
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    img_size: int = 224
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    interpolation: str = "bicubic"
    scene_classes: tuple[str, ...] = SCENES
    fusion: str = "sum"  # sum (the paper) | mean of the two [CLS] tokens
    segmenter: str | None = DEFAULT_SEGFORMER  # where on-the-fly maps come from (hub id or folder)
    seg_size: int | None = None  # segmenter input size; None: the segmenter's own (512)
    tta_crops: int = 1
    tta_crop_pct: float = 0.875  # crops of img_size from an image of img_size / tta_crop_pct (224 of 256)

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise InputError(
                f"unknown TransLocator variant {self.variant!r}; choose from {', '.join(VARIANTS)}"
            )
        if self.fusion not in ("mean", "sum"):
            raise InputError(f"fusion must be 'mean' or 'sum', got {self.fusion!r}")
        if self.tta_crops not in TTA_CROPS:
            raise InputError(f"tta_crops must be one of {TTA_CROPS}, got {self.tta_crops}")


def translocator_loss(
    logits: Mapping[str, torch.Tensor],
    targets: Mapping[str, torch.Tensor],
    partitions: Sequence[str],
    level_weights: Sequence[float] | None = None,
    scene_weight: float = 1.0,
) -> torch.Tensor:
    """Weighted sum of the per-head cross-entropies; targets of -1 (a dropped cell) are ignored."""
    weights = level_weights or (
        LEVEL_WEIGHTS if len(partitions) == 3 else [1.0 / len(partitions)] * len(partitions)
    )
    loss = sum(
        w * F.cross_entropy(logits[name].float(), targets[name], ignore_index=-1)
        for w, name in zip(weights, partitions, strict=True)
    )
    if "scene" in logits and "scene" in targets:
        loss = loss + scene_weight * F.cross_entropy(
            logits["scene"].float(), targets["scene"], ignore_index=-1
        )
    return loss


def _fp32(device: torch.device) -> torch.autocast:
    return torch.autocast(device_type=device.type, enabled=False)


class TransLocator(GeoModel):
    """The dual-branch model with its cells; see the module docstring."""

    name = "translocator"
    accepts_prior = True

    def __init__(
        self,
        config: TransLocatorConfig,
        cells: Geocells,
        rgb: nn.Module,
        seg: nn.Module | None,
        segmenter: SegmentationProvider | None = None,
        weights_label: str = "",
    ) -> None:
        super().__init__()
        self.config = config
        self.variant = VARIANTS[config.variant]
        if self.variant.use_seg != (seg is not None):
            raise InputError(
                f"variant {config.variant} {'needs' if self.variant.use_seg else 'takes no'} seg branch"
            )
        if seg is not None and (len(seg.blocks) != len(rgb.blocks) or seg.embed_dim != rgb.embed_dim):
            raise InputError("the RGB and segmentation branches need the same depth and width")
        if "scene" in cells.names:
            raise InputError("a partition may not be called 'scene'")
        self.cells = cells
        self.rgb, self.seg = rgb, seg
        dim = rgb.embed_dim
        self.heads = nn.ModuleList(nn.Linear(dim, len(p)) for p in cells.partitions)
        self.scene_head = nn.Linear(dim, len(config.scene_classes)) if self.variant.scene else None
        self.segmenter = segmenter
        self.segmenter_missing: str | None = None  # why no segmenter could be loaded (raised in prepare)
        self.weights_label = weights_label
        register_cell_buffers(self, cells)  # cell_tokens, centroids, ancestors (cell_head.py)

    # -- configuration ------------------------------------------------------------------------------

    def preprocess(self) -> Preprocess:
        return tta_preprocess(self.config)

    def compile_targets(self) -> list[nn.Module]:
        """The transformer blocks of both branches (features() calls them one by one)."""
        return [*self.rgb.blocks, *(self.seg.blocks if self.seg is not None else [])]

    def set_tta(self, crops: int) -> None:
        """Test-time augmentation: 1 (off), 2 (centre + flip), 5 (corners + centre) or 10 (5 + flips)."""
        self.config = dataclasses.replace(self.config, tta_crops=crops)

    def use_segmenter(self, source: str) -> None:
        """--segmenter: a semantic SegFormer (ADE20K labels) from a hub id or a local folder."""
        self.set_segmentation(load_segformer(source))

    def set_segmentation(self, provider: SegmentationProvider | None) -> None:
        """Use another segmentation source, e.g. DiskSegmentation(seg_dir) for precomputed maps."""
        self.segmenter = provider
        if provider is not None:
            self.segmenter_missing = None
            provider.to(self.centroids.device)

    @property
    def needs_image_keys(self) -> bool:
        """True when predict() must be given image ids or paths (precomputed maps on disk)."""
        return bool(self.variant.use_seg and self.segmenter is not None and self.segmenter.needs_keys)

    def prepare(self) -> None:
        """Fail before the first batch when the segmentation branch has nothing to see."""
        if self.variant.use_seg and self.segmenter is None:
            raise WeightsError(
                self.segmenter_missing or "TransLocator's segmentation branch has no segmenter"
            )

    # -- network ------------------------------------------------------------------------------------

    def _fuse(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b if self.config.fusion == "sum" else (a + b) * 0.5

    @staticmethod
    def _embed(vit: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(x))))

    def features(
        self, images: torch.Tensor, seg_images: torch.Tensor | None = None, trace: list | None = None
    ) -> torch.Tensor:
        """(B, D) fused [CLS] feature. `trace`, if a list, receives (rgb_cls, seg_cls) after each block
        (after fusion): what the MFF tests inspect."""
        x = self._embed(self.rgb, images)
        if self.seg is None:
            for block in self.rgb.blocks:
                x = block(x)
                if trace is not None:
                    trace.append((x[:, 0], None))
            return self.rgb.norm(x)[:, 0]
        if seg_images is None:
            raise InputError(f"TransLocator {self.config.variant} needs segmentation images")
        s = self._embed(self.seg, seg_images)
        for block_rgb, block_seg in zip(self.rgb.blocks, self.seg.blocks, strict=True):
            x, s = block_rgb(x), block_seg(s)
            if self.variant.mff:
                cls = self._fuse(x[:, :1], s[:, :1])
                x, s = torch.cat([cls, x[:, 1:]], dim=1), torch.cat([cls, s[:, 1:]], dim=1)
            if trace is not None:
                trace.append((x[:, 0], s[:, 0]))
        return self._fuse(self.rgb.norm(x)[:, 0], self.seg.norm(s)[:, 0])

    def forward(
        self, images: torch.Tensor, seg_images: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Logits per partition name (and 'scene') for normalised images and normalised colour maps."""
        feats = self.features(images, seg_images)
        out = {p.name: head(feats) for p, head in zip(self.cells.partitions, self.heads, strict=True)}
        if self.scene_head is not None:
            out["scene"] = self.scene_head(feats)
        return out

    # -- inference ----------------------------------------------------------------------------------

    def normalise(self, x01: torch.Tensor) -> torch.Tensor:
        """[0, 1] images or colour maps -> the model's input normalisation (both branches share it)."""
        mean = torch.tensor(self.config.mean, device=x01.device, dtype=x01.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.config.std, device=x01.device, dtype=x01.dtype).view(1, 3, 1, 1)
        return (x01 - mean) / std

    _normalise = normalise  # the name engine/tasks.py first used

    def _denormalise(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.config.mean, device=x.device, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(self.config.std, device=x.device, dtype=torch.float32).view(1, 3, 1, 1)
        return (x.float() * std + mean).clamp(0, 1)

    def segment(
        self,
        images: torch.Tensor,
        seg_maps: torch.Tensor | None = None,
        image_ids: Sequence[str | None] | None = None,
        paths: Sequence[str | os.PathLike[str] | None] | None = None,
    ) -> torch.Tensor:
        """(B, 3, H, W) colour maps in [0, 1] for normalised images: from `seg_maps` (colour uint8 /
        float, or (B, H, W) labels), from precomputed files, or from the segmenter."""
        size = images.shape[-2:]
        if seg_maps is not None:
            maps = render_labels(seg_maps) if seg_maps.dim() == 3 else seg_maps
            maps = maps.float() / 255 if maps.dtype == torch.uint8 else maps.float()
        elif self.segmenter is None:
            raise WeightsError(
                self.segmenter_missing or "TransLocator's segmentation branch has no segmenter"
            )
        elif self.segmenter.needs_keys:
            maps = self.segmenter.load(image_ids, paths, size[-1])  # type: ignore[attr-defined]
        else:
            maps = self.segmenter.colour(self._denormalise(images))
        if maps.shape[-2:] != size or maps.shape[0] != images.shape[0]:
            raise InputError(
                f"segmentation maps {tuple(maps.shape)} do not match images {tuple(images.shape)}"
            )
        return maps.to(images.device)

    def _views(self, x: torch.Tensor) -> torch.Tensor:
        """(n_views, B, 3, c, c): the TTA crops of a batch (one centre crop when TTA is off)."""
        return tta_views(x, self.config.img_size, self.config.tta_crops)

    def probabilities(self, images: torch.Tensor, seg01: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Softmax per head, averaged over the TTA views, in float32."""
        views = self._views(images)
        n, b = views.shape[:2]
        seg_views = None
        if seg01 is not None:
            seg_views = self.normalise(self._views(seg01).flatten(0, 1).to(images.dtype))
        logits = self.forward(views.flatten(0, 1), seg_views)
        with _fp32(images.device):
            return {k: v.float().softmax(dim=-1).view(n, b, -1).mean(dim=0) for k, v in logits.items()}

    def predict(
        self,
        images: torch.Tensor,
        top_k: int,
        *,
        seg_maps: torch.Tensor | None = None,
        image_ids: Sequence[str | None] | None = None,
        paths: Sequence[str | os.PathLike[str] | None] | None = None,
        prior: Prior | None = None,
    ) -> Prediction:
        n_fine = len(self.cell_tokens)
        if not 1 <= top_k <= n_fine:
            raise InputError(f"top-k must be between 1 and the number of fine cells {n_fine}, got {top_k}")
        seg01 = self.segment(images, seg_maps, image_ids, paths) if self.variant.use_seg else None
        probs = self.probabilities(images, seg01)
        pred = cell_prediction(
            [probs[p] for p in self.cells.names],
            self.ancestors,
            self.centroids,
            self.cell_tokens,
            top_k,
            self.cell_radii,
            prior,
        )
        if "scene" in probs:
            pred.extras["scene"] = [
                self.config.scene_classes[i] for i in probs["scene"].argmax(dim=1).tolist()
            ]
        return pred

    def _median_radius(self, probs: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Per row, the distance from `points[row]` within which half of the cell probability lies."""
        return median_radius(probs, points, self.centroids, self.cell_radii)


class RGBFeatures(nn.Module):
    """The RGB branch as an images -> [CLS] feature module: what the RGB-only row (vit) feeds its heads,
    and what an embedding cache of that row stores (its state is the branch's, for the fingerprint)."""

    def __init__(self, model: TransLocator) -> None:
        super().__init__()
        if model.seg is not None:
            raise InputError(f"TransLocator {model.config.variant} has a segmentation branch")
        self.rgb = model.rgb
        self._model = [model]  # not a submodule: the heads are not part of the features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._model[0].features(images)


# ---------------------------------------------------------------------------------------------------
# Builders (one per named variant, timm-style) and backbone weights


create_vit = create_headless_vit  # the shared timm ViT (cell_head.py)


def pretrained_preprocess(backbone: BackboneConfig) -> dict[str, Any]:
    """mean / std / interpolation of the backbone's timm pretrained config (empty if timm has none)."""
    import timm

    try:
        cfg = timm.models.get_pretrained_cfg(f"{backbone.arch}.{backbone.tag}")
    except RuntimeError:  # an unknown tag: the caller's own mean/std (or ours) apply
        return {}
    if cfg is None:
        return {}
    return {"mean": tuple(cfg.mean), "std": tuple(cfg.std), "interpolation": cfg.interpolation}


def missing_backbone_message(backbone: BackboneConfig) -> str:
    return (
        f"no weights for TransLocator's ViT backbones ({backbone.hub_id}: not passed, not in the "
        "Hugging Face cache, hub unreachable or HF_HUB_OFFLINE set): run "
        f"`hf download {backbone.hub_id} model.safetensors`, or pass --backbone-weights PATH "
        "(a timm ViT state dict)"
    )


def resolve_vit_weights(
    backbone: BackboneConfig, path: Path | None
) -> tuple[dict[str, torch.Tensor] | None, str]:
    """(state dict, label) from `path`, the HF cache or a download (when the hub answers); (None, '')
    when there are none. Shape overrides (tiny test ViTs) have no hub weights."""
    from geotag.models.clip_convert import find_weights_file, read_state_dict
    from geotag.models.hub import _cached, hub_cache_dir, hub_offline, hub_reachable

    if path is not None:
        path = Path(path)
        if not path.exists():
            raise WeightsError(f"backbone weights not found: {path}")
        return read_state_dict(find_weights_file(path) if path.is_dir() else path), path.name
    if backbone.overrides:
        return None, ""
    for filename in ("model.safetensors", "pytorch_model.bin"):
        if (hit := _cached(backbone.hub_id, filename)) is not None:
            return read_state_dict(hit), f"{backbone.hub_id} (HF cache)"
    if hub_offline() or not hub_reachable():
        return None, ""
    from huggingface_hub import hf_hub_download

    try:
        file = hf_hub_download(backbone.hub_id, "model.safetensors", cache_dir=hub_cache_dir())
    except Exception as exc:  # any hub/network failure means "no weights"; the caller says what to do
        log.warning("download of %s failed: %s", backbone.hub_id, exc)
        return None, ""
    return read_state_dict(Path(file)), f"{backbone.hub_id} (downloaded)"


def load_vit_weights(vit: nn.Module, state_dict: Mapping[str, torch.Tensor], name: str) -> None:
    """timm's checkpoint_filter_fn (pos-embed resampling, foreign layouts), classifier dropped."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    state = checkpoint_filter_fn(dict(state_dict), vit)
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    missing, unexpected = vit.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise WeightsError(
            f"{name} does not fit the ViT backbone: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )


def _create(
    variant: str,
    cells: Geocells | str | os.PathLike[str],
    *,
    backbone_weights: Path | None = None,
    segmenter: SegmentationProvider | str | os.PathLike[str] | None = DEFAULT_SEGFORMER,
    allow_untrained: bool = False,
    **config_kwargs: Any,
) -> TransLocator:
    cells = cells if isinstance(cells, Geocells) else Geocells.load(cells)
    config_kwargs = {
        **pretrained_preprocess(config_kwargs.get("backbone", BackboneConfig())),
        **config_kwargs,
    }
    seg_source = segmenter if isinstance(segmenter, str | os.PathLike) else None
    config = TransLocatorConfig(
        variant=variant, segmenter=str(seg_source) if seg_source else None, **config_kwargs
    )
    use_seg = VARIANTS[variant].use_seg
    state, source = resolve_vit_weights(config.backbone, backbone_weights)
    if state is None and not allow_untrained:
        raise WeightsError(missing_backbone_message(config.backbone))
    rgb = create_vit(config)
    seg = create_vit(config) if use_seg else None
    if state is not None:
        for vit in (rgb, seg) if seg is not None else (rgb,):
            load_vit_weights(vit, state, source)
        label = f"{source} backbones; geocell/scene heads UNTRAINED (random init)"
    else:
        label = "UNTRAINED backbones (random init); geocell/scene heads UNTRAINED (random init)"
        log.warning("TransLocator backbones are UNTRAINED (random init): predictions are meaningless")
    provider = None
    if use_seg and seg_source is not None:
        provider = load_segformer(seg_source, size=config.seg_size)
    elif use_seg and isinstance(segmenter, SegmentationProvider):
        provider = segmenter
    return TransLocator(config, cells, rgb, seg, provider, label)


BUILDERS: dict[str, Callable[..., TransLocator]] = {name: partial(_create, name) for name in VARIANTS}
"""One builder per ablation row of VARIANTS (what each row holds is described there)."""


def build_translocator(
    cells: Geocells | str | os.PathLike[str], variant: str = DEFAULT_VARIANT, **kwargs: Any
) -> TransLocator:
    """A fresh (untrained heads) TransLocator of a named variant over the given cells."""
    return pick_builder(BUILDERS, variant, "TransLocator variant")(cells, **kwargs)


# ---------------------------------------------------------------------------------------------------
# Checkpoints: a folder with config.json, model.safetensors, cells.parquet and (optionally) segmenter/


def save_checkpoint(
    model: TransLocator, folder: str | os.PathLike[str], *, include_segmenter: bool = True
) -> Path:
    """Write everything `load_translocator` needs to predict: weights, configuration, cells, scene
    classes, preprocessing and, when it is a SegFormer, the segmenter itself."""
    folder = make_checkpoint_folder(folder)
    save_state(model, folder / WEIGHTS_FILE, CHECKPOINT_FORMAT, skip_prefixes=("segmenter.",))
    model.cells.save(folder / CELLS_FILE)
    segmenter_dir = None
    if include_segmenter and isinstance(model.segmenter, SegFormerProvider):
        model.segmenter.save(folder / SEGMENTER_DIR)
        segmenter_dir = SEGMENTER_DIR
    pre = model.preprocess()
    fields = {
        "weights_file": WEIGHTS_FILE,
        "cells_file": CELLS_FILE,
        "partitions": [{"name": p.name, "cells": len(p)} for p in model.cells.partitions],
        "scene_classes": list(model.config.scene_classes) if model.scene_head is not None else [],
        "preprocess": dataclasses.asdict(pre),
        "segmenter_dir": segmenter_dir,
        "weights_label": model.weights_label,
    }
    return write_folder_config(folder, model, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, fields, CONFIG_FILE)


def read_checkpoint_info(folder: Path) -> dict[str, Any]:
    return read_folder_config(folder, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, "TransLocator", CONFIG_FILE)


def load_translocator(
    folder: str | os.PathLike[str],
    *,
    segmenter: SegmentationProvider | str | os.PathLike[str] | None = "auto",
    tta_crops: int | None = None,
) -> TransLocator:
    """A TransLocator from a checkpoint folder, ready for `.to(device).eval()`.

    `segmenter="auto"`: the checkpoint's own segmenter folder, else its recorded source (HF cache or
    download); if neither can be had, loading still succeeds and `prepare()` raises the reason, unless
    precomputed maps are set with `set_segmentation(DiskSegmentation(...))` first.
    """
    folder = Path(folder)
    info = read_checkpoint_info(folder)
    config = TransLocatorConfig.from_dict(info["config"])
    if tta_crops is not None:
        config = dataclasses.replace(config, tta_crops=tta_crops)
    cells = Geocells.load(folder / info.get("cells_file", CELLS_FILE))
    rgb = create_vit(config, meta=True)
    seg = create_vit(config, meta=True) if VARIANTS[config.variant].use_seg else None
    model = TransLocator(config, cells, rgb, seg, None, "")
    assign_state(model, folder / info.get("weights_file", WEIGHTS_FILE), folder)
    stored = info.get("weights_label") or "no label"
    model.weights_label = f"checkpoint {folder.resolve().name} ({stored})"
    if model.variant.use_seg:
        _attach_segmenter(model, folder, info, segmenter)
    return model.eval()


def _attach_segmenter(
    model: TransLocator,
    folder: Path,
    info: Mapping[str, Any],
    segmenter: SegmentationProvider | str | os.PathLike[str] | None,
) -> None:
    if isinstance(segmenter, SegmentationProvider):
        model.set_segmentation(segmenter)
        return
    if segmenter is None:
        model.segmenter_missing = "no segmenter was given: pass precomputed maps (--seg-dir) or a SegFormer"
        return
    if segmenter == "auto":
        own = folder / SEGMENTER_DIR if info.get("segmenter_dir") else None
        source = own if own is not None and own.is_dir() else model.config.segmenter
    else:
        source = segmenter
    if source is None:
        model.segmenter_missing = "the checkpoint names no segmenter: pass precomputed maps with --seg-dir"
        return
    try:
        model.set_segmentation(load_segformer(source, size=model.config.seg_size))
    except WeightsError as exc:
        model.segmenter_missing = str(exc)
        log.info("segmenter not loaded: %s", exc)


# `build_model("translocator", weights=FOLDER)`: a trained checkpoint (or a `geotag train` run folder:
# its newest) is required, the authors released no weights; backbone weights and untrained backbones
# only matter for training.
build_for_registry = checkpoint_builder(
    "translocator",
    load_translocator,
    no_gallery="predicts geocells and takes no --gallery",
    no_weights="translocator needs a checkpoint folder: pass --weights FOLDER (written by "
    "save_checkpoint or training); no pretrained TransLocator weights are published to download",
    holds="both backbones",
)
