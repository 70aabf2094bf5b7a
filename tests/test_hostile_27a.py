"""Issue 27 (part a): hostile inputs to export, write-exif's helpers and review's inputs; each test
failed on the code before its fix."""

from __future__ import annotations

import csv
from pathlib import Path

from geotag.io.export import export_points
from geotag.io.parquet import PredictionWriter


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
