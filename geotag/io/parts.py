"""Crash-safe, resumable output: finished part files beside the target, merged atomically at the end.

While a run is going, rows go to `<out>.parts/part-NNNNNN.parquet`, each part a complete Parquet file
(written to a temporary name and renamed, see PredictionWriter). A run killed at any moment therefore
leaves `<out>` as it was before the run plus readable parts; `--resume` keeps both, skips what they
hold and finishes the job. The last step streams the old file and the parts into a new `<out>` and
renames it into place, then removes the parts.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.ipc as ipc

from geotag.errors import RESUME_HINT, disk_full
from geotag.io.durable import atomic_file, check_not_link, is_disk_full, real_dir
from geotag.io.parquet import PredictionWriter, check_output_path, iter_batches
from geotag.io.pathtext import from_text, to_text
from geotag.io.scan import ImageRecord
from geotag.io.shards import ref_archive

RecordKey = tuple[str, int, int]  # (path, size, mtime in microseconds)
RECORD_SCHEMA = pa.schema(
    [("path", pa.string()), ("size", pa.int64()), ("mtime", pa.timestamp("us", tz="UTC"))]
)


def record_key(path: str, size: int, mtime: datetime | None) -> RecordKey:
    micros = int(mtime.timestamp() * 1_000_000) if mtime is not None else 0
    return (path, int(size), micros)


@dataclass
class DoneSet:
    """What earlier (possibly interrupted) runs already wrote, by file on disk (path, size, mtime):
    never by content, so identical photos keep their own rows and an edited file is predicted again."""

    keys: set[RecordKey] = field(default_factory=set)
    paths: set[str] = field(default_factory=set)  # a listed path here with another key: a changed file
    rows: int = 0

    def add_file(self, path: Path) -> None:
        for batch in iter_batches(path, ["path", "size", "mtime"]):
            paths, sizes, mtimes = (batch.column(i).to_pylist() for i in range(3))
            self.keys.update(record_key(p, s, m) for p, s, m in zip(paths, sizes, mtimes, strict=True))
            self.paths.update(paths)
            self.rows += batch.num_rows


def rows_to_keep(sources: Sequence[Path], keep: Callable[[int, str], bool]) -> set[tuple[int, int]]:
    """One row per file: (source index, row index) of each path's newest row (the latest created_at;
    on a tie the later source), leaving out paths `keep(source, path)` refuses (files deleted since).

    Shared by both engines' finalisation (PartStore.finalize, the Ray engine's folder), so an edited
    file's new row replaces its old one and the result does not depend on where a crash stopped."""
    winner: dict[str, tuple[Any, int, int]] = {}  # path -> (created_at, source, row)
    for s, src in enumerate(sources):
        row = 0
        for batch in iter_batches(src, ["path", "created_at"]):
            paths, times = batch.column(0).to_pylist(), batch.column(1).to_pylist()
            for p, t in zip(paths, times, strict=True):
                if p is not None and keep(s, p):
                    best = winner.get(p)
                    if best is None or _later(t, best[0]):
                        winner[p] = (t, s, row)
                row += 1
    return {(s, r) for _, s, r in winner.values()}


def _later(a: datetime | None, b: datetime | None) -> bool:
    """Is a row created at `a` at least as new as one at `b` (a missing time counts as oldest)?"""
    return b is None or (a is not None and a >= b)


class WorkList(NamedTuple):
    """The run's file list and how this run's files compare with what earlier runs wrote."""

    path: Path  # Arrow IPC file of the records to do
    listed: int  # records to do: new and changed files
    skipped: int  # files already done (same path, size and mtime)
    changed: int  # listed files whose path an earlier run wrote with another size or mtime


