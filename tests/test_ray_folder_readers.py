"""A `predict --engine ray` output folder (part-*.parquet) is accepted wherever a predictions file is:
eval, report, export, write-exif and review read it through one reader (geotag.io.parquet.Predictions)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from test_export import ROWS
from typer.testing import CliRunner

from geotag.cli import app
from geotag.errors import InputError
from geotag.io.parquet import Predictions, PredictionWriter, require_columns


@pytest.fixture
def both(tmp_path: Path) -> tuple[Path, Path]:
    """The same rows as one file and as a Ray output folder of two parts (with its _SUCCESS.json)."""
    single = tmp_path / "preds.parquet"
    with PredictionWriter(single, metadata={"command": "predict"}) as w:
        w.write_rows(ROWS)
    folder = tmp_path / "ray-out"
    folder.mkdir()
    for name, rows in (("part-0a", ROWS[:3]), ("part-1b", ROWS[3:])):
        with PredictionWriter(folder / f"{name}.parquet", metadata={"command": "predict"}) as w:
            w.write_rows(rows)
    (folder / "_SUCCESS.json").write_text(json.dumps({"rows": len(ROWS)}))
    return single, folder


def _run(args: list[str]) -> str:
    result = CliRunner().invoke(app, args)
    assert result.exit_code in (0, 1), result.output
    return result.stdout


def test_the_reader_gives_the_files_rows(both: tuple[Path, Path]) -> None:
    single, folder = both
    table = Predictions(folder)
    assert table.num_rows == len(ROWS) and table.files == sorted(folder.glob("part-*.parquet"))
    rows = [r for b in table.iter_batches(columns=["path"]) for r in b.to_pylist()]
    assert rows == [r for b in Predictions(single).iter_batches(columns=["path"]) for r in b.to_pylist()]
    empty = folder.parent / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="without part-"):
        require_columns(empty, ["path"])


def test_eval_export_and_write_exif_read_the_folder(both: tuple[Path, Path], tmp_path: Path) -> None:
    single, folder = both
    evals = [json.loads(_run(["eval", str(p), "--format", "json"]))["rows"] for p in (single, folder)]
    assert [r["file"] for r in evals[1]] == ["ray-out"] and evals[1][0]["n_rows"] == len(ROWS)
    for a, b in zip(evals[0], evals[1], strict=True):
        assert {k: v for k, v in a.items() if k != "file"} == {k: v for k, v in b.items() if k != "file"}
    for what in ("pred", "gt"):
        outs = [tmp_path / f"{p.stem}-{what}.csv" for p in (single, folder)]
        for p, out in zip((single, folder), outs, strict=True):
            _run(["export", str(p), "--out", str(out), "--what", what])
        assert outs[0].read_text() == outs[1].read_text()
    dry = [_run(["write-exif", str(p), "--dry-run"]) for p in (single, folder)]
    assert dry[0] == dry[1]


def test_report_and_review_read_the_folder(both: tuple[Path, Path], tmp_path: Path) -> None:
    from geotag.review.session import Session

    single, folder = both
    said = []
    for p in (single, folder):
        result = CliRunner().invoke(app, ["report", str(p), "--out", str(tmp_path / p.stem)])
        assert result.exit_code == 0, result.output
        said.append(re.sub(r" in [\d.]+ s", "", result.stderr.split("->")[0]))
    assert said[0] == said[1] and f"report of {len(ROWS)} row(s)" in said[1]
    assert Session.open(folder).rows == Session.open(single).rows
