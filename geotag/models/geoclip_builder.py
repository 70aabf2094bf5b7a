"""GeoCLIP's builder: the released heads from the geoclip package, the CLIP backbone from the resolver.

The registry names it by import path (`geotag.models.geoclip_builder:build_geoclip`) and imports it on use.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from geotag.errors import WeightsError
from geotag.io.gps_gallery import load_gallery
from geotag.models.base import Preprocess
from geotag.models.checkpoint import (
    checkpoint_file,
    checkpoint_label,
    load_model_weights,
    read_config,
    resolve_checkpoint,
)
from geotag.models.clip_convert import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    VIT_L14_OPENAI,
    ClipVisionConfig,
    create_clip_vit,
    load_backbone_state,
)
from geotag.models.geoclip import GeoCLIP, LocationEncoder, geoclip_version
from geotag.models.hub import GEOCLIP_BACKBONE, BackboneSource, missing_weights_message, resolve_backbone

log = logging.getLogger(__name__)


def build_geoclip(
    *,
    backbone_weights: Path | None = None,
    gallery: Path | None = None,
    allow_untrained: bool = False,
    weights: Path | None = None,
    vit: ClipVisionConfig = VIT_L14_OPENAI,
    source: BackboneSource = GEOCLIP_BACKBONE,
    released_heads: bool = True,
    allow_mismatched_heads: bool = False,
) -> GeoCLIP:
    """GeoCLIP with the released heads. `vit` other than the source's shape (tiny test towers) skips
    the hub: such a tower is either loaded from `backbone_weights` or, if allowed, left random.
    `weights`: a `geotag train` checkpoint (or run folder) whose trained heads (and backbone, if it was
    trained) replace the released ones; its gallery (the training coordinates) is the default gallery.
    `released_heads` False leaves the heads random (training from scratch). Heads are only used with
    the backbone shape they were trained on (see `check_heads_match`)."""
    checkpoint = resolve_checkpoint(weights) if weights is not None else None
    if checkpoint is not None and gallery is None:
        gallery = checkpoint_file(checkpoint, "gallery")
    points = load_gallery(gallery)  # a bad gallery file fails before a ViT-L is built
    found = resolve_backbone(source, vit, backbone_weights)
    if found is None and not allow_untrained:
        raise WeightsError(missing_weights_message(source))
    config = vit if found is None or found.config is None else found.config
    if config.proj_dim != 768:
        raise WeightsError(f"GeoCLIP needs a CLIP tower with 768-d projected features, got {config.proj_dim}")
    if found is not None:
        with torch.device("meta"):  # every tensor comes from the checkpoint: skip random init
            backbone = create_clip_vit(config)
        load_backbone_state(backbone, found.state_dict, found.name)
        label = f"{found.name} + geoclip {geoclip_version()} heads"
    else:
        backbone = create_clip_vit(config)
        label = f"UNTRAINED backbone (random init) + geoclip {geoclip_version()} heads"
        log.warning("GeoCLIP backbone is UNTRAINED (random init): predictions are meaningless")
    preprocess = (found.preprocess if found else None) or clip_preprocess(config.image_size)
    if gallery is not None:
        label += f"; gallery {Path(gallery).name} ({len(points)} points)"
    heads_for = heads_backbone(checkpoint, source.config) if released_heads else None
    # a tower found by the source's own hub ids is the released backbone by identity; files passed
    # with `backbone_weights` are checked by shape (a fine-tuned ViT-L/14-224 cannot be told apart)
    if heads_for is not None and backbone_weights is not None and found is not None and config != heads_for:
        if not allow_mismatched_heads:
            raise WeightsError(heads_mismatch_message(config, heads_for, checkpoint is not None))
        label += f"; MISMATCHED heads (trained on {describe_vit(heads_for)}, backbone {describe_vit(config)})"
        log.warning("GeoCLIP heads were trained on another backbone: predictions are degraded")
    model = GeoCLIP(backbone, preprocess, points, weights_label=label)
    model.backbone_config = config
    if released_heads:
        model.load_released_heads()
    else:
        model.weights_label = label.replace(f"geoclip {geoclip_version()} heads", "RANDOM heads")
    if checkpoint is not None:
        sigmas = read_config(checkpoint).get("model_config", {}).get("gps_sigmas")
        if sigmas is not None and tuple(sigmas) != model.location_encoder.sigmas:
            model.location_encoder = LocationEncoder(tuple(float(s) for s in sigmas))  # e.g. + sigma 2^12
        trained = load_model_weights(model, checkpoint, expect_model="geoclip")
        if trained.get("model_config", {}).get("from_scratch"):
            model.weights_label = model.weights_label.replace(
                f"geoclip {geoclip_version()} heads", "heads trained from scratch"
            )
        model.weights_label += f"; trained {checkpoint_label(checkpoint, trained)}"
    return model.eval()


def describe_vit(config: ClipVisionConfig) -> str:
    """A short name of a CLIP tower's shape, e.g. "ViT-L/14 at 336 px"."""
    name = {(1024, 24): "L", (768, 12): "B", (1280, 32): "H"}.get((config.width, config.layers))
    arch = f"ViT-{name}" if name else f"ViT {config.width}x{config.layers}"
    return f"{arch}/{config.patch_size} at {config.image_size} px"


def heads_backbone(checkpoint: Path | None, released: ClipVisionConfig) -> ClipVisionConfig | None:
    """The backbone shape the heads in use were trained on: a from-scratch checkpoint's recorded
    tower, else the released heads' (OpenAI ViT-L/14 at 224 px, also for fine-tuned released heads)."""
    if checkpoint is None:
        return released
    model_config = read_config(checkpoint).get("model_config", {})
    recorded = model_config.get("backbone_config")
    if model_config.get("from_scratch") and isinstance(recorded, dict):
        try:
            return ClipVisionConfig(**recorded)
        except TypeError as exc:
            raise WeightsError(f"checkpoint {checkpoint}: unreadable backbone_config ({exc})") from exc
    return released


def heads_mismatch_message(config: ClipVisionConfig, heads_for: ClipVisionConfig, trained: bool) -> str:
    what = "the checkpoint's heads were" if trained else "the released GeoCLIP heads were"
    return (
        f"{what} trained on CLIP {describe_vit(heads_for)}, not on this {describe_vit(config)} backbone: "
        "train heads for it (`geotag train --from-scratch --backbone-weights ...`), or pass "
        "--allow-mismatched-heads to use them anyway (the weights label records the mismatch)"
    )


def clip_preprocess(size: int = 224) -> Preprocess:
    """OpenAI CLIP's processor: shortest side to `size` (bicubic), centre crop, CLIP mean/std."""
    return Preprocess(size, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, "bicubic")
