"""`geotag write-exif`: put predicted positions into photos (or XMP sidecars), safely, and undo it.

Which rows are written (GUIDE 6: writing estimates is opt-in and never overwrites measured GPS):
status ok, a valid prediction (not the (0, 0) placeholder our own reader would drop), confidence at
least `--min-confidence` when given, and a photo with no GPS yet, both according to the predictions
row and to the file itself (a placeholder or broken GPS tag still counts as GPS). `--overwrite-gps`
lifts the last rule.

Per file, in this order, so that every photo ends either untouched or completely written:
1. the file must still be the one that was predicted: its xxh3-128 hash must equal the row's
   image_id (a file edited since is skipped, never written blindly); read-only files are refused;
2. the writer creates a temp file beside the photo; it is read back and checked (position to 1e-7
   degrees, refs, provenance; for JPEG the compressed image bytes are compared too);
3. the temp file gets the photo's mode, owner and times (so the mtime is kept) and is fsynced;
4. the old bytes are kept as a backup and the journal record is fsynced (write-ahead);
5. the temp file is renamed over the photo (atomic) and the folder fsynced.
A failure anywhere before 5 removes the temp file and leaves the photo as it was. Rows go through in
batches of BATCH_SIZE so that exiftool round trips and the fsyncs of steps 4 and 5 are shared: all the
records of a batch are durable before the first of its renames.
"""

from __future__ import annotations

import errno
import math
import numbers
import os
import shutil
import stat
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from geotag.errors import InputError, OutputError
from geotag.io.durable import (
    UnsafeWrite,
    copy_attributes,
    discard_temp_dir,
    fsync_dir,
    is_same_file,
    new_temp_dir,
    open_own_file,
    replace_checked,
    write_new_file,
)
from geotag.io.exif_write import (
    ESTIMATE_MARKS,
    TIME_SOURCES,
    ExiftoolWriter,
    ExistingGps,
    GpsFix,
    GpsWriter,
    WriteFailed,
    build_sidecar,
    find_exiftool,
    make_writer,
    radius_text,
    read_gps_without_writer,
    read_sidecar_gps,
    same_image_data,
    sidecar_has_gps,
    sidecar_path,
    time_radius_text,
)
from geotag.io.journal import (
    Journal,
    backup_dir_for,
    check_backup_dir,
    current_hash,
    iter_undo_order,
    read_journal,
)
from geotag.io.locks import BUSY, FolderLocks, remove_stale_temps
from geotag.io.parquet import iter_batches, require_columns
from geotag.io.row_paths import base_folder, row_path
from geotag.io.scan import image_id, image_id_of_bytes, is_raw_name
from geotag.progress import progress_bar

BATCH_SIZE = 64
"""Rows per batch: enough to amortise exiftool round trips and fsyncs, small enough that a kill
loses little work and memory stays flat."""
REQUIRED_COLUMNS = ("image_id", "path", "status", "pred_lat", "pred_lon")
OPTIONAL_COLUMNS = (
    "confidence",
    "error_km",
    "gt_lat",
    "gt_lon",
    "gt_source",
    "model",
    # schema 3: a position placed by time is written with its altitude, UTC time and how it was found
    "source",
    "pred_alt",
    "taken_at_utc",
    "fix_before",
    "fix_after",
    "fix_dt_s",
)

# Why a row is skipped (the summary counts these)
SKIP_STATUS = "status is not ok"
SKIP_NO_PREDICTION = "no prediction"
SKIP_BAD_PREDICTION = "prediction out of range"
SKIP_BAD_NUMBER = "prediction is not a finite number"
SKIP_BAD_CONFIDENCE = "confidence is not a number in [0, 1]"
SKIP_BAD_ERROR = "error_km is not a number >= 0"
SKIP_ZERO = "prediction is exactly (0, 0)"
SKIP_CONFIDENCE = "below --min-confidence"
SKIP_NO_CONFIDENCE = "no confidence to compare with --min-confidence"
SKIP_HAS_GPS = "already has GPS (--overwrite-gps to replace)"
SKIP_MEASURED = "measured GPS, not an estimate (source = exif)"
SKIP_REJECTED = "rejected in review"
SKIP_UNDECIDED = "not decided in review"
SKIP_SIDECAR_GPS = "sidecar already has GPS (--overwrite-gps to replace)"
SKIP_MISSING = "file missing"
SKIP_CHANGED = "file changed since the predictions were made"
SKIP_DUPLICATE = "an earlier row is for the same file"


@dataclass
class WriteOptions:
    """What `geotag write-exif` was asked to do; the defaults are the safe choice."""

    predictions: Path
    min_confidence: float | None = None
    overwrite_gps: bool = False
    sidecar: bool = False
    sidecar_name: str = "photo.jpg.xmp"  # or "photo.xmp"
    raw_in_file: bool = False  # camera RAW files: into the file itself (exiftool) instead of a sidecar
    dry_run: bool = False
    backup: bool = True
    journal: Path | None = None  # default: beside the predictions file, named by the time
    writer: str = "auto"  # auto | exiftool | python
    progress: bool = False
    decisions: Path | None = None  # geotag review's decisions: only the accepted rows, at the chosen spot


