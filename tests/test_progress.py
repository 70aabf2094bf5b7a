"""Progress when stderr is no terminal: plain lines every --log-every seconds, no bars or escape codes."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from geotag.progress import LogLines, duration

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures" / "exif-samples" / "jpg"
LINE = re.compile(r"^scan: [\d,]+/[\d,]+ files, [\d.]+ files/s, (eta \d+(h\d\dm|m\d\ds|s)|done in .+)$")


def test_log_lines_count_rate_and_eta() -> None:
    stream = io.StringIO()
    with LogLines(10, "predict", 0.0, "files", stream) as lines:
        lines.update(4)
        lines.update(6)
    first, second, last = stream.getvalue().splitlines()
    assert re.fullmatch(r"predict: 4/10 files, [\d.]+ files/s, eta \d+s", first)
    assert second.startswith("predict: 10/10 files") and second.endswith("eta 0s")
    assert re.fullmatch(r"predict: 10/10 files, [\d.]+ files/s, done in \d+s", last)


def test_log_lines_wait_for_the_interval() -> None:
    stream = io.StringIO()
    with LogLines(None, "scan", 3600.0, "files", stream) as lines:
        lines.update(5)
    assert stream.getvalue() == ""  # a short job: its summary line says it all


def test_duration() -> None:
    assert [duration(s) for s in (41, 92, 3720)] == ["41s", "1m32s", "1h02m"]


def _scan(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None, after: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "GEOTAG_LOG_EVERY"}
    full_env.update(PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "geotag.cli",
            *args,
            "scan",
            str(FIXTURES),
            "--out",
            str(tmp_path / "s.parquet"),
            *after,
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,  # stderr is a pipe, as in a batch job
        text=True,
        env=full_env,
        timeout=120,
    )


@pytest.mark.skipif(not FIXTURES.is_dir(), reason="needs ../shared/fixtures")
def test_scan_prints_plain_progress_lines_into_a_pipe(tmp_path: Path) -> None:
    proc = _scan(tmp_path, env={"GEOTAG_LOG_EVERY": "0.000001"})
    assert proc.returncode in (0, 1), proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("scan: ")]
    assert len(lines) >= 2, proc.stderr
    assert all(LINE.match(ln) for ln in lines), lines
    assert "\x1b" not in proc.stderr and "\r" not in proc.stderr  # no bar, no escape codes
    assert proc.stderr.splitlines()[-1].startswith("scanned ")  # the summary stays last


@pytest.mark.skipif(not FIXTURES.is_dir(), reason="needs ../shared/fixtures")
def test_log_every_option_zero_and_quiet_silence_the_lines(tmp_path: Path) -> None:
    for args in (["--log-every", "0"], ["-q"]):
        proc = _scan(tmp_path, *args, env={"GEOTAG_LOG_EVERY": "0.000001"})
        assert "scan: " not in proc.stderr, (args, proc.stderr)
    proc = _scan(tmp_path, "--log-every", "0.000001", env={"GEOTAG_LOG_EVERY": "0"})
    assert any(LINE.match(ln) for ln in proc.stderr.splitlines()), proc.stderr


@pytest.mark.skipif(not FIXTURES.is_dir(), reason="needs ../shared/fixtures")
def test_log_every_after_the_command_wins(tmp_path: Path) -> None:
    """`geotag scan DIR --out X --log-every 0.05`: the command's own option, over the root option and
    the environment (both 0 here, which alone would print no line)."""
    proc = _scan(tmp_path, "--log-every", "0", env={"GEOTAG_LOG_EVERY": "0"}, after=("--log-every", "0.05"))
    assert proc.returncode in (0, 1), proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("scan: ")]
    assert lines and all(LINE.match(ln) for ln in lines), proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("scanned ")


def test_train_monitor_logs_lines_off_a_terminal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from rich.console import Console

    from geotag.engine.train import RichMonitor

    monkeypatch.setenv("GEOTAG_LOG_EVERY", "0.000001")
    monitor = RichMonitor(Console(stderr=True, force_terminal=False), enabled=True)
    info = {"model": "m", "device": "cpu", "n_train": 8, "n_val": 2, "steps_per_epoch": 4}
    monitor.start(8, 2, info)
    monitor.step(5, {"loss": 1.5})
    monitor.close()
    err = capsys.readouterr().err
    assert re.search(r"^train: 5/8 steps, [\d.]+ steps/s, eta \d+s, loss 1\.5$", err, re.M), err
    assert "\x1b" not in err
