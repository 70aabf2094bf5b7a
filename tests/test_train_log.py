"""Live metrics (engine/train_log.py): TensorBoard events read back, --val-every, --best-metric's OUT/best;
and the speed options (engine/train_speed.py): gradient checkpointing leaves the result unchanged."""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from safetensors.torch import load_file

from geotag.engine.train import run_train
from geotag.engine.train_log import is_better
from geotag.errors import InputError

from conftest import write_tagged_photos

sys.path.insert(0, str(Path(__file__).parent))
from ddp_worker import config, tiny_task  # noqa: E402


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tagged_photos(tmp_path_factory.mktemp("photos"))


def test_is_better() -> None:
    assert is_better("acc_25km", 0.2, 0.1) and not is_better("acc_25km", 0.1, 0.2)
    assert is_better("median_km", 100.0, 200.0) and not is_better("median_km", 300.0, 200.0)
    assert is_better("geoscore", 1.0, None) and not is_better("median_km", float("nan"), None)


def test_tensorboard_val_every_and_best(photos: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = config(photos, tmp_path / "run", epochs=1, accum=1, val_every=2, best_metric="median_km")
    summary = run_train(cfg, task=tiny_task())
    assert summary.steps == 5
    with (tmp_path / "run" / "metrics.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["kind"] == "val"]
    assert [int(r["step"]) for r in rows] == [2, 4, 5]  # steps 2 and 4 from --val-every, 5 at the epoch end
    acc = EventAccumulator(str(tmp_path / "run" / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in ("train/loss", "train/lr", "train/grad_norm", "train/images_per_s", "val/median_km"):
        assert tag in tags, tags
    assert all(f"val/acc_{t}km" in tags for t in (1, 25, 200, 750, 2500))
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3, 4, 5]
    logged = [e.value for e in acc.Scalars("val/median_km")]
    assert logged == pytest.approx([float(r["median_km"]) for r in rows], rel=1e-6)
    best = json.loads((tmp_path / "run" / "best" / "train.json").read_text())["best"]
    assert best["value"] == pytest.approx(min(logged), rel=1e-6) and best["metric"] == "median_km"
    assert (tmp_path / "run" / "best" / "model.safetensors").is_file()
    with pytest.raises(InputError, match="best-metric"):
        run_train(replace(cfg, out=tmp_path / "x", best_metric="acc_3km"), task=tiny_task())


def test_grad_checkpointing_same_result(photos: Path, tmp_path: Path) -> None:
    cfg = config(photos, tmp_path / "a", epochs=1, max_steps=2, log_to=())
    a = run_train(cfg, task=tiny_task())
    b = run_train(replace(cfg, out=tmp_path / "b", grad_checkpointing=True), task=tiny_task())
    x, y = load_file(a.checkpoint / "model.safetensors"), load_file(b.checkpoint / "model.safetensors")
    assert max(float((x[k] - y[k]).abs().max()) for k in x) < 1e-6
