"""Model registry: a builder per named model, pretrained sources as data, and the weights resolver.

GeoCLIP's heads (image MLP, GPS encoder, logit scale) always come from the installed geoclip package.
Its CLIP backbone is resolved in this order, and the first hit wins:

1. `backbone_weights`: a timm state dict, an OpenAI/OpenCLIP checkpoint, or an HF CLIP folder / file;
2. the Hugging Face cache: timm's `timm/vit_large_patch14_clip_224.openai`, then transformers'
   `openai/clip-vit-large-patch14` (what the geoclip package itself downloads);
3. a download of the timm weights, only when not offline (HF_HUB_OFFLINE) and the hub answers a
   3-second connection probe, so an offline machine fails in well under a second instead of retrying;
4. random weights when `allow_untrained`, clearly labelled, else one WeightsError line saying what to do.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch

from geotag.errors import InputError, WeightsError
from geotag.models.base import GeoModel, Preprocess
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
    ClipCheckpoint,
    ClipVisionConfig,
    create_clip_vit,
    load_backbone_state,
    read_clip_checkpoint,
    read_state_dict,
)
from geotag.models.gallery import load_gallery
from geotag.models.geoclip import GeoCLIP, LocationEncoder, geoclip_version

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 3.0
_TIMM_FILES = (
    "model.safetensors",
    "open_clip_model.safetensors",
    "pytorch_model.bin",
    "open_clip_pytorch_model.bin",
)
_HF_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class BackboneSource:
    """Where a model's pretrained backbone lives (pretrained config as data, timm-style)."""

    description: str  # human name, e.g. "CLIP ViT-L/14 (OpenAI)"
    config: ClipVisionConfig
    timm_hub_id: str  # timm-format weights on the HF hub
    hf_clip_ids: tuple[str, ...] = ()  # transformers CLIP repos whose cache we also accept


@dataclass(frozen=True)
class ModelSpec:
    """A named model: its builder and the data that describes its pretrained weights."""

    name: str
    builder: Callable[..., GeoModel]
    description: str
    backbone: BackboneSource | None = None
    paper: str = ""


GEOCLIP_BACKBONE = BackboneSource(
    description="CLIP ViT-L/14 (OpenAI)",
    config=VIT_L14_OPENAI,
    timm_hub_id="timm/vit_large_patch14_clip_224.openai",
    hf_clip_ids=("openai/clip-vit-large-patch14",),
)


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


def build_translocator_checkpoint(**kwargs: Path | bool | None) -> GeoModel:
    """TransLocator from a checkpoint folder (`weights`); imported on use, it pulls in timm and SegFormer."""
    from geotag.models.translocator import build_for_registry

    return build_for_registry(**kwargs)  # type: ignore[arg-type]


def build_geodecoder_checkpoint(**kwargs: Path | bool | None) -> GeoModel:
    """GeoDecoder from a checkpoint folder (`weights`); imported on use, it pulls in timm."""
    from geotag.models.geodecoder import build_for_registry

    return build_for_registry(**kwargs)  # type: ignore[arg-type]


def build_experts_checkpoint(**kwargs: Path | bool | None) -> GeoModel:
    """Directed feature experts from a checkpoint folder (`weights`), with its instance segmenter."""
    from geotag.models.experts import build_for_registry

    return build_for_registry(**kwargs)  # type: ignore[arg-type]


def build_knn_gallery(**kwargs: Path | bool | None) -> GeoModel:
    """kNN over an embedding gallery (`geotag gallery build`); the gallery names its backbone."""
    from geotag.models.knn import build_knn

    return build_knn(**kwargs)  # type: ignore[arg-type]


def build_knn_leave_one_out(**kwargs: Path | bool | None) -> GeoModel:
    """kNN that ignores copies of the query in the gallery: scores a gallery on its own photos."""
    from geotag.models.knn import build_knn

    return build_knn(**kwargs, leave_one_out=True)  # type: ignore[arg-type]


def build_geoclip_lite_head(**kwargs: Path | bool | None) -> GeoModel:
    """GeoCLIP-Lite: EfficientNet-Lite + trained MLP (`weights`) against GeoCLIP's released GPS encoder."""
    from geotag.models.geoclip_lite import build_geoclip_lite

    return build_geoclip_lite(**kwargs)  # type: ignore[arg-type]


def clip_preprocess(size: int = 224) -> Preprocess:
    """OpenAI CLIP's processor: shortest side to `size` (bicubic), centre crop, CLIP mean/std."""
    return Preprocess(size, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, "bicubic")


MODELS: dict[str, ModelSpec] = {
    "geoclip": ModelSpec(
        name="geoclip",
        builder=build_geoclip,
        description="GeoCLIP: CLIP ViT-L/14 + GPS encoder, retrieval over a GPS gallery (100K MP-16 default)",
        backbone=GEOCLIP_BACKBONE,
        paper="Vivanco Cepeda et al., NeurIPS 2023",
    ),
    "translocator": ModelSpec(
        name="translocator",
        builder=build_translocator_checkpoint,
        description="TransLocator: dual ViT-B/16 over RGB + segmentation map, hierarchical S2 geocells",
        paper="Pramanick et al., ECCV 2022",
    ),
    "geodecoder": ModelSpec(
        name="geodecoder",
        builder=build_geodecoder_checkpoint,
        description="GeoDecoder: CLIP ViT-L/14 + hierarchy/scene queries, coarse-to-fine cross-attention",
        paper="Clark et al., CVPR 2023",
    ),
    "experts": ModelSpec(
        name="experts",
        builder=build_experts_checkpoint,
        description="Directed feature experts: crops of roads, buildings, vehicles, plants vote on a country",
        paper="Gong & Brumley",
    ),
    "knn": ModelSpec(
        name="knn",
        builder=build_knn_gallery,
        description="kNN: kernel-density mode of the k most similar photos of a `gallery build` file",
        paper="[L]kNN baseline, Vo et al., ICCV 2017",
    ),
    "knn-loo": ModelSpec(
        name="knn-loo",
        builder=build_knn_leave_one_out,
        description="kNN that skips copies of the query: scores a gallery on its own photos",
        paper="[L]kNN baseline, Vo et al., ICCV 2017",
    ),
    "geoclip-lite": ModelSpec(
        name="geoclip-lite",
        builder=build_geoclip_lite_head,
        description="GeoCLIP-Lite: EfficientNet-Lite + trained MLP, GeoCLIP's GPS encoder and gallery",
        paper="after Vivanco Cepeda et al., NeurIPS 2023",
    ),
}


