"""`geotag scan`: one row per photo with its identity, header and EXIF ground truth.

The same row is the base of every `predict` row, so `scan_file` is shared with the predict engine.
Files are inspected in worker processes (hashing and EXIF parsing are CPU-bound) with a bounded
window of work in flight, so memory stays flat however many files there are.

Start-up matters for a command run on folders of every size (issue 20: under 0.5 s): the decoders
(Pillow, pillow-heif, exifread) are imported by the first file a process inspects, the manifest
reader only when --truth is given, a process pool only when there is a file, so an empty or small
folder pays for none of them up front.
"""

from __future__ import annotations

import io
import itertools
import logging
import math
import os
import warnings
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from geotag import __version__
from geotag.geo.places import add_countries
from geotag.io.bounded import open_regular
from geotag.io.c_stderr import c_messages
from geotag.io.parquet import PredictionWriter, check_parquet_path
from geotag.io.scan import (
    ImageRecord,
    PathFilter,
    WalkReport,
    image_id,
    image_id_of_bytes,
    is_raw_name,
    iter_image_paths,
    iter_records,
)
from geotag.io.shards import ShardSample, is_ref, read_ref, shard_member
from geotag.progress import progress_bar

if TYPE_CHECKING:
    from concurrent.futures import Future

    from geotag.io.truth import TruthReport

T = TypeVar("T")
_NOTHING: Any = object()
# A photo up to this size is read once and inspected from memory: the hash, Pillow's header and
# exifread's many small reads and seeks then cost no system calls (bench/scan_vs_exiftool.py); larger
# files (RAW, video) are streamed, so a worker's memory stays bounded.
WHOLE_FILE_BYTES = 64 << 20
SCAN_BATCH = 16  # files per worker task (ordered_map's batch)
R = TypeVar("R")
log = logging.getLogger(__name__)


@dataclass
class ScanSummary:
    total: int = 0
    failed: int = 0
    with_gps: int = 0
    truth: TruthReport | None = None  # what a --truth manifest gave, when one was passed
    unreadable_folders: int = 0  # folders the walk could not list (each a warning line)
    not_read: Counter[str] = field(default_factory=Counter)  # walked files of other types, by extension

    def add(self, row: dict[str, Any]) -> None:
        self.total += 1
        self.failed += row["status"] == "error"
        self.with_gps += row.get("gt_lat") is not None


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def scan_file(record: ImageRecord) -> dict[str, Any]:
    """Inspect one file; never raises: a file that cannot be read becomes `status = error`."""
    from geotag.io.decode import (
        jpeg_is_truncated,
        read_header,
    )  # imported once per process, by its first file
    from geotag.io.exif import read_exif

    row: dict[str, Any] = {
        "path": str(record.path),
        "size": record.size,
        "mtime": record.mtime,
        "status": "ok",
        "geotag_version": __version__,
        "created_at": datetime.now(UTC),
    }
    member: ShardSample | None = None
    data: bytes | None = None  # a shard / zip member's bytes, read once
    try:
        if is_ref(row["path"]):
            member = shard_member(row["path"])
            data = read_ref(row["path"])
        elif 0 <= record.size <= WHOLE_FILE_BYTES and not is_raw_name(record.path):
            with open_regular(record.path) as fh:  # one read (never a FIFO): hash, header, EXIF from memory
                data = fh.read()
        row["image_id"] = image_id(record.path) if data is None else image_id_of_bytes(data)
    except OSError as exc:
        row.update(status="error", error=f"cannot read file: {exc.strerror or _error_text(exc)}")
        return row
    with warnings.catch_warnings(record=True) as caught, c_messages() as said:  # no other thread races this
        warnings.simplefilter("always")
        source = record.path if data is None else io.BytesIO(data)
        try:
            row.update(read_header(source))
            if row["format"] in ("JPEG", "MPO") and jpeg_is_truncated(record.path if data is None else data):
                row.update(
                    status="error", error="not a readable image: truncated JPEG (no end-of-image marker)"
                )
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a per-file error row
            text = _error_text(exc).replace(repr(source), row["path"])  # not "<_io.BytesIO at 0x..>"
            row.update(status="error", error=f"not a readable image: {text}")
        try:
            row.update(read_exif(record.path if data is None else data).as_row())
        except OSError as exc:
            row.update(status="error", error=f"cannot read file: {exc.strerror or _error_text(exc)}")
    if member is not None:
        shard_truth(row, member)
        if member.error is not None:  # a sample whose metadata cannot be used is an error row
            row.update(status="error", error=f"bad shard sample {member.key}: {member.error}")
    note_warnings(row, caught, said)
    return row


