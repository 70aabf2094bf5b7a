"""GIS readers see every geotag file's photos (issue 20, item 9): a scan file's primary geometry is the
ground truth (it has no prediction), a predictions file's is the prediction, and both carry the
GeoParquet 1.1 `bbox` covering column that readers use to skip row groups."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from geotag.engine.scan import run_scan
from geotag.io.parquet import PredictionWriter, conform, point_bboxes, rows_to_table, wkb_xy

BBOX_KEYS = ("xmin", "ymin", "xmax", "ymax")


@pytest.fixture(scope="module")
def scan_file(sample_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("scan") / "scan.parquet"
    run_scan([sample_data], out, workers=1)
    return out


def _check_geo_metadata(path: Path) -> dict:
    """The GeoParquet 1.1 metadata, checked field by field against the spec's metadata schema (its
    JSON schema is not on this machine; the PROJJSON schema it references ships with pyproj)."""
    import jsonschema
    import pyproj

    geo = json.loads(pq.read_schema(path).metadata[b"geo"])
    assert geo["version"] == "1.1.0" and geo["primary_column"] == "geometry"
    assert set(geo["columns"]) == {"geometry", "gt_geometry"}
    for meta in geo["columns"].values():
        assert {"encoding", "geometry_types"} <= set(meta)
        assert meta["encoding"] == "WKB" and meta["geometry_types"] == ["Point"]
        assert meta["edges"] in ("planar", "spherical")
        assert set(meta) <= {
            "encoding",
            "geometry_types",
            "crs",
            "edges",
            "orientation",
            "bbox",
            "epoch",
            "covering",
        }
        assert pyproj.CRS.from_json_dict(meta["crs"]).to_epsg() == 4326
    schema_file = Path(pyproj.datadir.get_data_dir()) / "projjson.schema.json"
    jsonschema.validate(geo["columns"]["geometry"]["crs"], json.loads(schema_file.read_text()))
    covering = geo["columns"]["geometry"]["covering"]
    assert covering == {"bbox": {k: ["bbox", k] for k in BBOX_KEYS}}  # the spec's required form
    assert "covering" not in geo["columns"]["gt_geometry"]
    bbox_type = pq.read_schema(path).field("bbox").type
    assert bbox_type == pa.struct([(k, pa.float64()) for k in BBOX_KEYS])
    return geo


def test_scan_file_shows_its_photos_at_their_gps(scan_file: Path) -> None:
    import geopandas

    geo = _check_geo_metadata(scan_file)
    info = json.loads(pq.read_schema(scan_file).metadata[b"geotag"])
    assert info["command"] == "scan" and info["geometry"] == "gt" and info["schema_version"] == "3"
    gdf = geopandas.read_parquet(scan_file)
    assert gdf.geometry.name == geo["primary_column"] and gdf.crs.to_epsg() == 4326
    tagged = gdf[gdf.gt_lat.notna()]
    assert len(tagged) == 25  # 24 tagged photos and the truncated copy of Paris (its EXIF is intact)
    assert np.allclose(tagged.geometry.x, tagged.gt_lon) and np.allclose(tagged.geometry.y, tagged.gt_lat)
    assert gdf[gdf.gt_lat.isna()].geometry.isna().all()  # no GPS, no point
    assert gdf.geometry.equals(gdf["gt_geometry"])
    boxes = pq.read_table(scan_file, columns=["gt_lat", "gt_lon", "bbox"]).to_pylist()
    for row in boxes:
        if row["gt_lat"] is None:
            assert row["bbox"] is None
        else:
            assert row["bbox"] == {
                "xmin": row["gt_lon"],
                "ymin": row["gt_lat"],
                "xmax": row["gt_lon"],
                "ymax": row["gt_lat"],
            }


def test_geopandas_filters_by_the_bbox_covering(scan_file: Path) -> None:
    import geopandas

    europe = geopandas.read_parquet(scan_file, bbox=(-10.0, 35.0, 30.0, 60.0))
    names = sorted(Path(p).name for p in europe.path)
    assert names == [
        "paris.jpg",
        "paris_2.jpg",
        "paris_3.jpg",
        "rome.webp",
        "rome_2.webp",
        "rome_3.webp",
        "truncated.jpg",
    ]


def test_predictions_file_geometry_is_the_prediction(tmp_path: Path) -> None:
    import geopandas

    out = tmp_path / "p.parquet"
    rows = [
        {
            "path": "/a.jpg",
            "status": "ok",
            "pred_lat": -22.95,
            "pred_lon": -43.21,
            "gt_lat": 10.0,
            "gt_lon": 20.0,
        },
        {"path": "/b.jpg", "status": "ok", "gt_lat": 1.0, "gt_lon": 2.0},  # truth, no prediction: no point
        {"path": "/c.jpg", "status": "error", "error": "boom"},
    ]
    with PredictionWriter(out) as w:
        w.write_rows(rows)
    _check_geo_metadata(out)
    assert json.loads(pq.read_schema(out).metadata[b"geotag"])["geometry"] == "pred"
    gdf = geopandas.read_parquet(out)
    assert (gdf.geometry.iloc[0].x, gdf.geometry.iloc[0].y) == (-43.21, -22.95)
    assert gdf.geometry.iloc[1] is None and gdf.geometry.iloc[2] is None
    assert (gdf["gt_geometry"].iloc[1].x, gdf["gt_geometry"].iloc[1].y) == (2.0, 1.0)
    bbox = pq.read_table(out, columns=["bbox"]).column(0).to_pylist()
    assert bbox == [{"xmin": -43.21, "ymin": -22.95, "xmax": -43.21, "ymax": -22.95}, None, None]
    assert len(geopandas.read_parquet(out, bbox=(-50, -30, -40, -20))) == 1


def test_same_covering_as_geopandas_writes(tmp_path: Path) -> None:
    """geopandas' own GeoParquet 1.1 writer names and fills the covering the way geotag does."""
    import geopandas
    import shapely

    gdf = geopandas.GeoDataFrame(
        {"n": [1, 2]}, geometry=[shapely.Point(2.5, 48.0), shapely.Point(-70.0, -33.0)], crs=4326
    )
    theirs = tmp_path / "theirs.parquet"
    gdf.to_parquet(theirs, schema_version="1.1.0", write_covering_bbox=True)
    their_geo = json.loads(pq.read_schema(theirs).metadata[b"geo"])
    ours = rows_to_table([{"pred_lat": 48.0, "pred_lon": 2.5}, {"pred_lat": -33.0, "pred_lon": -70.0}])
    with PredictionWriter(tmp_path / "ours.parquet") as w:
        w.write_table(ours)
    our_geo = json.loads(pq.read_schema(tmp_path / "ours.parquet").metadata[b"geo"])
    assert our_geo["columns"]["geometry"]["covering"] == their_geo["columns"]["geometry"]["covering"]
    assert pq.read_table(theirs).column("bbox").to_pylist() == ours.column("bbox").to_pylist()


def test_rows_copied_from_a_file_without_bbox_get_it(tmp_path: Path) -> None:
    """A schema-1 file (no bbox column) copied by resume or a Ray merge gets the covering computed from
    its geometry, so the covering never lies about a row."""
    table = rows_to_table([{"pred_lat": 5.0, "pred_lon": -6.0}, {}]).drop_columns(["bbox"])
    assert wkb_xy(table.column("geometry"))[0][0] == 5.0 and np.isnan(wkb_xy(table.column("geometry"))[0][1])
    assert conform(table).column("bbox").to_pylist() == [
        {"xmin": -6.0, "ymin": 5.0, "xmax": -6.0, "ymax": 5.0},
        None,
    ]
    assert point_bboxes(np.array([np.nan]), np.array([1.0])).to_pylist() == [None]
