"""`geotag ARGS` in the test process: the real entry point (geotag.cli.main: its one-line errors and exit
codes) without a new interpreter importing torch again (~3 s a run). For tests about what a command
writes or answers; tests about the process itself (signals, what reaches file descriptor 2) start one."""

from __future__ import annotations

import contextlib
import io
import logging
import subprocess
import sys
import warnings

# Python's own filters in a fresh interpreter (no -W): what a user's `geotag` run would print
PROCESS_IGNORES = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


def geotag(*args: object) -> subprocess.CompletedProcess[str]:
    """Run `geotag ARGS` in this process; the result reads like subprocess.run's (returncode, stdout,
    stderr), so a test can switch between the two. Python warnings the run raises are written to its
    stderr as the interpreter would (pytest would otherwise collect them); the `geotag` logger is left
    as it was found."""
    from geotag.cli import main

    argv = ["geotag", *map(str, args)]
    logger = logging.getLogger("geotag")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    out, err = io.StringIO(), io.StringIO()
    old_argv, sys.argv = sys.argv, argv
    code: int | str | None = 0
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.resetwarnings()
            for category in PROCESS_IGNORES:
                warnings.simplefilter("ignore", category)
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                main()
    except SystemExit as exc:
        code = exc.code
    finally:
        sys.argv = old_argv
        logger.handlers[:], logger.level, logger.propagate = saved
    for w in caught:
        err.write(warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line))
    returncode = code if isinstance(code, int) else (0 if code is None else 1)
    return subprocess.CompletedProcess(argv, returncode, out.getvalue(), err.getvalue())
