"""Training checkpoints: plain folders that `geotag predict --weights` and `geotag train --resume` read.

A training run writes `step-00000100/`, `step-00000200/`, ... under its `--out` folder; each is written
under a hidden temporary name and renamed when complete, so a folder with a `step-` name is always whole
(`--weights RUN_DIR` takes the newest). Inside:

- the model's own files, which `registry.build_model(name, weights=folder)` reads. For models without a
  native format (GeoCLIP) that is a geotag checkpoint: `model.safetensors` (float32 state dict minus the
  frozen prefixes named in config.json: a frozen pretrained backbone is rebuilt from its own weights, not
  copied into every checkpoint) and `config.json` (model name, model config, preprocessing, skipped
  prefixes, extra files such as a gallery). TransLocator writes its own format (its config.json, weights
  and cells.parquet);
- `train.json`: the training settings, the data split, the step and the last validation metrics;
- `optimizer.safetensors` + `trainer.json`: optimizer tensors, and its param groups, the loop position,
  the task's scalar state and the Python / NumPy RNG states as JSON;
- `trainer.safetensors`: the torch RNG states, NumPy's key array and the task's tensors (GPS queue).

Nothing is pickled: tensors go through safetensors, everything else through JSON, so a checkpoint from
anywhere can be loaded without running its code.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from geotag.errors import RESUME_HINT, OutputError, WeightsError, disk_full
from geotag.io.durable import default_mode, is_disk_full, new_temp_dir

FORMAT = "geotag-checkpoint"
FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
OPTIMIZER_FILE = "optimizer.safetensors"
TRAINER_JSON = "trainer.json"
TRAINER_TENSORS = "trainer.safetensors"
TRAIN_JSON = "train.json"
_STEP_DIR = re.compile(r"step-(\d+)$")


@dataclass
class TrainerState:
    """What `--resume` needs beyond the model weights."""

    optimizer: dict[str, Any]  # torch optimizer state_dict
    position: dict[str, Any]  # step, epoch, batches done in the epoch, ...
    task_tensors: dict[str, torch.Tensor]
    task_scalars: dict[str, Any]
    rng_tensors: dict[str, torch.Tensor]
    rng_json: dict[str, Any]


# ------------------------------------------------------------------------------------------------
# Writing


def step_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / f"step-{step:08d}"


def model_state(model: nn.Module, skip_prefixes: Iterable[str] = ()) -> dict[str, torch.Tensor]:
    """The state dict to save: float tensors as float32, private copies (safetensors refuses shared
    storage), minus the keys under `skip_prefixes`."""
    skip = tuple(skip_prefixes)
    out = {}
    for key, value in model.state_dict().items():
        if skip and key.startswith(skip):
            continue
        value = value.detach().cpu()
        out[key] = (value.float() if value.is_floating_point() else value).contiguous().clone()
    return out


def flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A torch optimizer state_dict as (tensors, JSON): tensors keyed `state.<param>.<name>`."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entries in state["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{pid}.{name}"] = value.detach().cpu().contiguous().clone()
            else:
                scalars.setdefault(str(pid), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = value
    for pid, entries in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(entries)
    groups = []
    for group in meta["param_groups"]:
        group = dict(group)
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    return {"state": state, "param_groups": groups}


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Every RNG a training step may draw from: torch (CPU and each CUDA device), NumPy, Python."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["numpy.keys"] = torch.from_numpy(np.asarray(keys, dtype=np.uint32).astype(np.int64))
    version, internal, gauss_next = random.getstate()
    meta = {
        "numpy": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
    }
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    np_meta = meta["numpy"]
    keys = tensors["numpy.keys"].numpy().astype(np.uint32)
    np.random.set_state((np_meta["kind"], keys, np_meta["pos"], np_meta["has_gauss"], np_meta["cached"]))
    py = meta["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))


def _json_default(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.integer | np.floating):
        return value.item()
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, tuple | set):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, default=_json_default, allow_nan=False) + "\n")


def write_model_files(
    folder: Path,
    model: nn.Module,
    config: dict[str, Any],
    *,
    skip_prefixes: Iterable[str] = (),
    extra_files: dict[str, Callable[[Path], None]] | None = None,
) -> None:
    """The model part of a geotag checkpoint: model.safetensors and config.json (format fields and
    `skipped_prefixes` added to `config`); `extra_files` maps a file name to a function writing it."""
    skip = list(skip_prefixes)
    save_file(model_state(model, skip), folder / MODEL_FILE)
    for name, write in (extra_files or {}).items():
        write(folder / name)
    full = {"format": FORMAT, "format_version": FORMAT_VERSION, **config, "skipped_prefixes": skip}
    write_json(folder / CONFIG_FILE, full)


def save_checkpoint(
    folder: Path,
    write_model: Callable[[Path], None],
    train_info: dict[str, Any],
    trainer: TrainerState | None = None,
) -> Path:
    """Write a checkpoint folder atomically: a hidden temporary folder, renamed over any old one.

    `write_model(tmp)` writes the model's own files (a geotag checkpoint via `write_model_files`, or a
    model's native format such as TransLocator's), so `geotag predict --weights` reads the folder;
    `train_info` becomes train.json (settings, data split, step, metrics); `trainer` adds what
    `--resume` needs.
    """
    folder = Path(folder)
    tmp: Path | None = None
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = new_temp_dir(folder)  # private (0700) and unpredictable: nothing can be planted in it
        write_model(tmp)
        if trainer is not None:
            opt_tensors, opt_meta = flatten_optimizer(trainer.optimizer)
            save_file(opt_tensors, tmp / OPTIMIZER_FILE)
            tensors = {f"rng.{k}": v for k, v in trainer.rng_tensors.items()}
            tensors.update(
                {f"task.{k}": v.detach().cpu().contiguous() for k, v in trainer.task_tensors.items()}
            )
            save_file(tensors, tmp / TRAINER_TENSORS)
            write_json(
                tmp / TRAINER_JSON,
                {
                    "optimizer": opt_meta,
                    "position": trainer.position,
                    "task": trainer.task_scalars,
                    "rng": trainer.rng_json,
                },
            )
        write_json(tmp / TRAIN_JSON, train_info)
        fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            os.fchmod(fd, default_mode() | 0o111)  # what mkdir would have given
        finally:
            os.close(fd)
        old = None
        if folder.is_symlink():
            raise OSError(errno.EEXIST, "it is a symlink; give the real folder")
        if folder.exists():
            old = new_temp_dir(folder)
            os.replace(folder, old)  # onto an empty private folder of ours
        os.replace(tmp, folder)
        tmp = None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except (OSError, SafetensorError) as exc:  # safetensors reports a full disk with its own type
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(exc):
            raise disk_full(f"checkpoint {folder}", RESUME_HINT) from exc
        why = getattr(exc, "strerror", None) or exc
        raise OutputError(f"cannot write checkpoint {folder}: {why}") from exc
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Delete all but the `keep` newest step folders (keep <= 0 keeps all)."""
    if keep <= 0:
        return
    for _, path in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# Reading


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, folder) of the complete checkpoints in a run folder, oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = []
    for p in run_dir.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and (p / TRAIN_JSON).is_file():  # written last: a whole checkpoint
            found.append((int(m[1]), p))
    return sorted(found)