class PartStore:
    """The `<out>.parts` folder of one output file."""

    def __init__(self, out: Path) -> None:
        self.out = check_output_path(out)
        self.dir = check_not_link(out.with_name(out.name + ".parts"))  # never written through a link
        self.seen: set[str] | None = None  # paths this run listed (done or to do); set by write_file_list
        self.deleted = 0  # paths of earlier rows dropped by finalize: their files are gone

    def parts(self) -> list[Path]:
        if not self.dir.is_dir():
            return []
        return sorted(self.dir.glob("part-*.parquet"))

    def reset(self) -> bool:
        """Forget an unfinished earlier run (a run without --resume starts over). True if one existed."""
        existed = self.dir.exists()
        shutil.rmtree(self.dir, ignore_errors=True)
        return existed

    def done(self, include_out: bool) -> DoneSet:
        done = DoneSet()
        if include_out and self.out.exists():
            done.add_file(self.out)
        for part in self.parts():
            done.add_file(part)
        return done

    def write_file_list(
        self,
        records: Iterable[ImageRecord],
        done: DoneSet | None = None,
        on_skip: Callable[[str], None] | None = None,
    ) -> WorkList:
        """Write the run's work list (records `done` does not hold) as an Arrow IPC file workers
        memory-map; `on_skip` hears each path skipped as done. Memory stays flat: records stream to disk.
        """
        real_dir(self.dir)
        path = self.dir / "files.arrow"
        done = done if done is not None else DoneSet()
        self.seen = set()
        try:
            return self._write_file_list(path, records, done, on_skip)
        except (OSError, pa.ArrowException) as exc:
            if is_disk_full(exc):
                raise disk_full(path, RESUME_HINT) from exc
            raise

    def _write_file_list(
        self,
        path: Path,
        records: Iterable[ImageRecord],
        done: DoneSet,
        on_skip: Callable[[str], None] | None,
    ) -> WorkList:
        listed = skipped = changed = 0
        seen: set[str] = self.seen if self.seen is not None else set()
        buf: list[ImageRecord] = []
        # written whole and renamed (a link planted at files.arrow is replaced, never written through)
        with atomic_file(path, sync=False) as fh, ipc.new_file(fh, RECORD_SCHEMA) as sink:

            def flush() -> None:
                if buf:
                    sink.write_batch(
                        pa.record_batch(
                            [[to_text(r.path) for r in buf], [r.size for r in buf], [r.mtime for r in buf]],
                            schema=RECORD_SCHEMA,
                        )
                    )
                    buf.clear()

            for rec in records:
                name = to_text(rec.path)  # as the rows store it (geotag.io.pathtext)
                seen.add(name)
                if record_key(name, rec.size, rec.mtime) in done.keys:
                    skipped += 1
                    if on_skip is not None:
                        on_skip(name)
                    continue
                changed += name in done.paths
                buf.append(rec)
                listed += 1
                if len(buf) >= 10_000:
                    flush()
            flush()
        return WorkList(path, listed, skipped, changed)

    def writer(self, rows_per_part: int) -> PartWriter:
        real_dir(self.dir)
        start = len(self.parts())
        return PartWriter(self.dir, rows_per_part, start, metadata={"command": "predict"})

    def finalize(self, keep_existing: bool, metadata: Mapping[str, Any]) -> int:
        """Merge the old output (when resuming) and the parts into `<out>` atomically; returns rows.

        One row per file on disk: a later row for a path replaces an earlier one (an edited file's new
        row wins over its old one), and rows for files that are gone (deleted since) drop out. So the
        merge is idempotent: a crash after `<out>` was renamed but before the parts were removed
        merges the same rows again into the same file."""
        sources = ([self.out] if keep_existing and self.out.exists() else []) + self.parts()
        seen, gone = self.seen, set()

        def keep_row(_: int, p: str) -> bool:
            if seen is None or p in seen or still_there(p):
                return True
            gone.add(p)
            return False

        keep = rows_to_keep(sources, keep_row)
        self.deleted = len(gone)
        with PredictionWriter(self.out, metadata=metadata) as writer:
            writer.hint = RESUME_HINT  # the parts stay until the merged file is in place
            for s, src in enumerate(sources):
                row = 0
                for batch in iter_batches(src):
                    mask = [(s, row + i) in keep for i in range(batch.num_rows)]
                    row += batch.num_rows
                    table = pa.Table.from_batches([batch]).filter(pa.array(mask, pa.bool_()))
                    if table.num_rows:
                        writer.write_table(table)
        shutil.rmtree(self.dir, ignore_errors=True)
        return writer.rows_written


def still_there(path: str | None) -> bool:
    """Is a row's file still on disk (a path this run did not list: another input of an earlier run)?
    A shard member is there while its shard is."""
    if not path:
        return False
    path = from_text(path)
    return os.path.lexists(path) or ((shard := ref_archive(path)) is not None and os.path.lexists(shard))


class PartWriter:
    """Rows into numbered part files of `rows_per_part` rows; each part is finished on its own.

    On an exception (Ctrl-C included) the rows already given are still finished into a part: they are
    complete rows, and keeping them is what makes --resume cheap.
    """

    def __init__(self, folder: Path, rows_per_part: int, start: int, metadata: Mapping[str, Any]) -> None:
        self.folder = folder
        self.rows_per_part = rows_per_part
        self.index = start
        self.metadata = metadata
        self._current: PredictionWriter | None = None
        self._rows_in_part = 0

    def write(self, row: Mapping[str, Any]) -> None:
        if self._current is None:
            path = self.folder / f"part-{self.index:06d}.parquet"
            self._current = PredictionWriter(path, row_group_size=self.rows_per_part, metadata=self.metadata)
            self._current.hint = RESUME_HINT
        self._current.write(row)
        self._rows_in_part += 1
        if self._rows_in_part >= self.rows_per_part:
            self.close_part()

    def close_part(self) -> None:
        """Finish the current part; it is forgotten first, so a close that failed (a full disk: its
        temp is gone) is never run a second time."""
        current, self._current = self._current, None
        if current is not None:
            self._rows_in_part = 0
            self.index += 1
            current.close()

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close_part()
