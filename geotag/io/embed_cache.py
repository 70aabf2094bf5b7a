"""Embedding caches: a frozen backbone's pooled features of training data, computed once by `geotag
embed` and read by `train --embeddings` and `gallery build --embeddings` (docs/schema.md).

A cache is a folder: `embeddings.json` (what made it: backbone name, weights label and fingerprint,
preprocessing, feature size, dtype, shard size, a fingerprint of the samples) and `part-NNNNN.parquet`
files of `shard_size` rows each, in the samples' order. Part k holds samples k * shard_size onwards, one
row per sample: identity, coordinates, scene / country labels, `status` (ok / error), `error` and the
`embedding`, a fixed-size list of float16 or float32 (null for an error row).

Why not the kNN gallery format (io/embeddings.py): a gallery holds L2-normalised float16 vectors, enough
for cosine ranking; a head trained on them would not see what the model sees at prediction time (the
backbone's raw pooled features). The cache keeps the raw, unnormalised features; a gallery is derived
from it by normalising. Each part is written atomically (io/parquet.AtomicParquetWriter), so a killed run
leaves whole parts only and continues at the first missing one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from geotag import __version__
from geotag.errors import InputError
from geotag.io.checked_json import Fields, read_json_object
from geotag.io.durable import atomic_file
from geotag.io.parquet import AtomicParquetWriter
from geotag.io.samples import SCENES, TrainSamples, parse_scenes

INFO_FILE = "embeddings.json"
FORMAT = "geotag-embeddings"
FORMAT_VERSION = 1
META_KEY = b"geotag_embeddings"
DTYPES = {"float16": pa.float16(), "float32": pa.float32()}
MAX_FEATURE_DIM = 65_536
MAX_SHARD_SIZE = 10_000_000


@dataclass
class CacheInfo:
    """embeddings.json: what made the features, so nothing trains or predicts on foreign ones."""

    backbone: str  # registry name (models/backbones.py) or the model whose frozen backbone it is
    weights: str  # the backbone's weights label
    fingerprint: str  # content hash of the backbone's weights (models/backbones.feature_fingerprint)
    feature_dim: int
    dtype: str  # float16 | float32
    preprocess: dict[str, Any]  # input_size, mean, std, interpolation (the eval transform)
    shard_size: int
    n_samples: int
    data_fingerprint: str  # the samples' ids and coordinates (engine/train.fingerprint)
    sources: list[str] = field(default_factory=list)
    complete: bool = False  # every part written
    ok: int = 0
    errors: int = 0
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    normalised: bool = False  # raw pooled features, never L2-normalised
    geotag_version: str = __version__

    @property
    def n_parts(self) -> int:
        return -(-self.n_samples // self.shard_size)


def part_path(folder: Path, k: int) -> Path:
    return Path(folder) / f"part-{k:05d}.parquet"


def cache_schema(info: CacheInfo) -> pa.Schema:
    fields = [
        ("image_id", pa.string()),
        ("path", pa.string()),
        ("lat", pa.float64()),
        ("lon", pa.float64()),
        ("scene", pa.string()),
        ("country", pa.string()),
        ("gt_source", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("embedding", pa.list_(DTYPES[info.dtype], info.feature_dim)),
    ]
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "fingerprint": info.fingerprint}
    return pa.schema(fields).with_metadata({META_KEY: json.dumps(meta).encode()})


def write_info(folder: Path, info: CacheInfo) -> None:
    with atomic_file(Path(folder) / INFO_FILE) as fh:
        fh.write((json.dumps(asdict(info), indent=2) + "\n").encode())


def read_info(folder: Path) -> CacheInfo:
    """The cache's embeddings.json, checked field by field (types, ranges, dtype float16 / float32 only);
    one InputError line naming the file and field when `folder` is no usable embedding cache."""
    path = Path(folder) / INFO_FILE
    if not path.is_file():
        raise InputError(f"{folder} is not an embedding cache (no {INFO_FILE}): make one with `geotag embed`")
    data = read_json_object(Path(folder), INFO_FILE, f"embedding cache {path}", InputError)
    if data.get("format") != FORMAT:
        raise InputError(f"cannot read embedding cache {path}: it is not a {FORMAT} file")
    f = Fields(data, f"embedding cache {path}", error=InputError)
    if f.int("format_version", 0, 10**6) > FORMAT_VERSION:
        raise InputError(f"cannot read embedding cache {path}: written by a newer geotag (format version)")
    for key in ("backbone", "weights", "fingerprint", "data_fingerprint"):
        f.str(key)
    f.str("geotag_version", default=None)
    f.int("feature_dim", 1, MAX_FEATURE_DIM)
    f.str("dtype", tuple(DTYPES))
    f.obj("preprocess")
    f.int("shard_size", 1, MAX_SHARD_SIZE)
    n = f.int("n_samples")
    ok, errors = f.int("ok", default=0), f.int("errors", default=0)
    if ok + errors > n:
        raise InputError(f"embedding cache {path}: ok + errors must not exceed n_samples")
    f.list("sources", "strings", lambda v: isinstance(v, str), 10_000, default=[])
    f.bool("complete", default=False)
    f.bool("normalised", default=False)
    known = CacheInfo.__dataclass_fields__
    return CacheInfo(**{k: v for k, v in data.items() if k in known})


class _PartWriter(AtomicParquetWriter):
    def write(self, table: pa.Table) -> None:
        self._writer.write_table(table)
        self.rows_written += table.num_rows


def write_part(
    folder: Path,
    k: int,
    info: CacheInfo,
    samples: TrainSamples,
    sources: list[str | None],
    features: np.ndarray,
    errors: list[str | None],
) -> None:
    """Part k: one row per sample of `samples` (a slice), `features` (n, D) with any values on the rows
    whose `errors` entry is set (they are stored as null)."""
    schema = cache_schema(info)
    bad = np.array([e is not None for e in errors], dtype=bool)
    values = pa.array(np.ascontiguousarray(features, dtype=info.dtype).reshape(-1), DTYPES[info.dtype])
    scene = [SCENES[s] if s >= 0 else None for s in samples.scene.tolist()]
    columns = [
        samples.image_ids,
        samples.paths,
        pa.array(samples.lat, pa.float64()),
        pa.array(samples.lon, pa.float64()),
        pa.array(scene, pa.string()),
        samples.country,
        pa.array(sources, pa.string()),
        pa.array(["error" if b else "ok" for b in bad], pa.string()),
        pa.array(errors, pa.string()),
        pa.FixedSizeListArray.from_arrays(values, info.feature_dim, mask=pa.array(bad)),
    ]
    with _PartWriter(part_path(folder, k), schema) as writer:
        writer.write(pa.Table.from_arrays(columns, schema=schema))


def parts_done(folder: Path, info: CacheInfo) -> int:
    """How many leading parts exist (a resumed run starts at the next one)."""
    k = 0
    while k < info.n_parts and part_path(folder, k).is_file():
        k += 1
    return k


def read_cache(folder: Path) -> tuple[CacheInfo, TrainSamples, np.ndarray]:
    """(info, the ok rows as TrainSamples with `rows` = their feature row, features (n_ok, D) in the
    stored dtype). The whole cache is held in memory: 4.7 M x 768 float16 is 7.2 GB."""
    info = read_info(folder)
    if not info.complete:
        raise InputError(f"embedding cache {folder} is incomplete: run `geotag embed` again to finish it")
    n = info.ok
    rows = 0  # the parts' own row counts (footers only), before any memory is set aside for `ok` rows
    for k in range(info.n_parts):
        path = part_path(folder, k)
        if not path.is_file():
            raise InputError(f"embedding cache {folder}: {path.name} is missing")
        try:
            rows += pq.ParquetFile(path).metadata.num_rows
        except (OSError, pa.ArrowException) as exc:
            raise InputError(f"embedding cache {folder}: {path.name} is not a readable Parquet file") from exc
    if rows != info.n_samples:
        raise InputError(
            f"embedding cache {folder}: its parts hold {rows} rows, {INFO_FILE} n_samples says otherwise"
        )
    features = np.empty((n, info.feature_dim), dtype=info.dtype)
    cols: dict[str, list[pa.Array]] = {k: [] for k in ("image_id", "path", "lat", "lon", "scene", "country")}
    start = 0
    for k in range(info.n_parts):
        path = part_path(folder, k)
        if not path.is_file():
            raise InputError(f"embedding cache {folder}: {path.name} is missing")
        table = pq.read_table(path)
        ok = table.filter(pc.equal(table.column("status"), "ok"))
        m = ok.num_rows
        if start + m > n:
            raise InputError(f"embedding cache {folder}: more ok rows than {INFO_FILE} says ({n})")
        emb = ok.column("embedding").combine_chunks()
        features[start : start + m] = emb.flatten().to_numpy(zero_copy_only=False).reshape(m, -1)
        for name in cols:
            cols[name].append(ok.column(name).combine_chunks())
        start += m
    if start != n:
        raise InputError(f"embedding cache {folder}: {start} ok rows, {INFO_FILE} says {n}")
    if n == 0:
        raise InputError(f"embedding cache {folder} holds no embedded sample")

    def joined(name: str) -> pa.Array:
        return pa.concat_arrays(cols[name])

    samples = TrainSamples(
        joined("path"),
        joined("image_id"),
        joined("lat").to_numpy(zero_copy_only=False).astype(np.float64),
        joined("lon").to_numpy(zero_copy_only=False).astype(np.float64),
        parse_scenes(joined("scene").to_pylist()),
        joined("country"),
        [],
        np.arange(n),
    )
    return info, samples, features


def read_sources(folder: Path) -> list[str | None]:
    """The `gt_source` of the ok rows, in order (exif / manifest / shards): what a gallery records."""
    info = read_info(folder)
    out: list[str | None] = []
    for k in range(info.n_parts):
        t = pq.read_table(part_path(folder, k), columns=["status", "gt_source"])
        out += [
            s for s, st in zip(t.column(1).to_pylist(), t.column(0).to_pylist(), strict=True) if st == "ok"
        ]
    return out
