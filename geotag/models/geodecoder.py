"""GeoDecoder (Clark, Kerrigan, Kulkarni, Vivanco Cepeda and Shah, "Where We Are and What We're Looking
At: Query Based Worldwide Image Geo-localization Using Hierarchies and Scenes", CVPR 2023).

Architecture (GUIDE section 3):
- a timm ViT encoder (CLIP ViT-L/14 by default; CLIP ViT-B/16 and the in21k ViT-B/16 as named
  variants) whose final-normed tokens ([CLS] and patches) are the decoder's memory;
- learned queries, one per (scene, hierarchy) pair: S scenes x H geographic hierarchies (the partitions of
  the cells, coarse -> fine);
- a decoder in two parts, as in the paper's figure 3: N *hierarchy independent* layers (pre-norm
  self-attention over all S x H queries, cross-attention to the image tokens, one shared FFN), then E
  *hierarchy dependent* layers, where self-attention stays within a hierarchy, each hierarchy has its
  own FFN, and the cross-attention runs hierarchy by hierarchy, coarse first: level h attends to the
  image tokens and to the output of level h-1 of the same layer, so a finer level is conditioned on the
  coarser one and never the other way round (`HierarchyDependentLayer`);
- scene-specific representations: the 0th channel of each query output is a confidence; the scene
  whose queries are on average most confident is chosen (its mean 0th channel is the scene logit), and
  its H query outputs go to the classifiers;
- one geocell classifier per hierarchy; hierarchical inference (cell_head.py): each fine cell's
  probability times its ancestors', the answer the best fine cell's mean training coordinate;
- training (`GeoDecoderTask`, `geodecoder_loss`): per-hierarchy cross-entropy weighted by the chosen
  queries' learned confidence sigmoid(channel 0), plus a -log(confidence) penalty so the weight cannot
  collapse, plus the scene cross-entropy on the scene logits (the authors' public code).

Choices the paper leaves open or that differ from it, made explicit here:
- Depth: N = 6 independent layers (the decoder depth of the authors' public code), E = 1 dependent
  layer; dim_head 64 (their code), MLP ratio 4, dropout 0.1, a final LayerNorm before the classifiers.
  The paper's own N and E could not be checked offline; both are configuration.
- Hierarchies are the GeoEstimation partitions (GUIDE section 6: 3,298 / 7,202 / 12,893 cells on MP-16).
- Scenes: the paper uses Places365's 16-way hierarchy (S16); geotag's manifests carry the 3-way top level
  (indoor / natural / urban, the `scene` column), so `scene_classes` defaults to those three. Any list
  works: it fixes the number of scene query sets.
- The confidence penalty: the authors' code adds 0.05 x the *sum* over the batch of -log(confidence) to
  per-image *mean* cross-entropies, so its strength grows with their batch of 128. Here it is per image,
  `CONFIDENCE_PENALTY` = 0.05 x 128 = 6.4, which keeps their balance whatever the batch size: the best
  confidence of an image is min(1, 6.4 / its cross-entropy), so hard (ambiguous) images weigh less.
- Preprocessing comes from the encoder's timm pretrained config (CLIP mean / std, bicubic) and is stored
  in the checkpoint, so training and inference agree.
- Test-time augmentation (`tta_crops` 1, 2, 5, 10; the paper evaluates with ten crops) averages
  probabilities; `confidence` and `error_km` follow TransLocator's conventions (cell_head.py).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from geotag.errors import InputError, WeightsError
from geotag.geo.cells import Geocells
from geotag.models.base import GeoModel, Prediction, Preprocess
from geotag.models.cell_head import (
    TTA_CROPS,
    CheckpointFolderTask,
    VitConfigDict,
    assign_state,
    cell_prediction,
    checkpoint_builder,
    create_headless_vit,
    make_checkpoint_folder,
    pick_builder,
    read_folder_config,
    register_cell_buffers,
    save_state,
    tta_preprocess,
    tta_views,
    write_folder_config,
)
from geotag.models.losses import smoothed_cell_targets
from geotag.models.prior import Prior
from geotag.models.tasks import NO_FINE_CELL, TransLocatorTask
from geotag.models.translocator import BackboneConfig, pretrained_preprocess, resolve_vit_weights

if TYPE_CHECKING:
    from geotag.config import TrainConfig
    from geotag.io.samples import TrainSamples

log = logging.getLogger(__name__)

SCENES = ("indoor", "natural", "urban")
CONFIDENCE_PENALTY = 6.4
"""Per-image weight of -log(confidence): the authors' 0.05 x their batch of 128 (module docstring)."""
CHECKPOINT_FORMAT = "geotag-geodecoder"
CHECKPOINT_VERSION = 1
CONFIG_FILE, WEIGHTS_FILE, CELLS_FILE = "config.json", "model.safetensors", "cells.parquet"
RESERVED = ("scene", "confidence")  # output keys besides the partition names

