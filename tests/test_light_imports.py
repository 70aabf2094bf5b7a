"""The everyday commands (scan, eval, export, report, write-exif, predict --model none) never import torch,
timm or transformers: they start in a fraction of a second and stay small, so a scan can outrun exiftool."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from write_exif_util import write_predictions

CHECK = """
import sys
from typer.testing import CliRunner
from geotag import cli
result = CliRunner().invoke(cli.app, sys.argv[1:])
heavy = [m for m in ("torch", "timm", "transformers") if m in sys.modules]
print("exit", result.exit_code, "heavy", heavy)
print(result.output)
assert not heavy, heavy
"""


@pytest.fixture(scope="module")
def preds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("light")
    rows = []
    for i, (lat, lon) in enumerate([(48.85, 2.35), (-33.87, 151.21), (40.71, -74.0)]):
        photo = d / f"p{i}.jpg"
        Image.new("RGB", (32, 24), (i * 60, 90, 30)).save(photo)
        rows.append({"path": photo, "pred_lat": lat, "pred_lon": lon, "gt_lat": lat + 0.1, "gt_lon": lon})
    return write_predictions(d / "preds.parquet", rows)


@pytest.mark.parametrize(
    "command",
    [
        ["scan", "{dir}", "--out", "{dir}/scan.parquet"],
        ["eval", "{preds}"],
        ["export", "{preds}", "--out", "{dir}/points.geojson"],
        ["report", "{preds}", "--out", "{dir}/report"],
        ["write-exif", "{preds}", "--dry-run"],
        ["predict", "{dir}", "--out", "{dir}/time.parquet", "--model", "none", "--tz", "UTC"],
    ],
    ids=lambda c: c[0],
)
def test_command_imports_no_deep_learning_stack(command: list[str], preds: Path) -> None:
    args = [a.format(dir=preds.parent, preds=preds) for a in command]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run(
        [sys.executable, "-c", CHECK, *args], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "exit 0" in proc.stdout or "exit 1" in proc.stdout, proc.stdout


def test_help_lists_the_models_and_keeps_brackets() -> None:
    from typer.testing import CliRunner

    from geotag import cli
    from geotag.models.registry import available_models

    assert sorted(cli.MODEL_NAMES.split(", ")) == available_models()
    runner = CliRunner()
    predict = runner.invoke(cli.app, ["predict", "--help"], env={"COLUMNS": "200"})
    assert cli.MODEL_NAMES in " ".join(predict.output.split())
    cells = runner.invoke(cli.app, ["cells", "build", "--help"], env={"COLUMNS": "200"})
    text = " ".join(cells.output.split())
    assert "auto (shrink by sqrt(n / MP-16 size))" in text and "(default 5000,2000,1000)" in text
    top = runner.invoke(cli.app, ["--help"], env={"COLUMNS": "200"})
    assert "--install-completion" in top.output


EMPTY_SCAN = """
import sys
from typer.testing import CliRunner
from geotag import cli
result = CliRunner().invoke(cli.app, sys.argv[1:])
assert result.exit_code == 0, result.output
loaded = [m for m in ("PIL", "exifread", "pillow_heif", "pandas", "multiprocessing") if m in sys.modules]
print("loaded", loaded)
"""


def test_an_empty_scan_imports_no_decoder_pool_or_pandas(tmp_path: Path) -> None:
    """Start-up: the decoders come with the first file (before the pool forks), pandas (pyarrow's probe
    on its first `pa.array`) with the first rows, multiprocessing with the pool."""
    (tmp_path / "empty").mkdir()
    args = ["scan", str(tmp_path / "empty"), "--out", str(tmp_path / "scan.parquet")]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run(
        [sys.executable, "-c", EMPTY_SCAN, *args], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "loaded []" in proc.stdout, proc.stdout


SCAN_MAIN = """
import sys
from geotag import cli
sys.argv = ["geotag", *sys.argv[1:]]
try:
    cli.main()
except SystemExit as exc:
    assert exc.code == 0, exc.code
heavy = ["pydantic", "rich", "click", "tqdm", "PIL", "exifread", "pillow_heif", "pandas", "multiprocessing"]
heavy += ["torch", "timm", "transformers"]
print("loaded", [m for m in heavy if m in sys.modules])
"""


def test_scan_starts_without_pydantic_rich_or_the_other_commands(tmp_path: Path) -> None:
    """`geotag scan` as the console script runs it (cli.main): Typer builds the scan command alone and
    coerces its values without Pydantic; the summary line needs no rich (cli_startup.py, issue 28 item 11).
    What remains at start-up: Python, Typer, and pyarrow with numpy for the Parquet file it writes."""
    (tmp_path / "empty").mkdir()
    args = ["scan", str(tmp_path / "empty"), "--out", str(tmp_path / "scan.parquet")]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run(
        [sys.executable, "-c", SCAN_MAIN, *args], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "loaded []" in proc.stdout, proc.stdout
    assert proc.stderr.startswith("scanned 0 file(s)"), proc.stderr
