"""bench/geotag_vs_exiftool.py runs at a tiny size: both tools timed, and their positions agree."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO


def _run(tmp_path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [
            sys.executable,
            "bench/geotag_vs_exiftool.py",
            "--n",
            "12",
            "--fixes",
            "200",
            "--dir",
            str(tmp_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool not installed")
def test_geotag_vs_exiftool_tiny(tmp_path: Path) -> None:
    proc = _run(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (
        "| geotag, both steps | " in proc.stdout
        and "| exiftool -geotag -overwrite_original | " in proc.stdout
    )
    agree = re.search(
        r"geotag placed (\d+), exiftool (\d+), both (\d+); positions differ by at most ([\d.]+) m",
        proc.stdout,
    )
    assert agree is not None, proc.stdout
    assert agree.groups()[:3] == ("12", "12", "12") and float(agree[4]) < 1.0
    assert "0 GPS date/time stamp(s) differ" in proc.stdout


def test_without_exiftool_it_says_so(tmp_path: Path) -> None:
    proc = _run(tmp_path, {"PATH": str(Path(sys.executable).parent)})
    assert proc.returncode == 0 and proc.stdout.startswith("skipped: exiftool is not on the PATH"), (
        proc.stdout
    )
