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
from geotag.io.checked_json import MAX_STEP, Fields, inside, is_finite_number, is_int, read_json_object
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
        if m and not p.is_symlink() and (p / TRAIN_JSON).is_file():  # written last: a whole checkpoint
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
    """A geotag checkpoint's config.json, read inside the folder, checked field by field (validate_config)."""
    config = read_json_object(Path(folder), CONFIG_FILE)
    if config.get("format") != FORMAT:
        what = config.get("format") if isinstance(config.get("format"), str) else None
        raise WeightsError(f"{folder} is not a geotag checkpoint (config.json format {str(what)[:40]!r})")
    validate_config(config, Path(folder))
    return config


def validate_config(config: dict[str, Any], folder: Path) -> None:
    """Every field of a geotag checkpoint's config.json geotag reads, by type and range; the names in
    `files` must lie inside the folder. One WeightsError line naming the file and field otherwise."""
    f = Fields(config, f"checkpoint {folder / CONFIG_FILE}")
    if f.int("format_version", 0, 10**6) > FORMAT_VERSION:
        raise WeightsError(f"{folder} was written by a newer geotag (format {config['format_version']})")
    f.str("model")
    f.list("skipped_prefixes", "strings", lambda v: isinstance(v, str), 1000, default=[])
    files = f.obj("files", default={})
    for kind in files.data:
        files.str(kind)
        inside(folder, files.data[kind], f"checkpoint {folder / CONFIG_FILE}: files.{kind}")
    model_config = f.obj("model_config", default={})
    model_config.list("gps_sigmas", "positive numbers", _positive, 64, default=None)
    model_config.bool("from_scratch", default=False)
    tower = model_config.obj("backbone_config", default=None)
    for key in ("width", "layers", "heads", "mlp_dim", "patch_size", "image_size"):
        tower.int(key, 1, 65_536, default=None)
    tower.int("proj_dim", 1, 65_536, default=None)
    tower.str("act", default=None)
    tower.number("ln_eps", default=None)
    f.obj("preprocess", default={})
    train = f.obj("train", default={})
    train.int("step", default=None)


def _positive(v: object) -> bool:
    return is_finite_number(v) and v > 0  # type: ignore[operator]


def load_model_weights(model: nn.Module, folder: Path, *, expect_model: str | None = None) -> dict[str, Any]:
    """Load a checkpoint's model.safetensors into `model`; returns its config.

    Every saved tensor must fit the model, and every model key must be saved unless it lies under one
    of the checkpoint's skipped prefixes (the frozen backbone): one WeightsError line otherwise.
    """
    folder = resolve_checkpoint(folder)
    config = read_config(folder)
    if expect_model is not None and config.get("model") != expect_model:
        raise WeightsError(f"checkpoint {folder} holds a {config.get('model')!r} model, not {expect_model!r}")
    state = read_weights(inside(folder, MODEL_FILE, f"checkpoint {folder / MODEL_FILE}"))
    load_state_checked(model, state, skip_prefixes=config.get("skipped_prefixes", ()), source=str(folder))
    return config