def shard_truth(row: dict[str, Any], member: ShardSample) -> None:
    """A shard sample's .json coordinates (img2dataset's latitude / longitude) are its ground truth,
    over any EXIF GPS the image kept (`gt_source` json); a --truth manifest still wins after this."""
    lat, lon = member.lat, member.lon
    if lat is None or lon is None:
        return
    if not (math.isfinite(lat) and math.isfinite(lon) and abs(lat) <= 90 and abs(lon) <= 180):
        row["gt_note"] = f"json coordinates out of range ({lat}, {lon})"
        return
    row.update(gt_lat=lat, gt_lon=lon, gt_alt=None, gt_source="json", gt_note=None)


def name_the_photo(line: str, path: str) -> str:
    """A C library's line about Pillow's in-memory stand-in ("tempfile.tif: Using code not yet in
    table.": Pillow hands libtiff that name) names the photo instead."""
    return line.replace("tempfile.tif", os.path.basename(path))


def note_warnings(
    row: dict[str, Any], caught: Sequence[warnings.WarningMessage], said: Sequence[str] = ()
) -> None:
    """Library warnings (Pillow's DecompressionBombWarning, corrupt EXIF, ...) and C libraries' stderr
    lines (libtiff, `said`) belong to their file: into the row's gt_note and the --verbose log, never
    printed around the summary."""
    texts = list(
        dict.fromkeys(
            [f"{w.category.__name__}: {_error_text(Exception(str(w.message)))}" for w in caught]
            + [f"decoder stderr: {name_the_photo(line, row['path'])}" for line in said]
        )
    )
    if not texts:
        return
    for text in texts:
        log.info("%s: %s", row["path"], text)
    note = "; ".join(texts)[:500]
    row["gt_note"] = f"{row['gt_note']}; {note}" if row.get("gt_note") else note


def ordered_map(
    fn: Callable[[T], R], items: Iterable[T], *, workers: int, window: int = 256, batch: int = 1
) -> Iterator[R]:
    """`map(fn, items)` over a process pool, in input order, with at most `window` items in flight.

    `batch`: items sent to a worker per task; a cheap `fn` (scan_file: about a millisecond) then pays
    the pool's per-task pickling, pipe writes and wake-ups once per batch, not per item."""
    if workers <= 1:
        yield from map(fn, items)
        return
    items = iter(items)
    first = next(items, _NOTHING)
    if first is _NOTHING:  # no work, no pool (and no multiprocessing import)
        return
    from concurrent.futures import ProcessPoolExecutor
    from functools import partial

    task = partial(_map_list, fn)
    pending: deque[Future[list[R]]] = deque()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for chunk in chunked(itertools.chain([first], items), batch):
            pending.append(pool.submit(task, chunk))
            if len(pending) * batch >= window:
                yield from pending.popleft().result()
        for fut in pending:
            yield from fut.result()


def _map_list(fn: Callable[[T], R], items: list[T]) -> list[R]:
    return [fn(item) for item in items]


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Lists of up to `size` consecutive items (itertools.batched arrives only in Python 3.12)."""
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _inspectors_first(records: Iterator[ImageRecord]) -> Iterator[ImageRecord]:
    """The records, with the decoders scan_file needs imported once the first exists: before the pool
    forks, so its workers inherit them instead of each importing them (an empty folder imports none)."""
    first = next(records, None)
    if first is None:
        return
    import geotag.io.decode
    import geotag.io.exif  # noqa: F401

    yield first
    yield from records


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def run_scan(
    paths: list[Path],
    out: Path,
    *,
    progress: bool = False,
    workers: int | None = None,
    truth: Path | None = None,
    only: PathFilter | None = None,
) -> ScanSummary:
    """Scan `paths` into `out` (atomically replaced at the end). Returns counts for the summary line.

    `truth`: a ground-truth manifest; its rows are joined here, in the main process, as rows are written.
    """
    check_parquet_path(out)
    manifest = None
    if truth is not None:  # a bad manifest fails before the walk
        from geotag.io.truth import load_truth

        manifest = load_truth(truth)
    total = sum(1 for _ in iter_image_paths(paths, only, WalkReport(quiet=True))) if progress else None
    summary = ScanSummary()
    walk = WalkReport()
    records = _inspectors_first(iter_records(paths, only, walk))
    rows = ordered_map(scan_file, records, workers=workers or default_workers(), batch=SCAN_BATCH)
    writer = PredictionWriter(out, metadata={"command": "scan"}, geometry="gt")  # no prediction yet
    with writer, progress_bar(total, "scan", enabled=progress) as bar:
        for chunk in chunked(rows, 256):
            for row in chunk if manifest is not None else ():
                manifest.apply(row)
            add_countries(chunk, ["gt_country"])  # one vectorised lookup per chunk, after the manifest
            for row in chunk:
                writer.write(row)
                summary.add(row)
            bar.update(len(chunk))
    summary.truth = manifest.finish() if manifest is not None else None
    summary.unreadable_folders, summary.not_read = len(walk.unreadable), walk.not_read
    return summary