@dataclass(frozen=True)
class FileResult:
    """What happened to one row: action is 'written', 'would write', 'skipped' or 'failed'."""

    path: str
    action: str
    reason: str | None = None
    target: str | None = None  # the file changed: the photo, or its sidecar
    fix: GpsFix | None = None
    copies: tuple[str, ...] = ()  # XMP groups inside the photo given the same position (--overwrite-gps)
    sidecars: tuple[str, ...] = ()  # sidecars with GPS given the same position too (--overwrite-gps)

    def describe(self, dry_run: bool = False) -> str:
        """The dry-run listing (one line per file changed: the photo, then each sidecar that is
        updated to agree), or one line saying why a file failed (in a dry run: would fail)."""
        if self.action == "would write" and self.fix is not None:
            fix = self.fix
            where = f"{fix.lat:.6f}, {fix.lon:.6f}"
            if fix.by_time:
                extra = fix.how or ""
            else:
                extra = f"confidence {fix.confidence:.3f}" if fix.confidence is not None else "no confidence"
            if fix.error_km is not None:
                km = fix.error_km
                extra += f", error radius {time_radius_text(km) if fix.by_time else radius_text(km)}"
            if fix.by_time:
                extra += f", altitude {fix.alt:.1f} m" if fix.alt is not None else ""
                if fix.time_utc is not None:
                    extra += f", GPS time {fix.gps_date} {fix.gps_time_text} UTC"
            if self.copies:
                extra += f"; {' and '.join(self.copies)} GPS updated to agree"
            lines = [f"would write {self.target}\t{where}\t({extra})"]
            lines += [f"would write {s}\t{where}\t(sidecar GPS updated to agree)" for s in self.sidecars]
            return "\n".join(lines)
        action = "would fail" if dry_run and self.action == "failed" else self.action
        return f"{action}: {self.path}" + (f": {self.reason}" if self.reason else "")


@dataclass
class WriteSummary:
    rows: int = 0
    written: int = 0
    would_write: int = 0
    sidecars: int = 0  # GPS sidecars written (or that would be) besides their photos
    skipped: Counter[str] = field(default_factory=Counter)
    failed: list[tuple[str, str]] = field(default_factory=list)
    journal: Path | None = None
    writer: str = ""

    def add(self, result: FileResult) -> None:
        self.rows += 1
        if result.action == "written":
            self.written += 1
            self.sidecars += len(result.sidecars)
        elif result.action == "would write":
            self.would_write += 1
            self.sidecars += len(result.sidecars)
        elif result.action == "skipped":
            self.skipped[result.reason or "?"] += 1
        else:
            self.failed.append((result.path, result.reason or "?"))

    def describe(self, dry_run: bool = False) -> str:
        """The summary line: written (or would write), skipped by reason, failed."""
        done = f"would write {self.would_write}" if dry_run else f"wrote {self.written}"
        sides = f" (and {self.sidecars} GPS sidecar(s) to agree)" if self.sidecars else ""
        return (
            f"{done} file(s) with {self.writer}{sides}; {_skipped_text(self.skipped)}; "
            f"failed {len(self.failed)}" + ("; dry run, nothing changed" if dry_run else "")
        )


def _skipped_text(skipped: Counter[str]) -> str:
    if not skipped:
        return "skipped 0"
    reasons = ", ".join(f"{n} {why}" for why, n in skipped.most_common())
    return f"skipped {sum(skipped.values())} ({reasons})"


SPACE_MARGIN = 1 << 20
"""Room kept free beside each temp for the metadata it grows by and the journal."""

LOCK_WAIT_S = 10.0
"""How long a run waits for a folder another run is writing before it skips that folder's photos."""


