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
from geotag.models.checkpoint import checkpoint_file, checkpoint_label, load_model_weights, resolve_checkpoint
from geotag.models.clip_convert import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    VIT_L14_OPENAI,
    ClipVisionConfig,
    create_clip_vit,
    load_backbone_state,
)
from geotag.models.geoclip import GeoCLIP, geoclip_version
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
) -> GeoCLIP:
    """GeoCLIP with the released heads. `vit` other than the source's shape (tiny test towers) skips
    the hub: such a tower is either loaded from `backbone_weights` or, if allowed, left random.
    `weights`: a `geotag train` checkpoint (or run folder) whose trained heads (and backbone, if it was
    trained) replace the released ones; its gallery (the training coordinates) is the default gallery."""
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
    model = GeoCLIP(backbone, preprocess, points, weights_label=label)
    model.load_released_heads()
    if checkpoint is not None:
        trained = load_model_weights(model, checkpoint, expect_model="geoclip")
        model.weights_label += f"; trained {checkpoint_label(checkpoint, trained)}"
    return model.eval()


def clip_preprocess(size: int = 224) -> Preprocess:
    """OpenAI CLIP's processor: shortest side to `size` (bicubic), centre crop, CLIP mean/std."""
    return Preprocess(size, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, "bicubic")
