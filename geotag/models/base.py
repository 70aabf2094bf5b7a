"""The interface between `engine/` and every model (GUIDE section 2).

The engine knows a model only through `GeoModel`: what pixels it wants (`preprocess`), a one-time
`prepare` after it is moved to its device, and `predict`, which returns plain CPU tensors the writer
turns into rows. Nothing here knows about files.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from geotag.errors import InputError


@dataclass(frozen=True)
class Preprocess:
    """What decode must produce: resize the shortest side to `input_size` (interpolation), centre-crop
    to input_size x input_size, scale to [0,1], normalise with mean/std."""

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"


@dataclass
class Prediction:
    """One batch of answers, on the CPU, ready for the writer.

    Coordinates are float64 degrees; scores and confidence are float32 probabilities. `extras` holds
    optional per-image string columns (`cell`, `scene`, `country`) for models that produce them.
    """

    lat: torch.Tensor  # (B,) degrees, float64 on CPU
    lon: torch.Tensor
    confidence: torch.Tensor  # (B,) in [0, 1]
    topk_lat: torch.Tensor  # (B, k)
    topk_lon: torch.Tensor
    topk_score: torch.Tensor  # (B, k) probabilities
    error_km: torch.Tensor | None = None  # (B,) the model's median-error radius, where it has one
    extras: dict[str, list[str | None]] = field(
        default_factory=dict
    )  # optional columns: cell, scene, country


class GeoModel(nn.Module):
    """Base class of every geolocation model the registry builds.

    `name` is the registry name; `weights_label` goes into the `weights` column of the predictions
    file and must say what weights are loaded (including "UNTRAINED backbone" when so), so a row can
    always be traced back to the weights that produced it.
    """

    name: str = ""
    weights_label: str = ""
    needs_image_keys: bool = False  # True: predict() also wants the batch's image_ids and paths
    accepts_prior: bool = False  # True: predict() takes `prior=` (a models.prior.Prior, one per photo)

    def set_tta(self, crops: int) -> None:
        """Test-time augmentation (several crops, probabilities averaged), for models that have it."""
        raise InputError(f"model {self.name!r} has no test-time augmentation (--tta-crops)")

    def set_segmentation(self, provider: object) -> None:
        """Another segmentation source (--seg-dir, --segmenter), for models with a segmentation branch."""
        raise InputError(f"model {self.name!r} has no segmentation branch (--seg-dir, --segmenter)")

    def use_segmenter(self, source: str) -> None:
        """Load the segmentation model this model needs from a hub id or a local folder (--segmenter)."""
        raise InputError(f"model {self.name!r} uses no segmentation model (--segmenter)")

    def preprocess(self) -> Preprocess:
        """The transform decode must apply before `forward` / `predict`."""
        raise NotImplementedError

    def prepare(self) -> None:
        """Called once by the engine after `.to(device).eval()`: cache what every batch reuses."""

    def compile_targets(self) -> list[nn.Module]:
        """The heavy submodules `--compile` hands to torch.compile (the backbones); none by default."""
        return []

    def shared_state(self) -> dict[str, torch.Tensor]:
        """What `prepare` computed that other replicas can adopt instead of recomputing it (the Ray
        engine computes it once and shares it through the object store); CPU tensors. Default: none."""
        return {}

    def adopt_shared_state(self, state: dict[str, torch.Tensor]) -> None:
        """Take another replica's `shared_state()` in place of `prepare()`."""
        self.prepare()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Raw model output (logits or embeddings) for normalised float images (B, 3, H, W)."""
        raise NotImplementedError

    def predict(self, images: torch.Tensor, top_k: int) -> Prediction:
        """Point estimate, confidence and the `top_k` best candidates for each image."""
        raise NotImplementedError
