"""`geotag train`: the training loop shared by every model; what is model-specific lives in a TrainTask.

One optimizer step = `accum` micro-batches of `batch_size` images. AdamW over parameter groups (no
weight decay on biases, norms and scalars such as GeoCLIP's logit scale; optional layer-wise LR decay over
the backbone's blocks), a linear warm-up then a cosine to `lr * min_lr_ratio` computed from the step
number alone, bf16 autocast on CUDA (float32 on CPU), global-norm gradient clipping.

Each epoch ends with a validation: the task predicts the validation images and the distances to their
truth give the standard accuracies (1 / 25 / 200 / 750 / 2500 km, d <= t, haversine R = 6,371.0088 km),
the median and mean error and GeoScore, appended to `OUT/metrics.csv` (first row: the constant baseline
that always answers the training coordinates' spherical mean). Checkpoints (see models/checkpoint.py)
are written every `save_every` steps, at each epoch end and at the end.

Exact resume: the data order is a permutation seeded by (seed, epoch), crops are seeded per image, the
DataLoader draws its worker seeds from its own generator, validation runs inside a forked RNG, and a
checkpoint holds the weights, the optimizer, the task state (GPS queue), the position and every RNG
state. On CPU a run cut at a checkpoint and resumed ends with the same bits as an uninterrupted run.

With `embeddings` (a `geotag embed` cache, io/embed_cache.py) the batches carry the frozen backbone's
cached features instead of pixels, and the task's `on_features` lets the model take them where it took
images: the same loop, losses, validation and checkpoints, without a backbone pass.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xxhash
from torch import nn
from torch.utils.data import DataLoader

from geotag import __version__
from geotag.config import TrainConfig
from geotag.engine import distributed, train_log, train_speed
from geotag.engine.predict import auto_workers, photo_loader, resolve_device
from geotag.engine.train_data import (
    EpochSampler,
    FeatureDataset,
    TrainDataset,
    TrainSamples,
    collate_features,
    collate_train,
    decode_pending,
    first_readable,
    load_samples,
    split_samples,
    subset_samples,
)
from geotag.errors import GeotagError, InputError, WeightsError
from geotag.geo.distance import DEFAULT_THRESHOLDS_KM, geoscore, haversine_np
from geotag.io import gpu_decode
from geotag.io.decode import normalize
from geotag.io.durable import (
    check_not_link,
    open_append,
    read_own_file,
    real_dir,
    remove_stale_temps,
    write_file,
)
from geotag.io.embed_cache import CacheInfo, read_cache
from geotag.io.pathtext import shown
from geotag.io.shards import shard_groups
from geotag.models.base import GeoModel
from geotag.models.checkpoint import (
    TrainerState,
    list_checkpoints,
    load_trainer_state,
    prune_checkpoints,
    read_train_info,
    rng_state,
    save_checkpoint,
    set_rng_state,
    step_dir,
)
from geotag.models.recipes import paper_frozen
from geotag.models.tasks import TrainTask, make_task
from geotag.progress import LogLines, log_lines

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.csv"
BEST_DIR = "best"  # the best validation's weights (--best-metric); not a step folder, so never pruned
STALE_TEMPS = re.compile(rf"step-\d+|{re.escape(BEST_DIR)}|{re.escape(METRICS_FILE)}")
"""Targets whose geotag temps (io/durable.py names) a killed run may leave in its folder."""
METRIC_KEYS = ("n", *(f"acc_{t}km" for t in DEFAULT_THRESHOLDS_KM), "median_km", "mean_km", "geoscore")
CSV_COLUMNS = ("kind", "epoch", "step", *METRIC_KEYS, "train_loss", "lr", "seconds")
RESUME_KEYS = (
    "model",
    "batch_size",
    "accum",
    "lr",
    "min_lr_ratio",
    "weight_decay",
    "warmup_steps",
    "clip_grad",
    "freeze_backbone",
    "layer_decay",
    "augment",
    "seed",
    "val_fraction",
    "train_gps_encoder",
    "queue_size",
    "from_scratch",
    "allow_mismatched_heads",
    "train_fraction",
    "optimizer",
    "schedule",
    "lr_gamma",
    "gps_sigmas",
    "variant",
    "label_smoothing_km",
    "cells_scale",
    "fusion",
    "stream",
    "shuffle_buffer",
)
"""Settings that shape the result: a resumed run must use the saved values."""


class TrainingDiverged(GeotagError):
    """The loss became NaN or infinite: the run stops (its last checkpoint stays usable)."""


# ------------------------------------------------------------------------------------------------
# Pieces (each tested on its own)


def lr_factor(step: int, total: int, warmup: int, min_ratio: float = 0.0) -> float:
    """Multiplier of the base LR for optimizer step `step` (0-based): linear warm-up over `warmup`
    steps to 1, then a half cosine down to `min_ratio` at `total`."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


OPTIMIZERS = ("adamw", "adam")
SCHEDULES = ("cosine", "step")


