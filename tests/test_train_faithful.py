"""Training makes the papers' models: per-model settings are checked, not silently replaced."""

from __future__ import annotations

from pathlib import Path

import pytest

from geotag.config import TrainConfig
from geotag.errors import InputError
from geotag.models.tasks import make_task


@pytest.mark.parametrize("model", ["geodecoder", "experts"])
def test_an_unknown_variant_is_an_error_not_the_default(tmp_path: Path, model: str) -> None:
    with pytest.raises(InputError, match="unknown"):
        make_task(TrainConfig(data=[], out=tmp_path, model=model, variant="vit+seg+mff+scnee"))


def test_no_variant_means_each_models_paper_setting(tmp_path: Path) -> None:
    from geotag.models.experts import DEFAULT_EXPERT
    from geotag.models.geodecoder import DEFAULT_ENCODER

    decoder = make_task(TrainConfig(data=[], out=tmp_path, model="geodecoder"))
    experts = make_task(TrainConfig(data=[], out=tmp_path, model="experts"))
    assert (decoder.variant or DEFAULT_ENCODER) == DEFAULT_ENCODER  # type: ignore[attr-defined]
    assert experts.expert == DEFAULT_EXPERT  # type: ignore[attr-defined]