def resolve_checkpoint(path: Path) -> Path:
    """A checkpoint folder itself, or the newest complete one inside a run folder."""
    path = Path(path).expanduser()
    if (path / CONFIG_FILE).is_file() or (path / TRAIN_JSON).is_file():
        return path
    found = list_checkpoints(path)
    if not found:
        if not path.exists():
            raise WeightsError(f"weights not found: {path}")
        raise WeightsError(f"{path} is neither a geotag checkpoint nor a training run folder with one")
    return found[-1][1]


def read_config(folder: Path) -> dict[str, Any]:
    try:
        config = json.loads((Path(folder) / CONFIG_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise WeightsError(f"cannot read {folder / CONFIG_FILE}: {exc}") from exc
    if config.get("format") != FORMAT:
        raise WeightsError(
            f"{folder} is not a geotag checkpoint (config.json format {config.get('format')!r})"
        )
    if int(config.get("format_version", 0)) > FORMAT_VERSION:
        raise WeightsError(f"{folder} was written by a newer geotag (format {config['format_version']})")
    return config


def load_model_weights(model: nn.Module, folder: Path, *, expect_model: str | None = None) -> dict[str, Any]:
    """Load a checkpoint's model.safetensors into `model`; returns its config.

    Every saved tensor must fit the model, and every model key must be saved unless it lies under one
    of the checkpoint's skipped prefixes (the frozen backbone): one WeightsError line otherwise.
    """
    folder = resolve_checkpoint(folder)
    config = read_config(folder)
    if expect_model is not None and config.get("model") != expect_model:
        raise WeightsError(f"checkpoint {folder} holds a {config.get('model')!r} model, not {expect_model!r}")
    state = read_weights(folder / MODEL_FILE)
    load_state_checked(model, state, skip_prefixes=config.get("skipped_prefixes", ()), source=str(folder))
    return config


def read_train_info(folder: Path) -> dict[str, Any]:
    """A checkpoint's train.json (settings, split, step, metrics)."""
    try:
        return json.loads((Path(folder) / TRAIN_JSON).read_text())
    except (OSError, ValueError) as exc:
        raise WeightsError(f"cannot read {Path(folder) / TRAIN_JSON}: {exc}") from exc


def load_state_checked(
    model: nn.Module, state: dict[str, torch.Tensor], *, skip_prefixes: Iterable[str] = (), source: str = ""
) -> None:
    """Copy `state` into `model`: every saved tensor must fit, and every model key must be present unless
    it lies under `skip_prefixes`; one WeightsError line otherwise."""
    skip = tuple(skip_prefixes)
    own = model.state_dict()
    unexpected = [k for k in state if k not in own]
    missing = [k for k in own if k not in state and not (skip and k.startswith(skip))]
    wrong = [k for k in state if k in own and own[k].shape != state[k].shape]
    problems = []
    if unexpected:
        problems.append(f"unexpected {', '.join(unexpected[:4])}")
    if missing:
        problems.append(f"missing {', '.join(missing[:4])}")
    if wrong:
        problems.append(f"shape mismatch {', '.join(wrong[:4])}")
    if problems:
        raise WeightsError(f"checkpoint {source} does not fit the model: {'; '.join(problems)}")
    with torch.no_grad():
        for key, value in state.items():
            own[key].copy_(value)


def read_weights(file: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(file), device="cpu")
    except Exception as exc:  # safetensors or I/O: an unusable file
        raise WeightsError(f"cannot read {file}: {exc}") from exc


def load_trainer_state(folder: Path) -> TrainerState:
    folder = Path(folder)
    try:
        meta = json.loads((folder / TRAINER_JSON).read_text())
        opt_tensors = load_file(str(folder / OPTIMIZER_FILE), device="cpu")
        tensors = load_file(str(folder / TRAINER_TENSORS), device="cpu")
    except (OSError, ValueError) as exc:
        raise WeightsError(f"checkpoint {folder} has no usable trainer state to resume from: {exc}") from exc
    return TrainerState(
        optimizer=unflatten_optimizer(opt_tensors, meta["optimizer"]),
        position=meta["position"],
        task_tensors={k[5:]: v for k, v in tensors.items() if k.startswith("task.")},
        task_scalars=meta.get("task", {}),
        rng_tensors={k[4:]: v for k, v in tensors.items() if k.startswith("rng.")},
        rng_json=meta["rng"],
    )


def checkpoint_file(folder: Path, kind: str) -> Path | None:
    """An extra file a geotag checkpoint names in its config.json `files` (e.g. "gallery"), if present."""
    name = read_config(folder).get("files", {}).get(kind)
    path = Path(folder) / name if name else None
    return path if path is not None and path.is_file() else None


def checkpoint_label(folder: Path, config: dict[str, Any]) -> str:
    """What the `weights` column says about trained weights: folder and step."""
    step = config.get("train", {}).get("step")
    return f"checkpoint {Path(folder).resolve().name}" + (f" (step {step})" if step is not None else "")