def default_journal_path(predictions: Path) -> Path:
    """`<predictions stem>.write-exif-<UTC time>.jsonl` beside the predictions file."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return predictions.absolute().with_name(f"{predictions.stem}.write-exif-{stamp}.jsonl")


def _rows(predictions: Path) -> tuple[int, Iterator[dict[str, Any]]]:
    pf = require_columns(predictions, REQUIRED_COLUMNS)
    names = set(pf.schema_arrow.names)
    columns = [*REQUIRED_COLUMNS, *(c for c in OPTIONAL_COLUMNS if c in names)]

    def rows() -> Iterator[dict[str, Any]]:
        for batch in iter_batches(predictions, columns, batch_size=4096):
            yield from batch.to_pylist()

    return pf.num_rows, rows()


def _finite(value: Any) -> float | None:
    """A finite real number, or None: a string, a bool, NaN or an infinity is no coordinate (a
    predictions file is data; '12.5' in a float column means something went wrong upstream)."""
    if value is None or isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def select_fix(row: dict[str, Any], opts: WriteOptions) -> tuple[GpsFix | None, str | None]:
    """The position to write for a row, or (None, why it is skipped). Looks at the row only."""
    review = row.get("review")  # --decisions: geotag.engine.reviewed marks the rows not accepted
    if review is not None:
        return None, SKIP_REJECTED if review == "rejected" else SKIP_UNDECIDED
    if row.get("status") != "ok":
        return None, SKIP_STATUS
    if row.get("source") == "exif":  # predict --skip-tagged kept the photo's own GPS: nothing to write
        return None, SKIP_MEASURED
    lat, lon = _finite(row.get("pred_lat")), _finite(row.get("pred_lon"))
    if lat is None or lon is None:
        given = row.get("pred_lat") is not None or row.get("pred_lon") is not None
        return None, SKIP_BAD_NUMBER if given else SKIP_NO_PREDICTION
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None, SKIP_BAD_PREDICTION
    if lat == 0 and lon == 0:
        return None, SKIP_ZERO
    confidence = _finite(row.get("confidence"))
    if row.get("confidence") is not None and (confidence is None or not 0 <= confidence <= 1):
        return None, SKIP_BAD_CONFIDENCE
    error_km = _finite(row.get("error_km"))
    if row.get("error_km") is not None and (error_km is None or error_km < 0):
        return None, SKIP_BAD_ERROR
    if opts.min_confidence is not None:
        if confidence is None:
            return None, SKIP_NO_CONFIDENCE
        if confidence < opts.min_confidence:
            return None, SKIP_CONFIDENCE
    measured_in_file = row.get("gt_source") in (None, "exif")  # a manifest's or a shard's truth is not
    if (
        not opts.overwrite_gps
        and measured_in_file
        and row.get("gt_lat") is not None
        and row.get("gt_lon") is not None
    ):
        return None, SKIP_HAS_GPS  # (the file itself is read before writing: GPS there is found anyway)
    fix = GpsFix(lat=lat, lon=lon, model=row.get("model"), confidence=confidence, error_km=error_km)
    if row.get("source") in TIME_SOURCES:
        fix = _time_fix(fix, row)
    return fix, None


def _time_fix(fix: GpsFix, row: dict[str, Any]) -> GpsFix:
    """A position placed by time: its altitude, the photo's UTC time (GPSDateStamp / GPSTimeStamp)
    and how it was matched, as exiftool's -geotag writes them (what is unknown is not written)."""
    when = row.get("taken_at_utc")
    when = when if isinstance(when, datetime) and when.tzinfo is not None else None
    return replace(
        fix,
        source=row["source"],
        alt=_finite(row.get("pred_alt")),
        time_utc=when,
        fix_dt_s=_finite(row.get("fix_dt_s")),
        interpolated=row.get("fix_before") is not None and row.get("fix_after") is not None,
    )


def _read_only(path: Path, st: os.stat_result) -> bool:
    """No write bit at all counts as read-only even for root, who could write it anyway: a user who
    chmods a photo read-only means 'do not change this'."""
    return not st.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) or not os.access(path, os.W_OK)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _io_reason(exc: OSError) -> str:
    if exc.errno == 28:
        return "disk full"
    return exc.strerror or str(exc)


@dataclass
class _Job:
    """One row on its way through a batch; `result` is set as soon as its fate is known."""

    row: int
    path_text: str  # as the predictions file gives it (reported back)
    photo: Path  # with symlinks resolved: a link is never replaced by a copy of its target
    st: os.stat_result
    fix: GpsFix
    photo_hash: str
    existing: ExistingGps | None = None
    target: Path | None = None  # the file that is replaced: the photo or its sidecar
    target_st: os.stat_result | None = None  # None: a sidecar that does not exist yet
    old_hash: str | None = None
    tmp: Path | None = None
    tmp_dir: Path | None = None  # private 0700 folder beside the target that holds `tmp`
    fd: int | None = None  # `tmp`, opened once it is written: attributes and the rename go through it
    new_hash: str | None = None
    result: FileResult | None = None
    sidecar: bool = False  # the target is an XMP sidecar (--sidecar, or a copy --overwrite-gps updates)
    gps_sidecars: list[Path] = field(default_factory=list)  # sidecars with GPS of a photo to update too

    def end(self, action: str, reason: str | None = None) -> None:
        if self.result is None:
            if action not in ("written", "would write"):
                self.result = FileResult(self.path_text, action, reason, None, self.fix)
                return
            copies = self.existing.copies if self.existing is not None and not self.sidecar else ()
            sides = tuple(str(p) for p in self.gps_sidecars)
            self.result = FileResult(
                self.path_text, action, reason, str(self.target), self.fix, copies, sides
            )

    def fail(self, exc: BaseException) -> None:
        reason = _io_reason(exc) if isinstance(exc, OSError) else str(exc)
        self.end("failed", reason)


