"""Live training metrics: TensorBoard event files in OUT/tb (and W&B / MLflow when asked for and
installed), per optimizer step and per validation, written by rank 0 only; and which validation is best.

Per step: loss (and the task's other loss terms), lr, grad_norm, images_per_s (global, between two
optimizer steps), gpu_mem_gib (peak allocated, CUDA only). Per validation: every `acc_<t>km`,
`median_km`, `mean_km`, `geoscore`, under `val/`.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch

from geotag.errors import InputError
from geotag.io.durable import real_dir

log = logging.getLogger(__name__)

BACKENDS = ("tensorboard", "wandb", "mlflow", "none")
TB_DIR = "tb"
LOWER_IS_BETTER = ("median_km", "mean_km")
"""Validation metrics where smaller wins; every other one (acc_*km, geoscore) is better higher."""


def check_best_metric(name: str | None, keys: tuple[str, ...]) -> None:
    if name is not None and name not in keys:
        raise InputError(f"--best-metric {name!r}: choose one of {', '.join(k for k in keys if k != 'n')}")


def is_better(metric: str, new: float, old: float | None) -> bool:
    """Whether the validation value `new` beats the best so far (`old`; None: none yet)."""
    if not math.isfinite(new):
        return False
    if old is None:
        return True
    return new < old if metric in LOWER_IS_BETTER else new > old


class RunLog:
    """The live record of one run. `enabled` is False on ranks other than 0 (nothing is written)."""

    def __init__(
        self,
        out: Path,
        backends: tuple[str, ...],
        enabled: bool,
        *,
        resume_step: int = 0,
        config: dict[str, Any] | None = None,
    ) -> None:
        unknown = [b for b in backends if b not in BACKENDS]
        if unknown:
            raise InputError(f"--log-to {unknown[0]!r}: choose from {', '.join(BACKENDS)}")
        self.tb: Any = None
        self.wandb: Any = None
        self.mlflow: Any = None
        if not enabled:
            return
        if "tensorboard" in backends:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                log.warning("tensorboard is not installed: no event files (pip install tensorboard)")
            else:
                # the folder is ours (made here, refused when a link: SummaryWriter would follow one);
                # purge_step drops events an interrupted run logged after the checkpoint being resumed
                folder = real_dir(out / TB_DIR)
                self.tb = SummaryWriter(str(folder), purge_step=resume_step or None)
        if "wandb" in backends:
            self.wandb = _require("wandb")
            self.wandb.init(dir=str(out), config=config or {}, resume="allow")
        if "mlflow" in backends:
            self.mlflow = _require("mlflow")
            self.mlflow.start_run()
            if config:
                self.mlflow.log_params({k: str(v)[:250] for k, v in config.items()})

    def scalars(self, step: int, values: dict[str, float], prefix: str) -> None:
        values = {f"{prefix}/{k}": float(v) for k, v in values.items() if _finite_number(v)}
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(values, step=step)
        if self.mlflow is not None:
            self.mlflow.log_metrics({k.replace("/", "_"): v for k, v in values.items()}, step=step)

    def step(
        self, step: int, logs: dict[str, float], images: int, seconds: float, device: torch.device
    ) -> None:
        values = dict(logs)
        if seconds > 0:
            values["images_per_s"] = images / seconds
        if device.type == "cuda":
            values["gpu_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        self.scalars(step, values, "train")

    def validation(self, step: int, row: dict[str, Any]) -> None:
        keys = [k for k in row if k.startswith("acc_") or k in ("median_km", "mean_km", "geoscore")]
        self.scalars(step, {k: row[k] for k in keys}, "val")
        if self.tb is not None:
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
        if self.mlflow is not None:
            self.mlflow.end_run()


def _finite_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _require(name: str) -> Any:
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        raise InputError(f"--log-to {name}: the {name} package is not installed") from None


def saved_best(folder: Path, metric: str | None) -> float | None:
    """The best value a resumed run has already kept in OUT/best (None: none, or another metric)."""
    import json

    try:
        best = json.loads((folder / "train.json").read_text()).get("best") or {}
    except (OSError, ValueError):
        return None
    return float(best["value"]) if metric and best.get("metric") == metric else None
