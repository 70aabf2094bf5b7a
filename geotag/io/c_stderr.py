"""What C libraries print straight onto file descriptor 2 while a photo is read (libtiff inside Pillow:
"Using code not yet in table.", "Unknown field with tag ..."), caught so it can go into that photo's row
and the --verbose log instead of around the summary line.

Redirecting fd 2 is process-wide, so it is done only while no other Python thread of this process may
print: in scan's worker processes (one thread), and in a process that declared its other threads silent
(`quiet_process`: predict's DataLoader workers, whose extra threads are multiprocessing's queue feeder
and torch's resource sharer, which only move data). With a progress bar or a writer thread about, their
output would be swallowed, so there the lines pass through as before.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

MAX_LINES = 5


_sink: tuple[int, Any] | None = None  # (pid, temp file): one per process, reused for every photo


def _temp() -> Any:
    """This process's capture file (made once per process: a forked worker makes its own)."""
    global _sink
    if _sink is None or _sink[0] != os.getpid():
        _sink = (os.getpid(), tempfile.TemporaryFile())  # noqa: SIM115 - kept open for the process
    return _sink[1]


_quiet_pid: int | None = None  # the process whose other threads never write to stderr


def quiet_process() -> None:
    """Declare that this process's other threads never print (a DataLoader worker's plumbing)."""
    global _quiet_pid
    _quiet_pid = os.getpid()


def _alone() -> bool:
    """Whether fd 2 may be borrowed now: one thread, or a process declared quiet."""
    return threading.active_count() == 1 or _quiet_pid == os.getpid()


@contextmanager
def c_messages() -> Iterator[list[str]]:
    """Yields a list that holds, after the block, the distinct lines written to fd 2 inside it."""
    lines: list[str] = []
    if not _alone():
        yield lines
        return
    sys.stderr.flush()
    tmp = _temp()
    tmp.seek(0)
    tmp.truncate()
    saved = os.dup(2)
    os.dup2(tmp.fileno(), 2)
    try:
        yield lines
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        tmp.seek(0)
        text = tmp.read(64 * 1024).decode("utf-8", "replace")
        lines.extend(list(dict.fromkeys(ln.strip() for ln in text.splitlines() if ln.strip()))[:MAX_LINES])