class _Run:
    """One write-exif run: the writer process, the journal, and the procedure, done in batches.

    A batch shares its exiftool round trips (one read of the old GPS, one read-back) and its
    durability work (one fsync of the backup folder, one of the journal, one per photo folder);
    each photo still gets its own fsynced temp file and its own atomic rename."""

    def __init__(self, opts: WriteOptions) -> None:
        self.opts = opts
        self.writer: GpsWriter | None = None
        self.reader: ExiftoolWriter | None = None  # sidecar mode: reads the photo's GPS
        if opts.sidecar:
            sidecar_path(Path("x.jpg"), opts.sidecar_name)  # validates the style early
            if opts.writer not in ("auto", "exiftool", "python"):
                raise InputError(f"unknown writer {opts.writer!r}; use auto, exiftool or python")
            if opts.writer != "python":
                exe = find_exiftool()
                if exe is None and opts.writer == "exiftool":
                    raise InputError("exiftool not found (apt-get install libimage-exiftool-perl)")
                self.reader = ExiftoolWriter(exe) if exe else None
            self.writer_name = "XMP sidecars"
        else:
            self.writer = make_writer(opts.writer)
            self.writer_name = self.writer.name
        self.base = base_folder(opts.predictions)  # relative row paths resolve beside the predictions
        self.locks = FolderLocks(LOCK_WAIT_S)
        self.cleaned: set[Path] = set()
        self.journal: Journal | None = None
        if not opts.dry_run:
            path = opts.journal or default_journal_path(opts.predictions)
            self.journal = Journal(
                path,
                keep_backups=opts.backup,
                header={
                    "predictions": str(opts.predictions.absolute()),
                    "writer": self.writer_name,
                    "backups": opts.backup,
                    "sidecar": opts.sidecar,
                },
            )

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()
        for w in (self.writer, self.reader):
            if w is not None:
                w.close()

    # -- a batch of rows -----------------------------------------------------------------------

    def process(self, rows: list[dict[str, Any]]) -> list[FileResult]:
        results: list[FileResult | None] = [None] * len(rows)
        jobs: list[_Job] = []
        targets: set[Path] = set()
        for i, row in enumerate(rows):
            job_or_result = self._prepare(i, row)
            if isinstance(job_or_result, FileResult):
                results[i] = job_or_result
            elif job_or_result.target in targets:  # the same file twice: the first row wins
                results[i] = FileResult(job_or_result.path_text, "skipped", SKIP_DUPLICATE)
            else:
                targets.add(job_or_result.target)  # type: ignore[arg-type]
                jobs.append(job_or_result)
        if not self.opts.dry_run:
            busy = self.locks.acquire(j.target.parent for j in jobs if j.target is not None)
            for job in jobs:
                assert job.target is not None
                if job.target.parent in busy:
                    job.end("skipped", BUSY)
                elif job.target.parent not in self.cleaned:  # leftovers of killed runs, once a run
                    self.cleaned.add(job.target.parent)
                    remove_stale_temps(job.target.parent)
            jobs_left = [j for j in jobs if j.result is None]
        else:
            jobs_left = jobs
        try:
            for group in self._fitting(jobs_left):
                self._write_group(group)
        finally:
            self.locks.release()
        for job in jobs:
            assert job.result is not None
            results[job.row] = job.result
        return [r for r in results if r is not None]

    def _write_group(self, jobs: list[_Job]) -> None:
        """Read, write the temps, verify, finish and commit a group, then the sidecars whose GPS
        --overwrite-gps must update too; its temps are gone afterwards."""
        self._read_existing(jobs)
        self._write_steps(jobs)
        self._update_sidecars(jobs)

    def _write_steps(self, jobs: list[_Job]) -> None:
        try:
            for job in jobs:
                self._make_temp(job)
            self._verify(jobs)
            for job in jobs:
                self._finish_temp(job)
            self._commit(jobs)
        finally:
            for job in jobs:
                if job.fd is not None:
                    os.close(job.fd)
                    job.fd = None
                if job.tmp_dir is not None:
                    discard_temp_dir(job.tmp_dir)

    def _fitting(self, jobs: list[_Job]) -> Iterator[list[_Job]]:
        """The batch in groups whose temps fit the free space of their file systems (a temp is about
        as large as its photo; backups are links). A photo that cannot fit alone fails 'disk full'."""
        if self.opts.dry_run or self.opts.sidecar:
            yield jobs
            return
        group: list[_Job] = []
        used: dict[int, int] = {}
        free: dict[int, int] = {}
        for job in jobs:
            assert job.target is not None
            dev = job.st.st_dev
            try:
                if dev not in free:
                    free[dev] = shutil.disk_usage(job.target.parent).free
            except OSError:
                free[dev] = 1 << 62  # cannot tell: let the write itself find out
            need = job.st.st_size + SPACE_MARGIN
            if need > free[dev]:
                job.end("failed", f"disk full: needs {_mb(need)} free beside it, {_mb(free[dev])} left")
                continue
            if used.get(dev, 0) + need > free[dev]:
                yield group
                group, used = [], {}
                free.pop(dev, None)  # measure again once the group's temps are gone
                free[dev] = shutil.disk_usage(job.target.parent).free
            group.append(job)
            used[dev] = used.get(dev, 0) + need
        if group:
            yield group

    def _prepare(self, i: int, row: dict[str, Any]) -> _Job | FileResult:
        """Row rules, then the file: still there, a regular file, the same bytes as predicted."""
        path_text = str(row.get("path") or "")
        fix, reason = select_fix(row, self.opts)
        if fix is None:
            return FileResult(path_text, "skipped", reason)
        path = row_path(path_text, self.base)
        try:
            st = os.stat(path)
            if not stat.S_ISREG(st.st_mode):
                return FileResult(path_text, "failed", "not a regular file")
            if row.get("image_id") is None or image_id(path) != row["image_id"]:
                return FileResult(path_text, "skipped", SKIP_CHANGED)
        except FileNotFoundError:
            return FileResult(path_text, "skipped", SKIP_MISSING)
        except OSError as exc:
            return FileResult(path_text, "failed", _io_reason(exc))
        path = Path(os.path.realpath(path))
        job = _Job(row=i, path_text=path_text, photo=path, st=st, fix=fix, photo_hash=row["image_id"])
        if self.opts.sidecar or (is_raw_name(path) and not self.opts.raw_in_file):  # RAW: sidecar
            job.target, job.sidecar = sidecar_path(path, self.opts.sidecar_name), True
            return job
        job.target, job.target_st, job.old_hash = path, st, job.photo_hash
        assert self.writer is not None
        if _read_only(path, st):
            return FileResult(path_text, "failed", "read-only file")
        why = self.writer.unsupported(path)
        if why:
            return FileResult(path_text, "failed", why)
        return job

    def _read_existing(self, jobs: list[_Job]) -> None:
        """The GPS each photo has now (one exiftool command for the batch); skip those with GPS."""
        if not jobs:
            return
        found: dict[int, ExistingGps | WriteFailed] = {}
        in_file = [j for j in jobs if not j.sidecar]
        if in_file:
            assert self.writer is not None
            read = self.writer.read_gps_many([j.photo for j in in_file])
            found.update(zip(map(id, in_file), read, strict=True))
        beside = [j for j in jobs if j.sidecar]  # --sidecar, or RAW files (their sidecar by default)
        reader = self.reader or (self.writer if isinstance(self.writer, ExiftoolWriter) else None)
        if beside and reader is not None:
            found.update(zip(map(id, beside), reader.read_gps_many([j.photo for j in beside]), strict=True))
        elif beside:
            found.update((id(j), _call_reader(j.photo)) for j in beside)
        for job in jobs:
            existing = found[id(job)]
            if not isinstance(existing, WriteFailed) and not job.sidecar:
                job.gps_sidecars = gps_sidecars(job.photo)
            if isinstance(existing, WriteFailed):
                job.fail(existing)
            elif (existing.has_gps or job.gps_sidecars) and not self.opts.overwrite_gps:
                job.end("skipped", SKIP_HAS_GPS)
            elif existing.stuck:  # --overwrite-gps cannot make a maker's copy agree: never contradict it
                job.end(
                    "failed",
                    f"holds a measured position in {', '.join(existing.stuck[:3])} that exiftool cannot "
                    "rewrite; left alone so no two positions disagree",
                )
            elif self.writer is not None and not job.sidecar and (why := self.writer.refuses(existing)):
                job.end("failed", why)  # before writing, so that a dry run lists it too
            else:
                job.existing = existing

    def _make_temp(self, job: _Job) -> None:
        """The new file, beside the one it replaces; in a dry run, only the decision."""
        if job.result is not None:
            return
        assert job.target is not None and job.existing is not None
        try:
            new_sidecar = self._sidecar_bytes(job) if job.sidecar else None
            if job.result is not None:
                return
            if not os.access(job.target.parent, os.W_OK):
                raise WriteFailed("folder not writable")
            if self.opts.dry_run:
                job.end("would write")
                return
            job.tmp_dir = new_temp_dir(job.target)
            job.tmp = job.tmp_dir / "new.tmp"  # '.tmp': exiftool keeps the source's format
            if new_sidecar is not None:
                write_new_file(job.tmp, new_sidecar)
            else:
                assert self.writer is not None
                self.writer.write(job.photo, job.tmp, job.fix, job.existing)
        except (WriteFailed, OSError) as exc:
            job.fail(exc)

    def _sidecar_bytes(self, job: _Job) -> bytes | None:
        """The sidecar to write (merged into an existing one), or None with job.result set."""
        assert job.target is not None
        old: bytes | None = None
        if job.target.is_symlink():  # it could point anywhere (a planted link): never written through
            raise WriteFailed(
                f"sidecar {job.target.name} is a symlink; refused (replace it with a real file)"
            )
        if job.target.exists():
            job.target_st = os.stat(job.target)
            if not stat.S_ISREG(job.target_st.st_mode):
                raise WriteFailed(f"{job.target.name} is not a regular file")
            if _read_only(job.target, job.target_st):
                raise WriteFailed(f"{job.target.name} is read-only")
            old = job.target.read_bytes()
            job.old_hash = image_id_of_bytes(old)
            if sidecar_has_gps(old) and not self.opts.overwrite_gps:
                job.end("skipped", SKIP_SIDECAR_GPS)
                return None
        return build_sidecar(old, job.fix)

    def _verify(self, jobs: list[_Job]) -> None:
        """Read every new file back (one exiftool command for the batch)."""
        live = [j for j in jobs if j.result is None and j.tmp is not None]
        if not live:
            return
        photos = [(j.tmp, j.fix, j.existing) for j in live if not j.sidecar]
        checks = iter(self.writer.verify_many(photos) if photos and self.writer else [])  # type: ignore[arg-type]
        for job in live:
            problem = _call_check(_check_sidecar, job.tmp, job.fix) if job.sidecar else next(checks)
            if problem is not None:
                job.fail(problem)

    def _finish_temp(self, job: _Job) -> None:
        """Same image data, the old file's mode, owner and times, fsynced; its hash for the journal."""
        if job.result is not None or job.tmp is None:
            return
        try:
            job.fd = open_own_file(job.tmp)
            if not job.sidecar and same_image_data(job.photo, job.tmp) is False:
                raise WriteFailed("the compressed image data would have changed")
            if job.target_st is not None:
                copy_attributes(job.fd, job.target_st)
            os.fsync(job.fd)
            job.new_hash = image_id(job.tmp)
            if not is_same_file(job.fd, job.tmp):
                raise UnsafeWrite("the temporary file was replaced while it was written")
        except (WriteFailed, OSError) as exc:
            job.fail(exc)

    def _commit(self, jobs: list[_Job]) -> None:
        """Backups, then the journal records (one fsync), then the renames, then the folders."""
        live = [j for j in jobs if j.result is None and j.tmp is not None]
        if not live:
            return
        assert self.journal is not None
        records, ready = [], []
        for job in live:
            assert job.target is not None and job.existing is not None
            try:
                backup = None
                if job.target_st is not None and job.old_hash:
                    backup = self.journal.backup(job.target, job.old_hash, sync=False)
                    now = os.stat(job.target)
                    then = job.target_st
                    if (now.st_size, now.st_mtime_ns, now.st_ino) != (
                        then.st_size,
                        then.st_mtime_ns,
                        then.st_ino,
                    ):
                        raise WriteFailed("the file changed while it was being written; left as it is now")
            except (WriteFailed, OSError) as exc:
                job.fail(exc)
                continue
            records.append(self._record(job, backup))
            ready.append(job)
        try:
            self.journal.sync_backups()
            self.journal.append_many(records)
        except OSError as exc:
            for job in ready:
                job.fail(exc)
            return
        folders = set()
        for job in ready:
            assert job.tmp is not None and job.target is not None and job.fd is not None
            try:
                if job.target_st is None:  # a new sidecar: never clobber one that appeared meanwhile
                    os.link(job.tmp, job.target, follow_symlinks=False)
                    if not is_same_file(job.fd, job.target):
                        raise UnsafeWrite(f"{job.target.name} was swapped while it was linked")
                else:
                    replace_checked(job.fd, job.tmp, job.target, sync_dir=False)
            except FileExistsError:
                job.end("failed", f"{job.target.name} appeared while it was being written; left alone")
                continue
            except OSError as exc:
                job.fail(exc)
                continue
            folders.add(job.target.parent)
            job.end("written")
        for folder in folders:
            fsync_dir(folder)

    def _update_sidecars(self, jobs: list[_Job]) -> None:
        """--overwrite-gps in photo mode: a photo just written whose XMP sidecar has GPS gets the
        same position in the sidecar (photo managers show the sidecar's), journaled like any write.
        Should that fail, the photo's row fails saying so: the two disagree until undone or fixed.
        A dry run goes through the same checks (the sidecar is read and merged, never written)."""
        pairs = []
        for job in jobs:
            if job.result is None or job.result.action not in ("written", "would write"):
                continue
            for path in job.gps_sidecars:
                side = _Job(job.row, job.path_text, job.photo, job.st, job.fix, job.new_hash or "")
                side.target, side.sidecar = path, True
                side.existing = ExistingGps(has_gps=True, tags={"sidecar": path.name})
                pairs.append((job, side))
        if not pairs:
            return
        self._write_steps([side for _, side in pairs])
        for job, side in pairs:
            assert side.result is not None and side.target is not None
            if side.result.action not in ("written", "would write"):
                name, why = side.target.name, side.result.reason
                reason = (
                    f"the photo would be written but its sidecar {name} would keep the old GPS ({why}); "
                    "fix the sidecar first"
                    if self.opts.dry_run
                    else f"the photo was written but its sidecar {name} still has the old GPS ({why}); "
                    "undo the run or fix the sidecar"
                )
                job.result = FileResult(
                    job.path_text,
                    "failed",
                    reason,
                    str(job.target),
                    job.fix,
                )

    def _record(self, job: _Job, backup: str | None) -> dict[str, Any]:
        st, existing, fix = job.target_st, job.existing, job.fix
        assert existing is not None
        record: dict[str, Any] = {"op": "sidecar" if job.sidecar else "photo"}
        if job.sidecar:
            record.update(photo=str(job.photo), photo_hash=job.photo_hash, existed=st is not None)
        record.update(
            path=str(job.target),
            old_hash=job.old_hash if st is not None else None,
            new_hash=job.new_hash,
            backup=backup,
            size=st.st_size if st else None,
            mode=stat.S_IMODE(st.st_mode) if st else None,
            atime_ns=st.st_atime_ns if st else None,
            mtime_ns=st.st_mtime_ns if st else None,
            old_gps={"lat": existing.lat, "lon": existing.lon, "tags": existing.tags},
            new_gps={
                "lat": fix.lat,
                "lon": fix.lon,
                "method": fix.method,
                "error_m": fix.error_m,
                **(
                    {
                        "source": fix.source,
                        "alt": fix.alt,
                        "time_utc": fix.time_utc and fix.time_utc.isoformat(),
                    }
                    if fix.by_time
                    else {}
                ),
            },
            writer=self.writer_name,
        )
        return record


