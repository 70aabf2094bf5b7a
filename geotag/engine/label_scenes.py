"""`geotag label-scenes PHOTOS --out scenes.csv`: scene labels for new training data, as GeoEstimation
labelled MP-16 (a Places365 classifier folded into S3 / S16, geotag.models.places365).

It runs on the predict engine: the same folder walk and work list, DataLoader workers that hash, read
EXIF and decode each photo, the stager thread that batches pixels onto the GPU. One row per file:
`path`, `image_id`, `size`, `mtime`, `status` / `error` (a photo that cannot be decoded is an error
row), `gt_lat` / `gt_lon` (EXIF, or a --truth manifest's), `scene` (indoor / natural / urban, what
`train` reads from a manifest) with `scene_confidence`, `s16` / `s365` with theirs, and `prob_indoor` /
`prob_natural` / `prob_urban`. GPS-tagged photos (or a --truth manifest) so give a file that
`geotag train scenes.csv` reads as it is.

Rows go to part files in `<out>.parts/` as batches finish; the end merges them (and, with --resume,
the earlier file) into `<out>` atomically, one row per file, the newest winning. `--resume` skips files
whose (path, size, mtime) already have an ok row, so a run stopped at any point loses little.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch

from geotag.engine.pipeline import LOADER_CHUNK, Stager
from geotag.engine.predict import PhotoDataset, auto_batch_size, auto_workers, make_loader
from geotag.errors import InputError
from geotag.io.decode import normalize
from geotag.io.parquet import SCHEMA as PREDICTIONS
from geotag.io.parts import DoneSet, PartStore, RecordKey, record_key
from geotag.io.scan import iter_records, validate_paths
from geotag.io.tables import first_line, read_table, table_format, text_convert, write_table
from geotag.io.truth import Truth, TruthReport, apply_truth
from geotag.models.places365 import S3_NAMES, Places365Classifier, SceneScores, hierarchy, load_places365
from geotag.progress import progress_bar

log = logging.getLogger(__name__)

PART_ROWS = 10_000
SCHEMA = pa.schema(
    [
        *(PREDICTIONS.field(n) for n in ("path", "image_id", "size", "mtime", "status", "error", "gt_lat")),
        PREDICTIONS.field("gt_lon"),
        PREDICTIONS.field("scene"),
        ("scene_confidence", pa.float32()),
        ("s16", pa.string()),
        ("s16_confidence", pa.float32()),
        ("s365", pa.string()),
        ("s365_confidence", pa.float32()),
        *((f"prob_{name}", pa.float32()) for name in S3_NAMES),
    ]
)
"""The predictions file's types for the columns it shares (docs/schema.md), then the labels."""


@dataclass
class LabelSummary:
    labelled: int = 0  # files this run labelled
    kept: int = 0  # files an earlier run had labelled (--resume)
    rows: int = 0  # rows in the output file
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, why) of this run's error rows
    device: str = "cpu"
    classifier: str = ""  # what labelled them
    truth: TruthReport | None = None  # what a --truth manifest gave, when one was passed


def scene_columns(scores: SceneScores) -> list[dict[str, Any]]:
    """The label columns of each image of a batch: the best class of every level and its probability."""
    names, groups = hierarchy().names, hierarchy().level2_names
    c3, i3 = scores.p3.max(dim=1)
    c16, i16 = scores.p16.max(dim=1)
    c365, i365 = scores.p365.max(dim=1)
    p3 = scores.p3.tolist()
    return [
        {
            "scene": S3_NAMES[i3[b]],
            "scene_confidence": float(c3[b]),
            "s16": groups[i16[b]],
            "s16_confidence": float(c16[b]),
            "s365": names[i365[b]],
            "s365_confidence": float(c365[b]),
            **{f"prob_{name}": p3[b][k] for k, name in enumerate(S3_NAMES)},
        }
        for b in range(len(p3))
    ]


