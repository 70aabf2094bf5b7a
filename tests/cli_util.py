"""`geotag ARGS` in the test process: the real entry point (geotag.cli.main: its one-line errors and exit
codes) without a new interpreter importing torch again (~3 s a run). For tests about what a command
writes or answers; tests about the process itself (signals, stray output, warnings) start one."""

from __future__ import annotations

import contextlib
import io
import logging
import subprocess
import sys


def geotag(*args: object) -> subprocess.CompletedProcess[str]:
    """Run `geotag ARGS` in this process; the result reads like subprocess.run's (returncode, stdout,
    stderr), so a test can switch between the two. The `geotag` logger is left as it was found."""
    from geotag.cli import main

    argv = ["geotag", *map(str, args)]
    logger = logging.getLogger("geotag")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    out, err = io.StringIO(), io.StringIO()
    old_argv, sys.argv = sys.argv, argv
    code: int | str | None = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as exc:
        code = exc.code
    finally:
        sys.argv = old_argv
        logger.handlers[:], logger.level, logger.propagate = saved
    returncode = code if isinstance(code, int) else (0 if code is None else 1)
    return subprocess.CompletedProcess(argv, returncode, out.getvalue(), err.getvalue())
