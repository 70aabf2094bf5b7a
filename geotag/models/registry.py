"""Model registry as data (models.json): each name maps to its builder's import path and its sources.

A builder is named `"module:function"` and imported on first use (importlib), so the registry imports no
model module and no model imports the registry back: listing the models costs no timm / SegFormer
import, and no import circle runs through here. Weights resolution lives in `geotag.models.hub`.
"""

from __future__ import annotations

import importlib
import json
import socket  # noqa: F401  (re-exported: tests patch the hub probe's socket through this module)
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geotag.errors import InputError
from geotag.models.base import GeoModel
from geotag.models.geoclip_builder import build_geoclip, clip_preprocess
from geotag.models.hub import (  # re-exported: the registry's public face
    GEOCLIP_BACKBONE,
    BackboneSource,
    hub_cache_dir,
    hub_offline,
    hub_reachable,
    missing_weights_message,
    resolve_backbone,
)

SPECS_FILE = Path(__file__).with_name("models.json")


@dataclass(frozen=True)
class ModelSpec:
    """A named model: where its builder lives, fixed builder options, and its pretrained weights."""

    name: str
    builder_path: str  # "package.module:function"
    description: str
    backbone: BackboneSource | None = None
    paper: str = ""
    options: dict[str, Any] = field(default_factory=dict)  # extra keyword arguments for the builder

    @property
    def builder(self) -> Callable[..., GeoModel]:
        """The builder, imported now (it may pull in timm, SegFormer, Mask2Former)."""
        build = _resolve(self.builder_path)
        if not self.options:
            return build
        return lambda **kwargs: build(**kwargs, **self.options)


def _resolve(path: str) -> Any:
    """The object an import path `"package.module:attribute"` names, imported now."""
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


def load_specs(file: Path = SPECS_FILE) -> dict[str, ModelSpec]:
    """The registry table (models.json beside this module): name -> builder path, description, paper,
    backbone source (an import path to a BackboneSource) and fixed builder options."""
    table = json.loads(file.read_text())
    return {
        name: ModelSpec(
            name=name,
            builder_path=entry["builder"],
            description=entry["description"],
            backbone=_resolve(entry["backbone"]) if entry.get("backbone") else None,
            paper=entry.get("paper", ""),
            options=dict(entry.get("options", {})),
        )
        for name, entry in table.items()
    }


MODELS: dict[str, ModelSpec] = load_specs()


def available_models() -> list[str]:
    return sorted(MODELS)


def build_model(
    name: str,
    *,
    backbone_weights: Path | None = None,
    gallery: Path | None = None,
    allow_untrained: bool = False,
    weights: Path | None = None,
    exclude_same: str | None = None,
    truth: Path | None = None,
    allow_mismatched_heads: bool = False,
) -> GeoModel:
    """Build a registered model, ready for `.to(device).eval()` and `prepare()`. `weights` is a trained
    checkpoint folder (TransLocator); models whose weights ship elsewhere ignore it. `exclude_same`
    (knn-loo only) leaves out every gallery photo sharing the query's value of that `truth` column;
    `allow_mismatched_heads` (GeoCLIP only, see build_geoclip) uses heads trained on another backbone."""
    spec = MODELS.get(name)
    if spec is None:
        raise InputError(f"unknown model {name!r}; available: {', '.join(available_models())}")
    extra: dict[str, Any] = {}
    if exclude_same is not None:
        if name != "knn-loo":
            raise InputError("--exclude-same is for leave-one-out kNN (--model knn-loo)")
        extra = {"exclude_same": exclude_same, "truth": truth}
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


def describe_models() -> list[tuple[str, str]]:
    """(name, description) pairs for `geotag models` style listings."""
    return [(name, MODELS[name].description) for name in available_models()]


__all__ = [
    "GEOCLIP_BACKBONE",
    "MODELS",
    "ModelSpec",
    "BackboneSource",
    "available_models",
    "build_model",
    "build_geoclip",
    "clip_preprocess",
    "describe_models",
    "hub_cache_dir",
    "hub_offline",
    "hub_reachable",
    "missing_weights_message",
    "resolve_backbone",
]
