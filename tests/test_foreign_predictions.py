"""Issue 28 item 5: someone else's predictions (CSV / Parquet, their own column names) in eval and report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cli_util import geotag

from geotag.errors import InputError
from geotag.eval.foreign import map_columns, parse_columns
from geotag.eval.metrics import MISS_KM, evaluate
from geotag.geo.distance import haversine_np
from geotag.io.export import export_points
from geotag.io.parquet import PredictionWriter

G3_CSV = """IMG_ID,LAT,LON,LAT_pred,LON_pred
a.jpg,48.85,2.35,48.86,2.35
b.jpg,41.9,12.5,0,0
c.jpg,40.7,-74.0,34.0,-118.2
d.jpg,35.68,139.69,,
f.jpg,51.5,-0.12,51.4,-0.1
"""
MANIFEST = """IMG_ID,LAT,LON
a.jpg,48.85,2.35
b.jpg,41.9,12.5
c.jpg,40.7,-74.0
d.jpg,35.68,139.69
e.jpg,-33.9,151.2
f.jpg,51.5,-0.12
"""


@pytest.fixture()
def g3(tmp_path: Path) -> Path:
    (tmp_path / "g3.csv").write_text(G3_CSV)
    (tmp_path / "manifest.csv").write_text(MANIFEST)
    return tmp_path / "g3.csv"


def test_columns_are_mapped_by_name_or_by_hand() -> None:
    names = ["IMG_ID", "LAT", "LON", "LAT_pred", "LON_pred"]
    assert map_columns(names, {}, "x") == {
        "path": "IMG_ID",
        "pred_lat": "LAT_pred",
        "pred_lon": "LON_pred",
        "gt_lat": "LAT",
        "gt_lon": "LON",
    }
    with pytest.raises(InputError, match="could be the predictions or the truth"):
        map_columns(["file", "lat", "lon"], {}, "x")
    assert (
        map_columns(["file", "lat", "lon"], parse_columns("pred_lat=lat,pred_lon=lon"), "x")["pred_lat"]
        == "lat"
    )
    with pytest.raises(InputError, match="could each be pred_lat"):
        map_columns(["file", "lat_pred", "predicted_lat", "lon_pred"], {}, "x")
    with pytest.raises(InputError, match="no such column"):
        map_columns(names, parse_columns("pred_lat=nope"), "x")
    with pytest.raises(InputError, match="unknown role"):
        parse_columns("where=LAT")


def test_eval_of_a_published_style_csv(g3: Path) -> None:
    result = evaluate([g3], thresholds=[25.0, 2500.0])
    row = result.rows[0]
    assert row["file"] == "g3" and row["n_rows"] == 5
    assert row["n_no_pred"] == 2 and row["n_scored"] == 3  # the (0, 0) placeholder and the empty row
    d = haversine_np([48.85, 40.7, 51.5], [2.35, -74.0, -0.12], [48.86, 34.0, 51.4], [2.35, -118.2, -0.1])
    assert row["median_km"] == pytest.approx(float(np.median(d)))
    assert row["acc_25km"] == pytest.approx(2 / 3)
    notes = " | ".join(result.notes)
    assert "columns path=IMG_ID, pred_lat=LAT_pred, pred_lon=LON_pred, gt_lat=LAT, gt_lon=LON" in notes
    assert (
        "1 prediction(s) at (0, 0), a placeholder" in notes and "1 row(s) without a valid prediction" in notes
    )


def test_truth_join_and_missing_as_wrong(g3: Path) -> None:
    manifest = g3.parent / "manifest.csv"
    joined = evaluate([g3], thresholds=[25.0], truth=manifest).rows[0]
    assert joined["n_rows"] == 6 and joined["n_no_pred"] == 3 and joined["n_scored"] == 3  # e.jpg added
    strict = evaluate([g3], thresholds=[25.0], truth=manifest, missing_as_wrong=True)
    row = strict.rows[0]
    assert row["n_no_pred"] == 0 and row["n_scored"] == 6
    assert row["acc_25km"] == pytest.approx(2 / 6)  # as papers count: 3 unplaced photos are misses
    d_c = float(haversine_np(40.7, -74.0, 34.0, -118.2))  # the 3rd of 6 sorted; misses sit at MISS_KM
    assert row["median_km"] == pytest.approx((d_c + MISS_KM) / 2)
    assert any("3 row(s) without a prediction scored as misses" in n for n in strict.notes)
    assert any("1 of the --truth manifest's photos have no row" in n for n in strict.notes)


def test_a_foreign_parquet_and_geotag_export_csv_read_back(tmp_path: Path) -> None:
    table = pa.table({"name": ["x.jpg", "y.jpg"], "true_lat": [10.0, 20.0], "true_lon": [10.0, 20.0]})
    table = table.append_column("lat_pred", pa.array([10.0, 25.0])).append_column(
        "lon_pred", pa.array([10.0, 20.0])
    )
    pq.write_table(table, tmp_path / "theirs.parquet")
    row = evaluate([tmp_path / "theirs.parquet"], thresholds=[1.0]).rows[0]
    assert row["n_scored"] == 2 and row["acc_1km"] == pytest.approx(0.5)

    rows = [
        {
            "path": f"/p/{i}.jpg",
            "status": "ok",
            "gt_lat": 40.0 + i,
            "gt_lon": 10.0,
            "pred_lat": 40.3 + i,
            "pred_lon": 10.1,
            "confidence": 0.1 * i,
        }
        for i in range(5)
    ]
    with PredictionWriter(tmp_path / "ours.parquet") as writer:
        writer.write_rows(rows)
    export_points(tmp_path / "ours.parquet", tmp_path / "ours.csv")
    ours = evaluate([tmp_path / "ours.parquet"], thresholds=[25.0, 50.0]).rows[0]
    back = evaluate([tmp_path / "ours.csv"], thresholds=[25.0, 50.0]).rows[0]
    for key in ("n_scored", "acc_25km", "acc_50km", "median_km", "mean_km"):
        assert back[key] == pytest.approx(ours[key]), key


def test_cli_eval_and_report_on_foreign_predictions(g3: Path, tmp_path: Path) -> None:
    """Through the CLI's entry point in this process (eval and report as processes: tests/test_eval.py)."""
    manifest = str(g3.parent / "manifest.csv")
    done = geotag("eval", g3, "--truth", manifest, "--missing-as-wrong", "--format", "csv")
    assert done.returncode == 0, done.stderr
    assert "pred_lat=LAT_pred" in done.stderr and "scored as misses" in done.stderr
    bad = geotag("eval", g3, "--columns", "pred_lat")
    assert bad.returncode == 2 and "ROLE=COLUMN" in bad.stderr and "Traceback" not in bad.stderr
    page = geotag("report", g3, "--truth", manifest, "--out", tmp_path / "r")
    assert page.returncode == 0, page.stderr
    html = (tmp_path / "r" / "index.html").read_text()
    assert "placeholder" in html and "read as foreign predictions" in html


