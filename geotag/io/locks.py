"""Folder locks for write-exif and undo: two runs never change the same folder at the same time.

The lock is `flock` on the folder itself (an open descriptor of the directory), so no lock file is
created in the user's folder: a lock file made by path (as the `filelock` package does, with
O_CREAT|O_TRUNC) would follow a symlink a co-user planted there. The kernel drops the lock when
the process dies, so a killed run never leaves a folder locked.
"""

from __future__ import annotations

import fcntl
import os
import stat
import time
from collections.abc import Iterable
from pathlib import Path

from geotag.io.durable import TEMP_SUFFIX, discard_temp_dir

BUSY = "another geotag run is writing this folder; run again when it has finished"


class FolderLocks:
    """Exclusive locks on folders, taken in a fixed order (no deadlock between two runs)."""

    def __init__(self, wait_s: float = 10.0) -> None:
        self.wait_s = wait_s
        self._held: dict[Path, int] = {}

    def acquire(self, folders: Iterable[Path]) -> set[Path]:
        """Lock what can be locked within `wait_s`; returns the folders that stayed busy."""
        busy: set[Path] = set()
        for folder in sorted(set(folders)):
            if folder in self._held:
                continue
            try:
                fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError:
                continue  # the writer reports the folder's own problem
            deadline = time.monotonic() + self.wait_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    self._held[folder] = fd
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        os.close(fd)
                        busy.add(folder)
                        break
                    time.sleep(0.05)
        return busy

    def release(self) -> None:
        for fd in self._held.values():
            os.close(fd)  # closing the last descriptor drops the flock
        self._held.clear()


def remove_stale_temps(folder: Path) -> int:
    """Remove the temp folders and files killed geotag runs left in `folder` (call with its lock
    held: then no live run has temps there). Only entries named like geotag's temps and owned by
    the user running now are touched; a symlink is removed, never followed."""
    removed = 0
    euid = os.geteuid()
    try:
        entries = [e for e in os.scandir(folder) if e.name.startswith(".") and e.name.endswith(TEMP_SUFFIX)]
    except OSError:
        return 0
    for entry in entries:
        try:
            st = os.lstat(entry.path)
        except OSError:
            continue
        if st.st_uid != euid:
            continue
        if stat.S_ISDIR(st.st_mode):
            discard_temp_dir(Path(entry.path))
        else:
            try:
                os.unlink(entry.path)
            except OSError:
                continue
        removed += 1
    return removed
