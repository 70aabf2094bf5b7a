"""Ground truth from manifests: every supported format, matching by path / name / id, scan, predict, eval."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from geotag.config import PredictConfig
from geotag.engine.predict import run_predict
from geotag.engine.scan import run_scan
from geotag.errors import InputError, SchemaError
from geotag.eval.metrics import evaluate
from geotag.io.parquet import PredictionWriter
from geotag.io.truth import describe, file_stem, ids_sha256, load_truth
from geotag.models.clip_convert import ClipVisionConfig
from geotag.models.registry import build_geoclip

from conftest import fixture_dir

TINY = ClipVisionConfig(width=32, layers=1, heads=2, mlp_dim=64, patch_size=16, image_size=64)
PLACES_HEADER = ["IMG_ID", "AUTHOR", "LAT", "LON", "S3_Label", "S16_Label", "S365_Label"]
PLACES_HEADER += ["Prob_indoor", "Prob_natural", "Prob_urban"]


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def run_cli(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """`geotag ...` in-process through its real entry point: (exit code, stdout, stderr)."""
    from geotag.cli import main

    monkeypatch.setattr(sys, "argv", ["geotag", *args])
    with pytest.raises(SystemExit) as info:
        main()
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


# --- formats ------------------------------------------------------------------------------------------


def test_places365_format_scene_labels(tmp_path: Path) -> None:
    rows = [
        ["111_aa_1_1@N00.jpg", "1@N00", 32.3, -64.7, 2, 12, 353, 0.27, 0.04, 0.68],
        ["222_bb_2_2@N00.jpg", "2@N00", -33.9, 151.2, 0, 4, 325, 0.41, 0.22, 0.36],
        ["333_cc_3_3@N00.jpg", "3@N00", 46.5, 8.0, 1, 8, 150, 0.0, 0.78, 0.22],
    ]
    truth = load_truth(write_csv(tmp_path / "im2gps3k_places365.csv", PLACES_HEADER, rows))
    assert truth.format == "places365" and len(truth) == 3
    assert truth.scene == ["urban", "indoor", "natural"]
    assert truth.country is None
    assert truth.lat.tolist() == [32.3, -33.9, 46.5] and truth.lon.tolist() == [-64.7, 151.2, 8.0]
    assert truth.stems()[0] == "111_aa_1_1@N00"


def test_places365_2018_header_with_lat_lon_swapped(tmp_path: Path) -> None:
    """The first GeoEstimation release says LON,LAT over latitude, longitude values: read by position."""
    header = ["IMG_ID", "AUTHOR", "LON", "LAT", "S3_Label"]
    truth = load_truth(write_csv(tmp_path / "old.csv", header, [["x.jpg", "a", 32.325436, -64.764404, 2]]))
    assert (truth.lat[0], truth.lon[0]) == (32.325436, -64.764404)
    assert any("LON before LAT" in n for n in truth.notes)


def test_osv5m_format_as_released_and_as_extracted(tmp_path: Path) -> None:
    released = write_csv(
        tmp_path / "test.csv",
        ["id", "latitude", "longitude", "thumb_original_url", "country", "region"],
        [
            [546314506564628, 39.559, 8.888, "http://x", "IT", "Sardinia"],
            [1000, -22.56, 17.08, "http://y", "NA", "Khomas"],  # Namibia, not a missing value
        ],
    )
    truth = load_truth(released)
    assert truth.format == "osv5m"
    assert truth.keys == ["546314506564628", "1000"]  # ids stay text, digits intact
    assert truth.country == ["IT", "NA"]
    extracted = load_truth(fixture_dir("osv5m-71") / "gt.csv")
    assert extracted.format == "osv5m" and len(extracted) == 71
    assert extracted.keys[0].startswith("select/") and extracted.country and extracted.country[0] == "IT"


def test_plain_csv_and_parquet(tmp_path: Path) -> None:
    plain = write_csv(
        tmp_path / "m.csv",
        ["Path", "Lat", "Lng", "Scene", "Country"],
        [["trips\\2024\\a.jpg", 1.5, 2.5, "Urban", " fr "], ["./b.png", 3.0, 4.0, "", ""]],
    )
    truth = load_truth(plain)
    assert truth.format == "plain"
    assert truth.keys == ["trips/2024/a.jpg", "b.png"]  # Windows separators and ./ normalised
    assert truth.scene == ["urban", None] and truth.country == ["fr", None]
    table = pa.table({"file": ["a.jpg", "c.jpg"], "latitude": [1.0, 2.0], "longitude": [3.0, 4.0]})
    pq.write_table(table, tmp_path / "m.parquet")
    truth = load_truth(tmp_path / "m.parquet")
    assert truth.format == "plain" and truth.keys == ["a.jpg", "c.jpg"]


def test_bad_rows_are_skipped_with_a_note(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "m.csv",
        ["path", "lat", "lon"],
        [["a.jpg", 1, 2], ["b.jpg", 95, 2], ["", 1, 2], ["c.jpg", "", 3]],
    )
    truth = load_truth(path)
    assert truth.keys == ["a.jpg"]
    assert truth.notes == ["3 row(s) without a key or valid coordinates were skipped"]


@pytest.mark.parametrize(
    "content, error, message",
    [
        ("name,x,y\na,1,2\n", SchemaError, "cannot tell the manifest format"),
        ("path,lat,lon\na.jpg,north,2\n", InputError, "cannot read the CSV"),
    ],
)
def test_unusable_manifests(tmp_path: Path, content: str, error: type[Exception], message: str) -> None:
    path = tmp_path / "m.csv"
    path.write_text(content)
    with pytest.raises(error, match=message):
        load_truth(path)
    with pytest.raises(InputError, match="no such file"):
        load_truth(tmp_path / "missing.csv")


def test_ids_hash_and_stems() -> None:
    assert file_stem("a/b/x.y.jpg") == "x.y" and file_stem("c\\d.JPG") == "d" and file_stem("123") == "123"
    assert ids_sha256(["b", "a", "a"]) == ids_sha256(["a", "b"])


# --- matching -----------------------------------------------------------------------------------------


def test_longest_path_wins_and_same_names_are_never_guessed(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "m.csv",
        ["path", "lat", "lon"],
        [["paris/x.jpg", 48.85, 2.35], ["rome/x.jpg", 41.9, 12.5], ["rome/y.jpg", 41.9, 12.5], ["42", 1, 1]],
    )
    truth = load_truth(path)
    assert truth.match("/photos/2024/paris/x.jpg").index == 0
    assert truth.match("/photos/rome/x.jpg").index == 1
    assert truth.match("/elsewhere/y.jpg").index == 2  # a unique name still matches anywhere
    loose = truth.match("/elsewhere/x.jpg")
    assert loose.index is None and loose.ambiguous == 2
    assert truth.match("/data/42.jpg").index == 3  # an id matches the file name without extension
    assert truth.match("/data/43.jpg").index is None
    row = {"path": "/elsewhere/x.jpg"}
    truth.apply(row)
    assert "manifest lists 2 files named x.jpg" in row["gt_note"] and "gt_lat" not in row
    report = truth.finish()
    assert report.ambiguous == 1 and report.unmatched_rows == 4


def test_manifest_wins_over_exif_and_says_when_they_disagree(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "m.csv",
        ["path", "lat", "lon", "scene", "country"],
        [["near.jpg", -33.8568, 151.2153, "urban", "AU"], ["far.jpg", -37.8136, 144.9631, "urban", "AU"]],
    )
    truth = load_truth(path)
    sydney = {"gt_lat": -33.856784, "gt_lon": 151.215297, "gt_source": "exif"}
    near = {"path": "/p/near.jpg", **sydney}
    far = {"path": "/p/far.jpg", **sydney, "gt_note": "altitude ref missing", "country": "NZ"}
    truth.apply(near)
    truth.apply(far)
    assert near["gt_source"] == "manifest" and "gt_note" not in near  # within 1 km: no note
    assert (far["gt_lat"], far["gt_lon"], far["gt_source"]) == (-37.8136, 144.9631, "manifest")
    assert far["gt_note"].startswith("altitude ref missing; exif and manifest differ by 71")
    assert far["gt_country"] == "AU" and far["scene"] == "urban"
    assert far["country"] == "NZ"  # the prediction's country is the model's business, never the manifest's
    report = truth.finish()
    assert (report.matched, report.disagree, report.unmatched_rows) == (2, 1, 0)
    assert "where EXIF differs by > 1 km" in describe(report)


# --- scan, predict, eval ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def osv_scan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = fixture_dir("osv5m-71")
    out = tmp_path_factory.mktemp("osv") / "scan.parquet"
    summary = run_scan([folder / "select"], out, workers=2, truth=folder / "gt.csv")
    assert summary.truth is not None and summary.truth.matched == 71 and summary.truth.unmatched_rows == 0
    return out


def test_scan_osv5m_71_with_truth(osv_scan: Path) -> None:
    rows = pq.read_table(osv_scan).to_pylist()
    assert len(rows) == 71
    assert all(r["gt_source"] == "manifest" and r["gt_lat"] is not None for r in rows)
    assert all(r["gt_country"] and len(r["gt_country"]) == 2 for r in rows)
    first = next(r for r in rows if r["path"].endswith("546314506564628.jpg"))
    assert first["gt_lat"] == pytest.approx(39.55910238557) and first["gt_country"] == "IT"


def test_cli_scan_and_eval_by_country(osv_scan: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    folder = fixture_dir("osv5m-71")
    out = tmp_path / "s.parquet"
    args = ["scan", str(folder / "select"), "--truth", str(folder / "gt.csv"), "--out", str(out)]
    code, _, err = run_cli(args, monkeypatch, capsys)
    assert code == 0, err
    assert "71 file(s) matched" in err and "71 with ground truth" in err
    code, stdout, err = run_cli(["eval", str(out), "--by", "gt_country", "-f", "json"], monkeypatch, capsys)
    assert code == 0, err
    doc = json.loads(stdout)
    assert len(doc["rows"]) == 48 and sum(r["n_rows"] for r in doc["rows"]) == 71
    assert {r["gt_country"] for r in doc["rows"]} >= {"US", "BR", "IT"}
    assert all(r["n_no_pred"] == r["n_rows"] for r in doc["rows"])  # a scan has ground truth, no predictions


def test_eval_truth_rejoins_in_duckdb(tmp_path: Path) -> None:
    """Predictions written without ground truth get it at eval time, joined by file name."""
    rows = [
        {"path": "/x/select/546314506564628.jpg", "status": "ok", "pred_lat": 39.56, "pred_lon": 8.89},
        {"path": "/x/select/296619375337754.jpg", "status": "ok", "pred_lat": 0.0, "pred_lon": 0.0},
        {
            "path": "/x/other.jpg",
            "status": "ok",
            "pred_lat": 1.0,
            "pred_lon": 1.0,
            "gt_lat": 1.0,
            "gt_lon": 1.0,
        },
    ]
    with PredictionWriter(tmp_path / "p.parquet") as writer:
        writer.write_rows(rows)
    plain = evaluate([tmp_path / "p.parquet"])
    assert plain.rows[0]["n_scored"] == 1
    joined = evaluate([tmp_path / "p.parquet"], by=["gt_country"], truth=fixture_dir("osv5m-71") / "gt.csv")
    by_country = {r["gt_country"]: r for r in joined.rows}
    assert by_country["IT"]["acc_25km"] == 1.0 and by_country["MY"]["acc_2500km"] == 0.0
    assert by_country[None]["n_scored"] == 1  # not in the manifest: keeps its own ground truth
    assert any("2 of 3 rows matched" in n for n in joined.notes)


def test_cli_eval_by_gt_country_needs_a_country_somewhere(tmp_path: Path, monkeypatch, capsys) -> None:
    foreign = tmp_path / "foreign.parquet"
    columns = {
        "path": pa.array(["/a/546314506564628.jpg"]),
        "status": pa.array(["ok"]),
        "pred_lat": pa.array([39.5]),
        "pred_lon": pa.array([8.9]),
        "gt_lat": pa.array([None], pa.float64()),
        "gt_lon": pa.array([None], pa.float64()),
    }
    pq.write_table(pa.table(columns), foreign)  # a foreign file: the needed columns only, no country
    code, _, err = run_cli(["eval", str(foreign), "--by", "gt_country"], monkeypatch, capsys)
    assert code == 2 and "no such column" in err
    truth = str(fixture_dir("osv5m-71") / "gt.csv")
    args = ["eval", str(foreign), "--by", "gt_country", "--truth", truth, "-f", "csv"]
    code, out, err = run_cli(args, monkeypatch, capsys)
    assert code == 0, err
    assert out.splitlines()[1].startswith("foreign,IT,1,0,0,0,0,1,")  # n_self_match 0 before n_scored


def test_scan_with_exif_and_a_disagreeing_manifest(sample_data: Path, tmp_path: Path) -> None:
    manifest = write_csv(
        tmp_path / "m.csv",
        ["path", "lat", "lon", "country"],
        [["sydney.jpg", -37.8136, 144.9631, "AU"], ["no_gps_1.jpg", 10.0, 20.0, "TD"]],
    )
    summary = run_scan([sample_data], tmp_path / "s.parquet", workers=1, truth=manifest)
    rows = {Path(r["path"]).name: r for r in pq.read_table(tmp_path / "s.parquet").to_pylist()}
    assert "exif and manifest differ by 71" in rows["sydney.jpg"]["gt_note"]
    assert rows["sydney.jpg"]["gt_lat"] == -37.8136 and rows["sydney.jpg"]["gt_source"] == "manifest"
    assert rows["no_gps_1.jpg"]["gt_lat"] == 10.0 and rows["no_gps_1.jpg"]["gt_country"] == "TD"
    assert (
        rows["tokyo.heic"]["gt_source"] == "exif" and "not in the manifest" in rows["tokyo.heic"]["gt_note"]
    )
    assert summary.truth is not None and summary.truth.disagree == 1 and summary.truth.matched == 2


def test_cli_bad_manifest_is_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    bad = tmp_path / "m.csv"
    bad.write_text("name,x,y\na,1,2\n")
    args = ["scan", str(tmp_path), "--truth", str(bad), "--out", str(tmp_path / "o.parquet")]
    code, _, err = run_cli(args, monkeypatch, capsys)
    assert code == 2 and err.startswith("error: cannot tell the manifest format") and err.count("\n") == 1
    assert not (tmp_path / "o.parquet").exists()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory):
    gallery = tmp_path_factory.mktemp("gallery") / "gallery.csv"
    gen = torch.Generator().manual_seed(0)
    lat = (torch.rand(200, generator=gen) * 160 - 80).tolist()
    lon = (torch.rand(200, generator=gen) * 360 - 180).tolist()
    write_csv(gallery, ["lat", "lon"], [list(p) for p in zip(lat, lon, strict=True)])
    torch.manual_seed(0)
    return build_geoclip(vit=TINY, allow_untrained=True, gallery=gallery)


def test_predict_osv5m_71_with_truth(tmp_path: Path, tiny_model) -> None:
    folder = fixture_dir("osv5m-71")
    cfg = PredictConfig(
        paths=[folder / "select"],
        out=tmp_path / "p.parquet",
        truth=folder / "gt.csv",
        batch_size=16,
        workers=0,
    )
    summary = run_predict(cfg, model=tiny_model)
    assert summary.total == 71 and summary.failed == 0
    assert summary.truth is not None and summary.truth.matched == 71
    rows = pq.read_table(tmp_path / "p.parquet").to_pylist()
    assert all(r["gt_source"] == "manifest" and r["gt_country"] and r["pred_lat"] is not None for r in rows)
    with open(folder / "gt.csv", newline="") as fh:
        gt = {file_stem(r["image"]): r["country"] for r in csv.DictReader(fh)}
    assert all(r["gt_country"] == gt[file_stem(r["path"])] for r in rows)  # the manifest's, not a lookup's
    for by in ("country", "gt_country"):  # the prediction's country and the true one
        result = evaluate([tmp_path / "p.parquet"], by=[by])
        assert sum(r["n_scored"] for r in result.rows) == 71