ENCODERS: dict[str, BackboneConfig] = {
    "clip-vit-l14": BackboneConfig(
        "vit_large_patch14_clip_quickgelu_224", "openai", hub="timm/vit_large_patch14_clip_224.openai"
    ),
    "clip-vit-b16": BackboneConfig(
        "vit_base_patch16_clip_quickgelu_224", "openai", hub="timm/vit_base_patch16_clip_224.openai"
    ),
    "vit-b16": BackboneConfig("vit_base_patch16_224", "augreg_in21k"),
}
"""Named encoders (pretrained configs as data). OpenAI CLIP towers use QuickGELU, hence timm's
`*_quickgelu_*` architectures over the weights of the plain `timm/..._clip_224.openai` repos."""
DEFAULT_ENCODER = "clip-vit-l14"


@dataclass(frozen=True)
class GeoDecoderConfig(VitConfigDict):
    """Everything but the cells and the weights; stored in a checkpoint's config.json."""

    encoder: str = DEFAULT_ENCODER  # the ENCODERS name it was built from (provenance)
    backbone: BackboneConfig = field(default_factory=lambda: ENCODERS[DEFAULT_ENCODER])
    img_size: int = 224
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    interpolation: str = "bicubic"
    scene_classes: tuple[str, ...] = SCENES
    independent_layers: int = 6  # N: self-attention over all queries
    dependent_layers: int = 1  # E: within-hierarchy self-attention, hierarchical cross-attention
    head_dim: int = 64
    mlp_ratio: float = 4.0
    dropout: float = 0.1
    tta_crops: int = 1
    tta_crop_pct: float = 0.875

    def __post_init__(self) -> None:
        if self.tta_crops not in TTA_CROPS:
            raise InputError(f"tta_crops must be one of {TTA_CROPS}, got {self.tta_crops}")
        if self.independent_layers < 0 or self.dependent_layers < 1:
            raise InputError("GeoDecoder needs independent_layers >= 0 and dependent_layers >= 1")
        if not self.scene_classes:
            raise InputError("GeoDecoder needs at least one scene")


# ---------------------------------------------------------------------------------------------------
# The decoder


def _mlp(dim: int, ratio: float, dropout: float) -> nn.Sequential:
    hidden = int(dim * ratio)
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))


