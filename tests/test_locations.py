"""Location embeddings: the library call and `geotag embed-locations` equal the geoclip package's
LocationEncoder, row for row, and keep the input's rows (invalid ones with null embeddings)."""

from __future__ import annotations

import sys

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from geotag.cli import app
from geotag.models.geoclip import embed_locations

geoclip_model = pytest.importorskip("geoclip.model")


def random_points(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(-90, 90, n).astype(np.float32), rng.uniform(-180, 180, n).astype(np.float32)


@pytest.fixture(scope="module")
def reference():
    return geoclip_model.LocationEncoder().eval()  # loads the released weights


def ref_embed(reference, lat, lon) -> np.ndarray:
    with torch.no_grad():
        return reference(torch.from_numpy(np.stack([lat, lon], 1))).numpy()


def test_library_call_is_bit_identical_to_the_package(reference):
    lat, lon = random_points(500)
    ours = embed_locations(lat, lon)
    assert ours.shape == (500, 512) and ours.dtype == np.float32
    assert np.array_equal(ours, ref_embed(reference, lat, lon))
    unit = embed_locations(lat, lon, normalize=True)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-5)


def test_cli_parquet_keeps_rows_and_columns(tmp_path, reference):
    lat, lon = random_points(20, seed=1)
    lat_col = pa.array([float(x) for x in lat[:18]] + [None, 95.0], type=pa.float64())
    table = pa.table({"id": [f"p{i}" for i in range(20)], "Latitude": lat_col, "lon": lon.astype(np.float64)})
    src = tmp_path / "c.csv"
    pacsv.write_csv(table, src)
    out = tmp_path / "e.parquet"
    res = CliRunner().invoke(app, ["embed-locations", str(src), "--out", str(out)])
    assert res.exit_code == 0, res.output
    got = pq.read_table(out)
    assert got.column_names == ["id", "Latitude", "lon", "embedding"]
    emb = got.column("embedding")
    assert emb.null_count == 2 and emb[18].as_py() is None and emb[19].as_py() is None
    first = np.array(emb.slice(0, 18).to_pylist(), dtype=np.float32)
    np.testing.assert_array_equal(first, ref_embed(reference, lat[:18], lon[:18]))


def run_cli(args, monkeypatch, capsys) -> tuple[int, str]:
    from geotag.cli import main

    monkeypatch.setattr(sys, "argv", ["geotag", *args])
    with pytest.raises(SystemExit) as info:
        main()
    return info.value.code, capsys.readouterr().err


def test_cli_csv_and_bad_input(tmp_path, monkeypatch, capsys):
    src = tmp_path / "c.csv"
    src.write_text("lat,lon\n48.85,2.35\n-33.9,151.2\n")
    out = tmp_path / "e.csv"
    res = CliRunner().invoke(app, ["embed-locations", str(src), "--out", str(out)])
    assert res.exit_code == 0, res.output
    got = pacsv.read_csv(out)
    assert got.num_rows == 2 and got.column_names[:3] == ["lat", "lon", "e0"] and "e511" in got.column_names
    for argv, needle in (
        ([str(src), "--out", str(tmp_path / "e.txt")], ".parquet or .csv"),
        ([str(tmp_path / "missing.csv"), "--out", str(out)], "not found"),
    ):
        code, err = run_cli(["embed-locations", *argv], monkeypatch, capsys)
        assert code == 2 and needle in err and err.count("\n") == 1, err
    (tmp_path / "nolat.csv").write_text("x,y\n1,2\n")
    code, err = run_cli(
        ["embed-locations", str(tmp_path / "nolat.csv"), "--out", str(out)], monkeypatch, capsys
    )
    assert code == 2 and "lat/latitude" in err
    assert pacsv.read_csv(out).num_rows == 2  # the earlier output is untouched
