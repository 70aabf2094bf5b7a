"""The decisions file of `geotag review`: what a person said about each prediction, crash-safe.

Append-only JSON Lines beside the predictions (`<stem>.decisions.jsonl`): one line per decision, each
written with a single O_APPEND write and fsynced before the reviewer is told it is saved, so a crash
loses at most the decision being made. Reading keeps the last decision per row (changing one's mind
appends, never rewrites) and skips a line torn by a crash (not JSON). Each line names the row index
and the row's image_id, so a decisions file is never applied to the wrong predictions file.
"""

from __future__ import annotations

import json
import math
import os
import stat
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from geotag.errors import InputError
from geotag.io.bounded import NotAPhotoFile, read_regular

ACTIONS = ("accept", "reject")
SOURCES = ("prediction", "candidate", "moved")


@dataclass(frozen=True)
class Decision:
    """One reviewer decision; lat/lon is the chosen position (None for a rejection)."""

    row: int
    image_id: str
    action: str
    lat: float | None = None
    lon: float | None = None
    source: str = "prediction"  # prediction | candidate | moved
    time: str = ""

    def validate(self) -> Decision:
        """This decision, or InputError naming what is wrong with it."""
        if not isinstance(self.row, int) or isinstance(self.row, bool) or self.row < 0:
            raise InputError("decision: row must be a non-negative integer")
        if not isinstance(self.image_id, str) or not self.image_id:
            raise InputError("decision: image_id missing")
        if self.action not in ACTIONS:
            raise InputError(f"decision: action must be one of {', '.join(ACTIONS)}")
        if self.source not in SOURCES:
            raise InputError(f"decision: source must be one of {', '.join(SOURCES)}")
        if self.action == "accept":
            lat, lon = self.lat, self.lon
            for v in (lat, lon):
                if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                    raise InputError("decision: an accepted position needs finite lat and lon")
            assert lat is not None and lon is not None
            if not (-90 <= lat <= 90 and -180 <= lon <= 180):
                raise InputError("decision: lat/lon out of range")
        return self


def default_path(predictions: Path) -> Path:
    """`<predictions stem>.decisions.jsonl` beside the predictions file."""
    return predictions.absolute().with_name(f"{predictions.stem}.decisions.jsonl")


def append(path: Path, decision: Decision) -> Decision:
    """Append one decision durably (fsynced; the folder too when the file is new). Never follows a
    symlink at `path`."""
    d = decision.validate()
    if not d.time:
        d = Decision(**{**asdict(d), "time": datetime.now(UTC).isoformat(timespec="seconds")})
    line = (json.dumps(asdict(d), separators=(",", ":")) + "\n").encode()
    new = not path.exists()
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    fd = os.open(path, flags, 0o644)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InputError(f"decisions file {path} is not a regular file; refused")
        if os.fstat(fd).st_size and not _ends_with_newline(fd):
            line = b"\n" + line  # a torn last line stays a line of its own, ignored on reading
        os.write(fd, line)  # one write: O_APPEND keeps it whole against other appenders
        os.fsync(fd)
    finally:
        os.close(fd)
    if new:
        from geotag.io.durable import fsync_dir

        fsync_dir(path.parent)
    return d


def _ends_with_newline(fd: int) -> bool:
    size = os.fstat(fd).st_size
    return os.pread(fd, 1, size - 1) == b"\n"


MAX_BYTES = 256 << 20
"""A decisions file larger than this is refused (some 2 million decisions: more than anyone reviews)."""


def read_bounded(path: Path, what: str, limit: int = MAX_BYTES) -> bytes | None:
    """A regular file's bytes (None when it does not exist), read with geotag.io.bounded's bound: a
    FIFO, a device (`/dev/zero`) or a folder is refused at once (opened non-blocking, checked with fstat
    before any read), and a file over `limit` bytes is refused rather than read into memory."""
    try:
        return read_regular(path, limit)
    except FileNotFoundError:
        return None
    except NotAPhotoFile as exc:
        if exc.reason == "too large":
            raise InputError(f"{what} {path} is larger than {limit >> 20} MiB; refused") from None
        raise InputError(f"{what} {path} is not a regular file (a FIFO, device or folder); refused") from None
    except OSError as exc:
        raise InputError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc


def read(path: Path) -> dict[int, Decision]:
    """The last decision for each row. A JSON line that is not a valid decision is an error; a line that
    is not JSON at all was torn by a crash and is skipped. Only a regular file, of bounded size."""
    data = read_bounded(path, "decisions file")
    if data is None:
        return {}
    lines = data.split(b"\n")
    out: dict[int, Decision] = {}
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            data = json.loads(raw)
        except ValueError:
            continue  # a line torn by a crash during its write (appending starts a fresh line after it)
        try:
            d = Decision(**data).validate()
        except (TypeError, InputError) as exc:
            raise InputError(f"{path}: line {i + 1} is not a decision ({exc})") from exc
        out[d.row] = d
    return out