class DecoderLayer(nn.Module):
    """A hierarchy independent layer: pre-norm self-attention over every query, cross-attention to the
    image tokens, one FFN shared by all queries."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.mlp = _mlp(dim, mlp_ratio, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, q: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """q (B, Q, D), memory (B, T, D) -> (B, Q, D)."""
        x = self.norm1(q)
        q = q + self.drop(self.self_attn(x, x, x, need_weights=False)[0])
        x = self.norm2(q)
        q = q + self.drop(self.cross_attn(x, memory, memory, need_weights=False)[0])
        return q + self.drop(self.mlp(self.norm3(q)))


class HierarchyDependentLayer(nn.Module):
    """A hierarchy dependent layer: the levels run one after the other, coarse first. Level h's S scene
    queries self-attend among themselves only, cross-attend to the image tokens *and* to level h-1's
    output of this layer (normed), then pass level h's own FFN. Attention weights are shared by the
    levels; the FFNs are not (the paper: separate feed-forward networks per hierarchy)."""

    def __init__(self, dim: int, heads: int, levels: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2, self.norm_coarse = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norms3 = nn.ModuleList(nn.LayerNorm(dim) for _ in range(levels))
        self.mlps = nn.ModuleList(_mlp(dim, mlp_ratio, dropout) for _ in range(levels))
        self.drop = nn.Dropout(dropout)

    def forward(self, q: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """q (B, S, H, D) coarse -> fine along H, memory (B, T, D) -> (B, S, H, D)."""
        outs: list[torch.Tensor] = []
        for h in range(q.shape[2]):
            x = q[:, :, h]
            y = self.norm1(x)
            x = x + self.drop(self.self_attn(y, y, y, need_weights=False)[0])
            keys = memory if not outs else torch.cat([memory, self.norm_coarse(outs[-1])], dim=1)
            y = self.norm2(x)
            x = x + self.drop(self.cross_attn(y, keys, keys, need_weights=False)[0])
            outs.append(x + self.drop(self.mlps[h](self.norms3[h](x))))
        return torch.stack(outs, dim=2)


class GeoDecoder(GeoModel):
    """ViT encoder + hierarchical query decoder + a classifier per hierarchy; see the module docstring."""

    name = "geodecoder"
    accepts_prior = True

    def __init__(
        self, config: GeoDecoderConfig, cells: Geocells, encoder: nn.Module, weights_label: str = ""
    ) -> None:
        super().__init__()
        bad = set(RESERVED) & set(cells.names)
        if bad:
            raise InputError(f"a partition may not be called {', '.join(sorted(bad))}")
        self.config = config
        self.cells = cells
        self.encoder = encoder
        dim = encoder.embed_dim
        heads = max(1, dim // config.head_dim)
        n_scenes, n_levels = len(config.scene_classes), len(cells.partitions)
        self.queries = nn.Parameter(torch.empty(n_scenes, n_levels, dim))
        nn.init.trunc_normal_(self.queries, std=0.02)
        self.independent = nn.ModuleList(
            DecoderLayer(dim, heads, config.mlp_ratio, config.dropout)
            for _ in range(config.independent_layers)
        )
        self.dependent = nn.ModuleList(
            HierarchyDependentLayer(dim, heads, n_levels, config.mlp_ratio, config.dropout)
            for _ in range(config.dependent_layers)
        )
        self.norm = nn.LayerNorm(dim)
        self.heads = nn.ModuleList(nn.Linear(dim, len(p)) for p in cells.partitions)
        self.weights_label = weights_label
        register_cell_buffers(self, cells)  # cell_tokens, centroids, ancestors

    # -- configuration ------------------------------------------------------------------------------

    def preprocess(self) -> Preprocess:
        return tta_preprocess(self.config)

    def compile_targets(self) -> list[nn.Module]:
        """`--compile`: the encoder's transformer blocks (encode() calls forward_features, so compiling
        the encoder module itself would miss them); the decoder is small."""
        return list(self.encoder.blocks)

    def set_tta(self, crops: int) -> None:
        """Test-time augmentation: 1 (off), 2 (centre + flip), 5 (corners + centre) or 10 (5 + flips)."""
        self.config = dataclasses.replace(self.config, tta_crops=crops)

    # -- network ------------------------------------------------------------------------------------

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, T, D) final-normed encoder tokens ([CLS] and patches): the decoder's memory."""
        return self.encoder.forward_features(images)

    def decode(self, memory: torch.Tensor) -> torch.Tensor:
        """(B, S, H, D) normed query outputs, scene-major, hierarchies coarse -> fine."""
        b = memory.shape[0]
        s, h, d = self.queries.shape
        q = self.queries.to(memory.dtype).unsqueeze(0).expand(b, -1, -1, -1)
        if self.independent:
            flat = q.reshape(b, s * h, d)
            for layer in self.independent:
                flat = layer(flat, memory)
            q = flat.reshape(b, s, h, d)
        for layer in self.dependent:
            q = layer(q, memory)
        return self.norm(q)

    def heads_from_queries(self, q: torch.Tensor) -> dict[str, torch.Tensor]:
        """Scene logits (mean 0th channel over the hierarchies), the chosen scene's per-hierarchy
        confidences sigmoid(0th channel) and its cell logits per partition name."""
        scene = q[..., 0].mean(dim=2)  # (B, S)
        chosen = q[torch.arange(q.shape[0], device=q.device), scene.argmax(dim=1)]  # (B, H, D)
        out = {
            p.name: head(chosen[:, i])
            for i, (p, head) in enumerate(zip(self.cells.partitions, self.heads, strict=True))
        }
        out["scene"] = scene
        out["confidence"] = torch.sigmoid(chosen[..., 0].float())
        return out

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per partition name, 'scene' logits (B, S) and per-hierarchy 'confidence' (B, H)."""
        return self.heads_from_queries(self.decode(self.encode(images)))

    # -- inference ----------------------------------------------------------------------------------

    def probabilities(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Softmax per partition and over the scenes, averaged over the TTA views, in float32."""
        views = tta_views(images, self.config.img_size, self.config.tta_crops)
        n, b = views.shape[:2]
        out = self.forward(views.flatten(0, 1))
        with torch.autocast(device_type=images.device.type, enabled=False):
            return {
                k: v.float().softmax(dim=-1).view(n, b, -1).mean(dim=0)
                for k, v in out.items()
                if k != "confidence"
            }

    def predict(self, images: torch.Tensor, top_k: int, *, prior: Prior | None = None) -> Prediction:
        probs = self.probabilities(images)
        pred = cell_prediction(
            [probs[p] for p in self.cells.names],
            self.ancestors,
            self.centroids,
            self.cell_tokens,
            top_k,
            self.cell_radii,
            prior,
        )
        pred.extras["scene"] = [self.config.scene_classes[i] for i in probs["scene"].argmax(dim=1).tolist()]
        return pred