def run_label_scenes(
    paths: Sequence[str | os.PathLike[str]],
    out: Path,
    classifier: Places365Classifier | str | Path | None,
    *,
    device: torch.device,
    batch_size: int | None = None,
    workers: int | None = None,
    resume: bool = False,
    progress: bool = False,
    truth: Truth | None = None,
) -> LabelSummary:
    """Label every photo under `paths` into `out` (see the module docstring). `classifier`: the model, or
    where to load it from (load_places365), once the inputs are known to be usable. `truth`: a manifest whose
    coordinates replace the photos' EXIF in gt_lat / gt_lon (matched by file name, as predict --truth),
    so a benchmark-style collection (MP-16: GPS in a CSV, not in the files) gives a training manifest."""
    table_format(out)
    store = PartStore(out)
    validate_paths(paths)
    if not isinstance(classifier, Places365Classifier):
        classifier = load_places365(classifier)
    if not resume:
        store.reset()
    earlier = _earlier_rows(store) if resume else None  # and the parts of a run that was stopped
    done = DoneSet(keys=_done_keys([t for t in (earlier, *_read_parts(store)) if t is not None]))
    work = store.write_file_list(iter_records(paths), done)
    work_list, listed = work.path, work.listed
    summary = LabelSummary(kept=work.skipped, device=str(device), classifier=classifier.name)
    classifier.to(device)
    pre = classifier.preprocess()
    batch_size = batch_size or auto_batch_size(device)
    workers = auto_workers(device) if workers is None else workers
    loader = make_loader(
        PhotoDataset(work_list, pre, True, set()), min(batch_size, LOADER_CHUNK), workers, device
    )
    pending: list[dict[str, Any]] = []
    part = len(_parts(store))
    try:
        with (
            Stager(loader, pre, device, batch_size) as staged,
            progress_bar(listed, "label-scenes", enabled=progress) as bar,
        ):
            for batch in staged:
                if batch.pixels is not None:
                    with torch.inference_mode():
                        scores = classifier.classify(normalize(batch.pixels, pre.mean, pre.std))
                    for i, cols in zip(batch.index, scene_columns(scores), strict=True):
                        batch.rows[i].update(cols)
                for row in batch.rows:
                    apply_truth(row, truth)
                    if row.get("status") == "ok":
                        summary.labelled += 1
                    else:
                        summary.errors.append((row["path"], row.get("error") or "unreadable"))
                pending.extend(batch.rows)
                bar.update(len(batch.rows))
                if len(pending) >= PART_ROWS:
                    _write_part(store, part, pending)
                    part += 1
    finally:  # rows already made are complete: keep them for --resume, even on Ctrl-C
        _write_part(store, part, pending)
    merged = _merge([t for t in (earlier, *_read_parts(store)) if t is not None], store)
    write_table(merged, out)
    shutil.rmtree(store.dir, ignore_errors=True)
    summary.rows = merged.num_rows
    summary.truth = truth.finish() if truth is not None else None
    return summary


def _parts(store: PartStore) -> list[Path]:
    return sorted(store.dir.glob("scenes-*.parquet")) if store.dir.is_dir() else []


def _write_part(store: PartStore, index: int, rows: list[dict[str, Any]]) -> None:
    if rows:
        table = pa.Table.from_pylist([{k: r.get(k) for k in SCHEMA.names} for r in rows], schema=SCHEMA)
        write_table(table, store.dir / f"scenes-{index:06d}.parquet")
        rows.clear()


def _conform(table: pa.Table, where: Path) -> pa.Table:
    """A table of an earlier run (CSV or Parquet) in SCHEMA: columns in order, missing ones null."""
    columns = []
    for f in SCHEMA:
        if f.name not in table.column_names:
            columns.append(pa.nulls(table.num_rows, f.type))
            continue
        try:
            columns.append(table.column(f.name).cast(f.type))
        except (pa.ArrowException, ValueError) as exc:
            raise InputError(
                f"--resume: {where} column {f.name} is not {f.type} ({first_line(exc)})"
            ) from exc
    return pa.Table.from_arrays(columns, schema=SCHEMA)


def _earlier_rows(store: PartStore) -> pa.Table | None:
    """The earlier output file (--resume), or None."""
    if not store.out.exists():
        return None
    return _conform(read_table(store.out, "scenes file", convert=text_convert()), store.out)


def _read_parts(store: PartStore) -> list[pa.Table]:
    return [_conform(read_table(p, "scenes part"), p) for p in _parts(store)]


def _done_keys(tables: list[pa.Table]) -> set[RecordKey]:
    """(path, size, mtime) of the ok rows earlier runs left: an error row is tried again."""
    keys = set()
    for table in tables:
        cols = [table.column(n).to_pylist() for n in ("path", "size", "mtime", "status")]
        keys.update(
            record_key(p, s, m)
            for p, s, m, st in zip(*cols, strict=True)
            if st == "ok" and p and s is not None
        )
    return keys


def _merge(tables: list[pa.Table], store: PartStore) -> pa.Table:
    """One row per file, the newest winning; rows of files neither listed this run nor still on disk
    drop out (the rule of geotag.io.parts)."""
    table = pa.concat_tables(tables) if tables else SCHEMA.empty_table()
    winner: dict[str, int] = {}
    for i, p in enumerate(table.column("path").to_pylist()):
        if p and (store.seen is None or p in store.seen or os.path.lexists(p)):
            winner[p] = i
    return table.take(pa.array(sorted(winner.values()), pa.int64()))
