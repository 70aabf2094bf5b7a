"""Durable file writes: fsync of files and folders, atomic replacement by rename.

A new file is written under a temporary name in the target's folder (same file system, so the rename
is atomic), fsynced, renamed onto the target, and the folder is fsynced so the rename itself survives a
power cut: a reader sees the old file or the complete new one, never half of one. Used by the
predictions and gallery writers (geotag.io.parquet), the write-exif engine and its journal.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temp_path(path: Path) -> Path:
    """A hidden temporary name beside `path`, unique to this process: `.NAME.tmp-PID`."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def fsync_file(path: Path) -> None:
    """Flush a written file's data to disk (OSError when that fails: the data may not be there)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (best effort on file systems that cannot fsync folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace_atomically(tmp: Path, target: Path, *, sync_dir: bool = True) -> None:
    """Rename the finished, fsynced `tmp` onto `target` and make the rename durable (the caller may
    fsync the folder itself, once for many renames)."""
    os.replace(tmp, target)
    if sync_dir:
        fsync_dir(target.parent)


def write_new_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Create `path` (must not exist) with `data`, fsynced."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: Path, *, sync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write a whole file to; on a clean exit it replaces
    `path` (fsynced first, and the folder after, unless `sync` is False: for caches and other files
    that may be lost but never torn); on an exception it is removed and `path` keeps what it held."""
    tmp = temp_path(path)
    try:
        yield tmp
        if sync:
            fsync_file(tmp)
        replace_atomically(tmp, path, sync_dir=sync)
    finally:
        tmp.unlink(missing_ok=True)
