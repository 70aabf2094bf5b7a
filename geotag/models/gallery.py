"""GPS galleries: the candidate coordinates a retrieval model (GeoCLIP) scores an image against.

The default is the 100K MP-16 coordinates that ship inside the `geoclip` package; a user can pass a
CSV or Parquet file of their own (for example, a region they care about). Files are read with pyarrow,
so a gallery of millions of rows loads in seconds.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import torch

from geotag.errors import InputError

LAT_NAMES = ("lat", "latitude")
LON_NAMES = ("lon", "longitude", "lng")
_NUMBER = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"


def geoclip_package_dir() -> Path:
    """The installed `geoclip` package folder, found without importing it (its import is slow)."""
    spec = importlib.util.find_spec("geoclip")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the `geoclip` package is not installed; run `pip install geoclip`")
    return Path(next(iter(spec.submodule_search_locations)))


def default_gallery_path() -> Path:
    """The 100K MP-16 coordinates shipped with the geoclip package."""
    return geoclip_package_dir() / "model" / "gps_gallery" / "coordinates_100K.csv"


def load_gallery(path: Path | None) -> torch.Tensor:
    """Read a gallery as an (N, 2) float32 tensor of (lat, lon) degrees.

    `None` means the geoclip package's default gallery. Columns are found case-insensitively among
    lat/latitude and lon/longitude/lng. Rows with a missing, non-numeric or out-of-range coordinate are
    dropped; a missing, unreadable, column-less or empty file raises InputError.
    """
    path = default_gallery_path() if path is None else Path(path)
    if not path.is_file():
        raise InputError(f"gallery file not found: {path}")
    try:
        table = _read_table(path)
    except (OSError, pa.ArrowException) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot read gallery file {path}: {reason}") from exc
    lat_col, lon_col = _find_column(table, LAT_NAMES, path), _find_column(table, LON_NAMES, path)
    lat, lon = _as_float(table.column(lat_col)), _as_float(table.column(lon_col))
    keep = np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90.0) & (np.abs(lon) <= 180.0)
    if not keep.any():
        raise InputError(f"gallery file {path} has no valid {lat_col}/{lon_col} rows")
    return torch.from_numpy(np.stack([lat[keep], lon[keep]], axis=1).astype(np.float32))


def _read_table(path: Path) -> pa.Table:
    """Parquet when the file starts with the Parquet magic bytes, CSV otherwise (any extension)."""
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic == b"PAR1":
        return pq.read_table(path)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    return pacsv.read_csv(path, parse_options=pacsv.ParseOptions(delimiter=delimiter))


def _find_column(table: pa.Table, names: tuple[str, ...], path: Path) -> str:
    by_lower = {name.lower(): name for name in table.column_names}
    for name in names:
        if name in by_lower:
            return by_lower[name]
    have = ", ".join(table.column_names) or "none"
    raise InputError(f"gallery file {path} needs a {'/'.join(names)} column (case-insensitive); has: {have}")


def _as_float(column: pa.ChunkedArray) -> np.ndarray:
    """Column as float64 with NaN for nulls and for text that is not a number."""
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        is_number = pc.match_substring_regex(column, _NUMBER)
        column = pc.if_else(is_number, pc.utf8_trim_whitespace(column), pa.scalar(None, column.type))
    try:
        column = pc.cast(column, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InputError(f"gallery column of type {column.type} is not numeric") from exc
    return column.to_numpy(zero_copy_only=False).astype(np.float64)
