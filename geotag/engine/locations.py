"""`geotag embed-locations`: GeoCLIP's GPS-encoder output for every coordinate of a CSV / Parquet file.

The input's columns are kept, in order, and the embedding is appended: one `embedding` column
(fixed-size list of 512 float32) in Parquet, or columns `e0`..`e511` in CSV. Rows whose coordinate is
missing, non-numeric or out of range are kept with null embeddings, so row i of the output is row i of
the input. The file is written beside its target and renamed into place (never half-written).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from geotag.io.tables import (
    LAT_NAMES,
    LON_NAMES,
    float_column,
    read_table,
    require_column,
    table_format,
    write_table,
)
from geotag.models.geoclip import LocationEncoder, embed_locations


@dataclass(frozen=True)
class EmbedSummary:
    rows: int
    embedded: int
    dim: int


def embed_locations_file(
    coords: Path, out: Path, *, normalize: bool = False, encoder: LocationEncoder | None = None
) -> EmbedSummary:
    """Embed every lat/lon row of `coords` and write `out` (.parquet or .csv)."""
    kind = table_format(out)
    table = read_table(coords, "coordinates file")
    where = f"coordinates file {coords}"
    lat_col, lon_col = require_column(table, LAT_NAMES, where), require_column(table, LON_NAMES, where)
    lat, lon = float_column(table, lat_col, where), float_column(table, lon_col, where)
    keep = np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90.0) & (np.abs(lon) <= 180.0)
    emb = embed_locations(lat[keep], lon[keep], encoder=encoder, normalize=normalize)
    dim = emb.shape[1]
    full = np.zeros((len(lat), dim), dtype=np.float32)
    full[keep] = emb
    valid = pa.array(~keep)  # mask: True = null
    if kind == ".parquet":
        values = pa.array(full.reshape(-1), type=pa.float32())
        column = pa.FixedSizeListArray.from_arrays(values, dim, mask=valid)
        result = table.append_column("embedding", column)
    else:
        result = table
        for j in range(dim):
            result = result.append_column(f"e{j}", pa.array(full[:, j], type=pa.float32(), mask=~keep))
    write_table(result, Path(out))
    return EmbedSummary(rows=len(lat), embedded=int(keep.sum()), dim=dim)