def gps_sidecars(photo: Path) -> list[Path]:
    """The XMP sidecars of a photo (either naming style) that hold a position: a photo manager shows
    it, so it counts as GPS the photo has. One that cannot be parsed shows nothing; it is left alone."""
    found = []
    for style in ("photo.jpg.xmp", "photo.xmp"):
        path = sidecar_path(photo, style)
        try:
            if path.is_file() and sidecar_has_gps(path.read_bytes()) and path not in found:
                found.append(path)
        except (OSError, WriteFailed):
            continue
    return found


def _call_reader(photo: Path) -> ExistingGps | WriteFailed:
    try:
        return read_gps_without_writer(photo)
    except WriteFailed as exc:
        return exc
    except OSError as exc:
        return WriteFailed(f"cannot read file: {exc.strerror or exc}")


def _call_check(fn: Callable[..., None], *args: Any) -> WriteFailed | None:
    try:
        fn(*args)
    except WriteFailed as exc:
        return exc
    except OSError as exc:
        return WriteFailed(f"cannot read back: {exc.strerror or exc}")
    return None


def _check_sidecar(path: Path, fix: GpsFix) -> None:
    lat, lon, props = read_sidecar_gps(path.read_bytes())
    if lat is None or lon is None or abs(lat - fix.lat) > 1e-7 or abs(lon - fix.lon) > 1e-7:
        raise WriteFailed("sidecar read-back position differs from what was written")
    if props.get("GPSProcessingMethod") != fix.method:
        raise WriteFailed("sidecar read-back GPSProcessingMethod differs")


