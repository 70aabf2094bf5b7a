"""Issue 28 item 3: kNN rows answered by the photo's own gallery entry are scored apart.

The scenario of the issue: tagged photos that are in the gallery come back perfect (self-matches, with
high confidence), the untagged-like rows are far off. Eval and the report must leave the self-matches
out (and say how many), and the --min-confidence advice must never be drawn from them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cli_util import geotag

from geotag.engine.self_match import mark_truth_matches
from geotag.eval import report_data
from geotag.eval.metrics import connect, evaluate
from geotag.io.parquet import PredictionWriter


def archive_rows() -> list[dict[str, Any]]:
    """30 self-matches (exact, confidence 0.9, in FR) and 20 honest rows (~300 km off, confidence 0.5-0.9,
    in IT) of which 2 land within 25 km."""
    rows: list[dict[str, Any]] = []
    for i in range(30):
        lat, lon = 48.0 + i * 0.01, 2.0
        rows.append(
            {
                "path": f"/a/tagged{i}.jpg",
                "status": "ok",
                "gt_lat": lat,
                "gt_lon": lon,
                "pred_lat": lat,
                "pred_lon": lon,
                "confidence": 0.95,
                "country": "FR",
                "gt_country": "FR",
                "self_match": "image" if i % 2 else "truth",
            }
        )
    for i in range(20):
        off = 0.05 if i < 2 else 3.0
        rows.append(
            {
                "path": f"/a/other{i}.jpg",
                "status": "ok",
                "gt_lat": 43.0,
                "gt_lon": 11.0,
                "pred_lat": 43.0 + off,
                "pred_lon": 11.0,
                "confidence": 0.5 + 0.02 * i,
                "country": "FR" if i % 2 else "IT",
                "gt_country": "IT",
            }
        )
    return rows


@pytest.fixture()
def archive(tmp_path: Path) -> Path:
    path = tmp_path / "archive.parquet"
    with PredictionWriter(path) as writer:
        writer.write_rows(archive_rows())
    return path


def test_eval_leaves_self_matches_out_and_says_how_many(archive: Path) -> None:
    result = evaluate([archive], thresholds=[25.0])
    row = result.rows[0]
    assert row["n_rows"] == 50 and row["n_self_match"] == 30 and row["n_scored"] == 20
    assert row["acc_25km"] == pytest.approx(2 / 20)
    assert row["country_acc"] == pytest.approx(10 / 20)  # over the same 20 rows as the distances
    assert any("30 self-match row(s) left out" in note for note in result.notes)
    by = {r["gt_country"]: r for r in evaluate([archive], thresholds=[25.0], by=["gt_country"]).rows}
    assert by["FR"]["n_scored"] == 0 and by["FR"]["acc_25km"] is None  # not 100 %: nothing to score
    assert by["FR"]["country_acc"] is None and by["IT"]["n_scored"] == 20
    scored = evaluate([archive], thresholds=[25.0], include_self=True).rows[0]
    assert scored["n_self_match"] == 0 and scored["n_scored"] == 50
    assert scored["acc_25km"] == pytest.approx(32 / 50)


def test_min_confidence_advice_ignores_self_matches(archive: Path) -> None:
    con = connect()
    try:
        for include in (False, True):
            sources, _ = report_data.open_sources(con, [archive], include_self=include)
            cal = report_data.calibration(con, sources[0], 25.0)
            assert cal.total == 20 and int(cal.hits.sum()) == 2
            advice = report_data.suggest_min_confidence(cal, (0.9,))
            assert advice[0].min_confidence is None  # only 2 of 20 honest rows are within 25 km
            facts = report_data.file_facts(con, sources[0])
            assert facts.n_self == 30
    finally:
        con.close()


def test_cli_eval_and_report(archive: Path, tmp_path: Path) -> None:
    """Through the CLI's entry point in this process (eval and report as processes: tests/test_eval.py)."""
    done = geotag("eval", archive, "--format", "json", "--thresholds", "25")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["rows"][0]["n_self_match"] == 30 and doc["rows"][0]["n_scored"] == 20
    assert "30 self-match row(s) left out" in done.stderr
    table = geotag("eval", archive, "--include-self-matches")
    assert table.returncode == 0 and "30 self-match row(s) scored" in table.stderr
    page = geotag("report", archive, "--out", tmp_path / "r")
    assert page.returncode == 0, page.stderr
    html = (tmp_path / "r" / "index.html").read_text()
    assert "self-match" in html and "30 self-match row(s) left out" in html


def test_truth_in_the_candidates_marks_the_row() -> None:
    top = [{"lat": 45.0, "lon": 7.0, "score": 0.6}, {"lat": 45.5, "lon": 7.5, "score": 0.4}]
    rows = [
        {"self_match": None, "gt_lat": 45.5, "gt_lon": 7.500001, "topk": top},  # 0.08 m from candidate 2
        {"self_match": None, "gt_lat": 45.5, "gt_lon": 7.51, "topk": top},  # 780 m: a neighbour
        {"self_match": "image", "gt_lat": 45.5, "gt_lon": 7.51, "topk": top},  # kept as the model said
        {"gt_lat": 45.0, "gt_lon": 7.0, "topk": top},  # not a kNN row: no self_match key, left alone
        {"self_match": None, "gt_lat": None, "gt_lon": None, "topk": top},
    ]
    mark_truth_matches(rows)
    assert [r.get("self_match", "-") for r in rows] == ["truth", None, "image", "-", None]