def step_lr_factor(step: int, steps_per_epoch: int, gamma: float, warmup: int = 0) -> float:
    """StepLR(step_size=1 epoch, gamma) as the released GeoCLIP trainer steps it after each epoch,
    times the linear warm-up when there is one."""
    factor = gamma ** (step // max(1, steps_per_epoch))
    return factor * ((step + 1) / warmup if warmup > 0 and step < warmup else 1.0)


def make_optimizer(name: str, groups: list[dict[str, Any]], lr: float, weight_decay: float) -> Any:
    """AdamW (decoupled decay), or Adam whose weight decay is L2 in the gradient (the paper's)."""
    cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    return cls(groups, lr=lr, weight_decay=weight_decay)


def param_groups(
    model: nn.Module, weight_decay: float, layer_decay: float = 1.0, layered: list[nn.Module] | None = None
) -> list[dict[str, Any]]:
    """AdamW groups of the trainable parameters, each with an `lr_scale`.

    Weight decay skips 1-d parameters (biases, norms) and scalars. With layer_decay < 1, the parameters
    of the `layered` timm modules are grouped by block (timm's param_groups_layer_decay: the last block
    keeps the full LR, each earlier one is scaled by layer_decay once more).
    """
    groups: list[dict[str, Any]] = []
    seen: set[int] = set()
    if layer_decay < 1.0:
        from timm.optim import param_groups_layer_decay

        for module in layered or []:
            for g in param_groups_layer_decay(module, weight_decay, layer_decay=layer_decay):
                params = [p for p in g["params"] if p.requires_grad and id(p) not in seen]
                seen.update(id(p) for p in params)
                if params:
                    groups.append(
                        {"params": params, "weight_decay": g["weight_decay"], "lr_scale": g["lr_scale"]}
                    )
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            (decay if p.ndim > 1 else no_decay).append(p)
    groups.append({"params": decay, "weight_decay": weight_decay, "lr_scale": 1.0})
    groups.append({"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0})
    return [g for g in groups if g["params"]]


def distance_metrics(
    pred_lat: np.ndarray, pred_lon: np.ndarray, lat: np.ndarray, lon: np.ndarray
) -> dict[str, float | int]:
    """Accuracy at the standard thresholds (d <= t), median / mean error (km) and mean GeoScore,
    named as `geotag eval` names them (acc_25km, ...)."""
    d = haversine_np(pred_lat, pred_lon, lat, lon)
    row: dict[str, float | int] = {"n": int(len(d))}
    for t in DEFAULT_THRESHOLDS_KM:
        row[f"acc_{t}km"] = float((d <= t).mean()) if len(d) else float("nan")
    row["median_km"] = float(np.median(d)) if len(d) else float("nan")
    row["mean_km"] = float(d.mean()) if len(d) else float("nan")
    row["geoscore"] = float(geoscore(d).mean()) if len(d) else float("nan")
    return row


def mean_location(lat: np.ndarray, lon: np.ndarray) -> tuple[float, float]:
    """Spherical mean of coordinates: the constant baseline's answer."""
    phi, lam = np.radians(lat), np.radians(lon)
    v = np.array([(np.cos(phi) * np.cos(lam)).sum(), (np.cos(phi) * np.sin(lam)).sum(), np.sin(phi).sum()])
    v /= max(np.linalg.norm(v), 1e-12)
    return float(np.degrees(np.arcsin(np.clip(v[2], -1, 1)))), float(np.degrees(np.arctan2(v[1], v[0])))


def fingerprint(samples: TrainSamples) -> str:
    """A hash of the training split's ids and coordinates: a resumed run must see the same data."""
    h = xxhash.xxh64()
    for i in samples.image_ids.to_pylist():
        h.update(str(i).encode())
        h.update(b"\0")
    h.update(np.round(samples.lat, 7).tobytes())
    h.update(np.round(samples.lon, 7).tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------
# Progress (the CLI passes a RichMonitor; library callers get silence)


class TrainMonitor:
    """Receives progress; the default does nothing (library functions never print)."""

    def start(self, total_steps: int, done_steps: int, info: dict[str, Any]) -> None: ...

    def step(self, step: int, logs: dict[str, float]) -> None: ...

    def validated(self, row: dict[str, Any]) -> None: ...

    def saved(self, path: Path) -> None: ...

    def close(self) -> None: ...


class RichMonitor(TrainMonitor):
    """A rich progress bar (steps, loss, LR) and one line per validation, on the given console; when
    stderr is no terminal, plain lines every --log-every seconds instead of the bar."""

    def __init__(self, console: Any, enabled: bool = True) -> None:
        self.console = console
        self.enabled = enabled
        self.progress: Any = None
        self.task: Any = None
        self.lines: LogLines | None = None

    def start(self, total_steps: int, done_steps: int, info: dict[str, Any]) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.console.print(
            f"training {info['model']} on {info['device']}: {info['n_train']} train / {info['n_val']} val "
            f"images, {info['steps_per_epoch']} steps per epoch",
            highlight=False,
            markup=False,
        )
        if not self.enabled:
            return
        if not self.console.is_terminal:
            self.lines = log_lines(total_steps, "train", unit="steps")
            if self.lines is not None:
                self.lines.n = self.lines.n0 = done_steps
            return
        self.progress = Progress(
            TextColumn("train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[logs]}"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task("train", total=total_steps, completed=done_steps, logs="")

    def step(self, step: int, logs: dict[str, float]) -> None:
        text = " ".join(f"{k} {v:.4g}" for k, v in logs.items())
        if self.progress is not None:
            self.progress.update(self.task, completed=step, logs=text)
        if self.lines is not None:
            self.lines.note = text
            self.lines.update(step - self.lines.n)

    def validated(self, row: dict[str, Any]) -> None:
        accs = " ".join(f"{t}km {row[f'acc_{t}km'] * 100:.1f}%" for t in DEFAULT_THRESHOLDS_KM)
        what = "baseline (mean location)" if row["kind"] == "baseline" else f"epoch {row['epoch']} val"
        self.console.print(
            f"{what}: {accs}, median {row['median_km']:,.0f} km (n={row['n']})",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )

    def saved(self, path: Path) -> None:
        self.console.print(f"checkpoint {shown(path)}", highlight=False, markup=False, soft_wrap=True)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
        if self.lines is not None:
            self.lines.close()


# ------------------------------------------------------------------------------------------------
# The loop


@dataclass
class TrainSummary:
    steps: int = 0
    epochs_done: int = 0
    checkpoint: Path | None = None  # the newest checkpoint (what `predict --weights` takes)
    metrics: list[dict[str, Any]] = field(default_factory=list)  # rows written to metrics.csv this run
    n_train: int = 0
    n_val: int = 0
    device: str = "cpu"
    resumed_from: Path | None = None
    notes: list[str] = field(default_factory=list)
    predict_args: str = ""  # `geotag predict` options that use the result
    unreadable: int = 0  # training / validation rows whose image could not be read (skipped, counted)
    unreadable_example: str = ""  # one of them: "path: why"


@dataclass
class Position:
    step: int = 0  # optimizer steps done
    epoch: int = 0  # current epoch
    micro: int = 0  # micro-batches of the current epoch done
    last_val_step: int = -1
    loss_sum: float = 0.0  # running training loss of the current epoch (survives a resume)
    loss_count: int = 0


def check_config(cfg: TrainConfig) -> None:
    if not cfg.data and cfg.embeddings is None:
        raise InputError("give the training data: --data, or --embeddings (a `geotag embed` cache)")
    if cfg.data and cfg.embeddings is not None:
        raise InputError("--embeddings trains on a cache of the data: drop --data (embed it instead)")
    if cfg.embeddings is not None and (cfg.seg_dir is not None or cfg.segmenter is not None):
        raise InputError(
            "--embeddings: the RGB-only rows train on cached features (no --seg-dir / --segmenter)"
        )
    if cfg.embeddings is not None and cfg.freeze_backbone is False:
        raise InputError("--embeddings trains heads over a frozen backbone: drop --full")
    if cfg.batch_size < 1 or cfg.accum < 1 or cfg.epochs < 1:
        raise InputError("--batch-size, --accum and --epochs must be at least 1")
    if not cfg.lr > 0:
        raise InputError(f"--lr must be positive, got {cfg.lr}")
    if not 0 < cfg.layer_decay <= 1:
        raise InputError(f"--layer-decay must be in (0, 1], got {cfg.layer_decay}")
    if cfg.warmup_steps < 0 or (cfg.clip_grad is not None and cfg.clip_grad < 0):
        raise InputError("--warmup-steps and --clip-grad must not be negative")
    if cfg.shuffle_buffer < 0:
        raise InputError("--shuffle-buffer must not be negative")
    if cfg.max_steps is not None and cfg.max_steps < 1:
        raise InputError("--max-steps must be at least 1")
    if not 0.0 < cfg.train_fraction <= 1.0:
        raise InputError(f"--train-fraction must be in (0, 1], got {cfg.train_fraction}")
    if cfg.optimizer not in OPTIMIZERS:
        raise InputError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {cfg.optimizer!r}")
    if cfg.schedule not in SCHEDULES:
        raise InputError(f"--schedule must be one of {', '.join(SCHEDULES)}, got {cfg.schedule!r}")
    if not 0.0 < cfg.lr_gamma <= 1.0:
        raise InputError(f"--lr-gamma must be in (0, 1], got {cfg.lr_gamma}")
    if cfg.gps_sigmas is not None and not cfg.from_scratch:
        raise InputError("--gps-sigmas needs --from-scratch (the released GPS encoder has sigmas 1, 16, 256)")
    if (cfg.from_scratch or cfg.allow_mismatched_heads) and cfg.model != "geoclip":
        raise InputError("--from-scratch and --allow-mismatched-heads apply to --model geoclip only")


def settings(cfg: TrainConfig) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items() if k != "data"} | {
        "data": [str(p) for p in cfg.data]
    }


def _autocast(device: torch.device, amp: bool) -> Any:
    return torch.autocast("cuda", dtype=torch.bfloat16) if amp and device.type == "cuda" else nullcontext()


@contextmanager
def _rng_preserved(device: torch.device) -> Iterator[None]:
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


def _loader(
    dataset: TrainDataset | FeatureDataset,
    batch_size: int,
    sampler: EpochSampler,
    workers: int,
    device: torch.device,
    seed: int,
) -> DataLoader:
    return photo_loader(
        dataset,
        batch_size,
        workers,
        device,
        collate_features if isinstance(dataset, FeatureDataset) else collate_train,
        sampler=sampler,
        generator=torch.Generator().manual_seed(seed),  # worker seeds never touch the global RNG
    )


def _short(value: object, limit: int = 60) -> str:
    """repr(value), cut: a value read from a crafted train.json is never printed at length."""
    text = repr(value) if not isinstance(value, int) or value.bit_length() < 200 else "<a huge number>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _int_or_none(text: object) -> int | None:
    try:
        return int(str(text))
    except ValueError:
        return None


def _has_input(batch: dict[str, Any]) -> bool:
    return batch.get("pixels") is not None or "features" in batch


def _to_device(batch: dict[str, Any], model: GeoModel, device: torch.device, samples: TrainSamples) -> dict:
    """The task's batch; with cached features (`train --embeddings`) they stand where the images did."""
    pre = model.preprocess()
    index = batch["index"].tolist()
    if "features" in batch:
        images = batch["features"].to(device, non_blocking=True)
    else:
        images = normalize(batch["pixels"].to(device, non_blocking=True), pre.mean, pre.std)
    return {
        "images": images,
        "latlon": batch["latlon"],
        "scene": batch["scene"],
        "index": batch["index"],
        "paths": [samples.paths[i].as_py() for i in index],
        "image_ids": [samples.image_ids[i].as_py() for i in index],
        **({"seg_maps": batch["seg_maps"].to(device)} if "seg_maps" in batch else {}),
    }


class Trainer:
    """One training run; `run_train` is the function to call."""

    def __init__(self, cfg: TrainConfig, task: TrainTask | None, monitor: TrainMonitor | None) -> None:
        check_config(cfg)
        self.cfg = cfg
        self.task = task if task is not None else make_task(cfg)
        self.world = distributed.env_world()  # torchrun's ranks (engine/distributed.py)
        self.monitor = (monitor if self.world.main else None) or TrainMonitor()
        self.out = Path(cfg.out)
        self.device = distributed.init(self.world, resolve_device(cfg.device))
        self.local_batch = distributed.check_batch(self.world, cfg.batch_size)
        self.workers = auto_workers(self.device) if cfg.workers is None else cfg.workers
        self.summary = TrainSummary(device=str(self.device))
        self.pos = Position()
        self.runlog = train_log.RunLog(self.out, (), False)
        self.best: float | None = None
        self.unreadable: set[int] = set()  # training rows i and validation rows as -1 - i, counted once
        self.unreadable_example = ""
        train_log.check_best_metric(cfg.best_metric, METRIC_KEYS)

    # -- setup --------------------------------------------------------------------------------------

    def _resume_point(self) -> Path | None:
        found = list_checkpoints(self.out)
        if found and not self.cfg.resume:
            raise InputError(
                f"{self.out} already holds checkpoints (newest {found[-1][1].name}): pass --resume to "
                "continue that run, or choose another --out"
            )
        if self.cfg.resume and not found:
            raise InputError(f"--resume: no checkpoint to resume from in {self.out}")
        return found[-1][1] if found else None

    def _check_resume(self, folder: Path, train: TrainSamples) -> None:
        info = read_train_info(folder)
        saved, now = info.get("settings", {}), settings(self.cfg)
        diff = [
            f"{k} {_short(saved.get(k))} -> {_short(now[k])}"
            for k in RESUME_KEYS
            if k in saved and saved[k] != now[k]
        ]
        if diff:
            raise InputError(f"--resume with other settings than the saved run: {', '.join(diff)}")
        if info.get("data_fingerprint") != fingerprint(train):
            raise InputError("--resume: the training data differ from the run being resumed")
        if saved.get("epochs") != self.cfg.epochs:
            self.summary.notes.append(
                f"epochs changed from {saved.get('epochs')} to {self.cfg.epochs}: the LR schedule changes"
            )

    def setup(self) -> None:
        cfg = self.cfg
        resume_from = self._resume_point()
        if cfg.embeddings is not None:  # cached backbone features (io/embed_cache.py), held in memory
            self.workers = 0
            self.cache, samples, self.features = read_cache(cfg.embeddings)
            self.val_cache, val, self.val_features = (
                read_cache(cfg.val) if cfg.val else (self.cache, None, self.features)
            )
        else:
            samples = load_samples(cfg.data, cfg.image_root, workers=max(1, self.workers))
            val = load_samples([cfg.val], cfg.image_root, workers=max(1, self.workers)) if cfg.val else None
        self.train, self.val = split_samples(samples, seed=cfg.seed, val_fraction=cfg.val_fraction, val=val)
        if cfg.train_fraction < 1.0:
            self.train = subset_samples(self.train, cfg.train_fraction, seed=cfg.seed)
        self.summary.notes.extend(self.train.notes + (val.notes if val is not None else []))
        if cfg.embeddings is None:
            self._check_readable(self.train)
        self.steps_per_epoch = len(self.train) // (cfg.batch_size * cfg.accum)
        if self.steps_per_epoch < 1:
            raise InputError(
                f"{len(self.train)} training images: fewer than one step of --batch-size x --accum "
                f"({cfg.batch_size * cfg.accum})"
            )
        self.total_steps = self.steps_per_epoch * cfg.epochs
        if cfg.stream:  # webdataset's order over the shard index (geotag.io.shards.stream_order)
            self.shard_groups = shard_groups(self.train.paths.to_pylist())
        if resume_from is not None:
            self._check_resume(resume_from, self.train)
        elif self.world.main:
            self._metrics_path().unlink(missing_ok=True)  # left by an earlier run that saved nothing
        if self.world.main:
            check_not_link(self._metrics_path())  # appended to: a planted link is refused, never followed
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        self.model = self.task.build(cfg, self.train, resume_from)
        frozen = paper_frozen(self.task.name) if cfg.freeze_backbone is None else cfg.freeze_backbone
        frozen = frozen or cfg.embeddings is not None  # heads only (check_config refused --full)
        self.task.configure(self.model, frozen)
        if cfg.embeddings is not None:
            self._check_cache(self.cache, cfg.embeddings)
            if cfg.val:
                self._check_cache(self.val_cache, cfg.val)
            if cfg.augment:
                self.summary.notes.append(
                    "--embeddings: features come from the eval transform (no random crops can be cached)"
                )
        train_speed.apply(self.model, self.task.layered_modules(self.model), cfg)
        if resume_from is not None:
            self.task.load_weights(self.model, resume_from)
        self.model.to(self.device)
        distributed.broadcast_parameters(self.world, self.model)
        groups = param_groups(
            self.model, cfg.weight_decay, cfg.layer_decay, self.task.layered_modules(self.model)
        )
        if not groups:
            raise InputError("nothing to train: every parameter is frozen")
        self.optimizer = make_optimizer(cfg.optimizer, groups, cfg.lr, cfg.weight_decay)
        if resume_from is not None:
            self._restore(resume_from)
        self.summary.n_train, self.summary.n_val = len(self.train), len(self.val)
        gpu = cfg.gpu_decode and gpu_decode.available(self.device)
        if cfg.gpu_decode and not gpu:
            self.summary.notes.append("--gpu-decode needs a CUDA device with nvJPEG: decoding on the CPU")
        self.dataset: TrainDataset | FeatureDataset = (
            FeatureDataset(self.train, self.features)
            if cfg.embeddings is not None
            else TrainDataset(
                self.train,
                self.model.preprocess(),
                augment=cfg.augment,
                seed=cfg.seed,
                seg_dir=cfg.seg_dir,
                gpu_decode=gpu,
            )
        )
        self.best = train_log.saved_best(self.out / BEST_DIR, cfg.best_metric) if resume_from else None
        self.runlog = train_log.RunLog(
            self.out, cfg.log_to, self.world.main, resume_step=self.pos.step, config=settings(cfg)
        )

    def _check_readable(self, samples: TrainSamples) -> None:
        """Refuse (one line, exit 2) to train when not one training image can be read: nothing would
        train, yet steps and a checkpoint would be written. Costs one decode on usable data."""
        first, failed = first_readable(samples)
        for i, why in failed:
            self._unreadable("train", i, why)
        if first < 0:
            raise InputError(
                f"none of the {len(samples)} training image(s) could be read (e.g. {self._example()}): "
                "check the paths of the data (missing files, URLs, devices and non-images are skipped)"
            )

    def _unreadable(self, split: str, index: int, why: str) -> None:
        self.unreadable.add(index if split == "train" else -1 - index)
        if not self.unreadable_example:
            samples = self.train if split == "train" else self.val
            self.unreadable_example = f"{samples.paths[index].as_py()}: {why}"[:300]

    def _example(self) -> str:
        return self.unreadable_example

    def _count_failed(self, batch: dict[str, Any], split: str) -> None:
        for index, why in batch.get("failed_items", ()):
            self._unreadable(split, int(index), str(why))

    def _check_cache(self, info: CacheInfo, folder: Path) -> None:
        """Cached features train only the heads they were made for: the same backbone weights (by
        fingerprint), the same preprocessing, a frozen backbone. One line otherwise."""
        from geotag.models.backbones import feature_fingerprint

        found = self.task.feature_module(self.model)
        if found is None:
            raise InputError(
                f"--embeddings: {self.task.name} cannot train on cached features (geoclip, geoclip-lite and "
                "translocator --variant vit can)"
            )
        module, dim = found
        mine = feature_fingerprint(module)
        if mine != info.fingerprint or dim != info.feature_dim:
            raise InputError(
                f"--embeddings {folder}: the cache holds {info.backbone} features ({info.weights}; "
                f"fingerprint {info.fingerprint}, {info.feature_dim}-d), not this model's backbone "
                f"({self.model.weights_label}; fingerprint {mine}, {dim}-d): embed with the model's "
                "backbone, or pass the --backbone-weights the cache was made with"
            )
        pre = json.loads(json.dumps(asdict(self.model.preprocess())))
        if pre != info.preprocess:
            raise InputError(
                f"--embeddings {folder}: made with preprocessing {info.preprocess}, the model uses {pre}"
            )

    def _inputs(self) -> Any:
        """The task's view of the model: fed cached features (train --embeddings) or images."""
        return self.task.on_features(self.model) if self.cfg.embeddings is not None else nullcontext()

    def _restore(self, folder: Path) -> None:
        state = load_trainer_state(folder)  # every field checked (models/checkpoint.py)
        try:
            self.optimizer.load_state_dict(state.optimizer)
            self.task.load_state_dict(state.task_tensors, state.task_scalars)
            self.pos = Position(**state.position)
            set_rng_state(state.rng_tensors, state.rng_json)
        except (ValueError, TypeError, KeyError, IndexError, RuntimeError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise WeightsError(
                f"checkpoint {folder}: its optimizer / trainer state does not fit this run ({first})"
            ) from exc
        self.summary.resumed_from = folder
        if self.world.main:
            self._truncate_metrics(self.pos.step)

    # -- metrics ------------------------------------------------------------------------------------

    def _metrics_path(self) -> Path:
        return self.out / METRICS_FILE

    def _truncate_metrics(self, step: int) -> None:
        """Drop rows an interrupted run wrote after the checkpoint being resumed (the file is read and
        rewritten without following a link: a planted one is refused)."""
        data = read_own_file(self._metrics_path())
        if data is None:
            return
        rows = list(csv.DictReader(io.StringIO(data.decode("utf-8", "replace"), newline="")))
        kept = [r for r in rows if _int_or_none(r.get("step")) is not None and int(r["step"]) <= step]
        self._write_metrics(kept, mode="w")

    def _write_metrics(self, rows: list[dict[str, Any]], mode: str = "a") -> None:
        """Append rows (a new file: the whole file, through a temp and a rename); never through a link."""
        path = self._metrics_path()
        new = mode == "w" or not os.path.lexists(path)
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, CSV_COLUMNS, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerows(rows)
        if new:
            write_file(path, text.getvalue().encode())
        else:
            with open_append(path) as fh:
                fh.write(text.getvalue().encode())

    def _record(self, row: dict[str, Any]) -> None:
        if not self.world.main:
            return
        self._write_metrics([row])
        self.summary.metrics.append(row)
        self.monitor.validated(row)
        if row["kind"] != "val":
            return
        self.runlog.validation(int(row["step"]), row)
        metric = self.cfg.best_metric
        if metric is not None and train_log.is_better(metric, float(row[metric]), self.best):
            self.best = float(row[metric])
            self.save_best(metric)

    # -- validation ---------------------------------------------------------------------------------

    @torch.no_grad()
    def validate(self) -> dict[str, Any] | None:
        if not len(self.val):
            return None
        model, cfg = self.model, self.cfg
        dataset: TrainDataset | FeatureDataset = (
            FeatureDataset(self.val, self.val_features)
            if cfg.embeddings is not None
            else TrainDataset(self.val, model.preprocess(), augment=False, seed=cfg.seed)
        )
        sampler = list(range(len(self.val)))
        loader = DataLoader(
            dataset,
            batch_size=cfg.batch_size,
            sampler=sampler,
            num_workers=self.workers,
            collate_fn=collate_features if isinstance(dataset, FeatureDataset) else collate_train,
            generator=torch.Generator().manual_seed(cfg.seed),
        )
        lat_p, lon_p, index = [], [], []
        with _rng_preserved(self.device):
            model.eval()
            self.task.before_validation(model)
            for batch in loader:
                self._count_failed(batch, "val")
                if not _has_input(batch):
                    continue
                b = _to_device(batch, model, self.device, self.val)
                with _autocast(self.device, cfg.amp), self._inputs():
                    lat, lon = self.task.predict(model, b)
                lat_p.append(lat.double().cpu().numpy())
                lon_p.append(lon.double().cpu().numpy())
                index.append(batch["index"].numpy())
        if not index:
            return None
        idx = np.concatenate(index)
        return distance_metrics(
            np.concatenate(lat_p), np.concatenate(lon_p), self.val.lat[idx], self.val.lon[idx]
        )

    def _baseline(self) -> None:
        if not len(self.val) or self.pos.step > 0 or self._metrics_path().is_file():
            return
        lat, lon = mean_location(self.train.lat, self.train.lon)
        n = len(self.val)
        row = distance_metrics(np.full(n, lat), np.full(n, lon), self.val.lat, self.val.lon)
        self._record({"kind": "baseline", "epoch": -1, "step": 0, **row})

    def _validate_and_record(self, epoch: int, loss: float | None, started: float) -> None:
        metrics = self.validate() if self.world.main else None  # rank 0 validates, the others wait
        distributed.barrier(self.world)
        self.pos.last_val_step = self.pos.step
        if metrics is None:
            return
        lr = self.optimizer.param_groups[0]["lr"]
        row = {"kind": "val", "epoch": epoch, "step": self.pos.step, **metrics}
        row.update(train_loss=loss, lr=lr, seconds=round(time.monotonic() - started, 1))
        self._record(row)

    # -- checkpoints --------------------------------------------------------------------------------

    def save(self) -> Path:
        folder = step_dir(self.out, self.pos.step)
        if not self.world.main:  # rank 0 alone writes; its RNG state stands for every rank
            distributed.barrier(self.world)
            self.summary.checkpoint = folder
            return folder
        task_tensors, task_scalars = self.task.state_dict()
        rng_tensors, rng_json = rng_state()
        trainer = TrainerState(
            optimizer=self.optimizer.state_dict(),
            position=asdict(self.pos),
            task_tensors=task_tensors,
            task_scalars=task_scalars,
            rng_tensors=rng_tensors,
            rng_json=rng_json,
        )
        info = self._info()
        model_info = {"train": {k: info[k] for k in ("step", "epoch", "settings", "split")}}
        save_checkpoint(folder, lambda tmp: self.task.write_model(self.model, tmp, model_info), info, trainer)
        prune_checkpoints(self.out, self.cfg.keep)
        self.summary.checkpoint = folder
        self.monitor.saved(folder)
        distributed.barrier(self.world)
        return folder

    def save_best(self, metric: str) -> None:
        """OUT/best/: the weights of the best validation so far (rank 0; no optimizer state)."""
        info = self._info() | {"best": {"metric": metric, "value": self.best, "step": self.pos.step}}
        model_info = {"train": {k: info[k] for k in ("step", "epoch", "settings", "split")}}
        save_checkpoint(
            self.out / BEST_DIR, lambda tmp: self.task.write_model(self.model, tmp, model_info), info
        )

    def _info(self) -> dict[str, Any]:
        cfg = self.cfg
        last = next((r for r in reversed(self.summary.metrics) if r["kind"] == "val"), None)
        info = {
            "geotag_version": __version__,
            "task": self.task.name,
            "step": self.pos.step,
            "epoch": self.pos.epoch,
            "settings": settings(cfg),
            "split": {
                "seed": cfg.seed,
                "val_fraction": cfg.val_fraction,
                "val": str(cfg.val) if cfg.val else None,
            },
            "data": {"n_train": len(self.train), "n_val": len(self.val)},
            "data_fingerprint": fingerprint(self.train),
            "metrics": {
                k: v for k, v in (last or {}).items() if isinstance(v, int | float) and math.isfinite(v)
            },
        }
        return info

    # -- the loop -----------------------------------------------------------------------------------

    def _train_mode(self) -> None:
        self.model.train()
        for module in self.task.frozen_modules(self.model):
            module.eval()

    def _optimizer_step(self) -> float:
        cfg = self.cfg
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        distributed.average_gradients(self.world, params)
        grads = [p.grad for p in params if p.grad is not None]
        total_norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
        if cfg.clip_grad and grads:
            torch.nn.utils.clip_grads_with_norm_(params, cfg.clip_grad, total_norm)
        norm = float(total_norm)
        if cfg.schedule == "step":
            factor = step_lr_factor(self.pos.step, self.steps_per_epoch, cfg.lr_gamma, cfg.warmup_steps)
        else:
            factor = lr_factor(self.pos.step, self.total_steps, cfg.warmup_steps, cfg.min_lr_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.lr * group.get("lr_scale", 1.0) * factor
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.pos.step += 1
        return norm

    def run(self) -> TrainSummary:
        cfg = self.cfg
        real_dir(self.out, parents=True)  # a link at the run folder's name is refused
        if self.world.main:  # what a run killed while writing a checkpoint left (never a link)
            stale = remove_stale_temps(self.out, STALE_TEMPS)
            if stale:
                self.summary.notes.append(f"removed {len(stale)} temporary file(s) left by a killed run")
        self.setup()
        stop_at = min(self.total_steps, cfg.max_steps or self.total_steps)
        micro_per_epoch = self.steps_per_epoch * cfg.accum
        started = self.started = time.monotonic()
        self.monitor.start(
            stop_at,
            self.pos.step,
            {
                "model": cfg.model,
                "device": self.device,
                "n_train": len(self.train),
                "n_val": len(self.val),
                "steps_per_epoch": self.steps_per_epoch,
            },
        )
        saved_at = self.pos.step if self.summary.resumed_from else -1
        try:
            self._baseline()
            self.optimizer.zero_grad(set_to_none=True)
            while self.pos.step < stop_at and self.pos.epoch < cfg.epochs:
                epoch_loss = self._run_epoch(stop_at, micro_per_epoch)
                if self.pos.micro < micro_per_epoch:
                    break  # stopped by max_steps inside the epoch
                self._validate_and_record(self.pos.epoch, epoch_loss, started)
                self.pos.epoch += 1
                self.pos.micro = 0
                self.pos.loss_sum, self.pos.loss_count = 0.0, 0
                self.summary.epochs_done += 1
                self.save()
                saved_at = self.pos.step
            if self.pos.last_val_step != self.pos.step and self.pos.step > 0:
                self._validate_and_record(self.pos.epoch, None, started)
            if saved_at != self.pos.step:
                self.save()
        finally:
            self.monitor.close()
            self.runlog.close()
            distributed.shutdown(self.world)
        self.summary.steps = self.pos.step
        self.summary.unreadable = len(self.unreadable)
        self.summary.unreadable_example = self._example()
        if self.summary.checkpoint is None and (found := list_checkpoints(self.out)):
            self.summary.checkpoint = found[-1][1]
        if self.summary.checkpoint is not None:
            self.summary.predict_args = self.task.predict_args(self.out, self.summary.checkpoint)
        return self.summary

    def _run_epoch(self, stop_at: int, micro_per_epoch: int) -> float | None:
        cfg, pos = self.cfg, self.pos
        self.dataset.epoch = pos.epoch
        sampler: Any
        if cfg.stream:
            sampler = distributed.stream_epoch(
                self.shard_groups,
                self.world,
                seed=cfg.seed,
                epoch=pos.epoch,
                workers=self.workers,
                local_batch=self.local_batch,
                batches=micro_per_epoch,
                buffer=cfg.shuffle_buffer,
            )[pos.micro * self.local_batch :]
        else:
            sampler = EpochSampler(
                len(self.train),
                cfg.seed,
                pos.epoch,
                pos.micro * cfg.batch_size,
                micro_per_epoch * cfg.batch_size,
            )
        if self.world.active and not cfg.stream:
            sampler = distributed.RankSampler(sampler.order.tolist(), cfg.batch_size, self.world)
        loader_seed = xxhash.xxh64_intdigest(f"loader:{cfg.seed}:{pos.epoch}:{pos.micro}".encode()) & (
            2**63 - 1
        )
        loader = _loader(self.dataset, self.local_batch, sampler, self.workers, self.device, loader_seed)
        logs: dict[str, float] = {}
        self._train_mode()
        tick = time.monotonic()
        pre = self.model.preprocess()
        for batch in loader:
            if "pending" in batch:  # --gpu-decode: the JPEGs the workers left as bytes
                batch = decode_pending(
                    batch, pre, self.device, seed=cfg.seed, epoch=pos.epoch, augment=cfg.augment
                )
            self._count_failed(batch, "train")
            if _has_input(batch):
                b = _to_device(batch, self.model, self.device, self.train)
                with _autocast(self.device, cfg.amp), self._inputs():
                    out = self.task.loss(self.model, b)
                (out["loss"] / cfg.accum).backward()
                value = distributed.mean_scalar(self.world, float(out["loss"].detach()), self.device)
                if not math.isfinite(value):
                    raise TrainingDiverged(
                        f"training diverged: the loss is {value} at step {pos.step + 1}; lower --lr, keep "
                        "--clip-grad on, or add --warmup-steps"
                    )
                pos.loss_sum, pos.loss_count = pos.loss_sum + value, pos.loss_count + 1
                logs = {k: float(v.detach().float().mean()) for k, v in out.items()}
                logs["loss"] = value  # the mean over the ranks
            pos.micro += 1
            if pos.micro % cfg.accum:
                continue
            logs["grad_norm"] = self._optimizer_step()
            logs["lr"] = self.optimizer.param_groups[0]["lr"]
            self.monitor.step(pos.step, logs)
            now = time.monotonic()
            self.runlog.step(pos.step, logs, cfg.batch_size * cfg.accum, now - tick, self.device)
            if cfg.val_every and pos.step % cfg.val_every == 0 and pos.micro < micro_per_epoch:
                self._validate_and_record(pos.epoch, None, self.started)
                self._train_mode()
            tick = time.monotonic()
            if cfg.save_every and pos.step % cfg.save_every == 0 and pos.micro < micro_per_epoch:
                self.save()
            if pos.step >= stop_at:
                break
        return pos.loss_sum / pos.loss_count if pos.loss_count else None


def run_train(
    cfg: TrainConfig, *, task: TrainTask | None = None, monitor: TrainMonitor | None = None
) -> TrainSummary:
    """Train `cfg.model` on `cfg.data` into the run folder `cfg.out` (see the module docstring).

    `task` overrides the registry's task for `cfg.model` (tests and benchmarks pass tiny models).
    """
    return Trainer(cfg, task, monitor).run()