def run_write_exif(
    opts: WriteOptions, report: Callable[[FileResult], None] | None = None, *, batch_size: int = BATCH_SIZE
) -> WriteSummary:
    """Write (or with dry_run, list) the positions of a predictions file; see the module docstring.

    `report` is called with every row's result, in row order (the CLI prints the dry-run list and
    the failures). Rows go through in batches of `batch_size`."""
    if opts.min_confidence is not None and not 0 <= opts.min_confidence <= 1:
        raise InputError("--min-confidence must be between 0 and 1")
    total, rows = _rows(opts.predictions)
    if opts.decisions is not None:
        from geotag.engine.reviewed import apply_decisions
        from geotag.io.decisions import read as read_decisions

        if not os.path.exists(opts.decisions):
            raise InputError(f"decisions file not found: {opts.decisions}")
        rows = apply_decisions(rows, read_decisions(opts.decisions))
    run = _Run(opts)
    summary = WriteSummary(writer=run.writer_name)
    try:
        with progress_bar(total, "write-exif", enabled=opts.progress) as bar:
            for batch in _batched(rows, batch_size):
                for result in run.process(batch):
                    summary.add(result)
                    if report is not None:
                        report(result)
                bar.update(len(batch))
    finally:
        run.close()
    if run.journal is not None and run.journal.created:
        summary.journal = run.journal.path
    return summary


