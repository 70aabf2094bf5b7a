"""`geotag eval --by source`: scores and counts per provenance (track, sibling, model, ...), also for a
file from before schema 3 (no `source` column: every position came from a model)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from geotag.eval.metrics import evaluate
from geotag.io.parquet import PredictionWriter

GEOTAG = [sys.executable, "-m", "geotag.cli"]


def _rows() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for i in range(3):  # placed by the track: metres away
        rows.append(
            {
                "path": f"/p/t{i}.jpg",
                "source": "track",
                "gt_lat": 10.0,
                "gt_lon": 20.0,
                "pred_lat": 10.0001,
                "pred_lon": 20.0,
            }
        )
    for i in range(2):  # by sibling photos: 1 km off
        rows.append(
            {
                "path": f"/p/s{i}.jpg",
                "source": "sibling",
                "gt_lat": 10.0,
                "gt_lon": 20.0,
                "pred_lat": 10.0 + 0.5 / 111.2,
                "pred_lon": 20.0,
            }
        )
    # the visual model: far off; and one photo nothing placed
    rows.append(
        {
            "path": "/p/m0.jpg",
            "source": "model",
            "gt_lat": 10.0,
            "gt_lon": 20.0,
            "pred_lat": 40.0,
            "pred_lon": 20.0,
        }
    )
    rows.append({"path": "/p/n0.jpg", "source": None, "gt_lat": 10.0, "gt_lon": 20.0})
    return [{"status": "ok", **r} for r in rows]


@pytest.fixture
def preds(tmp_path: Path) -> Path:
    with PredictionWriter(tmp_path / "p.parquet") as writer:
        writer.write_rows(_rows())
    return tmp_path / "p.parquet"


def test_by_source_counts_and_scores(preds: Path) -> None:
    got = {r["source"]: r for r in evaluate([preds], thresholds=[0.1, 1.0, 25.0], by=["source"]).rows}
    assert set(got) == {"track", "sibling", "model", None}
    assert (got["track"]["n_rows"], got["track"]["n_scored"], got["track"]["acc_0.1km"]) == (3, 3, 1.0)
    assert got["sibling"]["n_scored"] == 2 and got["sibling"]["acc_0.1km"] == 0.0
    assert got["sibling"]["acc_1km"] == 1.0
    assert got["model"]["n_scored"] == 1 and got["model"]["acc_25km"] == 0.0
    assert got[None]["n_no_pred"] == 1 and got[None]["n_scored"] == 0


def test_cli_table_and_json(preds: Path) -> None:
    out = subprocess.run(
        [*GEOTAG, "eval", str(preds), "--by", "source", "-f", "json"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    counts = {r["source"]: r["n_rows"] for r in json.loads(out.stdout)["rows"]}
    assert counts == {"track": 3, "sibling": 2, "model": 1, None: 1}
    table = subprocess.run(
        [*GEOTAG, "eval", str(preds), "--by", "source", "-f", "markdown"], capture_output=True, text=True
    )
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].startswith("| source | N | scored |")
    assert "| track | 3 | 3 |" in table.stdout and "| (none) | 1 | 0 |" in table.stdout


def test_by_source_on_a_file_from_before_schema_3(preds: Path, tmp_path: Path) -> None:
    old = tmp_path / "old.parquet"
    table = pq.read_table(preds)
    pq.write_table(table.drop_columns(["source"]), old)
    got = {r["source"]: r["n_rows"] for r in evaluate([old], by=["source"]).rows}
    assert got == {"model": 6, None: 1}


def test_report_has_a_source_table_and_the_map_knows_each_source(preds: Path, tmp_path: Path) -> None:
    from geotag.eval.html_report import build_report

    build_report([preds], tmp_path / "report")
    index = (tmp_path / "report" / "index.html").read_text()
    assert "Where the positions came from" in index
    section = index.split("Where the positions came from")[1].split("<h2>")[0]
    for source, n in (("track", 3), ("sibling", 2), ("model", 1), ("(none)", 1)):
        assert f"<td>{source}</td>" in section and f"<td class=num>{n}</td>" in section, source
    page = (tmp_path / "report" / "map-1.html").read_text()
    data = json.loads(page.split('<script id="rows" type="application/json">')[1].split("</script>")[0])
    assert data["s"] == ["track"] * 3 + ["sibling"] * 2 + ["model", None]
    assert 'id="colour-by"' in page and "source-filter" in page


def test_report_of_a_file_without_sources_has_no_source_table(preds: Path, tmp_path: Path) -> None:
    from geotag.eval.html_report import build_report

    old = tmp_path / "old.parquet"
    pq.write_table(pq.read_table(preds).drop_columns(["source"]), old)
    build_report([old], tmp_path / "report")
    assert "Where the positions came from" not in (tmp_path / "report" / "index.html").read_text()
