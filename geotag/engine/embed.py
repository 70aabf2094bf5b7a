"""`geotag embed`: a frozen backbone's features of training data, computed once into an embedding cache
(io/embed_cache.py) that `train --embeddings` and `gallery build --embeddings` read, so head-only epochs
cost seconds instead of a pass of the backbone over every photo.

The data are read as `geotag train` reads them (engine/train_data.load_samples: folders, manifests, tar
shards, OSV-5M) and decoded with training's eval transform (TrainDataset without augmentation: the
predict engine's decode, resize and centre crop) in the predict engine's DataLoader (photo_loader,
--workers, pinned memory, bf16 autocast on CUDA). Random training crops cannot be cached: a head trained
on a cache sees the eval transform only. Part files are written one by one and atomically; a killed run
starts again at the first missing part of the same data and backbone.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from geotag.config import EmbedConfig, TrainConfig
from geotag.engine.predict import auto_batch_size, auto_workers, photo_loader, resolve_device
from geotag.engine.train import fingerprint
from geotag.engine.train_data import TrainDataset, load_samples
from geotag.errors import InputError
from geotag.io.decode import normalize
from geotag.io.durable import check_not_link, real_dir
from geotag.io.embed_cache import DTYPES, INFO_FILE, CacheInfo, parts_done, read_info, write_info, write_part
from geotag.io.samples import TrainSamples
from geotag.io.shards import is_shard_source
from geotag.models.backbones import BACKBONES, create_backbone, feature_fingerprint
from geotag.models.base import Preprocess
from geotag.models.tasks import TrainTask, make_task
from geotag.progress import progress_bar

log = logging.getLogger(__name__)

MODEL_BACKBONES = ("geoclip", "geoclip-lite", "translocator")
"""--backbone names that mean "the frozen backbone of this model" (its train task's feature_module)."""


@dataclass
class FeatureSource:
    """What makes the cached features: a module (normalised images -> features) and its identity."""

    name: str
    module: nn.Module
    preprocess: Preprocess
    feature_dim: int
    weights: str
    fingerprint: str


@dataclass
class EmbedSummary:
    samples: int = 0
    embedded: int = 0  # ok rows written by this run
    failed: int = 0  # error rows written by this run
    parts_written: int = 0
    parts_kept: int = 0  # parts an earlier run had written (resumed)
    backbone: str = ""
    feature_dim: int = 0
    device: str = "cpu"
    seconds: float = 0.0  # the whole run
    loop_seconds: float = 0.0  # decoding and the backbone only (what images/s is measured on)


def task_source(task: TrainTask, model: Any, name: str) -> FeatureSource:
    """The frozen backbone of a model built by its train task, as a feature source."""
    found = task.feature_module(model)
    if found is None:
        raise InputError(
            f"--backbone {name}: this model has no frozen backbone to cache (RGB-only rows only)"
        )
    module, dim = found
    return FeatureSource(
        name, module, model.preprocess(), dim, model.weights_label, feature_fingerprint(module)
    )


def resolve_source(cfg: EmbedConfig, samples: TrainSamples) -> FeatureSource:
    """--backbone: a backbones.py name, or a model whose frozen backbone is built as `train` builds it."""
    if cfg.backbone in BACKBONES:
        module, pre, dim = create_backbone(
            cfg.backbone, weights=cfg.backbone_weights, allow_untrained=cfg.allow_untrained
        )
        return FeatureSource(module.name, module, pre, dim, module.weights_label, module.fingerprint())
    if cfg.backbone not in MODEL_BACKBONES:
        names = ", ".join([*sorted(BACKBONES), *MODEL_BACKBONES])
        raise InputError(f"unknown --backbone {cfg.backbone!r}; choose one of {names}")
    tcfg = TrainConfig(
        data=[],
        out=cfg.out,
        model=cfg.backbone,
        backbone_weights=cfg.backbone_weights,
        allow_untrained=cfg.allow_untrained,
        allow_mismatched_heads=cfg.backbone == "geoclip",  # the heads are not used here
        variant="vit" if cfg.backbone == "translocator" else None,
        cells_scale="auto",  # the cells do not touch the features
    )
    task = make_task(tcfg)
    return task_source(task, task.build(tcfg, samples, None), cfg.backbone)


def load_with_sources(cfg: EmbedConfig) -> tuple[TrainSamples, list[str | None]]:
    """The samples as `train` reads them, and where each position came from (a gallery records it)."""
    parts, kinds = [], []
    for src in cfg.data:
        part = load_samples([src], cfg.image_root, workers=1)
        kind = "shards" if is_shard_source(str(src)) else "exif" if Path(src).is_dir() else "manifest"
        parts.append(part)
        kinds += [kind] * len(part)
    return TrainSamples.concat(parts), kinds


def _start(out: Path, info: CacheInfo) -> int:
    """The first part to write: 0 for a new folder, after the last whole part of an unfinished cache of
    the same data and backbone; one line when `out` holds something else."""
    if not out.exists():
        real_dir(out, parents=True)
        return 0
    check_not_link(out)  # a link at the folder's name is refused, never written into
    if not out.is_dir():
        raise InputError(f"--out {out} is a file, not a folder")
    if not (out / INFO_FILE).is_file():
        if any(out.iterdir()):
            raise InputError(f"--out {out} is not empty and holds no embedding cache: choose another folder")
        return 0
    old = read_info(out)
    keys = ("fingerprint", "data_fingerprint", "dtype", "shard_size", "feature_dim", "preprocess")
    diff = [k for k in keys if getattr(old, k) != getattr(info, k)]
    if diff:
        raise InputError(
            f"--out {out} holds an embedding cache of other data or another backbone ({', '.join(diff)} "
            "differ): choose another folder"
        )
    return parts_done(out, old)


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    good = [it for it in items if it["pixels"] is not None]
    return {
        "pixels": torch.stack([it["pixels"] for it in good]) if good else None,
        "good": [it["index"] for it in good],
        "bad": [(it["index"], it["error"]) for it in items if it["pixels"] is None],
    }


def run_embed(cfg: EmbedConfig, *, source: FeatureSource | None = None) -> EmbedSummary:
    """Write (or finish) the embedding cache of cfg.data in cfg.out; `source` overrides --backbone."""
    if cfg.dtype not in DTYPES:
        raise InputError(f"--dtype must be one of {', '.join(DTYPES)}, got {cfg.dtype!r}")
    if cfg.shard_size < 1:
        raise InputError("--shard-size must be at least 1")
    started = time.monotonic()
    device = resolve_device(cfg.device)
    out = Path(cfg.out)
    samples, kinds = load_with_sources(cfg)
    src = source or resolve_source(cfg, samples)
    info = CacheInfo(
        backbone=src.name,
        weights=src.weights,
        fingerprint=src.fingerprint,
        feature_dim=src.feature_dim,
        dtype=cfg.dtype,
        preprocess=dataclasses.asdict(src.preprocess),
        shard_size=cfg.shard_size,
        n_samples=len(samples),
        data_fingerprint=fingerprint(samples),
        sources=[str(s) for s in cfg.data],
    )
    info.preprocess = {k: list(v) if isinstance(v, tuple) else v for k, v in info.preprocess.items()}
    first = _start(out, info)
    summary = EmbedSummary(
        samples=len(samples),
        parts_kept=first,
        backbone=src.name,
        feature_dim=src.feature_dim,
        device=str(device),
    )
    write_info(out, info)
    module = src.module.to(device).eval()
    pre, size = src.preprocess, cfg.shard_size
    lo = first * size
    if lo < len(samples):
        dataset = TrainDataset(samples, pre, augment=False, seed=0, draft=cfg.draft)
        batch_size = cfg.batch_size or auto_batch_size(device)
        workers = auto_workers(device) if cfg.workers is None else cfg.workers
        loader = photo_loader(dataset, batch_size, workers, device, _collate, sampler=range(lo, len(samples)))
        amp = cfg.amp and device.type == "cuda"

        def flush(k: int, feats: np.ndarray, errors: list[str | None]) -> None:
            rows = np.arange(k * size, k * size + len(feats))
            write_part(out, k, info, samples.take(rows), [kinds[i] for i in rows], feats, errors)
            bad = sum(e is not None for e in errors)
            summary.parts_written += 1
            summary.failed += bad
            summary.embedded += len(errors) - bad

        k, feats, errors = first, None, None
        tick = time.monotonic()
        with progress_bar(len(samples) - lo, "embed", enabled=cfg.progress) as bar:
            for batch in loader:
                out_feats = None
                if batch["pixels"] is not None:
                    x = normalize(batch["pixels"].to(device, non_blocking=True), pre.mean, pre.std)
                    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if amp else nullcontext()
                    with torch.inference_mode(), autocast:
                        out_feats = module(x).float().cpu().numpy()
                done = [(i, out_feats[j], None) for j, i in enumerate(batch["good"])]
                done += [(i, None, e) for i, e in batch["bad"]]
                for i, f, e in sorted(done, key=lambda t: t[0]):
                    if feats is None:
                        n_k = min(size, len(samples) - k * size)
                        feats, errors = np.zeros((n_k, src.feature_dim), np.float32), [None] * n_k
                    assert errors is not None
                    if e is None:
                        feats[i - k * size] = f
                    else:
                        errors[i - k * size] = e or "cannot decode image"
                    if i == k * size + len(feats) - 1:  # the part's last row: write it
                        flush(k, feats, errors)
                        k, feats, errors = k + 1, None, None
                bar.update(len(done))
        summary.loop_seconds = time.monotonic() - tick
    _finish(out, info)
    summary.seconds = time.monotonic() - started
    return summary


def _finish(out: Path, info: CacheInfo) -> None:
    """Count the ok / error rows of every part and mark the cache complete."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from geotag.io.embed_cache import part_path

    ok = 0
    for k in range(info.n_parts):
        status = pq.read_table(part_path(out, k), columns=["status"]).column(0)
        ok += int(pc.sum(pc.equal(status, "ok")).as_py() or 0)
    info.ok, info.errors, info.complete = ok, info.n_samples - ok, True
    write_info(out, info)