def _batched(rows: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


# --------------------------------------------------------------------------------------------------
# Undo
# --------------------------------------------------------------------------------------------------


@dataclass
class UndoSummary:
    restored: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    failed: list[tuple[str, str]] = field(default_factory=list)

    def describe(self) -> str:
        return f"restored {self.restored} file(s); {_skipped_text(self.skipped)}; failed {len(self.failed)}"


def _restore(path: Path, source: Path, record: dict[str, Any], now_mode: int) -> None:
    """Put the backup's bytes back at `path` atomically, with the old mode (permission bits only:
    never setuid, setgid or sticky, and never wider than `now_mode`, the mode the file has now, which
    write-exif copied from the original) and times. The backup is linked, not copied, where it can be
    (no space needed on a full disk); the folder is fsynced by the caller, once per folder."""
    folder = new_temp_dir(path)
    tmp = folder / "restore.tmp"
    try:
        try:
            os.link(source, tmp, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
                raise
            with open(source, "rb") as src, open(tmp, "xb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise UnsafeWrite("the restored file is not a regular file")
            mode = record.get("mode")
            if not isinstance(mode, int) or isinstance(mode, bool):
                mode = now_mode
            os.fchmod(fd, mode & now_mode & 0o777)
            mtime = record.get("mtime_ns")
            if isinstance(mtime, int) and not isinstance(mtime, bool):
                atime = record.get("atime_ns")
                os.utime(fd, ns=(atime if isinstance(atime, int) else mtime, mtime))
            os.fsync(fd)
            replace_checked(fd, tmp, path, sync_dir=False)
        finally:
            os.close(fd)
    finally:
        discard_temp_dir(folder)


def _backup_source(backups: Path, name: Any) -> Path | None:
    """The backup a record names, only as a plain file name inside the journal's own backup folder
    (a journal is data: an absolute path, '..' or a link out of the folder is refused)."""
    if not isinstance(name, str) or name in ("", ".", "..") or any(c in name for c in "/\\\0"):
        return None
    source = backups / name
    try:
        st = os.lstat(source)
    except OSError:
        return None
    return source if stat.S_ISREG(st.st_mode) else None


def _refusal(record: dict[str, Any]) -> str | None:
    """Why a record names something no write-exif run writes (None: it may have). A journal is data
    that may come with someone else's folder: only two kinds of record exist, every path is absolute
    and plain, and a sidecar record names an XMP sidecar of its photo, in the photo's folder."""
    op, path = record.get("op"), record.get("path")
    if op not in ("photo", "sidecar"):
        return f"refused: unknown journal record op {str(op)[:40]!r}; ignored"
    if not _plain_abs(path):
        return "refused: journal record without a plain absolute path; ignored"
    if op == "sidecar":
        photo = record.get("photo")
        if not _plain_abs(photo):
            return "refused: sidecar record without its photo's path; ignored"
        names = {sidecar_path(Path(photo), style) for style in ("photo.jpg.xmp", "photo.xmp")}
        if Path(path) not in names or Path(path) == Path(photo):
            return "refused: not an XMP sidecar of the photo its record names; ignored"
    elif not record.get("old_hash"):
        return "refused: photo record without the old hash; ignored"
    return None


def _plain_abs(value: Any) -> bool:
    """An absolute path with no '.' or '..' parts and no NUL (what write-exif records)."""
    if not isinstance(value, str) or "\0" in value or not os.path.isabs(value):
        return False
    return os.path.normpath(value) == value


def _undo_one(record: dict[str, Any], backups: Path | None) -> tuple[str, str | None]:
    """('restored' | 'skipped' | 'failed', reason) for one journal record."""
    refused = _refusal(record)
    if refused:
        return "failed", refused
    path = Path(record["path"])
    try:
        if stat.S_ISLNK(os.lstat(path).st_mode):
            return "skipped", "is a symlink now (write-exif wrote real files); left alone"
    except FileNotFoundError:
        return "skipped", SKIP_MISSING
    now = current_hash(path)
    old, new = record.get("old_hash"), record.get("new_hash")
    if now == old:
        return "skipped", "already original"
    if now is None:
        return "skipped", SKIP_MISSING
    if now != new:
        return "skipped", "changed after write-exif; left alone"
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        return "failed", "refused: not a regular file; left alone"
    if not _carries_estimate(path):
        return "failed", "refused: carries no geotag estimate, so no write-exif run wrote it; left alone"
    if _read_only(path, st):
        return "failed", "read-only file"
    if old is None:  # a sidecar that write-exif created (the only kind of record without one)
        path.unlink()
        return "restored", None
    if not record.get("backup"):
        gps = record.get("old_gps") or {}
        return "failed", (
            "written with --no-backup, so the old bytes cannot be restored "
            f"(old GPS: {gps.get('lat')}, {gps.get('lon')})"
        )
    if backups is None:
        return "failed", "refused: the journal's backup folder is a symlink or not a folder"
    source = _backup_source(backups, record["backup"])
    if source is None:
        return "failed", "backup name in the journal is not a file of its backup folder; ignored"
    if current_hash(source) != old:
        return "failed", f"backup {source} is missing or damaged"
    _restore(path, source, record, stat.S_IMODE(st.st_mode))
    return "restored", None


def _carries_estimate(path: Path) -> bool:
    """Does the file hold one of geotag's GPSProcessingMethod marks (ESTIMATE_MARKS)? (What
    write-exif writes, in every format; a journal naming a file geotag never wrote is refused.)"""
    keep = max(len(m) for m in ESTIMATE_MARKS)
    tail = b""
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            if any(mark in tail + chunk for mark in ESTIMATE_MARKS):
                return True
            tail = chunk[-keep:]
    return False


def _check_journal_owner(path: Path) -> None:
    """A journal another user could have written is not followed (like ssh and sudo treat their
    files): it must belong to the user running undo (or root) and not be group/world writable."""
    st = os.stat(path)
    euid = os.geteuid()
    if st.st_uid not in (euid, 0) or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise InputError(
            f"{path} belongs to another user or others may write it; undo only follows journals "
            "that you own and that only you can change"
        )


def run_undo(journal_path: Path, report: Callable[[str, str, str | None], None] | None = None) -> UndoSummary:
    """Undo every change a journal records, newest first; see geotag.io.journal for the rules.

    Safe to run twice: files already restored are reported as 'already original'."""
    _, records = read_journal(journal_path)
    _check_journal_owner(Path(journal_path))
    backups: Path | None = backup_dir_for(Path(journal_path).absolute())
    try:
        check_backup_dir(backups)  # type: ignore[arg-type]
    except OutputError:
        backups = None  # every restore is refused, with its own line
    summary = UndoSummary()
    folders: set[Path] = set()
    locks = FolderLocks(LOCK_WAIT_S)
    wanted = {Path(r["path"]).parent for r in records if _refusal(r) is None}
    busy = locks.acquire(f for f in wanted if f.is_dir())
    for folder in wanted - busy:
        if folder.is_dir():
            remove_stale_temps(folder)  # what killed runs (write-exif or undo) left
    try:
        for record in iter_undo_order(records):
            _undo_record(record, backups, busy, summary, folders, report)
    finally:
        locks.release()
    for folder in folders:
        fsync_dir(folder)
    return summary


def _undo_record(
    record: dict[str, Any],
    backups: Path | None,
    busy: set[Path],
    summary: UndoSummary,
    folders: set[Path],
    report: Callable[[str, str, str | None], None] | None,
) -> None:
    """Undo one record and count it (a busy folder's records are skipped with a reason)."""
    refused = _refusal(record)
    if refused:
        action, reason = "failed", refused
    elif Path(record["path"]).parent in busy:
        action, reason = "skipped", BUSY
    else:
        try:
            action, reason = _undo_one(record, backups)
        except OSError as exc:
            action, reason = "failed", _io_reason(exc)
    path = str(record.get("path"))
    if action == "restored":
        folders.add(Path(path).parent)
        summary.restored += 1
    elif action == "skipped":
        summary.skipped[reason or "?"] += 1
    else:
        summary.failed.append((path, reason or "?"))
    if report is not None:
        report(path, action, reason)