# ---------------------------------------------------------------------------------------------------
# Loss


def geodecoder_loss(
    out: Mapping[str, torch.Tensor],
    targets: torch.Tensor,
    partitions: Sequence[str],
    scene: torch.Tensor | None = None,
    *,
    confidence_penalty: float = CONFIDENCE_PENALTY,
    scene_weight: float = 1.0,
    soft_targets: Sequence[torch.Tensor | None] | None = None,
) -> dict[str, torch.Tensor]:
    """{"loss": total, "cells": the cell part, "cell_<h>": each level's plain CE, "confidence_<h>": its
    mean confidence, "scene": scene CE}. Level h: mean over images with a kept cell (target >= 0) of
    c_h x CE_h; plus `confidence_penalty` x the mean over images of sum_h -log c_h; plus the scene CE
    over images with a scene label (-1: none). `soft_targets[h]` (B, n_h) replaces level h's hard
    labels (PIGEON smoothing)."""
    conf = out["confidence"].float().clamp(1e-6, 1.0)
    total = conf.new_zeros(())
    logs: dict[str, torch.Tensor] = {}
    for h, name in enumerate(partitions):
        target = targets[:, h]
        keep = target >= 0
        logs[f"confidence_{h}"] = conf[:, h].mean().detach()
        if not bool(keep.any()):
            total = total + out[name].sum() * 0.0
            continue
        logp = F.log_softmax(out[name][keep].float(), dim=1)
        soft = soft_targets[h] if soft_targets is not None else None
        ce = (
            -(soft[keep] * logp).sum(dim=1)
            if soft is not None
            else F.nll_loss(logp, target[keep], reduction="none")
        )
        logs[f"cell_{h}"] = ce.mean().detach()
        total = total + (conf[keep, h] * ce).mean()
    total = total + confidence_penalty * (-torch.log(conf)).sum(dim=1).mean()
    logs["cells"] = total.detach()
    if scene is not None and bool((scene >= 0).any()):
        logs["scene"] = F.cross_entropy(out["scene"].float(), scene, ignore_index=-1)
        total = total + scene_weight * logs["scene"]
        logs["scene"] = logs["scene"].detach()
    logs["loss"] = total
    return logs


# ---------------------------------------------------------------------------------------------------
# Builders (one per named encoder, timm-style) and encoder weights


create_encoder = create_headless_vit  # the shared timm ViT (cell_head.py)


