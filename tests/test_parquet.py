"""The predictions file: schema, streaming writer, atomic replace, GeoParquet metadata readable by others."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from geotag.errors import InputError, OutputError, SchemaError
from geotag.io.parquet import (
    COLUMNS,
    SCHEMA,
    PredictionWriter,
    read_image_ids,
    require_columns,
    rows_to_table,
    wkb_points,
)


def _row(i: int, **extra: object) -> dict[str, object]:
    return {
        "image_id": f"id{i}",
        "path": f"/photos/{i}.jpg",
        "size": 100 + i,
        "mtime": datetime(2024, 1, 1, tzinfo=UTC),
        "status": "ok",
        **extra,
    }


def test_rows_fill_the_full_schema_and_geometry(tmp_path: Path) -> None:
    rows = [
        _row(
            0,
            gt_lat=-33.85,
            gt_lon=151.2,
            pred_lat=48.85,
            pred_lon=2.29,
            topk=[{"lat": 1, "lon": 2, "score": 0.5}],
        ),
        _row(1, status="error", error="boom"),
    ]
    out = tmp_path / "p.parquet"
    with PredictionWriter(out) as w:
        w.write_rows(rows)
    table = pq.read_table(out)
    assert table.schema.names == list(COLUMNS)
    assert table.num_rows == 2
    geom = table.column("geometry").to_pylist()
    assert geom[1] is None
    x, y = np.frombuffer(geom[0][5:], dtype="<f8")
    assert (x, y) == (2.29, 48.85)  # WKB is x = lon, y = lat
    assert table.column("topk").to_pylist()[0] == [{"lat": 1.0, "lon": 2.0, "score": 0.5}]


def test_unknown_column_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown columns"):
        rows_to_table([{"image_id": "x", "bogus": 1}])


def test_geoparquet_metadata_reads_in_geopandas_as_epsg4326(tmp_path: Path) -> None:
    import geopandas

    out = tmp_path / "p.parquet"
    with PredictionWriter(out) as w:
        w.write_rows([_row(0, pred_lat=-22.95, pred_lon=-43.21, gt_lat=10.0, gt_lon=20.0), _row(1)])
    meta = json.loads(pq.read_schema(out).metadata[b"geo"])
    assert meta["version"] == "1.1.0" and meta["primary_column"] == "geometry"
    gdf = geopandas.read_parquet(out)
    assert gdf.crs.to_epsg() == 4326
    assert gdf.geometry.iloc[0].x == pytest.approx(-43.21)
    assert gdf.geometry.iloc[0].y == pytest.approx(-22.95)
    assert gdf.geometry.iloc[1] is None
    assert gdf["gt_geometry"].iloc[0].x == pytest.approx(20.0)


def test_duckdb_reads_points(tmp_path: Path) -> None:
    import duckdb

    out = tmp_path / "p.parquet"
    with PredictionWriter(out) as w:
        w.write_rows([_row(0, pred_lat=1.5, pred_lon=-2.5)])
    con = duckdb.connect()
    blob = con.execute(f"SELECT geometry FROM read_parquet('{out}')").fetchone()[0]
    x, y = np.frombuffer(bytes(blob)[5:], dtype="<f8")
    assert (x, y) == (-2.5, 1.5)


def test_writer_streams_in_row_groups(tmp_path: Path) -> None:
    out = tmp_path / "p.parquet"
    with PredictionWriter(out, row_group_size=1000) as w:
        for i in range(3500):
            w.write(_row(i))
    pf = pq.ParquetFile(out)
    assert pf.metadata.num_rows == 3500
    assert pf.metadata.num_row_groups == 4
    assert read_image_ids(out) == {f"id{i}" for i in range(3500)}


def test_failed_run_leaves_existing_file_untouched(tmp_path: Path) -> None:
    out = tmp_path / "p.parquet"
    with PredictionWriter(out) as w:
        w.write(_row(0))
    before = out.read_bytes()
    with pytest.raises(RuntimeError), PredictionWriter(out) as w:
        w.write(_row(1))
        raise RuntimeError("killed")
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["p.parquet"]  # no temp file left behind


def test_bad_output_locations(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="does not exist"):
        PredictionWriter(tmp_path / "missing" / "p.parquet")
    with pytest.raises(OutputError, match="is a directory"):
        PredictionWriter(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_folder(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    with pytest.raises(OutputError, match="not writable"):
        PredictionWriter(folder / "p.parquet")


def test_readers_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        require_columns(tmp_path / "nope.parquet", ["image_id"])
    junk = tmp_path / "junk.parquet"
    junk.write_text("not parquet")
    with pytest.raises(InputError, match="not a readable Parquet"):
        require_columns(junk, ["image_id"])
    other = tmp_path / "other.parquet"
    pq.write_table(rows_to_table([_row(0)]).select(["path"]), other)
    with pytest.raises(SchemaError, match="image_id"):
        require_columns(other, ["image_id"])


def test_wkb_points_nulls() -> None:
    arr = wkb_points(np.array([1.0, np.nan]), np.array([2.0, 3.0]))
    assert arr.null_count == 1
    assert len(arr[0].as_py()) == 21
    assert SCHEMA.field("geometry").type == arr.type
