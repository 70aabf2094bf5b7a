"""`geotag predict --model none`: time evidence only (docs/time-predict.md).

The photos time places (tracks, siblings; geotag.engine.timeplace) get their positions; the others get a
row without a prediction and a note. No model is built and no photo is decoded, so this path imports no
torch: rows are scan rows from a process pool (geotag.engine.scan), written through the same crash-safe,
resumable part files as `run_predict` (geotag.io.parts).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow.ipc as ipc

from geotag.config import PredictConfig
from geotag.engine.scan import chunked, default_workers, ordered_map, scan_file
from geotag.engine.summary import PredictSummary, count_errors
from geotag.engine.timeplace import TimePlanner, count_sources
from geotag.geo.places import add_countries
from geotag.io.parts import PartStore
from geotag.io.pathtext import from_text
from geotag.io.scan import ImageRecord, PathFilter, WalkReport, iter_records, validate_paths
from geotag.io.truth import apply_truth, load_truth
from geotag.progress import progress_bar

CHUNK = 256  # rows per hand-over to the part writer


def run_time_only(cfg: PredictConfig) -> PredictSummary:
    """Rows for every photo under cfg.paths into cfg.out, placed by time where the evidence reaches."""
    store = PartStore(cfg.out)
    validate_paths(cfg.paths)
    manifest = load_truth(cfg.truth) if cfg.truth is not None else None
    workers = default_workers() if cfg.workers is None else max(1, cfg.workers)
    planner = TimePlanner(cfg.time, workers=workers, model_none=True)  # options checked, tracks read
    summary = PredictSummary()
    if not cfg.resume:
        summary.restarted = store.reset()
    done = store.done(include_out=cfg.resume)
    walk = WalkReport()
    records = planner.records(
        iter_records(cfg.paths, PathFilter.from_options(cfg.include, cfg.exclude, cfg.ext), walk), done
    )
    work_list, listed, summary.skipped, summary.changed = store.write_file_list(
        records, done, manifest.mark_done if manifest is not None else None
    )
    summary.unreadable_folders, summary.not_read = len(walk.unreadable), walk.not_read
    planner.plan()
    sources: dict[str, int] = {}
    k = 0
    rows_in_order = ordered_map(scan_file, _work_list_records(work_list), workers=workers)
    with (
        store.writer(cfg.checkpoint_rows) as parts,
        progress_bar(listed, "predict", enabled=cfg.progress) as bar,
    ):
        for rows in chunked(rows_in_order, CHUNK):
            for row in rows:
                planner.fill(row, k)
                k += 1
            add_countries(rows, ["country"])
            for row in rows:
                apply_truth(row, manifest)
            add_countries(rows, ["gt_country"])
            for row in rows:
                parts.write(row)
            count_sources(rows, sources)
            summary.new += len(rows)
            bar.update(len(rows))
    metadata = {
        "command": "predict",
        "model": "none",
        "weights": None,
        **cfg.extra_metadata,
        "time": planner.metadata(sources),
    }
    store.finalize(keep_existing=cfg.resume, metadata=metadata)
    summary.sources, summary.clocks = sources, planner.summary.clocks
    summary.resumed, summary.deleted = cfg.resume, store.deleted
    summary.total, summary.failed = count_errors(cfg.out)
    summary.truth = manifest.finish() if manifest is not None else None
    return summary


def _work_list_records(work_list: Path) -> Iterator[ImageRecord]:
    """The work list's records (Arrow IPC, written by PartStore.write_file_list), in order."""
    with ipc.open_file(work_list) as reader:
        for b in range(reader.num_record_batches):
            batch = reader.get_batch(b)
            columns = (batch.column(name).to_pylist() for name in ("path", "size", "mtime"))
            for path, size, mtime in zip(*columns, strict=True):
                yield ImageRecord(path=Path(from_text(path)), size=size, mtime=mtime)  # geotag.io.pathtext
