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


def _damaged_tiff(folder: Path) -> Path:
    """A real LZW TIFF of the shared fixtures with the end of its first strip overwritten: Pillow's
    libtiff then prints "Using code not yet in table." straight onto fd 2 while decoding. (No fixture
    as shipped makes libtiff print: each was scanned and decoded with fd 2 captured.)"""
    from conftest import fixture_dir

    src = fixture_dir("exif-samples") / "tiff" / "Tless0.tiff"
    with Image.open(src) as im:
        offset, count = im.tag_v2[273][0], im.tag_v2[279][0]
    data = bytearray(src.read_bytes())
    data[offset + count // 4 : offset + count] = b"\xff" * (count - count // 4)
    out = folder / "damaged.tiff"
    out.write_bytes(bytes(data))
    return out


def test_libtiff_lines_go_into_the_row_not_onto_stderr(tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    photo = _damaged_tiff(tmp_path)
    script = (
        "import json, sys\n"
        "from geotag.engine.predict import read_item\n"
        "from geotag.io.scan import iter_records\n"
        "from geotag.models.base import Preprocess\n"
        "(record,) = iter_records([sys.argv[1]])\n"
        "item = read_item(record, Preprocess(32, (0.5,) * 3, (0.5,) * 3), True, set())\n"
        "print(json.dumps({k: item['row'].get(k) for k in ('status', 'error', 'gt_note')}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run(
        [sys.executable, "-c", script, str(photo)], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "not yet in table" not in proc.stderr  # nothing on the terminal ...
    row = json.loads(proc.stdout)
    assert row["status"] == "error" and "Using code not yet in table" in row["error"]  # ... all in the row
    assert "decoder stderr: " in row["gt_note"]


def test_c_messages_catch_fd_2_only_with_one_thread(capfd: pytest.CaptureFixture[str]) -> None:
    import os
    import threading

    from geotag.io.c_stderr import c_messages

    if threading.active_count() != 1:
        pytest.skip("another thread runs in this test process")
    with c_messages() as said:
        os.write(2, b"TIFFReadDirectory: Warning, Unknown field with tag 50341\n")
    assert said == ["TIFFReadDirectory: Warning, Unknown field with tag 50341"]
    assert capfd.readouterr().err == ""
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        with c_messages() as said:
            os.write(2, b"passes through\n")
    finally:
        stop.set()
        other.join()
    assert said == [] and "passes through" in capfd.readouterr().err