def load_encoder_weights(encoder: nn.Module, state: Mapping[str, torch.Tensor], name: str) -> None:
    """timm's checkpoint_filter_fn (OpenAI CLIP layouts, pos-embed resampling), classifier and CLIP
    projection dropped, assigned into a meta-device encoder; every parameter must be filled."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    filtered = checkpoint_filter_fn(dict(state), encoder)
    own = encoder.state_dict()
    filtered = {k: v for k, v in filtered.items() if k in own or not k.startswith("head")}
    missing, unexpected = encoder.load_state_dict(filtered, strict=False, assign=True)
    if missing or unexpected or any(p.is_meta for p in encoder.parameters()):
        raise WeightsError(
            f"{name} does not fit the {encoder.__class__.__name__} encoder: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}"
        )


def missing_encoder_message(backbone: BackboneConfig) -> str:
    return (
        f"no weights for GeoDecoder's ViT encoder ({backbone.hub_id}: not passed, not in the Hugging Face "
        f"cache, hub unreachable or HF_HUB_OFFLINE set): run `hf download {backbone.hub_id} "
        "model.safetensors`, or pass --backbone-weights PATH (a timm or OpenAI CLIP ViT state dict)"
    )


def _create(
    encoder_name: str,
    cells: Geocells | str | os.PathLike[str],
    *,
    backbone_weights: Path | None = None,
    allow_untrained: bool = False,
    **config_kwargs: Any,
) -> GeoDecoder:
    if encoder_name not in ENCODERS:
        raise InputError(f"unknown GeoDecoder encoder {encoder_name!r}; choose from {', '.join(ENCODERS)}")
    cells = cells if isinstance(cells, Geocells) else Geocells.load(cells)
    backbone = config_kwargs.pop("backbone", ENCODERS[encoder_name])
    config_kwargs = {**pretrained_preprocess(backbone), **config_kwargs}
    config = GeoDecoderConfig(encoder=encoder_name, backbone=backbone, **config_kwargs)
    state, source = resolve_vit_weights(config.backbone, backbone_weights)
    if state is None and not allow_untrained:
        raise WeightsError(missing_encoder_message(config.backbone))
    if state is not None:
        encoder = create_encoder(config, meta=True)
        load_encoder_weights(encoder, state, source)
        label = f"{source} encoder; decoder and geocell heads UNTRAINED (random init)"
    else:
        encoder = create_encoder(config)
        label = "UNTRAINED encoder (random init); decoder and geocell heads UNTRAINED (random init)"
        log.warning("GeoDecoder encoder is UNTRAINED (random init): predictions are meaningless")
    return GeoDecoder(config, cells, encoder, label)


BUILDERS: dict[str, Callable[..., GeoDecoder]] = {name: partial(_create, name) for name in ENCODERS}
"""One builder per named encoder: clip-vit-l14 (the paper's), clip-vit-b16 (lighter), vit-b16 (ImageNet-21k,
TransLocator's backbone, for comparisons)."""


def build_geodecoder(
    cells: Geocells | str | os.PathLike[str], encoder: str = DEFAULT_ENCODER, **kwargs: Any
) -> GeoDecoder:
    """A fresh (untrained decoder) GeoDecoder with a named encoder over the given cells."""
    return pick_builder(BUILDERS, encoder, "GeoDecoder encoder")(cells, **kwargs)


# ---------------------------------------------------------------------------------------------------
# Checkpoints: a folder with config.json, model.safetensors and cells.parquet


def save_checkpoint(model: GeoDecoder, folder: str | os.PathLike[str]) -> Path:
    """Write everything `load_geodecoder` needs: weights, configuration, cells, preprocessing."""
    folder = make_checkpoint_folder(folder)
    save_state(model, folder / WEIGHTS_FILE, CHECKPOINT_FORMAT)
    model.cells.save(folder / CELLS_FILE)
    fields = {
        "weights_file": WEIGHTS_FILE,
        "cells_file": CELLS_FILE,
        "partitions": [{"name": p.name, "cells": len(p)} for p in model.cells.partitions],
        "scene_classes": list(model.config.scene_classes),
        "preprocess": dataclasses.asdict(model.preprocess()),
        "weights_label": model.weights_label,
    }
    return write_folder_config(folder, model, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, fields, CONFIG_FILE)


def load_geodecoder(folder: str | os.PathLike[str], *, tta_crops: int | None = None) -> GeoDecoder:
    """A GeoDecoder from a checkpoint folder, ready for `.to(device).eval()`."""
    folder = Path(folder)
    info = read_folder_config(folder, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, "GeoDecoder", CONFIG_FILE)
    config = GeoDecoderConfig.from_dict(info["config"])
    if tta_crops is not None:
        config = dataclasses.replace(config, tta_crops=tta_crops)
    cells = Geocells.load(folder / info.get("cells_file", CELLS_FILE))
    model = GeoDecoder(config, cells, create_encoder(config, meta=True))
    assign_state(model, folder / info.get("weights_file", WEIGHTS_FILE), folder)
    stored = info.get("weights_label") or "no label"
    model.weights_label = f"checkpoint {folder.resolve().name} ({stored})"
    return model.eval()


# `build_model("geodecoder", weights=FOLDER)`: a trained checkpoint (or a `geotag train` run folder:
# its newest) is required; the authors released no weights.
build_for_registry = checkpoint_builder(
    "geodecoder",
    load_geodecoder,
    no_gallery="predicts geocells and takes no --gallery",
    no_weights="geodecoder needs a checkpoint folder: pass --weights FOLDER (written by `geotag train "
    "--model geodecoder` or save_checkpoint); no pretrained GeoDecoder weights are published to download",
    holds="the encoder",
)


# ---------------------------------------------------------------------------------------------------
# Training (geotag.engine.train's task protocol)


class GeoDecoderTask(CheckpointFolderTask, TransLocatorTask):
    """Geocell classification with GeoDecoder: cells as TransLocator's task makes them (a cells file,
    the resumed checkpoint's, or built from the training coordinates), `geodecoder_loss` per batch
    (learned per-hierarchy confidence, scene CE where labels exist, optional PIGEON smoothing)."""

    name = "geodecoder"
    trained = "decoder and geocell heads"
    save = staticmethod(save_checkpoint)

    def __init__(
        self,
        encoder: str | None = None,
        *,
        cells_file: Path | None = None,
        tau_km: float | None = None,
        confidence_penalty: float = CONFIDENCE_PENALTY,
        scene_weight: float = 1.0,
        model_kwargs: dict[str, Any] | None = None,
        cells_scale: str = "none",
    ) -> None:
        super().__init__(
            encoder,
            cells_file=cells_file,
            tau_km=tau_km,
            scene_weight=scene_weight,
            model_kwargs=model_kwargs,
            cells_scale=cells_scale,
        )
        self.confidence_penalty = confidence_penalty

    @classmethod
    def from_train_config(cls, cfg: TrainConfig) -> GeoDecoderTask:
        """`geotag train --model geodecoder`: `--variant` names the encoder (ENCODERS; none means the
        paper's CLIP ViT-L/14, an unknown name is an error); `--cells` and `--label-smoothing-km` work as
        for TransLocator."""
        if cfg.variant is not None and cfg.variant not in ENCODERS:
            raise InputError(f"unknown GeoDecoder encoder {cfg.variant!r}; choose from {', '.join(ENCODERS)}")
        return cls(
            cfg.variant, cells_file=cfg.cells, tau_km=cfg.label_smoothing_km, cells_scale=cfg.cells_scale
        )

    def build(self, cfg: TrainConfig, train: TrainSamples, checkpoint: Path | None) -> GeoModel:
        if not train.has_scene:
            log.warning(
                "no training image has a scene label: GeoDecoder's scene choice stays untrained (its "
                "`scene` column is then meaningless); give a manifest `scene` column to train it "
                "(`geotag label-scenes` makes one)"
            )
        cells = self.make_cells(train, checkpoint)
        model = build_geodecoder(
            cells,
            self.variant or DEFAULT_ENCODER,
            backbone_weights=cfg.backbone_weights,
            allow_untrained=cfg.allow_untrained,
            **self.model_kwargs,
        )
        assigned = cells.assign(train.lat, train.lon)
        if int((assigned[:, -1] >= 0).sum()) == 0:
            raise InputError(NO_FINE_CELL)
        self.targets = torch.from_numpy(assigned)
        self.centroids = [(torch.from_numpy(p.lat), torch.from_numpy(p.lon)) for p in cells.partitions]
        return model

    def configure(self, model: GeoModel, freeze_backbone: bool) -> None:
        self.frozen = freeze_backbone
        model.requires_grad_(True)
        if freeze_backbone:
            model.encoder.requires_grad_(False)  # type: ignore[union-attr]

    def frozen_modules(self, model: GeoModel) -> list[nn.Module]:
        return [model.encoder] if self.frozen else []  # type: ignore[list-item]

    def layered_modules(self, model: GeoModel) -> list[nn.Module]:
        return [model.encoder]  # type: ignore[list-item]

    def loss(self, model: GeoModel, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        images = batch["images"]
        out = model(images)
        names = model.cells.names  # type: ignore[attr-defined]
        targets = self.targets[batch["index"]].to(images.device)
        soft = None
        if self.tau_km is not None:
            lat, lon = batch["latlon"][:, 0], batch["latlon"][:, 1]
            soft = [
                smoothed_cell_targets(lat, lon, c_lat, c_lon, self.tau_km).to(images.device)
                for c_lat, c_lon in self.centroids
            ]
        return geodecoder_loss(
            out,
            targets,
            names,
            batch["scene"].to(images.device),
            confidence_penalty=self.confidence_penalty,
            scene_weight=self.scene_weight,
            soft_targets=soft,
        )

    @torch.no_grad()
    def predict(self, model: GeoModel, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        pred = model.predict(batch["images"], 1)
        return pred.lat, pred.lon


__all__ = [
    "BUILDERS",
    "CONFIDENCE_PENALTY",
    "ENCODERS",
    "GeoDecoder",
    "GeoDecoderConfig",
    "GeoDecoderTask",
    "HierarchyDependentLayer",
    "build_geodecoder",
    "geodecoder_loss",
    "load_geodecoder",
    "save_checkpoint",
]