def available_models() -> list[str]:
    return sorted(MODELS)


def build_model(
    name: str,
    *,
    backbone_weights: Path | None = None,
    gallery: Path | None = None,
    allow_untrained: bool = False,
    weights: Path | None = None,
    allow_mismatched_heads: bool = False,
) -> GeoModel:
    """Build a registered model, ready for `.to(device).eval()` and `prepare()`. `weights` is a trained
    checkpoint folder (TransLocator); models whose weights ship elsewhere ignore it.
    `allow_mismatched_heads`: GeoCLIP only (see build_geoclip)."""
    spec = MODELS.get(name)
    if spec is None:
        raise InputError(f"unknown model {name!r}; available: {', '.join(available_models())}")
    extra: dict[str, bool] = {}
    if allow_mismatched_heads:
        if name != "geoclip":
            raise InputError(f"--allow-mismatched-heads applies to --model geoclip only, not {name}")
        extra["allow_mismatched_heads"] = True
    return spec.builder(
        backbone_weights=backbone_weights,
        gallery=gallery,
        allow_untrained=allow_untrained,
        weights=weights,
        **extra,
    )


def missing_weights_message(source: BackboneSource) -> str:
    """One line that says exactly what to download or pass."""
    hf = " or ".join(source.hf_clip_ids)
    return (
        f"no weights for the {source.description} backbone (not passed, not in the Hugging Face cache, "
        f"hub unreachable or HF_HUB_OFFLINE set): run `hf download {source.timm_hub_id} model.safetensors`, "
        f"or pass --backbone-weights PATH (a timm state dict, or an HF CLIP folder such as {hf})"
    )


def resolve_backbone(
    source: BackboneSource, vit: ClipVisionConfig, path: Path | None
) -> ClipCheckpoint | None:
    """The backbone checkpoint by the order in the module docstring, or None when there is none."""
    if path is not None:
        ckpt = read_clip_checkpoint(Path(path))
        log.info("GeoCLIP backbone from %s", ckpt.name)
        return ckpt
    if vit != source.config:
        return None
    return _from_cache(source) or _download(source)


def hub_cache_dir() -> Path:
    """The HF hub cache, read from the environment at call time (not at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def hub_offline() -> bool:
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return flag in {"1", "ON", "YES", "TRUE"} or bool(constants.HF_HUB_OFFLINE)


def _cached(repo_id: str, filename: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(repo_id, filename, cache_dir=hub_cache_dir())
    return Path(hit) if isinstance(hit, str) else None


def _from_cache(source: BackboneSource) -> ClipCheckpoint | None:
    for filename in _TIMM_FILES:
        if (hit := _cached(source.timm_hub_id, filename)) is not None:
            log.info("GeoCLIP backbone from the HF cache: %s", hit)
            return ClipCheckpoint(read_state_dict(hit), None, None, f"{source.timm_hub_id} (HF cache)")
    for repo in source.hf_clip_ids:
        config = _cached(repo, "config.json")
        weights = next((w for f in _HF_FILES if (w := _cached(repo, f)) is not None), None)
        if config is not None and weights is not None:
            ckpt = read_clip_checkpoint(weights)
            log.info("GeoCLIP backbone from the HF cache: %s", weights)
            return ClipCheckpoint(ckpt.state_dict, ckpt.config, ckpt.preprocess, f"HF CLIP {repo} (HF cache)")
    return None


def _download(source: BackboneSource) -> ClipCheckpoint | None:
    if hub_offline() or not hub_reachable():
        return None
    from huggingface_hub import hf_hub_download

    try:
        file = hf_hub_download(source.timm_hub_id, "model.safetensors", cache_dir=hub_cache_dir())
    except Exception as exc:  # any hub/network failure means "no weights"; the caller says what to do
        log.warning("download of %s failed: %s", source.timm_hub_id, exc)
        return None
    return ClipCheckpoint(read_state_dict(Path(file)), None, None, f"{source.timm_hub_id} (downloaded)")


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Can we open a TCP connection to the hub endpoint within `timeout` (DNS included)?

    huggingface_hub retries a failed request five times with backoff (about 23 s here offline); this
    probe keeps an offline run's failure under `timeout`. It runs in a daemon thread because a stuck DNS
    lookup ignores socket timeouts.
    """
    from huggingface_hub import constants

    url = urlparse(os.environ.get("HF_ENDPOINT") or constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((url.hostname or "", port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def describe_models() -> list[tuple[str, str]]:
    """(name, description) pairs for `geotag models` style listings."""
    return [(name, MODELS[name].description) for name in available_models()]


__all__ = [
    "MODELS",
    "ModelSpec",
    "BackboneSource",
    "available_models",
    "build_model",
    "build_geoclip",
]
