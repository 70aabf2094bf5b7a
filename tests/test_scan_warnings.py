"""Library warnings raised while scanning a file land in that file's row (gt_note) and the log."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytest
from PIL import Image

from geotag.engine.scan import scan_file
from geotag.io.scan import iter_records


def test_decompression_bomb_warning_goes_to_the_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    photo = tmp_path / "big.png"
    Image.new("RGB", (64, 64)).save(photo)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # 4096 px: over the limit, under 2x: a warning
    (record,) = list(iter_records([tmp_path]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning escaping scan_file fails the test
        with caplog.at_level(logging.INFO, logger="geotag.engine.scan"):
            row = scan_file(record)
    assert row["status"] == "ok"
    assert "DecompressionBombWarning" in row["gt_note"]
    assert "DecompressionBombWarning" in caplog.text


def test_summary_is_one_unwrapped_line_when_stderr_is_a_pipe(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    deep = tmp_path / ("a-long-folder-name-" * 6) / "[x]"
    deep.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(deep / "p.jpg")
    out = deep / "scan.parquet"
    env = {**os.environ, "COLUMNS": "60", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run(
        [sys.executable, "-m", "geotag.cli", "scan", str(deep), "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert line.startswith("scanned 1 file(s)") and line.endswith(f"-> {out}")


def test_out_by_extension_and_dash_refused(tmp_path: Path) -> None:
    import subprocess
    import sys

    Image.new("RGB", (8, 8)).save(tmp_path / "p.jpg")
    for out, words in [(tmp_path / "x.csv", "writes Parquet"), (Path("-"), "standard output")]:
        proc = subprocess.run(
            [sys.executable, "-m", "geotag.cli", "scan", str(tmp_path), "--out", str(out)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr
        assert not out.exists() and not (tmp_path / "-").exists()
