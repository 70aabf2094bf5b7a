"""Issue 27 (part a): hostile inputs to export, write-exif's helpers and review's inputs; each test
failed on the code before its fix."""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from test_review import make_preds
from write_exif_util import EXIFTOOL

from geotag.engine.write_exif import WriteOptions, run_write_exif
from geotag.errors import InputError
from geotag.eval.report_data import resolve_photo
from geotag.io import decisions
from geotag.io.export import export_points
from geotag.io.parquet import PredictionWriter
from geotag.io.scan import image_id
from geotag.review.app import make_server
from geotag.review.session import Session
from geotag.sample_data import UNTAGGED, render


def _preds(path: Path, rows: list[dict[str, object]]) -> Path:
    with PredictionWriter(path) as w:
        for r in rows:
            w.write({"status": "ok", **r})
    return path


# --- item 6: CSV export formula injection ------------------------------------------------------------


def test_csv_export_escapes_formula_cells_but_not_numbers(tmp_path: Path) -> None:
    """A file named `=HYPERLINK(...).jpg` (and text cells starting with +, -, @, tab, CR) reached the
    CSV raw, so a spreadsheet ran it. Text cells get a leading `'`; negative numbers stay numbers."""
    evil = '=HYPERLINK(CONCAT("http:",A1),"click").jpg'
    rows = [
        {"path": f"/p/{evil}", "pred_lat": -33.5, "pred_lon": -70.25, "model": "+cmd|' /C calc'!A0"},
        {"path": "/p/@SUM(1).jpg", "pred_lat": 10.0, "pred_lon": -20.5, "model": "-2+3", "country": "\tDE"},
        {"path": "/p/\rx.jpg", "pred_lat": 1.0, "pred_lon": 2.0, "model": "knn", "scene": "a=b"},
    ]
    out = tmp_path / "p.csv"
    export_points(_preds(tmp_path / "preds.parquet", rows), out)
    with open(out, newline="") as fh:
        got = list(csv.DictReader(fh))
    assert [r["name"] for r in got] == [f"'{evil}", "'@SUM(1).jpg", "'\rx.jpg"]
    assert [r["model"] for r in got] == ["'+cmd|' /C calc'!A0", "'-2+3", "knn"]
    assert got[1]["country"] == "'\tDE" and got[2]["scene"] == "a=b"  # only a leading character counts
    assert [r["path"] for r in got] == [f"/p/{evil}", "/p/@SUM(1).jpg", "/p/\rx.jpg"]
    assert [(float(r["lon"]), float(r["pred_lat"])) for r in got] == [
        (-70.25, -33.5),
        (-20.5, 10.0),
        (2.0, 1.0),
    ]
    assert got[0]["lon"] == "-70.25"  # a number, written as a number
    for r in got:
        for key, value in r.items():
            if value[:1] in ("=", "+", "@", "\t", "\r") or (value[:1] == "-" and key not in ("lon", "lat")):
                assert key in ("lon", "lat", "pred_lon", "pred_lat") and float(value) < 0, (key, value)


# --- item 8: a decisions file that is a FIFO, a device or huge -----------------------------------------


def _in_thread(fn: Callable[[], object], timeout: float = 10.0) -> object:
    """fn()'s result or exception, or TimeoutError when it hangs (left blocked in a daemon thread)."""
    box: list[object] = []

    def run() -> None:
        try:
            box.append(fn())
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            box.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    return box[0] if box else TimeoutError("hung")


def _unblock(fifo: Path) -> None:
    """Give a reader blocked on `fifo` its EOF (when one is blocked there)."""
    with contextlib.suppress(OSError):
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def test_review_with_a_fifo_decisions_file_is_one_line_not_a_hang(tmp_path: Path) -> None:
    preds = make_preds(tmp_path, n=2)
    fifo = tmp_path / "d.jsonl"
    os.mkfifo(fifo)
    try:
        got = _in_thread(lambda: make_server(preds, fifo))
    finally:
        _unblock(fifo)
    assert isinstance(got, InputError) and "not a regular file" in str(got), got


def test_write_exif_with_a_fifo_or_device_as_decisions_is_refused(tmp_path: Path) -> None:
    preds = make_preds(tmp_path, n=2)
    fifo = tmp_path / "d.jsonl"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero")):
        opts = WriteOptions(preds, decisions=path, writer="python", journal=tmp_path / "j.jsonl")
        try:
            got = _in_thread(lambda o=opts: run_write_exif(o))  # type: ignore[misc]
        finally:
            _unblock(fifo)
        assert isinstance(got, InputError) and "not a regular file" in str(got), got


def test_decisions_read_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = tmp_path / "d.jsonl"
    big.write_bytes(b"\n" * 5000)
    monkeypatch.setattr(decisions, "MAX_BYTES", 4096)
    with pytest.raises(InputError, match="larger than"):
        decisions.read_bounded(big, "decisions file", decisions.MAX_BYTES)
    assert isinstance(_in_thread(lambda: decisions.read(Path("/dev/zero"))), InputError)


# --- item 8: a killed write-exif must not leave exiftool -stay_open running ---------------------------

PARENT = """
import sys, time
from geotag.io.exif_write import ExiftoolProcess, find_exiftool
p = ExiftoolProcess(find_exiftool())
p.start()
print(p._proc.pid, flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\\nState:\\tZ" not in status  # a zombie has exited (nobody may reap it in a container)


@pytest.mark.skipif(EXIFTOOL is None, reason="exiftool not installed")
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux)")
def test_exiftool_exits_when_write_exif_is_killed() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    child = 0
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert _alive(child)
        parent.kill()  # SIGKILL: no cleanup of any kind runs in geotag
        parent.wait()
        deadline = time.monotonic() + 5
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child), "exiftool -stay_open outlived its killed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
        if child and _alive(child):
            os.kill(child, signal.SIGKILL)


# --- item 8: one rule for a relative `path`: beside the predictions file, never the current folder -----


def test_relative_paths_resolve_beside_the_predictions_file_everywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """write-exif resolved a relative `path` against the current folder, review and report beside the
    predictions file: run from elsewhere, write-exif wrote a different file (an identical copy there)."""
    run_dir, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    real = run_dir / "photos" / "a.jpg"
    real.parent.mkdir(parents=True)
    render(UNTAGGED[0], (64, 48)).save(real, "JPEG", quality=85)
    decoy = elsewhere / "photos" / "a.jpg"
    decoy.parent.mkdir(parents=True)
    decoy.write_bytes(real.read_bytes())
    preds = run_dir / "preds.parquet"
    with PredictionWriter(preds) as w:
        w.write(
            {
                "image_id": image_id(real),
                "path": "photos/a.jpg",
                "status": "ok",
                "pred_lat": 5.5,
                "pred_lon": 6.5,
            }
        )
    monkeypatch.chdir(elsewhere)
    before = decoy.read_bytes()
    summary = run_write_exif(WriteOptions(preds, writer="python", journal=tmp_path / "j.jsonl"))
    assert summary.written == 1
    assert decoy.read_bytes() == before and real.read_bytes() != before
    assert resolve_photo("photos/a.jpg", preds.parent) == run_dir / "photos" / "a.jpg"
    assert Session.open(preds).photo_path(0) == run_dir / "photos" / "a.jpg"
