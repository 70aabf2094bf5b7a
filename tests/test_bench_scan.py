"""bench/scan_vs_exiftool.py runs at a tiny size and prints its table and summary."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def test_scan_vs_exiftool_tiny(tmp_path) -> None:  # type: ignore[no-untyped-def]
    proc = subprocess.run(
        [sys.executable, "bench/scan_vs_exiftool.py", "--n", "12", "--repeat", "1", "--dir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| geotag scan | " in proc.stdout and "summary: " in proc.stdout
