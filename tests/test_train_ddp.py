"""Data-parallel training (engine/distributed.py) on CPU with gloo: 2 torchrun processes with the
global --batch-size B follow 1 process with batch B; rank 0 alone writes; resume across world sizes."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from geotag.engine.distributed import RankSampler, World, check_batch
from geotag.errors import InputError

from conftest import REPO, save_tiny_hf_clip, write_tagged_photos

sys.path.insert(0, str(Path(__file__).parent))
from ddp_worker import config, tiny_task  # noqa: E402

TORCHRUN = Path(sys.executable).with_name("torchrun")


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tagged_photos(tmp_path_factory.mktemp("photos"))


def torchrun(n: int, *args: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    cmd = [str(TORCHRUN), "--standalone", "--nproc-per-node", str(n), str(REPO / "tests/ddp_worker.py")]
    proc = subprocess.run([*cmd, *args], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]


def max_diff(a: Path, b: Path) -> float:
    x, y = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert x.keys() == y.keys()
    return max(float((x[k].double() - y[k].double()).abs().max()) for k in x)


def test_rank_sampler_splits_every_batch() -> None:
    order = list(range(10, 22))
    parts = [RankSampler(order, 4, World(rank=r, size=2)).indices for r in range(2)]
    assert parts == [[10, 11, 14, 15, 18, 19], [12, 13, 16, 17, 20, 21]]
    assert check_batch(World(size=2), 4) == 2
    with pytest.raises(InputError, match="divisible"):
        check_batch(World(size=3), 4)


@pytest.mark.skipif(not TORCHRUN.is_file(), reason="torchrun not installed")
def test_two_processes_match_one(photos: Path, tmp_path: Path) -> None:
    from geotag.engine.train import run_train

    torch.set_num_threads(1)
    single = run_train(config(photos, tmp_path / "one"), task=tiny_task())
    torchrun(2, str(photos), str(tmp_path / "two"))
    two = sorted((tmp_path / "two").glob("step-*"))
    assert [p.name for p in two] == [p.name for p in sorted((tmp_path / "one").glob("step-*"))]
    assert single.checkpoint is not None and single.steps == 4
    diff = max_diff(single.checkpoint, two[-1])
    assert diff < 1e-5, diff  # float summation order only (measured 1.8e-6 on weights of size ~1)
    # rank 0 alone wrote metrics.csv: one baseline and one row per validation, no duplicates
    with (tmp_path / "two" / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["kind"] for r in rows] == ["baseline", "val", "val"]
    with (tmp_path / "one" / "metrics.csv").open() as fh:
        ref = list(csv.DictReader(fh))
    assert abs(float(rows[-1]["train_loss"]) - float(ref[-1]["train_loss"])) < 1e-5
    # resume at another world size: 2 processes stop after step 2, 1 process finishes
    torchrun(2, str(photos), str(tmp_path / "mixed"), "2")
    resumed = run_train(config(photos, tmp_path / "mixed", resume=True), task=tiny_task())
    assert resumed.steps == 4 and resumed.checkpoint is not None
    assert max_diff(single.checkpoint, resumed.checkpoint) < 1e-5


@pytest.mark.skipif(not TORCHRUN.is_file(), reason="torchrun not installed")
def test_torchrun_module_cli(photos: Path, tmp_path: Path) -> None:
    """`torchrun -m geotag train` as users launch it: one report, one set of files (rank 0 only)."""
    save_tiny_hf_clip(tmp_path / "clip")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    out = tmp_path / "run"
    cmd = [str(TORCHRUN), "--standalone", "--nproc-per-node", "2", "-m", "geotag", "train"]
    cmd += ["--data", str(photos), "--out", str(out), "--model", "geoclip", "--batch-size", "4"]
    cmd += ["--backbone-weights", str(tmp_path / "clip"), "--max-steps", "2", "--workers", "0"]
    cmd += ["--device", "cpu", "--queue-size", "8", "--val-fraction", "0.2", "--best-metric", "median_km"]
    cmd += ["--allow-mismatched-heads"]  # the released heads on a tiny tower
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("trained 2 step(s)") == 1, proc.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["best", "metrics.csv", "step-00000002", "tb"]
    with (out / "metrics.csv").open() as fh:
        assert [r["kind"] for r in csv.DictReader(fh)] == ["baseline", "val"]
