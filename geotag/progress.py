"""Progress on stderr (machine output stays on stdout).

On a terminal a tqdm bar; anywhere else (a log file, a pipe, a batch job) one plain line every
`GEOTAG_LOG_EVERY` seconds (default 30; 0 turns the lines off), like timm's --log-freq, so a job's log
shows it is alive without escape codes. `--log-every N` (before or after the command) sets the
variable; `-q` silences the lines.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from types import TracebackType
from typing import Any, Protocol, TextIO

LOG_EVERY_ENV = "GEOTAG_LOG_EVERY"
DEFAULT_LOG_EVERY = 30.0


class Counter(Protocol):
    """What the engines use of a progress bar: count up, and close (as a context manager)."""

    def update(self, n: int = 1) -> Any: ...

    def __enter__(self) -> Counter: ...

    def __exit__(self, *exc: object) -> Any: ...


def log_every() -> float:
    """Seconds between plain progress lines (0: none); a bad value falls back to the default."""
    try:
        return max(0.0, float(os.environ.get(LOG_EVERY_ENV, DEFAULT_LOG_EVERY)))
    except ValueError:
        return DEFAULT_LOG_EVERY


def duration(seconds: float) -> str:
    """1h02m, 1m32s or 41s: short enough for a log line."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class LogLines:
    """`desc: 1,200/5,000 files, 41.3 files/s, eta 1m32s` every `every` seconds, and a last line at the
    end when any was printed (short jobs stay quiet: their summary says it all)."""

    def __init__(self, total: int | None, desc: str, every: float, unit: str, stream: TextIO) -> None:
        self.total, self.desc, self.every, self.unit, self.stream = total, desc, every, unit, stream
        self.n = self.n0 = 0  # n0: what was done before (a resumed run), left out of the rate
        self.note = ""  # extra text for the line (train: the loss)
        self.start = self.last = time.monotonic()
        self.printed = False

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self._line(now, done=False)

    def _line(self, now: float, done: bool) -> None:
        elapsed = max(now - self.start, 1e-9)
        rate = (self.n - self.n0) / elapsed
        count = f"{self.n:,}" + (f"/{self.total:,}" if self.total is not None else "")
        text = f"{self.desc}: {count} {self.unit}, {rate:.1f} {self.unit}/s"
        if done:
            text += f", done in {duration(elapsed)}"
        elif self.total is not None and rate > 0:
            text += f", eta {duration(max(self.total - self.n, 0) / rate)}"
        self.stream.write(text + (f", {self.note}" if self.note else "") + "\n")
        self.stream.flush()
        self.printed = True

    def close(self) -> None:
        if self.printed:
            self._line(time.monotonic(), done=True)
            self.printed = False

    def __enter__(self) -> LogLines:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()


def log_lines(total: int | None, desc: str, unit: str = "files") -> LogLines | None:
    """Plain progress lines on stderr when it is no terminal and they are wanted, else None."""
    every = log_every()
    quiet = logging.getLogger("geotag").getEffectiveLevel() > logging.WARNING
    if sys.stderr.isatty() or every <= 0 or quiet:
        return None
    return LogLines(total, desc, every, unit, sys.stderr)


def progress_bar(total: int | None, desc: str, *, enabled: bool = True, unit: str = "files") -> Counter:
    """A tqdm bar on a terminal, plain lines elsewhere (see the module docstring); `enabled=False`
    (--no-progress) gives a silent counter with the same API."""
    if enabled and not sys.stderr.isatty():
        lines = log_lines(total, desc, unit)
        if lines is not None:
            return lines
        enabled = False
    from tqdm import tqdm  # here, for a bar: the CLI imports this module at start-up, logs need no tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=True, leave=True)