def test_review_opens_foreign_predictions(tmp_path: Path) -> None:
    from PIL import Image

    from geotag.review.session import Session

    Image.new("RGB", (8, 8)).save(tmp_path / "a.jpg")
    (tmp_path / "theirs.csv").write_text("IMG_ID,LAT_pred,LON_pred\na.jpg,45.5,7.25\nmissing.jpg,0,0\n")
    session = Session.open(tmp_path / "theirs.csv")
    assert [(r["pred_lat"], r["pred_lon"]) for r in session.rows] == [(45.5, 7.25), (None, None)]
    assert session.photo_path(0) == tmp_path / "a.jpg"  # named relative to the file's folder
    by_hand = Session.open(tmp_path / "theirs.csv", columns="path=IMG_ID,pred_lat=LAT_pred,pred_lon=LON_pred")
    assert by_hand.rows == session.rows


def test_a_geotag_scan_is_the_truth(g3: Path, tmp_path: Path) -> None:
    """Joined by file name to a scan (its gt_lat / gt_lon), not only to a manifest."""
    scan = tmp_path / "scan.parquet"
    rows = [
        {"path": f"/photos/{name}", "status": "ok", "gt_lat": lat, "gt_lon": lon}
        for name, lat, lon in (("a.jpg", 48.86, 2.35), ("c.jpg", 34.0, -118.2), ("f.jpg", 51.4, -0.1))
    ]
    with PredictionWriter(scan, geometry="gt") as writer:
        writer.write_rows(rows)
    row = evaluate([g3], thresholds=[1.0], truth=scan).rows[0]
    assert row["n_scored"] == 3 and row["acc_1km"] == 1.0  # the scan's truth replaced the file's own
