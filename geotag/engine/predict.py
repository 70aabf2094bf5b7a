"""`geotag predict`: photos in, one predictions row per file out, on CPU or CUDA.

Pipeline: the folder walk is written once to a work list (Arrow IPC, memory-mapped by the workers);
DataLoader worker processes hash, read EXIF and decode each photo (JPEG draft mode, EXIF orientation)
into uint8 tensors of the model's input size, in chunks of 32; a stager thread copies them pinned to
the device (on CUDA on a side stream), decodes with nvJPEG the share of large JPEGs the workers left
for it (--gpu-decode) and joins chunks into model batches; the main thread normalises them and runs
the model under bf16 autocast on CUDA (float32 on CPU); a writer thread streams rows into crash-safe
part files that are merged atomically at the end (see geotag.io.parts). geotag.engine.pipeline holds
the threads; docs/performance.md what each step measured. The engine knows models only through the
registry's GeoModel interface.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import warnings
from collections.abc import Container, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc
import torch
from torch.utils.data import DataLoader, Dataset

from geotag.config import PredictConfig
from geotag.engine.fusion import DEFAULT_KERNEL_KM, FUSE_CANDIDATES, SessionFuser
from geotag.engine.pipeline import LOADER_CHUNK, RowSink, Stager, compile_model
from geotag.engine.scan import default_workers, name_the_photo, note_warnings, scan_file
from geotag.engine.self_match import mark_truth_matches
from geotag.engine.sessions import check_fuse_options, group_codes, split_sessions
from geotag.engine.summary import PredictSummary, count_errors
from geotag.engine.timeplace import TimePlanner, count_sources
from geotag.errors import ImageError, InputError
from geotag.geo.places import add_countries
from geotag.geo.reach import ReachPrior, reach_prior
from geotag.io import gpu_decode
from geotag.io.c_stderr import c_messages, quiet_process
from geotag.io.decode import DECODE_LIMIT_PIXELS, decode_for_model, normalize
from geotag.io.parquet import iter_batches
from geotag.io.parts import PartStore
from geotag.io.pathtext import from_text
from geotag.io.scan import ImageRecord, PathFilter, WalkReport, iter_records, validate_paths
from geotag.io.shards import is_ref
from geotag.io.truth import Truth, apply_truth, load_truth, read_header
from geotag.models.base import GeoModel, Prediction, Preprocess
from geotag.models.prior import Prior
from geotag.models.registry import build_model
from geotag.progress import progress_bar

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA without one is an input error, not a crash."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise InputError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but no CUDA device is available; use --device cpu")
    return device


def auto_batch_size(device: torch.device) -> int:
    """Large enough to keep a GPU busy, small enough for its memory; modest on CPU."""
    if device.type != "cuda":
        return 8
    total_gib = torch.cuda.get_device_properties(device).total_memory / 2**30
    return 256 if total_gib >= 40 else 128 if total_gib >= 20 else 32


def auto_workers(device: torch.device) -> int:
    cores = os.cpu_count() or 1
    if device.type == "cuda":
        return max(1, min(cores - 1, 16))
    return max(0, min(cores // 2, 4))  # on CPU the model needs the cores too


class PhotoDataset(Dataset[dict[str, Any]]):
    """Item i of the work list: its scan row (identity, header, EXIF) and its model-ready pixels.

    A file already written by an earlier run (same image_id) comes back as `skip`; a file that cannot
    be decoded comes back as an error row with no pixels. Nothing here raises for a bad photo.
    """

    def __init__(
        self,
        work_list: Path,
        pre: Preprocess,
        draft: bool,
        skip_ids: set[str],
        *,
        gpu_share: float = 0.0,
        gpu_min_pixels: int = gpu_decode.DEFAULT_MIN_PIXELS,
        no_decode: Any = None,
        skip_tagged: bool = False,
    ) -> None:
        self.work_list = work_list
        self.no_decode = no_decode  # per item: placed by time, so the model needs no pixels
        self.skip_tagged = skip_tagged
        self.pre = pre
        self.draft = draft
        self.skip_ids = skip_ids
        self.gpu_share = gpu_share  # share of large, checked JPEGs left for nvJPEG (--gpu-decode)
        self.gpu_min_pixels = gpu_min_pixels
        self._table: pa.Table | None = None
        with ipc.open_file(work_list) as reader:
            self._len = sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))

    def _records(self) -> pa.Table:
        if self._table is None:  # opened lazily, once per worker process, memory-mapped
            self._table = ipc.open_file(pa.memory_map(str(self.work_list))).read_all()
        return self._table

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, i: int) -> dict[str, Any]:
        if torch.utils.data.get_worker_info() is not None:  # a worker's other threads only move data
            quiet_process()
        table = self._records()
        record = ImageRecord(
            path=Path(from_text(table["path"][i].as_py())),
            size=table["size"][i].as_py(),
            mtime=table["mtime"][i].as_py(),
        )
        if self.no_decode is not None and self.no_decode[i]:
            return {"row": scan_file(record), "pixels": None, "skip": False}
        gpu = {"gpu_share": self.gpu_share, "gpu_min_pixels": self.gpu_min_pixels}
        return read_item(record, self.pre, self.draft, self.skip_ids, **gpu, skip_tagged=self.skip_tagged)


def read_item(
    record: ImageRecord,
    pre: Preprocess,
    draft: bool,
    skip_ids: Container[str],
    *,
    gpu_share: float = 0.0,
    gpu_min_pixels: int | None = None,
    skip_tagged: bool = False,
) -> dict[str, Any]:
    """One photo's scan row and model-ready pixels (shared by the local and Ray engines, so both give
    the same row): `skip` when its image_id is in `skip_ids`; an undecodable photo is an error row.
    With `gpu_share`, a large JPEG that passes the CPU-side checks comes back as `gpu` (no pixels):
    the engine decodes it with nvJPEG (geotag.io.gpu_decode). `skip_tagged`: a photo with measured GPS
    in its EXIF is not decoded; its row keeps that position (`keep_measured`)."""
    row = scan_file(record)
    if row.get("image_id") in skip_ids:
        return {"row": row, "pixels": None, "skip": True}
    if skip_tagged and keep_measured(row):
        return {"row": row, "pixels": None, "skip": False}
    min_pixels = gpu_decode.DEFAULT_MIN_PIXELS if gpu_min_pixels is None else gpu_min_pixels
    if gpu_share > 0 and _for_gpu(row, gpu_share, min_pixels):
        orientation = gpu_decode.exif_orientation(record.path)
        return {"row": row, "pixels": None, "skip": False, "gpu": True, "orientation": orientation}
    pixels = None
    if row["status"] == "ok":
        pixels = decode_into_row(row, pre, draft)
    return {"row": row, "pixels": pixels, "skip": False}


def keep_measured(row: dict[str, Any]) -> bool:
    """--skip-tagged: a photo whose own EXIF holds GPS keeps it as its position, `source = exif`: the
    whole archive in one file, measured and estimated positions told apart by `source` (eval and the
    report do not score these rows; write-exif never writes them). False for any other row."""
    if row["status"] != "ok" or row.get("gt_source") != "exif" or row.get("gt_lat") is None:
        return False
    row.update(pred_lat=row["gt_lat"], pred_lon=row["gt_lon"], pred_alt=row.get("gt_alt"), source="exif")
    return True


def decode_into_row(row: dict[str, Any], pre: Preprocess, draft: bool) -> torch.Tensor | None:
    """The model's pixels of a scanned row's photo; a decoder failure makes it an error row, and what
    libtiff or LibRaw print on fd 2 and Pillow's warnings meanwhile go into its error or note (and the
    --verbose log), not around the summary."""
    pixels = None
    with warnings.catch_warnings(record=True) as caught, c_messages() as said:
        warnings.simplefilter("always")
        try:
            pixels = decode_for_model(row["path"], pre.input_size, pre.interpolation, draft=draft)
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a per-file error row
            text = (str(exc).strip() or type(exc).__name__).splitlines()[0][:300]
            row.update(status="error", error=f"cannot decode image: {text}")
    said = [name_the_photo(line, row["path"]) for line in said]
    if said and row["status"] == "error":
        row["error"] += f" ({'; '.join(said)[:300]})"
    note_warnings(row, caught, said)
    return pixels


def _for_gpu(row: dict[str, Any], share: float, min_pixels: int) -> bool:
    """A large JPEG in this run's GPU share that passes the CPU-side checks (end marker, header).
    MPO files (a second image after the first one's end marker) stay on the CPU: the end-marker check
    cannot vouch for the first image."""
    if row["status"] != "ok" or row.get("format") != "JPEG" or is_ref(row["path"]):
        return False  # a shard member stays on the CPU: the GPU path reads whole files
    pixels = (row.get("width") or 0) * (row.get("height") or 0)
    if pixels < min_pixels or pixels > DECODE_LIMIT_PIXELS:  # a huge JPEG: the CPU decodes it reduced
        return False
    if not gpu_decode.wants_gpu(row.get("image_id"), share):
        return False
    reason = gpu_decode.gpu_decode_reason(row["path"])
    if reason is not None:
        log.debug("%s stays on the CPU decoder: %s", row["path"], reason)
    return reason is None


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Rows stay a list; the decodable ones' pixels stack into one uint8 batch; rows left for nvJPEG
    are listed in `gpu_index` (with their EXIF orientation)."""
    kept = [it for it in items if not it["skip"]]
    rows = [it["row"] for it in kept]
    with_pixels = [it for it in kept if it["pixels"] is not None]
    pixels = torch.stack([it["pixels"] for it in with_pixels]) if with_pixels else None
    index = [i for i, it in enumerate(kept) if it["pixels"] is not None]
    gpu_index = [i for i, it in enumerate(kept) if it.get("gpu")]
    return {
        "rows": rows,
        "pixels": pixels,
        "index": index,
        "skipped": len(items) - len(rows),
        "gpu_index": gpu_index,
        "gpu_orientation": [kept[i]["orientation"] for i in gpu_index],
    }


def photo_loader(
    dataset: Any, batch_size: int, workers: int, device: torch.device, collate_fn: Any, **options: Any
) -> DataLoader:
    """The DataLoader predict and train share: decoding in `workers` processes, pinned memory for a CUDA
    device, workers started afresh each pass; `options` add the caller's sampler, seed or prefetch."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate_fn,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
        **options,
    )


def make_loader(dataset: PhotoDataset, batch_size: int, workers: int, device: torch.device) -> DataLoader:
    return photo_loader(
        dataset, batch_size, workers, device, collate, shuffle=False, prefetch_factor=4 if workers else None
    )


def run_model(
    model: GeoModel,
    pixels: torch.Tensor,
    device: torch.device,
    top_k: int,
    amp: bool,
    rows: list[dict[str, Any]] | None = None,
    prior: Prior | None = None,
) -> Prediction:
    """Normalise on the device and predict; bf16 autocast on CUDA only. `rows` (the scan rows of the
    images, in batch order) are handed on as image ids and paths to models that look files up."""
    pre = model.preprocess()
    batch = normalize(pixels.to(device, non_blocking=True), pre.mean, pre.std)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if (amp and device.type == "cuda") else nullcontext()
    )
    keys: dict[str, Any] = {}
    if model.needs_image_keys and rows is not None:
        keys = {"image_ids": [r.get("image_id") for r in rows], "paths": [r["path"] for r in rows]}
    if prior is not None:
        keys["prior"] = prior
    with torch.inference_mode(), autocast:
        return model.predict(batch, top_k, **keys)


def prediction_rows(pred: Prediction, model: GeoModel) -> Iterator[dict[str, Any]]:
    """The prediction columns of each image of a batch, in batch order."""
    lat, lon, conf = pred.lat.tolist(), pred.lon.tolist(), pred.confidence.tolist()
    tlat, tlon, tscore = pred.topk_lat.tolist(), pred.topk_lon.tolist(), pred.topk_score.tolist()
    radius = pred.error_km.tolist() if pred.error_km is not None else [None] * len(lat)
    for i in range(len(lat)):
        cols: dict[str, Any] = {
            "pred_lat": lat[i],
            "pred_lon": lon[i],
            "confidence": conf[i],
            "error_km": radius[i],
            "source": "model",
            "topk": [  # a NaN candidate is none (kNN with fewer eligible gallery entries than top-k)
                {"lat": a, "lon": b, "score": s}
                for a, b, s in zip(tlat[i], tlon[i], tscore[i], strict=True)
                if not (math.isnan(a) or math.isnan(b))
            ],
        }
        for name, values in pred.extras.items():
            cols[name] = values[i]
        yield cols


def predict_columns(
    model: GeoModel,
    pixels: torch.Tensor,
    rows: list[dict[str, Any]],
    device: torch.device,
    top_k: int,
    amp: bool,
    prior: ReachPrior | None = None,
) -> list[dict[str, Any]]:
    """Prediction columns for each decoded image. When the model rejects one image (ImageError), the
    batch is split so that only that image becomes an error row and the others are still predicted.
    `prior`: one row per image (geotag.geo.reach), or None."""
    try:
        return list(prediction_rows(run_model(model, pixels, device, top_k, amp, rows, prior), model))
    except ImageError as exc:
        if len(rows) == 1:
            return [{"status": "error", "error": str(exc)}]
        half = len(rows) // 2
        a, b = (
            (None, None) if prior is None else (prior.take(range(half)), prior.take(range(half, len(rows))))
        )
        return predict_columns(model, pixels[:half], rows[:half], device, top_k, amp, a) + predict_columns(
            model, pixels[half:], rows[half:], device, top_k, amp, b
        )


def complete_rows(
    rows: list[dict[str, Any]],
    pixels: torch.Tensor | None,
    index: list[int],
    model: GeoModel,
    device: torch.device,
    cfg: PredictConfig,
    manifest: Truth | None,
    common: dict[str, Any],
) -> None:
    """Fill one batch's scan rows in place: predictions for the decoded ones (`pixels` are rows[index]),
    countries, the model columns and a manifest's truth. Both engines call it, so rows agree."""
    if pixels is not None:
        decoded = [rows[i] for i in index]
        columns = predict_columns(model, pixels, decoded, device, cfg.top_k, cfg.amp)
        for i, cols in zip(index, columns, strict=True):
            rows[i].update(cols)
    add_countries(rows, ["country"])  # one vectorised lookup per batch, before a manifest acts
    for row in rows:
        if row.get("pred_lat") is not None and row.get("source") is None:
            row["source"] = "model"
        row.update(common if row.get("source") != "exif" else {})  # no model placed a measured row
        apply_truth(row, manifest)  # right before writing
    add_countries(rows, ["gt_country"])  # after the manifest, which may replace the truth
    mark_truth_matches(rows)  # once the truth is final


def load_model(
    cfg: PredictConfig, device: torch.device, shared: dict[str, torch.Tensor] | None = None
) -> GeoModel:
    """Build, move and prepare the model; `shared`: another replica's `shared_state()` (Ray actors)
    adopted instead of preparing again."""
    torch.manual_seed(cfg.seed)
    model = build_model(
        cfg.model,
        backbone_weights=cfg.backbone_weights,
        gallery=cfg.gallery,
        allow_untrained=cfg.allow_untrained,
        weights=cfg.weights,
        exclude_same=cfg.exclude_same,
        truth=cfg.truth,
        allow_mismatched_heads=cfg.allow_mismatched_heads,
    )
    apply_model_options(model, cfg)
    model.to(device).eval()
    with torch.inference_mode():
        if shared:
            model.adopt_shared_state(shared)
        else:
            model.prepare()
    return model


MIRRORED_TTA = (2, 10)
"""TTA crop counts whose views include horizontal mirrors (cell_head.tta_views)."""


def apply_model_options(model: GeoModel, cfg: PredictConfig) -> None:
    """Segmentation source and test-time augmentation; a model without them says so (exit 2)."""
    if cfg.seg_dir is not None:
        from geotag.models.segmentation import DiskSegmentation

        if not cfg.seg_dir.is_dir():
            raise InputError(f"--seg-dir {cfg.seg_dir}: no such folder")
        model.set_segmentation(DiskSegmentation(cfg.seg_dir))
    elif cfg.segmenter is not None:
        model.use_segmenter(cfg.segmenter)
    if cfg.tta_crops in MIRRORED_TTA and not cfg.tta_mirrors:
        raise InputError(
            f"--tta-crops {cfg.tta_crops} includes mirrored views, which swap the driving side and reverse "
            "writing (training never flips): use --tta-crops 5, or pass --tta-mirrors to average them anyway"
        )
    if cfg.tta_crops != 1:
        model.set_tta(cfg.tta_crops)


def run_predict(cfg: PredictConfig, model: GeoModel | None = None) -> PredictSummary:
    """Predict every photo under cfg.paths into cfg.out; `model` may be given (tests, benchmarks).

    With time evidence (cfg.time: tracks, siblings, zones, clocks; geotag.engine.timeplace) the photos
    time places are written without running the model; `cfg.model == "none"` runs no model at all.
    With `cfg.fuse` the photos of a session share evidence after the model pass (geotag.engine.fusion)."""
    check_fuse_options(cfg.fuse, cfg.session_gap, cfg.group_by, cfg.model, resume=cfg.resume)
    if cfg.model == "none" and model is None:
        from geotag.engine.time_only import run_time_only  # no model: no torch work, no decoding

        return run_time_only(cfg)
    if cfg.top_k < 1:
        raise InputError("--top-k must be at least 1")
    store = PartStore(cfg.out)
    validate_paths(cfg.paths)  # before any model is loaded
    column = group_column(cfg)
    manifest = (
        load_truth(cfg.truth, [column] if column else []) if cfg.truth is not None else None
    )  # likewise
    planner = None
    timed, fusing = cfg.time.active, cfg.fuse != "none"
    if timed or fusing:  # the options are checked (and tracks read) here, before a model is loaded
        pool = default_workers() if cfg.workers is None else max(1, cfg.workers)
        planner = TimePlanner(cfg.time, workers=pool, model_none=False)
    summary = PredictSummary()
    if not cfg.resume:
        summary.restarted = store.reset()
    done = store.done(include_out=cfg.resume)
    device = resolve_device(cfg.device)
    model = model if model is not None else load_model(cfg, device)
    summary.device, summary.weights = str(device), model.weights_label
    if cfg.compile:
        compile_model(model)
    gpu_share = cfg.gpu_decode_share if cfg.gpu_decode else 0.0
    if gpu_share and not gpu_decode.available(device):
        log.warning("--gpu-decode needs a CUDA device with nvJPEG; decoding on the CPU instead")
        gpu_share = 0.0

    walk = WalkReport()
    records = iter_records(cfg.paths, PathFilter.from_options(cfg.include, cfg.exclude, cfg.ext), walk)
    if planner is not None:
        records = planner.records(records, done)
    work_list, listed, summary.skipped, summary.changed = store.write_file_list(
        records, done, manifest.mark_done if manifest is not None else None
    )
    summary.unreadable_folders, summary.not_read = len(walk.unreadable), walk.not_read
    if planner is not None:
        planner.plan()
    fuser = session_fuser(planner, cfg, model, work_list, manifest, column) if fusing else None
    workers = auto_workers(device) if cfg.workers is None else cfg.workers
    common = {"model": model.name, "weights": model.weights_label}
    sources: dict[str, int] = {}

    def finish_rows(rows: list[dict[str, Any]]) -> None:  # on the writer thread
        complete_rows(rows, None, [], model, device, cfg, manifest, common)
        for row in rows:
            parts.write(row)
        count_sources(rows, sources)

    no_decode = planner.no_decode() if planner is not None else None
    prior = reachable_regions(planner, cfg, model)
    model_cfg = dataclasses.replace(cfg, top_k=fuse_top_k(model, cfg.top_k)) if fuser else cfg
    batches = _rows_with_model(model, model_cfg, work_list, device, workers, gpu_share, no_decode, prior)
    with (
        store.writer(cfg.checkpoint_rows) as parts,
        progress_bar(listed, "predict", enabled=cfg.progress) as bar,
        RowSink(finish_rows) as sink,
    ):
        k = 0
        for rows, skipped in batches:
            ready = rows
            if planner is not None:
                ready = []
                for row in rows:
                    if timed:
                        planner.fill(row, k)
                    ready += fuser.push(k, row) if fuser is not None else [row]
                    k += 1
            if ready or fuser is None:
                sink.put(ready)
            summary.new += len(rows)
            summary.skipped += skipped
            bar.update(len(rows) + skipped)
        if fuser is not None and (rest := fuser.finish()):
            sink.put(rest)

    metadata = {
        "command": "predict",
        "model": model.name,
        "weights": model.weights_label,
        **cfg.extra_metadata,
    }
    if fuser is not None:
        metadata["fusion"] = {**fuser.metadata(), "session_gap_s": cfg.session_gap, "group_by": cfg.group_by}
        summary.fused = (fuser.fused, len(fuser.sessions_fused))
    if planner is not None and timed:
        metadata["time"] = planner.metadata(sources)
        metadata["time"]["prior"] = prior_metadata(prior, cfg)
        summary.sources, summary.clocks = sources, planner.summary.clocks
    store.finalize(keep_existing=cfg.resume, metadata=metadata)
    summary.resumed, summary.deleted = cfg.resume, store.deleted
    summary.total, summary.failed = count_errors(cfg.out)
    if cfg.skip_tagged:
        summary.measured = sum(
            sum(1 for s in b.column(0).to_pylist() if s == "exif") for b in iter_batches(cfg.out, ["source"])
        )
    summary.truth = manifest.finish() if manifest is not None else None
    return summary


def _rows_with_model(
    model: GeoModel,
    cfg: PredictConfig,
    work_list: Path,
    device: torch.device,
    workers: int,
    gpu_share: float,
    no_decode: Any,
    prior: ReachPrior | None = None,
) -> Iterator[tuple[list[dict[str, Any]], int]]:
    """(rows, files skipped) per model batch, in work-list order, the decoded photos predicted; with
    `prior` (one row per work-list entry), each photo's reachable region guides the model."""
    pre = model.preprocess()
    dataset = PhotoDataset(
        work_list,
        pre,
        cfg.draft,
        set(),
        gpu_share=gpu_share,
        gpu_min_pixels=cfg.gpu_decode_min_pixels,
        no_decode=no_decode,
        skip_tagged=cfg.skip_tagged,
    )
    batch_size = cfg.batch_size or auto_batch_size(device)
    # workers hand over small chunks (the first reaches the model long before a whole batch would);
    # the stager thread joins them into model batches on the device
    loader = make_loader(dataset, min(batch_size, LOADER_CHUNK), workers, device)
    start = 0  # work-list index of the batch's first row
    with Stager(loader, pre, device, batch_size) as staged:
        for batch in staged:
            rows = batch.rows
            if batch.pixels is not None:
                pixels, decoded = batch.pixels, [rows[i] for i in batch.index]
                n = len(decoded)
                entries = [start + i for i in batch.index]
                if cfg.compile and n < batch_size:  # static shapes: pad rather than recompile
                    pixels = torch.cat([pixels, pixels[-1:].expand(batch_size - n, *pixels.shape[1:])])
                    decoded = decoded + [decoded[-1]] * (batch_size - n)
                    entries = entries + [entries[-1]] * (batch_size - n)
                part = batch_prior(prior, entries)
                columns = predict_columns(model, pixels, decoded, device, cfg.top_k, cfg.amp, part)[:n]
                for i, cols in zip(batch.index, columns, strict=True):
                    rows[i].update(cols)
            start += len(rows)
            yield rows, batch.skipped


def reachable_regions(planner: TimePlanner | None, cfg: PredictConfig, model: GeoModel) -> ReachPrior | None:
    """The reachable-region prior of every work-list entry (geotag.geo.reach, docs/time.md), or None:
    no fixes, --prior-window 0, no photo with a fix in its window, or a model that takes no prior."""
    if planner is None or not cfg.time.places or cfg.time.prior_window <= 0:
        return None
    utc, fixes = planner.prior_inputs()
    prior = reach_prior(utc, fixes, max_speed_kmh=cfg.time.max_speed, window_s=cfg.time.prior_window)
    if not prior.has_fix.any():
        return None
    if not model.accepts_prior:
        log.warning("model %s takes no prior: the reachable regions of %d photos are not used",
                    model.name, int(prior.has_fix.sum()))  # fmt: skip
        return None
    return prior


def batch_prior(prior: ReachPrior | None, entries: list[int]) -> ReachPrior | None:
    """The prior of a model batch (work-list entries in batch order), None where none of them has one."""
    if prior is None:
        return None
    part = prior.take(entries)
    return part if part.has_fix.any() else None


def prior_metadata(prior: ReachPrior | None, cfg: PredictConfig) -> dict[str, Any]:
    """What the predictions file says about the prior: its settings and how many photos it guided."""
    return {
        "photos": int(prior.has_fix.sum()) if prior is not None else 0,
        "prior_window_s": cfg.time.prior_window,
        "max_speed_kmh": cfg.time.max_speed,
    }


def group_column(cfg: PredictConfig) -> str | None:
    """The manifest column `--group-by` names (matched without regard to case), None for `folder` or no
    grouping; InputError when there is no manifest or no such column."""
    if cfg.fuse == "none" or cfg.group_by is None or cfg.group_by == "folder":
        return None
    if cfg.truth is None:
        raise InputError(
            f"--group-by {cfg.group_by}: a manifest column needs --truth MANIFEST (or --group-by folder)"
        )
    columns = read_header(cfg.truth)
    found = [c for c in columns if c.casefold() == cfg.group_by.strip().casefold()]
    if not found:
        raise InputError(
            f"--group-by {cfg.group_by}: not folder, nor a column of {cfg.truth} "
            f"(it has {', '.join(columns)})"
        )
    return found[0]


def fuse_top_k(model: GeoModel, top_k: int) -> int:
    """The candidates asked of the model when fusing: FUSE_CANDIDATES, or all of a shared candidate set
    that holds fewer (a GPS gallery, fine cells: those models refuse a top-k beyond it); never fewer
    than the user's top-k. kNN and the experts cut a larger top-k to what they have themselves."""
    n = FUSE_CANDIDATES
    for name in ("gps_gallery", "centroids"):
        points = getattr(model, name, None)
        if isinstance(points, torch.Tensor) and points.dim() == 2:
            n = min(n, points.shape[0])
        elif isinstance(points, list) and points:  # per partition (lat, lon), the fine one last
            n = min(n, len(points[-1][0]))
    return max(top_k, n)


def model_floor_km(model: GeoModel) -> float | None:
    """The model's error-radius floor where it exposes one (kNN's kernel sigma, GeoCLIP's gallery
    spacing; docs/models.md); None for models whose floor is per answer (cells, countries)."""
    sigma = getattr(model, "sigma_km", None)
    if isinstance(sigma, int | float) and sigma > 0:
        return float(sigma)
    spacing = getattr(model, "gallery_spacing_km", None)
    return float(spacing()) if callable(spacing) else None


def session_fuser(
    planner: TimePlanner | None,
    cfg: PredictConfig,
    model: GeoModel,
    work_list: Path,
    manifest: Truth | None,
    column: str | None,
) -> SessionFuser:
    """The run's sessions (times and cameras from the planner's pre-pass, or --group-by) and the fuser
    that holds each session's rows until it is complete."""
    assert planner is not None
    camera, times = planner.session_inputs()
    groups = None
    if cfg.group_by is not None:

        def value(path: str) -> str | None:
            m = manifest.match(path) if manifest is not None and column else None
            return manifest.extra[column][m.index] if m is not None and m.index is not None else None

        groups = group_codes(_work_list_paths(work_list), cfg.group_by, value)
    session = split_sessions(camera, times, gap_s=cfg.session_gap, group=groups)
    floor = model_floor_km(model)
    return SessionFuser(
        session,
        times,
        method=cfg.fuse,
        top_k=cfg.top_k,
        kernel_km=max(DEFAULT_KERNEL_KM, floor or 0.0),
        floor_km=floor or 0.0,
        max_speed_kmh=cfg.time.max_speed,
    )


def _work_list_paths(work_list: Path) -> Iterator[str]:
    with ipc.open_file(pa.memory_map(str(work_list))) as reader:
        for i in range(reader.num_record_batches):
            yield from (from_text(p) for p in reader.get_batch(i).column("path").to_pylist())
