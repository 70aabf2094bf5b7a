"""GeoCLIP from scratch (the paper's recipe), --train-fraction, and heads kept with their backbone.

Tiny HF CLIP tower and 24 photos from test_train's fixtures: seconds on CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_train import geoclip_cfg, photos, tiny_clip  # noqa: F401  (fixtures)
from tiny_weights import save_tiny_hf_clip
from typer.testing import CliRunner

from geotag.cli import app
from geotag.config import GEOCLIP_PAPER_RECIPE, TrainConfig
from geotag.engine.train import make_optimizer, run_train, step_lr_factor
from geotag.engine.train_data import load_samples, subset_samples
from geotag.errors import InputError, WeightsError
from geotag.models.checkpoint import list_checkpoints, read_config
from geotag.models.geoclip import LOGIT_SCALE_INIT
from geotag.models.registry import build_geoclip


def heads(model) -> dict[str, torch.Tensor]:
    state = model.state_dict()
    return {k: v.clone() for k, v in state.items() if not k.startswith("image_encoder.backbone.")}


def test_released_heads_refuse_another_backbone(tiny_clip: Path) -> None:  # noqa: F811
    with pytest.raises(WeightsError) as info:
        build_geoclip(backbone_weights=tiny_clip)
    message = str(info.value)
    assert "\n" not in message and "ViT-L/14 at 224 px" in message and "--allow-mismatched-heads" in message
    assert "--from-scratch" in message
    model = build_geoclip(backbone_weights=tiny_clip, allow_mismatched_heads=True)
    assert "MISMATCHED heads (trained on ViT-L/14 at 224 px" in model.weights_label


def test_missing_weights_message_no_longer_suggests_streetclip() -> None:
    from geotag.models.registry import GEOCLIP_BACKBONE, missing_weights_message

    assert "StreetCLIP" not in missing_weights_message(GEOCLIP_BACKBONE)


def test_reset_heads_is_random_seeded_and_not_released(tiny_clip: Path) -> None:  # noqa: F811
    released = heads(build_geoclip(backbone_weights=tiny_clip, allow_mismatched_heads=True))
    model = build_geoclip(backbone_weights=tiny_clip, released_heads=False)  # no released heads: no refusal
    assert "RANDOM heads" in model.weights_label
    model.reset_heads(0)
    first = heads(model)
    model.reset_heads(0)
    assert all(torch.equal(first[k], v) for k, v in heads(model).items())
    model.reset_heads(1)
    assert not torch.equal(
        first["location_encoder.LocEnc0.capsule.0.b"], heads(model)["location_encoder.LocEnc0.capsule.0.b"]
    )
    assert float(first["logit_scale"]) == pytest.approx(LOGIT_SCALE_INIT)
    for key, value in released.items():
        if key != "logit_scale":
            assert not torch.equal(first[key], value), key  # every head tensor differs from the release


def test_train_from_scratch_learns_and_loads_without_mismatch_flag(
    photos: Path,  # noqa: F811
    tmp_path: Path,
    tiny_clip: Path,  # noqa: F811
) -> None:
    run = tmp_path / "run"
    cfg = geoclip_cfg(
        photos,
        run,
        tiny_clip,
        from_scratch=True,
        allow_mismatched_heads=False,
        optimizer="adam",
        schedule="step",
        clip_grad=None,
        epochs=2,
        max_steps=4,
    )
    summary = run_train(cfg)
    assert summary.steps == 4
    start = build_geoclip(backbone_weights=tiny_clip, released_heads=False)
    start.reset_heads(cfg.seed)
    before = heads(start)
    trained_model = build_geoclip(backbone_weights=tiny_clip, weights=run)  # heads made for this tower
    assert "heads trained from scratch" in trained_model.weights_label
    after = heads(trained_model)
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert any(k.startswith("location_encoder.") for k in moved)  # the GPS encoder learned
    assert any(k.startswith("image_encoder.mlp.") for k in moved)
    assert all(torch.equal(before[k], after[k]) for k in before if k.endswith(".b"))  # RFF stay fixed
    config = read_config(list_checkpoints(run)[-1][1])["model_config"]
    assert (
        config["from_scratch"] and config["trained_gps_encoder"] and config["backbone_config"]["width"] == 32
    )
    with pytest.raises(WeightsError, match="allow-mismatched-heads"):  # other tower shape: refused
        build_geoclip(weights=run, allow_untrained=False, backbone_weights=tiny_other(tmp_path))


def tiny_other(tmp_path: Path) -> Path:
    """Another tower shape (48 wide, 32 px) than the tiny CLIP the heads were trained on."""
    return save_tiny_hf_clip(tmp_path / "other", hidden_size=48, image_size=32)


def test_train_fraction_is_seeded_exact_and_order_free(photos: Path) -> None:  # noqa: F811
    samples = load_samples([photos], None, workers=1)
    a = subset_samples(samples, 0.2, seed=3)
    assert len(a) == round(0.2 * len(samples)) and "--train-fraction 0.2" in a.notes[-1]
    assert a.image_ids.to_pylist() == subset_samples(samples, 0.2, seed=3).image_ids.to_pylist()
    reversed_ = samples.take(np.arange(len(samples))[::-1])
    assert set(subset_samples(reversed_, 0.2, seed=3).image_ids.to_pylist()) == set(a.image_ids.to_pylist())
    assert set(subset_samples(samples, 0.2, seed=4).image_ids.to_pylist()) != set(a.image_ids.to_pylist())


def test_train_fraction_in_a_run(photos: Path, tmp_path: Path, tiny_clip: Path) -> None:  # noqa: F811
    full = run_train(geoclip_cfg(photos, tmp_path / "a", tiny_clip, max_steps=1))
    part = run_train(geoclip_cfg(photos, tmp_path / "b", tiny_clip, max_steps=1, train_fraction=0.5))
    assert part.n_train == round(0.5 * full.n_train) and part.n_val == full.n_val
    with pytest.raises(InputError, match="train-fraction"):
        run_train(geoclip_cfg(photos, tmp_path / "c", tiny_clip, train_fraction=0.0))


def test_step_schedule_and_adam() -> None:
    assert step_lr_factor(0, 10, 0.87) == 1.0 and step_lr_factor(9, 10, 0.87) == 1.0
    assert step_lr_factor(10, 10, 0.87) == pytest.approx(0.87)
    assert step_lr_factor(35, 10, 0.87) == pytest.approx(0.87**3)
    assert step_lr_factor(0, 10, 0.87, warmup=4) == pytest.approx(0.25)
    p = torch.nn.Parameter(torch.ones(2, 2))
    opt = make_optimizer("adam", [{"params": [p], "weight_decay": 1e-6}], 3e-5, 1e-6)
    assert type(opt) is torch.optim.Adam
    assert type(make_optimizer("adamw", [{"params": [p]}], 3e-5, 1e-6)) is torch.optim.AdamW


def test_cli_from_scratch_uses_the_paper_recipe(photos: Path, tmp_path: Path, tiny_clip: Path) -> None:  # noqa: F811
    assert GEOCLIP_PAPER_RECIPE == {
        "batch_size": 512,
        "optimizer": "adam",
        "schedule": "step",
        "clip_grad": None,
    }
    defaults = TrainConfig(data=[], out=tmp_path)
    assert (defaults.lr, defaults.weight_decay, defaults.epochs, defaults.queue_size, defaults.lr_gamma) == (
        3e-5,
        1e-6,
        10,
        4096,
        0.87,
    )
    args = ["train", "--data", str(photos), "--out", str(tmp_path / "r"), "--from-scratch"]
    args += ["--backbone-weights", str(tiny_clip), "--workers", "0", "--device", "cpu"]
    res = CliRunner().invoke(app, args)
    assert isinstance(res.exception, InputError) and "(512)" in str(res.exception)  # batch 512 by default


def test_sigma_4096_branch_trains_from_scratch_and_loads(
    photos: Path,  # noqa: F811
    tmp_path: Path,
    tiny_clip: Path,  # noqa: F811
) -> None:
    run = tmp_path / "run"
    cfg = geoclip_cfg(photos, run, tiny_clip, from_scratch=True, gps_sigmas="1,16,256,4096", max_steps=2)
    run_train(cfg)
    model = build_geoclip(backbone_weights=tiny_clip, weights=run)
    enc = model.location_encoder
    assert enc.sigmas == (1.0, 16.0, 256.0, 4096.0) and hasattr(enc, "LocEnc3")
    std = enc.LocEnc3.capsule[0].b.std().item()
    assert 2000 < std < 8000  # the new branch's random Fourier matrix is N(0, 4096^2)
    out = model.encode_locations(torch.tensor([[48.85, 2.35], [-33.9, 151.2]]))
    assert out.shape == (2, 512) and torch.isfinite(out).all()
    with pytest.raises(InputError, match="needs --from-scratch"):
        run_train(geoclip_cfg(photos, tmp_path / "x", tiny_clip, gps_sigmas="1,4096"))
    with pytest.raises(InputError, match="comma-separated"):
        run_train(geoclip_cfg(photos, tmp_path / "y", tiny_clip, from_scratch=True, gps_sigmas="a,b"))
