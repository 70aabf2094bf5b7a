"""Embedding galleries on disk: geotagged photos' backbone features for kNN, one Parquet file.

Columns: `image_id`, `path`, `lat`, `lon`, `gt_source` (exif / manifest) and `embedding`, a
fixed-size list of float16 (L2-normalised features: half the bytes of float32 and ample for cosine
ranking). File metadata `geotag_gallery` (JSON) records the backbone's registry name, its weights label
and a fingerprint of its weights, because features of two backbones are not comparable: a predictor
checks them before it uses the file. Written row group by row group to a temporary name, then fsynced
and renamed (geotag.io.parquet.AtomicParquetWriter), so a gallery of millions streams in flat memory
and a reader never sees half a file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from geotag import __version__
from geotag.errors import InputError
from geotag.io.parquet import AtomicParquetWriter

GALLERY_KEY = b"geotag_gallery"
GALLERY_FORMAT = 1
ROW_GROUP = 16_384  # 16K x 1280 float16 = 40 MB per group


@dataclass(frozen=True)
class GalleryInfo:
    """What made a gallery file: backbone name, weights label and fingerprint, feature size, rows."""

    backbone: str
    weights: str
    fingerprint: str
    feature_dim: int
    rows: int = 0

    def to_json(self) -> bytes:
        data = {
            "format": GALLERY_FORMAT,
            "backbone": self.backbone,
            "weights": self.weights,
            "fingerprint": self.fingerprint,
            "feature_dim": self.feature_dim,
            "geotag_version": __version__,
        }
        return json.dumps(data).encode()


def gallery_schema(feature_dim: int) -> pa.Schema:
    return pa.schema(
        [
            ("image_id", pa.string()),
            ("path", pa.string()),
            ("lat", pa.float64()),
            ("lon", pa.float64()),
            ("gt_source", pa.string()),
            ("embedding", pa.list_(pa.float16(), feature_dim)),
        ]
    )


class GalleryWriter(AtomicParquetWriter):
    """Stream (row, embedding) pairs into a gallery file; a context manager that renames on success."""

    def __init__(self, path: Path, info: GalleryInfo) -> None:
        self.info = info
        self.schema = gallery_schema(info.feature_dim).with_metadata({GALLERY_KEY: info.to_json()})
        super().__init__(path, self.schema)
        self._rows: list[Mapping[str, Any]] = []
        self._emb: list[np.ndarray] = []

    def write(self, rows: Sequence[Mapping[str, Any]], embeddings: torch.Tensor) -> None:
        """`rows` (image_id, path, lat, lon, gt_source) and their (len(rows), D) normalised embeddings."""
        self._rows.extend(rows)
        self._emb.append(embeddings.detach().to("cpu", torch.float16).numpy())
        if len(self._rows) >= ROW_GROUP:
            self.flush()

    def flush(self) -> None:
        if not self._rows:
            return
        emb = np.concatenate(self._emb).reshape(-1)
        arrays = [
            pa.array([r.get(name) for r in self._rows], type=self.schema.field(name).type)
            for name in ("image_id", "path", "lat", "lon", "gt_source")
        ]
        arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(emb, pa.float16()), self.info.feature_dim))
        self._writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema))
        self.rows_written += len(self._rows)
        self._rows, self._emb = [], []


def read_gallery_info(path: Path) -> GalleryInfo:
    """The metadata of a gallery file; InputError (one line) when the file is not an embedding gallery."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"gallery file not found: {path}")
    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(
            f"{path} is not an embedding gallery (not Parquet); build one with `geotag gallery build`"
        ) from exc
    raw = (pf.schema_arrow.metadata or {}).get(GALLERY_KEY)
    if raw is None:
        raise InputError(
            f"{path} is not an embedding gallery (no {GALLERY_KEY.decode()} metadata; a plain lat/lon "
            "gallery is for geoclip): build one with `geotag gallery build PHOTOS --out FILE`"
        )
    meta = json.loads(raw)
    return GalleryInfo(
        backbone=meta["backbone"],
        weights=meta.get("weights", ""),
        fingerprint=meta.get("fingerprint", ""),
        feature_dim=int(meta["feature_dim"]),
        rows=pf.metadata.num_rows,
    )


def read_gallery(path: Path) -> tuple[GalleryInfo, torch.Tensor, torch.Tensor]:
    """(info, coords (N, 2) float64 lat/lon, embeddings (N, D) float16), filled row group by row group
    into preallocated tensors so a large gallery is held once, not twice."""
    info = read_gallery_info(path)
    if info.rows == 0:
        raise InputError(f"gallery {path} is empty")
    coords = torch.empty((info.rows, 2), dtype=torch.float64)
    emb = torch.empty((info.rows, info.feature_dim), dtype=torch.float16)
    coords_np, emb_np = coords.numpy(), emb.numpy()  # views: numpy copies straight into the tensors
    pf = pq.ParquetFile(path)
    start = 0
    for batch in pf.iter_batches(batch_size=ROW_GROUP, columns=["lat", "lon", "embedding"]):
        n = batch.num_rows
        coords_np[start : start + n, 0] = batch.column(0).to_numpy(zero_copy_only=False)
        coords_np[start : start + n, 1] = batch.column(1).to_numpy(zero_copy_only=False)
        values = batch.column(2).flatten().to_numpy(zero_copy_only=False)
        emb_np[start : start + n] = values.reshape(n, info.feature_dim)
        start += n
    return info, coords, emb


def read_gallery_keys(path: Path) -> tuple[list[str], list[str]]:
    """The gallery's image ids and paths, in row order: who each entry is (leave-one-out)."""
    table = pq.read_table(path, columns=["image_id", "path"])
    ids = [str(v or "") for v in table.column(0).to_pylist()]
    paths = [str(v or "") for v in table.column(1).to_pylist()]
    return ids, paths


def read_gallery_groups(manifest: Path, column: str, ids: list[str], paths: list[str]) -> list[str | None]:
    """Each gallery entry's value of a manifest column (e.g. its author), for --exclude-same.

    The manifest names photos by image_id, or by a path / file name / id whose file stem matches the
    gallery photo's stem (the usual test-set manifests); entries it does not name get None."""
    from geotag.io.tables import find_column, read_table, require_column
    from geotag.io.truth import file_stem

    table = read_table(Path(manifest), "manifest")
    group = require_column(table, [column.lower()], f"manifest {Path(manifest).name} (--exclude-same)")
    values = [None if v is None else str(v) for v in table.column(group).to_pylist()]
    by_id: dict[str, str | None] = {}
    id_col = find_column(table, ["image_id"])
    if id_col is not None:
        by_id = dict(zip(map(str, table.column(id_col).to_pylist()), values, strict=True))
    key_col = find_column(table, ["path", "file", "filename", "name", "id", "img_id"])
    by_stem: dict[str, str | None] = {}
    if key_col is not None:
        keys = table.column(key_col).to_pylist()
        by_stem = {file_stem(str(k)): v for k, v in zip(keys, values, strict=True)}
    if not by_id and not by_stem:
        raise InputError(f"manifest {manifest} names no photos (no image_id / path / file / id column)")
    return [by_id.get(i, by_stem.get(file_stem(p))) for i, p in zip(ids, paths, strict=True)]
