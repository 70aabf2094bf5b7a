"""The shared table reader: CSV or Parquet by magic bytes, columns in any case, coordinates as floats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from geotag.errors import InputError, SchemaError
from geotag.io.tables import (
    LAT_NAMES,
    find_column,
    float_column,
    read_table,
    require_column,
    text_convert,
)


def test_kind_by_magic_bytes_and_tsv_by_name(tmp_path: Path) -> None:
    pq.write_table(pa.table({"lat": [1.0]}), tmp_path / "named.csv")  # Parquet whatever the name
    assert read_table(tmp_path / "named.csv", "manifest").column_names == ["lat"]
    (tmp_path / "m.tsv").write_text("Lat\tLon\n1\t2\n")
    assert read_table(tmp_path / "m.tsv", "manifest").column_names == ["Lat", "Lon"]


def test_text_convert_keeps_na_as_text(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("country,lat\nNA,1\n,2\n")
    assert read_table(tmp_path / "m.csv", "m").column("country").to_pylist() == [None, None]
    table = read_table(tmp_path / "m.csv", "m", convert=text_convert())
    assert table.column("country").to_pylist() == ["NA", None]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.csv", None, "gallery file not found"),
        ("empty.csv", b"", "cannot read gallery file"),
        ("broken.parquet", b"PAR1 this is not parquet", "cannot read gallery file"),
    ],
)
def test_unreadable_files_give_one_line(
    tmp_path: Path, name: str, content: bytes | None, message: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=message) as info:
        read_table(path, "gallery file")
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_columns_in_any_case() -> None:
    table = pa.table({"Latitude": [1.0], "LON": [2.0]})
    assert find_column(table, LAT_NAMES) == "Latitude" and find_column(table, ("x",)) is None
    assert require_column(table, ("lon", "lng"), "m.csv") == "LON"
    with pytest.raises(SchemaError, match=r"m.csv needs a x/y column \(any case\); has: Latitude, LON"):
        require_column(table, ("x", "y"), "m.csv", SchemaError)


def test_float_column_nan_for_non_numbers() -> None:
    table = pa.table({"a": [" 1.5 ", "north", None, "-2e1", "+.5"], "b": [1, None, 3, 4, 5]})
    np.testing.assert_array_equal(float_column(table, "a", "m"), [1.5, np.nan, np.nan, -20.0, 0.5])
    np.testing.assert_array_equal(float_column(table, "b", "m"), [1.0, np.nan, 3.0, 4.0, 5.0])
    with pytest.raises(InputError, match="m: column a is not numeric"):
        float_column(table, "a", "m", strict=True)
