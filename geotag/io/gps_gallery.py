"""GPS galleries: reading the candidate coordinates a retrieval model (GeoCLIP) scores an image against.

The default is the 100K MP-16 coordinates that ship inside the `geoclip` package; a user can pass a
CSV or Parquet file of their own (for example, a region they care about). Files are read with pyarrow,
so a gallery of millions of rows loads in seconds.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from geotag.errors import InputError
from geotag.io.tables import LAT_NAMES, LON_NAMES, float_column, read_table, require_column


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
    table = read_table(path, "gallery file")
    where = f"gallery file {path}"
    lat_col, lon_col = require_column(table, LAT_NAMES, where), require_column(table, LON_NAMES, where)
    lat, lon = float_column(table, lat_col, where), float_column(table, lon_col, where)
    keep = np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90.0) & (np.abs(lon) <= 180.0)
    if not keep.any():
        raise InputError(f"gallery file {path} has no valid {lat_col}/{lon_col} rows")
    return torch.from_numpy(np.stack([lat[keep], lon[keep]], axis=1).astype(np.float32))
