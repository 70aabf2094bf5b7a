"""The write-exif journal: enough to put every changed file back exactly as it was.

A journal is a JSON Lines file. The first line is a header; then one record per changed file, written
and fsynced *before* the file is replaced (write-ahead), so a kill at any moment leaves a journal that
covers every change made. A record holds the file's path, the xxh3-128 hash of its old and new bytes,
its old GPS, size, mode and times, and the name of its backup.

Backups keep the old bytes, so `geotag write-exif --undo` restores files byte for byte. They live in
`<journal>.backup/`, named by content hash. A backup is a hard link to the original inode when the
journal is on the photo's file system: the write replaces the photo by renaming a new file over it,
so the old inode (the old bytes) lives on under the backup name at no cost in space or time. On
another file system the bytes are copied and fsynced.

Undo decides per record from the file's current hash: the new hash -> restore the backup; the old
hash -> already original; anything else -> the file was changed after the write, and it is left alone.
Records are undone newest first, so several runs appended to one journal unwind in order.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from geotag import __version__
from geotag.errors import InputError, OutputError
from geotag.io.durable import fsync_dir, fsync_file
from geotag.io.scan import image_id

try:
    import fcntl
except ImportError:  # not POSIX: no lock, the rest works
    fcntl = None  # type: ignore[assignment]

JOURNAL_KIND = "geotag-write-exif-journal"
JOURNAL_VERSION = 1


def backup_dir_for(journal: Path) -> Path:
    return journal.with_name(journal.name + ".backup")


class Journal:
    """An append-only journal, created on the first record (a run that changes nothing leaves none).

    One run at a time may append: the file is locked (flock) while open."""

    def __init__(
        self, path: Path, *, keep_backups: bool = True, header: dict[str, Any] | None = None
    ) -> None:
        self.path = Path(path).absolute()
        self.keep_backups = keep_backups
        self.backup_dir = backup_dir_for(self.path)
        self._header = header or {}
        self._fh: Any = None
        self.records = 0
        self.created = False  # whether this run wrote anything to the journal
        folder = self.path.parent
        if self.path.is_dir():
            raise OutputError(f"journal {self.path} is a directory")
        if not folder.is_dir():
            raise OutputError(f"journal folder {folder} does not exist")
        if not os.access(folder, os.W_OK):
            raise OutputError(f"journal folder {folder} is not writable")
        if self.path.exists():
            read_journal(self.path)  # appending to something that is not a journal would ruin it

    def _open(self) -> None:
        if self._fh is not None:
            return
        try:
            fh = open(self.path, "a+b")  # noqa: SIM115 - held open for the whole run
        except OSError as exc:
            raise OutputError(f"cannot write journal {self.path}: {exc.strerror or exc}") from exc
        try:
            if fcntl is not None:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            fh.close()
            raise OutputError(f"journal {self.path} is in use by another geotag run") from exc
        self._fh = fh
        self.created = True
        if fh.seek(0, os.SEEK_END) == 0:
            header = {
                "kind": JOURNAL_KIND,
                "version": JOURNAL_VERSION,
                "geotag_version": __version__,
                "created_at": datetime.now(UTC).isoformat(),
                **self._header,
            }
            self._write_line(header)
            fsync_dir(self.path.parent)

    def _write_line(self, obj: dict[str, Any]) -> None:
        self._fh.write(json.dumps(obj, separators=(",", ":")).encode() + b"\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def backup(self, path: Path, old_hash: str, *, sync: bool = True) -> str | None:
        """Keep `path`'s current bytes under `<journal>.backup/<hash><suffix>`; returns that name.

        None when backups are off. The caller has checked that `path` still hashes to `old_hash`.
        With sync=False the caller calls `sync_backups()` once for many backups (before journalling)."""
        if not self.keep_backups:
            return None
        self._open()
        name = old_hash + path.suffix.lower()
        target = self.backup_dir / name
        if target.exists():  # the same bytes are already kept (a copy of this photo elsewhere)
            return name
        self.backup_dir.mkdir(exist_ok=True)
        try:
            os.link(path, target)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
                raise
            tmp = target.with_name(f".{name}.tmp")
            try:
                shutil.copyfile(path, tmp)
                fsync_file(tmp)
                os.replace(tmp, target)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        if sync:
            fsync_dir(self.backup_dir)
        return name

    def sync_backups(self) -> None:
        """Make the backup links made since the last call durable (one fsync of the folder)."""
        if self.backup_dir.is_dir():
            fsync_dir(self.backup_dir)

    def append(self, record: dict[str, Any]) -> None:
        """Write one record durably (fsync) before the change it describes is made."""
        self.append_many([record])

    def append_many(self, records: list[dict[str, Any]]) -> None:
        """Write records durably with one fsync (group commit) before any of their changes is made."""
        if not records:
            return
        self._open()
        now = datetime.now(UTC).isoformat()
        lines = b"".join(
            json.dumps({"time": now, **r}, separators=(",", ":")).encode() + b"\n" for r in records
        )
        self._fh.write(lines)
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.records += len(records)

    def close(self) -> None:
        if self._fh is not None:
            if fcntl is not None:
                with contextlib.suppress(OSError):
                    fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_journal(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The header and records of a journal. A torn last line (power loss mid-append) is ignored: its
    change was never made, because records are durable before the change."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such journal")
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise InputError(f"cannot read journal {path}: {exc.strerror or exc}") from exc
    items: list[dict[str, Any]] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            items.append(json.loads(line))
        except ValueError as exc:
            if i == len(lines) - 1:
                break
            raise InputError(f"{path}: line {i + 1} is not a journal record") from exc
    if not items or items[0].get("kind") != JOURNAL_KIND:
        raise InputError(f"{path} is not a geotag write-exif journal")
    if items[0].get("version", 0) > JOURNAL_VERSION:
        raise InputError(f"{path} was written by a newer geotag (journal version {items[0]['version']})")
    return items[0], items[1:]


def current_hash(path: Path) -> str | None:
    """xxh3-128 of the file now, or None when it is missing."""
    try:
        return image_id(path)
    except FileNotFoundError:
        return None


def iter_undo_order(records: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Newest change first, so a file changed by several runs steps back one change at a time."""
    return reversed(records)
