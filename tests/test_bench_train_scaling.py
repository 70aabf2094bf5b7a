"""bench/train_scaling.py runs in CI at its tiny size: 1 and 2 gloo processes print their table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import REPO


def test_train_scaling_tiny_prints_its_table(tmp_path: Path) -> None:
    cmd = [sys.executable, "bench/train_scaling.py", "--size", "tiny", "--steps", "3"]
    cmd += ["--per-process-batch", "4", "--dir", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith(("| 1 |", "| 2 |"))]
    assert len(rows) == 2 and rows[0].endswith("| 100 % |"), proc.stdout
