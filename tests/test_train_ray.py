"""`geotag train --engine ray`: Ray Train runs geotag's Trainer in 2 CPU workers (gloo, the process group
Ray sets up); the result equals a 1-process run with the same global batch, rank 0 alone writes."""

from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

import pytest
import torch

from geotag.engine.train import run_train

from conftest import write_tagged_photos

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'geotag-photos[ray]')")
pytest.importorskip("ray.train.torch")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

from geotag.engine.ray_train import plan_workers, run_ray_train  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from ddp_worker import config, tiny_task  # noqa: E402
from test_train_ddp import max_diff  # noqa: E402


def test_plan_workers() -> None:
    assert plan_workers(None, None, 8.0, "auto") == (8, True)
    assert plan_workers(2, None, 8.0, "cuda") == (2, True)
    assert plan_workers(0, 3, 8.0, "auto") == (3, False)
    assert plan_workers(None, None, 0.0, "auto") == (1, False)
    assert plan_workers(None, 2, 8.0, "cpu") == (2, False)


def test_ray_train_two_workers_match_one(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    photos = write_tagged_photos(tmp_path / "photos")
    torch.set_num_threads(1)
    single = run_train(config(photos, tmp_path / "one"), task=tiny_task())
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        summary = run_ray_train(config(photos, tmp_path / "two"), actors=2, task=tiny_task())
        assert summary.steps == 4 and summary.checkpoint is not None
        assert summary.checkpoint.parent == (tmp_path / "two").absolute()
        two = sorted((tmp_path / "two").glob("step-*"))
        assert [p.name for p in two] == [p.name for p in sorted((tmp_path / "one").glob("step-*"))]
        diff = max_diff(single.checkpoint, two[-1])
        assert diff < 1e-5, diff  # float summation order only
        with (tmp_path / "two" / "metrics.csv").open() as fh:
            assert [r["kind"] for r in csv.DictReader(fh)] == ["baseline", "val", "val"]  # rank 0 alone
        assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(
            p.name for p in (tmp_path / "one").iterdir()
        )
        # resume in Ray from the step-2 checkpoint the 2 workers wrote (a run cut there holds the same
        # folder: test_train_ddp.py cuts one with max_steps; a third Ray run costs ~25 s)
        assert two[0].name == "step-00000002"
        shutil.copytree(two[0], tmp_path / "cut" / two[0].name)
        resumed = run_ray_train(config(photos, tmp_path / "cut", resume=True), actors=2, task=tiny_task())
        assert resumed.steps == 4 and resumed.resumed_from is not None
        assert resumed.resumed_from.name == "step-00000002"
        assert max_diff(single.checkpoint, resumed.checkpoint) < 1e-5
    finally:
        ray.shutdown()


def test_cli_rejects_an_unknown_engine(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from geotag.cli import app

    result = CliRunner().invoke(
        app, ["train", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--engine", "spark"]
    )
    assert result.exit_code == 2 and "choose local or ray" in result.output
