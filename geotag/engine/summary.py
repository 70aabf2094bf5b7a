"""What a `geotag predict` run reports: its counts (both engines, and the time-only run) and a file's
error count. Kept apart from geotag.engine.predict so that `--model none` needs no torch import."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from geotag.io.parquet import iter_batches
from geotag.io.truth import TruthReport


@dataclass
class PredictSummary:
    total: int = 0  # rows in the output file
    new: int = 0  # rows this run added
    skipped: int = 0  # files already done by an earlier run (--resume)
    changed: int | None = (
        None  # of the new rows: files an earlier run wrote, edited since (None: not counted)
    )
    deleted: int | None = None  # earlier rows dropped as their files are gone (None: not counted)
    resumed: bool = False  # --resume: the counts above describe this run against the earlier ones
    failed: int = 0  # error rows in the output file
    device: str = "cpu"
    weights: str = ""
    restarted: bool = False  # an unfinished earlier run was discarded (no --resume)
    unreadable_folders: int = 0  # folders the walk could not list (each a warning line)
    not_read: Counter[str] = field(default_factory=Counter)  # walked files of other types, by extension
    measured: int | None = None  # --skip-tagged: rows that kept their measured GPS (source = exif)
    truth: TruthReport | None = None  # what a --truth manifest gave, when one was passed
    sources: dict[str, int] | None = None  # time evidence: this run's rows by `source` (+ "left")
    clocks: list[str] | None = None  # time evidence: one line per camera, its clock correction
    fused: tuple[int, int] | None = None  # --fuse: (photos fused, sessions)


def count_errors(path: Path) -> tuple[int, int]:
    """(rows, error rows) of a finished output file."""
    rows = errors = 0
    for batch in iter_batches(path, ["status"]):
        rows += batch.num_rows
        errors += sum(1 for s in batch.column(0).to_pylist() if s == "error")
    return rows, errors
