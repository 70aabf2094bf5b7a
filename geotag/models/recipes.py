"""Each trainable model's paper recipe as data: what the paper froze, and the optimizer, learning rate,
batch and epochs it reports (None where geotag could not find a number; docs/training.md says so).

Only `frozen_backbone` is applied by default (`geotag train` without --freeze-backbone / --full); the
other numbers are documented so a run can follow them (their scale depends on the hardware and data)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    frozen_backbone: bool  # the paper's choice: True = a frozen pretrained backbone, False = end to end
    optimizer: str | None = None
    lr: float | None = None
    batch_size: int | None = None
    epochs: int | None = None
    source: str = ""


RECIPES: dict[str, Recipe] = {
    "geoclip": Recipe(
        True,
        "Adam (weight decay 1e-6, step LR decay 0.87 per epoch)",
        3e-5,
        512,
        10,
        "GeoCLIP paper's implementation details",
    ),
    "geoclip-lite": Recipe(True, source="geotag's own: GeoCLIP's recipe over a frozen EfficientNet-Lite"),
    "translocator": Recipe(False, source="TransLocator paper: both ViT branches fine-tuned end to end"),
    "geodecoder": Recipe(False, batch_size=128, source="GeoDecoder authors' code: batch 128, end to end"),
    "experts": Recipe(False, source="directed feature experts poster: experts fine-tuned end to end"),
}


def paper_frozen(model: str) -> bool:
    """Whether `model`'s paper trains with a frozen backbone (unknown models: frozen, the cautious way)."""
    recipe = RECIPES.get(model)
    return True if recipe is None else recipe.frozen_backbone
