"""bench/embed_cache.py runs in CI at a tiny size: it embeds, trains one head epoch and prints its table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import REPO


def test_embed_cache_bench_prints_its_table(tmp_path: Path) -> None:
    cmd = [sys.executable, "bench/embed_cache.py", "--photos", "4", "--rows", "256", "--batch-size", "128"]
    cmd += ["--workers", "0", "--dir", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| embed (geoclip, cpu) |" in proc.stdout and "| geoclip heads, 1 epoch |" in proc.stdout
    assert "GeoCLIP-head epoch on 256 cached embeddings" in proc.stdout, proc.stdout
