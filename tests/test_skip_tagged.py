"""`predict --skip-tagged` (issue 28 item 2): photos with measured GPS keep a row with their own position
and `source = exif`; eval and the report never score those rows and say how many; the map draws them
apart; write-exif never writes them."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from write_exif_util import write_predictions

from geotag.config import PredictConfig
from geotag.engine.predict import run_predict
from geotag.engine.write_exif import SKIP_HAS_GPS, SKIP_MEASURED, WriteOptions, run_write_exif
from geotag.eval import map_page, report_data
from geotag.eval.metrics import connect, evaluate
from geotag.models.clip_convert import ClipVisionConfig
from geotag.models.registry import build_geoclip

TINY = ClipVisionConfig(width=32, layers=1, heads=2, mlp_dim=64, patch_size=16, image_size=64)


def test_predict_keeps_measured_rows_and_predicts_the_rest(sample_data: Path, tmp_path: Path) -> None:
    gallery = tmp_path / "g.csv"
    gallery.write_text("lat,lon\n10,20\n-30,40\n48.8,2.3\n")
    torch.manual_seed(0)
    model = build_geoclip(vit=TINY, allow_untrained=True, gallery=gallery)
    out = tmp_path / "p.parquet"
    cfg = PredictConfig(paths=[sample_data], out=out, batch_size=4, workers=0, top_k=1, skip_tagged=True)
    summary = run_predict(cfg, model=model)
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == summary.total == 28  # one file holds the whole archive
    measured = [r for r in rows if r["source"] == "exif"]
    predicted = [r for r in rows if r["source"] == "model"]
    assert summary.measured == len(measured) > 0 and predicted
    for r in measured:
        assert r["gt_source"] == "exif" and r["status"] == "ok"
        assert (r["pred_lat"], r["pred_lon"]) == (r["gt_lat"], r["gt_lon"])
        assert r["model"] is None and r["confidence"] is None and r["topk"] is None
    for r in predicted:  # only photos without measured GPS went through the model
        assert r["gt_lat"] is None and r["model"] == model.name and r["pred_lat"] is not None
    assert {Path(r["path"]).name for r in predicted} == {"no_gps_1.jpg", "no_gps_2.png"}


def _mixed(tmp_path: Path, photo: Path) -> Path:
    """Two measured rows (exactly right, as measured GPS is) and two predictions 100 km and 1000+ km off."""
    rows = [
        {"path": photo, "gt_lat": 10.0, "gt_lon": 20.0, "pred_lat": 10.0, "pred_lon": 20.0, "source": "exif"},
        {"path": photo, "gt_lat": -5.0, "gt_lon": 30.0, "pred_lat": -5.0, "pred_lon": 30.0, "source": "exif"},
        {"path": photo, "gt_lat": 0.0, "gt_lon": 1.0, "pred_lat": 0.9, "pred_lon": 1.0, "source": "model"},
        {"path": photo, "gt_lat": 40.0, "gt_lon": 1.0, "pred_lat": 50.0, "pred_lon": 1.0, "source": "model"},
    ]
    return write_predictions(tmp_path / "mixed.parquet", rows)


def test_eval_does_not_score_measured_rows_and_says_how_many(tmp_path: Path) -> None:
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"x")
    result = evaluate([_mixed(tmp_path, photo)], thresholds=[1.0, 200.0])
    (row,) = result.rows
    assert row["n_rows"] == 4 and row["n_scored"] == 2 and row["n_no_pred"] == 2
    assert row["acc_1km"] == 0.0 and row["acc_200km"] == 0.5  # not 'perfect' from the measured rows
    assert any("2 row(s) keep the photo's measured GPS" in n for n in result.notes), result.notes


def test_map_marks_measured_rows(tmp_path: Path) -> None:
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"x")
    con = connect()
    try:
        (src,), _ = report_data.open_sources(con, [_mixed(tmp_path, photo)], None)
        data = map_page.map_rows(con, src, tmp_path)
    finally:
        con.close()
    assert data["m"] == [1, 1, 0, 0] and data["d"][:2] == [None, None]
    page = map_page.page_html("t", data)
    assert "measured GPS (not predicted)" in page


def test_write_exif_never_writes_measured_rows_and_says_has_gps_only_for_the_file(tmp_path: Path) -> None:
    from PIL import Image

    photo = tmp_path / "a.jpg"
    Image.new("RGB", (16, 16)).save(photo)  # no GPS in the file
    preds = write_predictions(
        tmp_path / "p.parquet",
        [
            {"path": photo, "gt_lat": 1.0, "gt_lon": 2.0, "pred_lat": 1.0, "pred_lon": 2.0, "source": "exif"},
        ],
    )
    summary = run_write_exif(WriteOptions(predictions=preds, dry_run=True))
    assert summary.skipped == {SKIP_MEASURED: 1} and summary.would_write == 0
    # a --truth manifest's truth is no GPS in the file: not "already has GPS"
    manifest = write_predictions(
        tmp_path / "m.parquet",
        [
            {
                "path": photo,
                "gt_lat": 1.0,
                "gt_lon": 2.0,
                "gt_source": "manifest",
                "pred_lat": 5.0,
                "pred_lon": 6.0,
            }
        ],
    )
    summary = run_write_exif(WriteOptions(predictions=manifest, dry_run=True))
    assert summary.would_write == 1 and SKIP_HAS_GPS not in summary.skipped
    exif = write_predictions(
        tmp_path / "e.parquet",
        [
            {
                "path": photo,
                "gt_lat": 1.0,
                "gt_lon": 2.0,
                "gt_source": "exif",
                "pred_lat": 5.0,
                "pred_lon": 6.0,
            }
        ],
    )
    assert run_write_exif(WriteOptions(predictions=exif, dry_run=True)).skipped == {SKIP_HAS_GPS: 1}


@pytest.mark.parametrize("flag", ["--skip-tagged"])
def test_cli_documents_the_option(flag: str) -> None:
    from typer.testing import CliRunner

    from geotag.cli import app

    result = CliRunner().invoke(app, ["predict", "--help"])
    assert flag in result.output


def test_review_leaves_measured_rows_out_of_its_queue(tmp_path: Path) -> None:
    from geotag.review.session import Session

    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"x")
    session = Session.open(_mixed(tmp_path, photo))
    flags = [(session.summary(i)["ok"], session.summary(i)["measured"]) for i in range(4)]
    assert flags == [(False, True), (False, True), (True, False), (True, False)]
