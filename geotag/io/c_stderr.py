"""What C libraries print straight onto file descriptor 2 while a photo is read (libtiff inside Pillow:
"Using code not yet in table.", "Unknown field with tag ..."), caught so it can go into that photo's row
and the --verbose log instead of around the summary line.

Redirecting fd 2 is process-wide, so it is done only while this process runs one Python thread (scan's
and predict's worker processes): with a progress bar or a writer thread about, their output would be
swallowed, so there the lines pass through as before.
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


@contextmanager
def c_messages() -> Iterator[list[str]]:
    """Yields a list that holds, after the block, the distinct lines written to fd 2 inside it."""
    lines: list[str] = []
    if threading.active_count() != 1:
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
