"""`geotag export`: points written for GIS tools and read back (geopandas, pandas, an XML parser)."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from geotag.errors import InputError, OutputError
from geotag.geo.distance import haversine_np
from geotag.io.export import ATTRIBUTES, export_points
from geotag.io.parquet import PredictionWriter

KML = "{http://www.opengis.net/kml/2.2}"
# every hemisphere (southern and western signs are where GPS writers go wrong), odd names, missing values
ROWS: list[dict[str, Any]] = [
    {
        "path": "/p/sylt.jpg",
        "status": "ok",
        "gt_lat": 55.04,
        "gt_lon": 8.45,
        "pred_lat": 54.9,
        "pred_lon": 8.3,
        "confidence": 0.8,
        "error_km": 12.5,
        "scene": "natural",
        "country": "DE",
        "gt_country": "DE",
        "model": "knn",
        "weights": "w1",
        "image_id": "a1",
    },
    {
        "path": "/p/sydney & <co>.jpg",
        "status": "ok",
        "gt_lat": -33.87,
        "gt_lon": 151.21,
        "pred_lat": -34.0,
        "pred_lon": 150.9,
        "confidence": 0.55,
        "model": "knn",
        "weights": "w1",
    },
    {
        "path": "/p/rio.jpg",
        "status": "ok",
        "gt_lat": -22.95,
        "gt_lon": -43.21,
        "pred_lat": 40.7,
        "pred_lon": -74.0,
        "confidence": 0.1,
        "model": "knn",
    },
    {
        "path": "/p/portland.jpg",
        "status": "ok",
        "gt_lat": 45.52,
        "gt_lon": -122.58,
        "pred_lat": -45.5,
        "pred_lon": -170.25,
    },
    {"path": "/p/nogt.jpg", "status": "ok", "pred_lat": 10.5, "pred_lon": -20.25, "confidence": 0.3},
    {"path": "/p/nopred.jpg", "status": "ok", "gt_lat": 1.5, "gt_lon": 2.5},
    {"path": "/p/broken.jpg", "status": "error", "error": "truncated"},
]
WITH_PRED = [r for r in ROWS if r.get("pred_lat") is not None]
WITH_GT = [r for r in ROWS if r.get("gt_lat") is not None]


@pytest.fixture(scope="module")
def preds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("export") / "preds.parquet"
    with PredictionWriter(path) as writer:
        writer.write_rows(ROWS)
    return path


def expected_xy(rows: list[dict[str, Any]], what: str) -> np.ndarray:
    return np.array([(r[f"{what}_lon"], r[f"{what}_lat"]) for r in rows])


def check_frame(gdf: gpd.GeoDataFrame, rows: list[dict[str, Any]], what: str = "pred") -> None:
    """Coordinates, CRS and the attributes a GIS user filters on."""
    assert gdf.crs is not None and gdf.crs.to_epsg() == 4326
    assert len(gdf) == len(rows)
    xy = np.column_stack([gdf.geometry.x, gdf.geometry.y])
    assert np.allclose(xy, expected_xy(rows, what), atol=1e-7)
    assert list(gdf["name"]) == [Path(r["path"]).name for r in rows]
    assert list(gdf["path"]) == [r["path"] for r in rows]
    conf = pd.to_numeric(gdf["confidence"])
    assert np.allclose(conf, [r.get("confidence", np.nan) for r in rows], equal_nan=True)
    d = haversine_np(
        *(
            np.array([r.get(k, np.nan) for r in rows], dtype=float)
            for k in ("gt_lat", "gt_lon", "pred_lat", "pred_lon")
        )
    )
    assert np.allclose(pd.to_numeric(gdf["dist_km"]), d, equal_nan=True, rtol=1e-9)
    assert set(ATTRIBUTES) <= set(gdf.columns)


@pytest.mark.parametrize("fmt", ["geojson", "gpkg"])
@pytest.mark.parametrize("batch_rows", [65_536, 2])  # 2: several appended batches
def test_round_trip(fmt: str, batch_rows: int, preds: Path, tmp_path: Path) -> None:
    out = tmp_path / f"points.{fmt}"
    summary = export_points(preds, out, batch_rows=batch_rows)
    assert (
        summary.fmt == fmt
        and summary.written == len(WITH_PRED)
        and summary.skipped == len(ROWS) - len(WITH_PRED)
    )
    check_frame(gpd.read_file(out), WITH_PRED)
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary file left behind


def test_ground_truth_points(preds: Path, tmp_path: Path) -> None:
    out = tmp_path / "truth.gpkg"
    summary = export_points(preds, out, what="gt")
    assert summary.written == len(WITH_GT)
    check_frame(gpd.read_file(out), WITH_GT, "gt")


def test_geojson_is_rfc7946(preds: Path, tmp_path: Path) -> None:
    import json

    out = tmp_path / "p.geojson"
    export_points(preds, out)
    doc = json.loads(out.read_text())
    assert doc["type"] == "FeatureCollection" and "crs" not in doc
    first = doc["features"][0]
    assert first["geometry"] == {"type": "Point", "coordinates": [8.3, 54.9]}
    assert first["properties"]["scene"] == "natural" and first["properties"]["error_km"] == 12.5


def test_csv(preds: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.csv"
    export_points(preds, out, batch_rows=3)
    df = pd.read_csv(out)
    assert list(df.columns[:3]) == ["lon", "lat", "name"]
    assert np.allclose(df[["lon", "lat"]].to_numpy(), expected_xy(WITH_PRED, "pred"))
    assert list(df["path"]) == [r["path"] for r in WITH_PRED]


@pytest.mark.parametrize("batch_rows", [65_536, 2])
def test_kml(batch_rows: int, preds: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.kml"
    export_points(preds, out, batch_rows=batch_rows)
    root = ET.parse(out).getroot()
    assert root.tag == f"{KML}kml"
    marks = list(root.iter(f"{KML}Placemark"))
    assert len(marks) == len(WITH_PRED)
    for mark, row in zip(marks, WITH_PRED, strict=True):
        assert mark.findtext(f"{KML}name") == Path(row["path"]).name
        text = mark.findtext(f".//{KML}Point/{KML}coordinates") or ""
        lon, lat = (float(v) for v in text.strip().split(",")[:2])
        assert (lon, lat) == pytest.approx((row["pred_lon"], row["pred_lat"]), abs=1e-9)
        assert "predicted position" in (mark.findtext(f"{KML}description") or "")
    data = {d.get("name"): d.text for d in marks[0].iter(f"{KML}SimpleData")}
    assert data["path"] == "/p/sylt.jpg" and float(data["confidence"] or 0) == 0.8
    check_frame(gpd.read_file(out).rename(columns={"Name": "name"}), WITH_PRED)  # GDAL reads KML's <name>


def test_foreign_and_empty_files(tmp_path: Path) -> None:
    bare = tmp_path / "bare.parquet"
    pq.write_table(
        pa.table(
            {"path": ["a.jpg"], "gt_lat": [1.0], "gt_lon": [2.0], "pred_lat": [-3.0], "pred_lon": [-4.0]}
        ),
        bare,
    )
    gdf = gpd.read_file(export_points(bare, tmp_path / "bare.gpkg").out)
    assert (gdf.geometry.x[0], gdf.geometry.y[0]) == (-4.0, -3.0) and gdf["confidence"].isna().all()
    empty = tmp_path / "empty.parquet"
    with PredictionWriter(empty):
        pass
    for fmt in ("geojson", "gpkg", "kml", "csv"):
        summary = export_points(empty, tmp_path / f"empty.{fmt}")
        assert summary.written == 0 and (tmp_path / f"empty.{fmt}").is_file()


def test_bad_inputs(preds: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="format"):
        export_points(preds, tmp_path / "p.shp")
    with pytest.raises(InputError, match="--format xml"):
        export_points(preds, tmp_path / "p.kml", fmt="xml")
    with pytest.raises(InputError, match="--what"):
        export_points(preds, tmp_path / "p.kml", what="both")
    with pytest.raises(InputError, match="no such file"):
        export_points(tmp_path / "none.parquet", tmp_path / "p.kml")
    with pytest.raises(OutputError, match="does not exist"):
        export_points(preds, tmp_path / "no" / "p.kml")
    assert not list(tmp_path.iterdir())


def run_cli(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    from geotag.cli import main

    monkeypatch.setattr(sys, "argv", ["geotag", *args])
    with pytest.raises(SystemExit) as info:
        main()
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


def test_cli(preds: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    out = tmp_path / "points.dat"
    code, _, err = run_cli(
        ["export", str(preds), "--out", str(out), "--format", "GeoJSON", "--what", "gt"], monkeypatch, capsys
    )
    assert code == 0, err
    assert f"exported {len(WITH_GT)} point(s) (gt, geojson)" in err
    check_frame(gpd.read_file(out), WITH_GT, "gt")
    for args in (["--out", str(tmp_path / "x.shp")], ["--out", str(tmp_path / "x.kml"), "--what", "nope"]):
        code, stdout, err = run_cli(["export", str(preds), *args], monkeypatch, capsys)
        assert code == 2 and stdout == "" and err.startswith("error: ") and err.count("\n") == 1
