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

Nothing here follows a symlink: the journal is opened with O_NOFOLLOW (and created with O_EXCL, so a
dangling link at its name is refused, not created at its target), a backup folder that is a link is
refused, and a file already sitting at a backup's name is used only if it hashes to the bytes it must
keep (anything else, e.g. a planted file, is replaced by the real backup).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from geotag import __version__
from geotag.errors import InputError, OutputError
from geotag.io.durable import TEMP_SUFFIX, UnsafeWrite, fsync_dir, open_append_nofollow
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
        st = _lstat(self.path)
        if st is not None and stat.S_ISLNK(st.st_mode):
            raise OutputError(f"journal {self.path} is a symlink; refused (give the real file's path)")
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise OutputError(f"journal {self.path} is a directory")
        if not folder.is_dir():
            raise OutputError(f"journal folder {folder} does not exist")
        if not os.access(folder, os.W_OK):
            raise OutputError(f"journal folder {folder} is not writable")
        if keep_backups:
            check_backup_dir(self.backup_dir)
        if st is not None:
            read_journal(self.path)  # appending to something that is not a journal would ruin it

    def _open(self) -> None:
        if self._fh is not None:
            return
        try:
            fh = os.fdopen(open_append_nofollow(self.path), "a+b")
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EEXIST):
                raise OutputError(f"journal {self.path} is a symlink or appeared meanwhile; refused") from exc
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
        if _holds(target, old_hash):  # the same bytes are already kept (a copy of this photo elsewhere)
            return name
        try:
            check_backup_dir(self.backup_dir, create=True)
        except OutputError as exc:
            raise UnsafeWrite(str(exc)) from exc
        # under a fresh unpredictable name, then renamed over whatever (a planted file) holds the name
        tmp = self.backup_dir / f".{name}.{secrets.token_hex(8)}{TEMP_SUFFIX}"
        try:
            try:
                os.link(path, tmp)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
                    raise
                _copy_new(path, tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
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


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def check_backup_dir(folder: Path, *, create: bool = False) -> bool:
    """Whether the backup folder exists (made, private, when `create`); OutputError when its name is a
    symlink or not a folder: backups are never written through, nor restored from, a planted link."""
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(folder, 0o700)
    st = _lstat(folder)
    if st is None:
        return False
    if not stat.S_ISDIR(st.st_mode):
        raise OutputError(f"backup folder {folder} is a symlink or not a folder; refused")
    return True


def _holds(path: Path, digest: str) -> bool:
    """Is `path` a regular file (not a link) whose bytes hash to `digest`?"""
    st = _lstat(path)
    return st is not None and stat.S_ISREG(st.st_mode) and current_hash(path) == digest


def _copy_new(src: Path, dst: Path) -> None:
    """Copy `src` to the new name `dst` (created exclusively, never through a link), fsynced."""
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
        shutil.copyfileobj(inp, out, 1 << 20)
        out.flush()
        os.fsync(out.fileno())


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