def read_train_info(folder: Path) -> dict[str, Any]:
    """A checkpoint's train.json (settings, split, step, metrics), checked field by field."""
    info = read_json_object(Path(folder), TRAIN_JSON)
    f = Fields(info, f"checkpoint {Path(folder) / TRAIN_JSON}")
    f.int("step")
    f.int("epoch")
    settings = f.obj("settings", default={})
    settings.int("epochs", 1, MAX_STEP, default=None)
    f.obj("split", default={})
    data = f.obj("data", default={})
    data.int("n_train", default=None)
    data.int("n_val", default=None)
    f.str("data_fingerprint", default=None)
    metrics = f.obj("metrics", default={})
    for key in metrics.data:
        metrics.number(key)
    best = f.obj("best", default=None)
    if best.data:
        best.str("metric")
        best.number("value")
        best.int("step")
    return info


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
    """What --resume reads back, checked (validate_trainer_json, the tensors' names and shapes):
    one WeightsError line naming the file and the field for anything that does not fit."""
    folder = Path(folder)
    meta = read_json_object(folder, TRAINER_JSON)
    validate_trainer_json(meta, folder)
    tensors_of = {}
    for name in (OPTIMIZER_FILE, TRAINER_TENSORS):
        path = inside(folder, name, f"checkpoint {folder / name}")
        try:
            tensors_of[name] = load_file(str(path), device="cpu")
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own types for a bad file
            raise WeightsError(
                f"checkpoint {folder} has no usable trainer state to resume from: {exc}"
            ) from exc
    opt_tensors, tensors = tensors_of[OPTIMIZER_FILE], tensors_of[TRAINER_TENSORS]
    where = f"checkpoint {folder / OPTIMIZER_FILE}"
    for key in opt_tensors:
        parts = key.split(".", 2)
        if len(parts) != 3 or parts[0] != "state" or not parts[1].isdigit():
            raise WeightsError(f"{where}: tensor names must be state.<param>.<name>")
    rng = tensors.get("rng.torch")
    keys = tensors.get("rng.numpy.keys")
    where = f"checkpoint {folder / TRAINER_TENSORS}"
    if rng is None or rng.dtype != torch.uint8 or rng.ndim != 1:
        raise WeightsError(f"{where}: rng.torch must be a 1-d uint8 tensor (torch's RNG state)")
    if keys is None or tuple(keys.shape) != (624,):
        raise WeightsError(f"{where}: rng.numpy.keys must hold NumPy's 624 state words")
    return TrainerState(
        optimizer=unflatten_optimizer(opt_tensors, meta["optimizer"]),
        position=meta["position"],
        task_tensors={k[5:]: v for k, v in tensors.items() if k.startswith("task.")},
        task_scalars=meta.get("task", {}),
        rng_tensors={k[4:]: v for k, v in tensors.items() if k.startswith("rng.")},
        rng_json=meta["rng"],
    )


POSITION_FIELDS = ("step", "epoch", "micro", "last_val_step", "loss_sum", "loss_count")


def validate_trainer_json(meta: dict[str, Any], folder: Path) -> None:
    """trainer.json's fields by type and range (a step count is at most MAX_STEP, and it agrees with the
    folder's name), so a crafted file is one line, never an internal error or a huge number printed."""
    f = Fields(meta, f"checkpoint {folder / TRAINER_JSON}")
    optimizer = f.obj("optimizer")
    optimizer.list("param_groups", "objects", lambda v: isinstance(v, dict), 10_000)
    scalars = optimizer.obj("scalars", default={})
    for pid in scalars.data:
        if not pid.isdigit():
            raise scalars.fail(pid, "keyed by a parameter number", pid)
        scalars.obj(pid)
    position = f.obj("position")
    step = position.int("step")
    position.int("epoch")
    position.int("micro")
    position.int("last_val_step", -1)
    position.number("loss_sum")
    position.int("loss_count")
    extra = sorted(set(position.data) - set(POSITION_FIELDS))
    if extra:
        raise position.fail(extra[0][:40], "absent (unknown field)", position.data[extra[0]])
    m = _STEP_DIR.match(folder.name)
    if m and int(m[1]) != step:
        raise WeightsError(
            f"checkpoint {folder / TRAINER_JSON}: position.step does not match the folder's step "
            f"({int(m[1])})"
        )
    f.obj("task", default={})
    rng = f.obj("rng")
    np_rng = rng.obj("numpy")
    np_rng.str("kind", ("MT19937",))
    np_rng.int("pos", 0, 624)
    np_rng.int("has_gauss", 0, 1)
    np_rng.number("cached")
    py = rng.obj("python")
    py.int("version", 0, 10)
    py.list("state", "integers", lambda v: is_int(v) and 0 <= v < 2**32, 625)
    if len(py.data["state"]) != 625:
        raise py.fail("state", "a list of 625 integers (Mersenne Twister's state)", py.data["state"])
    py.check("gauss_next", "null or a finite number", lambda v: v is None or is_finite_number(v))


def checkpoint_file(folder: Path, kind: str) -> Path | None:
    """An extra file a geotag checkpoint names in its config.json `files` (e.g. "gallery"), if present:
    always inside the checkpoint folder (read_config refuses a name leading out of it)."""
    name = read_config(folder).get("files", {}).get(kind)
    if not name:
        return None
    path = inside(Path(folder), name, f"checkpoint {Path(folder) / CONFIG_FILE}: files.{kind}")
    return path if path.is_file() else None


def checkpoint_label(folder: Path, config: dict[str, Any]) -> str:
    """What the `weights` column says about trained weights: folder and step."""
    step = config.get("train", {}).get("step")
    return f"checkpoint {Path(folder).resolve().name}" + (f" (step {step})" if step is not None else "")
