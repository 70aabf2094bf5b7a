"""`geotag train --engine ray`: the same training loop on a Ray cluster through Ray Train.

A `ray.train.torch.TorchTrainer` starts one worker per process (one GPU each, or CPU workers); Ray Train
joins them into a torch.distributed group (NCCL on GPUs, gloo on CPUs) and sets RANK / WORLD_SIZE /
LOCAL_RANK, so every worker runs geotag's own Trainer exactly as under torchrun: engine/distributed.py
finds the group Ray made and uses it. `--batch-size` stays the global micro-batch, rank 0 alone writes
checkpoints, metrics.csv and the event files into `--out` (which must be a folder every node sees), and
`--resume` resumes from the newest checkpoint there, at this or another number of workers.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from geotag.config import TrainConfig
from geotag.engine.ray_predict import connect
from geotag.engine.train import TrainSummary, run_train
from geotag.errors import GeotagError, InputError
from geotag.io.shards import is_shard_source
from geotag.models.tasks import TrainTask

log = logging.getLogger(__name__)


def _worker(config: dict[str, Any]) -> TrainSummary:
    """One Ray Train worker: geotag's Trainer in the process group Ray set up (rank 0's return value
    is what `fit()` hands back)."""
    return run_train(config["cfg"], task=config["task"])


def plan_workers(gpus: int | None, actors: int | None, cluster_gpus: float, device: str) -> tuple[int, bool]:
    """(workers, use_gpu): `gpus` GPU workers (default every GPU of the cluster), else `actors` CPU
    workers (default 1); --device cpu keeps to CPU workers."""
    if device != "cpu" and gpus != 0 and (gpus or cluster_gpus >= 1):
        return (gpus or int(cluster_gpus)), True
    if device.startswith("cuda"):
        raise InputError(f"--device {device}: the Ray cluster has no GPU (pass --device cpu or --gpus 0)")
    return (actors or 1), False


def run_ray_train(
    cfg: TrainConfig,
    *,
    address: str | None = None,
    gpus: int | None = None,
    actors: int | None = None,
    task: TrainTask | None = None,
) -> TrainSummary:
    """Train `cfg` with Ray Train (module docstring); `task` as in run_train (tests pass tiny models)."""
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")  # rank 0's return value (2.43+; the default later)
    try:
        import ray
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer
    except ImportError as exc:
        raise InputError("--engine ray needs Ray Train: pip install 'geotag-photos[ray]'") from exc
    for src in [*cfg.data, *([cfg.val] if cfg.val else [])]:  # before a cluster starts for nothing
        if "://" not in str(src) and not is_shard_source(str(src)) and not Path(src).exists():
            raise InputError(f"training data not found: {src}")
    paths = {"out": Path(cfg.out).absolute(), "data": [_absolute(p) for p in cfg.data]}
    for name in ("val", "image_root", "backbone_weights", "gallery", "cells", "seg_dir"):
        if getattr(cfg, name) is not None:
            paths[name] = Path(getattr(cfg, name)).absolute()  # workers may start in another folder
    cfg = replace(cfg, **paths)
    started = connect(address)
    storage = tempfile.mkdtemp(prefix="geotag-ray-train-")  # Ray's own run records, not the run folder
    try:
        workers, use_gpu = plan_workers(gpus, actors, ray.cluster_resources().get("GPU", 0), cfg.device)
        device = cfg.device if use_gpu else "cpu"
        trainer = TorchTrainer(
            _worker,
            train_loop_config={"cfg": replace(cfg, device=device), "task": task},
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu),
            run_config=RunConfig(name="geotag-train", storage_path=storage),
        )
        try:
            result = trainer.fit()
        except Exception as exc:  # a library error inside a worker: one line, its exit code
            failures = getattr(exc, "worker_failures", {})  # Ray Train's WorkerGroupError
            for failure in [*failures.values(), exc]:
                if (cause := _geotag_cause(failure)) is not None:
                    raise cause from None
            raise
        summary = getattr(result, "return_value", None)  # rank 0's (Ray Train v2)
        if not isinstance(summary, TrainSummary):
            raise GeotagError("Ray Train returned no training summary: --engine ray needs Ray Train v2")
        return summary
    finally:
        shutil.rmtree(storage, ignore_errors=True)
        if started:
            ray.shutdown()


def _absolute(path: Path | str) -> Path | str:
    text = str(path)
    return text if "://" in text else Path(text).absolute()


def _geotag_cause(exc: BaseException | None) -> GeotagError | None:
    """The GeotagError a worker raised, through Ray's wrappers."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, GeotagError):
            return exc
        exc = getattr(exc, "cause", None) or exc.__cause__
        seen += 1
    return None
