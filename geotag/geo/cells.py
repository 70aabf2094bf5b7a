"""Hierarchical S2 geocells (Müller-Budack et al., ECCV 2018): build, assign, centroids, save/load.

A partition is grown as GeoEstimation's create_cells.py grows it (the partitions TransLocator and
GeoDecoder used): every coordinate starts in its S2 level-2 cell (`MIN_LEVEL`, 96 cells, not the 6 faces),
a cell is split into its four children while it holds more than `tau_max` training coordinates, and cells
holding `tau_min` or fewer are dropped (their images take no part in training). Several partitions
(coarse / middle / fine) are built from the same coordinates; with tau_max non-increasing and tau_min
non-decreasing from coarse to fine, every fine cell lies inside exactly one cell of each coarser
partition, its `parent` chain. A cell's point is the spherical mean of its training coordinates (not its
geometric centre); GeoEstimation takes the arithmetic mean of latitudes and longitudes, which differs only
for cells that are large or cross the antimeridian (a deliberate, documented difference).

Thresholds are used as given. `scale="auto"` (asked for explicitly, never by default) shrinks the MP-16
defaults for small data by sqrt(n / 4,723,695), and callers print the thresholds it chose.

Published partitions (GeoEstimation's cells_50_5000.csv, cells_50_2000.csv, cells_50_1000.csv) are read
by `geo/cells_import.py` with their class order kept: a partition's class index is the position of a cell
in `Partition.ids`, which is S2-id order for partitions built here and the file's order for imported ones.

S2 cell ids are computed vectorised in numpy from the S2 math (face, quadratic u/v -> s/t, Hilbert
curve i/j -> position); s2sphere, the named dependency (about 8.5 us a point), is the reference the
tests compare against and is still used for the few per-cell geometry calls (polygons).

The cells file (Parquet), one row per cell, every partition in one file:
`partition, id, level, lat, lon, parent, polygon, n_images`. `id` is the S2 token (hex, trailing zeros
stripped), `parent` the token of the enclosing cell in the next coarser partition (null for the
coarsest), `polygon` WKT in lon/lat degrees with densified edges for large cells (longitudes are
unwrapped, so a cell across the antimeridian may reach beyond 180; a polar cell closes along the pole).
A cell's class index is its row's position within its partition (S2-id order for cells built here, the
published class order for imported ones). File metadata `geotag_cells` holds the partition order and
thresholds.
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from geotag.errors import InputError, OutputError, SchemaError
from geotag.io.durable import atomic_file
from geotag.io.tables import LAT_NAMES, LON_NAMES, float_column, read_table, require_column

MAX_LEVEL = 30
MIN_LEVEL = 2
"""GeoEstimation's create_cells.py starts at S2 level 2 (its --lvl_min default), not at the six faces."""
MP16_IMAGES = 4_723_695
"""Size of MP-16, the training set the default thresholds were chosen for."""
FORMAT_VERSION = 1
METADATA_KEY = b"geotag_cells"

_U64 = np.uint64
_POS_TO_IJ = ((0, 1, 3, 2), (0, 2, 3, 1), (3, 2, 0, 1), (3, 1, 0, 2))
_POS_TO_ORIENTATION = (1, 0, 0, 3)  # SWAP, 0, 0, SWAP | INVERT


@dataclass(frozen=True)
class PartitionSpec:
    """One partition's name and thresholds (counts of training coordinates per cell)."""

    name: str
    tau_min: int
    tau_max: int


DEFAULT_PARTITIONS = (
    PartitionSpec("coarse", 50, 5000),
    PartitionSpec("middle", 50, 2000),
    PartitionSpec("fine", 50, 1000),
)
"""GeoEstimation's partitions, as TransLocator and GeoDecoder used them (3,298 / 7,202 / 12,893 cells
on MP-16)."""


# ---------------------------------------------------------------------------------------------------
# S2 cell ids, vectorised


@functools.cache
def _lookup_pos() -> np.ndarray:
    """S2's 4-bit Hilbert lookup: (i4, j4, orientation) -> (pos8, new orientation), 1024 entries."""
    table = np.zeros(1 << 10, dtype=_U64)

    def fill(level: int, i: int, j: int, orig: int, pos: int, orientation: int) -> None:
        if level == 4:
            table[(((i << 4) + j) << 2) + orig] = (pos << 2) + orientation
            return
        r = _POS_TO_IJ[orientation]
        for index in range(4):
            fill(
                level + 1,
                (i << 1) + (r[index] >> 1),
                (j << 1) + (r[index] & 1),
                orig,
                (pos << 2) + index,
                orientation ^ _POS_TO_ORIENTATION[index],
            )

    for orientation in range(4):
        fill(0, 0, 0, orientation, 0, orientation)
    return table


def leaf_ids(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Level-30 S2 cell ids (uint64) of points in degrees; bit-identical to s2sphere's
    `CellId.from_lat_lng(LatLng.from_degrees(lat, lon))` (same float operations, in the same order)."""
    phi = np.radians(np.asarray(lat, dtype=np.float64))
    theta = np.radians(np.asarray(lon, dtype=np.float64))
    cosphi = np.cos(phi)
    x, y, z = np.cos(theta) * cosphi, np.sin(theta) * cosphi, np.sin(phi)
    ax, ay, az = np.abs(x), np.abs(y), np.abs(z)
    face = np.where(ax > ay, np.where(ax > az, 0, 2), np.where(ay > az, 1, 2))
    face = face + 3 * (np.choose(face, (x, y, z)) < 0)
    den = np.choose(face, (x, y, z, x, y, z))
    u = np.choose(face, (y, -x, -x, z, z, -y)) / den
    v = np.choose(face, (z, z, -y, y, -x, -x)) / den
    i, j = _st_to_ij(_uv_to_st(u)), _st_to_ij(_uv_to_st(v))
    return _from_face_ij(face.astype(_U64), i, j)


def _uv_to_st(u: np.ndarray) -> np.ndarray:
    """S2's quadratic projection; 1 - 3u == 1 + 3|u| exactly for u < 0, so no NaN branch is computed."""
    root = 0.5 * np.sqrt(1 + 3 * np.abs(u))
    return np.where(u >= 0, root, 1 - root)


def _st_to_ij(s: np.ndarray) -> np.ndarray:
    ij = np.floor(float(1 << MAX_LEVEL) * s)
    return np.clip(ij, 0, (1 << MAX_LEVEL) - 1).astype(_U64)


def _from_face_ij(face: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    table = _lookup_pos()
    n = face << _U64(60)
    bits = face & _U64(1)
    for k in range(7, -1, -1):
        shift = _U64(4 * k)
        bits = bits + (((i >> shift) & _U64(15)) << _U64(6)) + (((j >> shift) & _U64(15)) << _U64(2))
        bits = table[bits]
        n |= (bits >> _U64(2)) << _U64(8 * k)
        bits &= _U64(3)
    return (n << _U64(1)) | _U64(1)


def lsb_for_level(level: int) -> np.uint64:
    return _U64(1 << (2 * (MAX_LEVEL - level)))


def parent_ids(ids: np.ndarray, level: int) -> np.ndarray:
    """The ancestors at `level` of cell ids at that level or deeper."""
    lsb = lsb_for_level(level)
    return (ids & ~(lsb - _U64(1))) | lsb


def cell_levels(ids: np.ndarray) -> np.ndarray:
    lsb = ids & (~ids + _U64(1))
    return (MAX_LEVEL - np.log2(lsb.astype(np.float64)).astype(np.int64) // 2).astype(np.int8)


def _ranges(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inclusive leaf-id range [min, max] covered by each cell."""
    half = (ids & (~ids + _U64(1))) - _U64(1)
    return ids - half, ids + half


def to_tokens(ids: np.ndarray) -> list[str]:
    return [format(int(i), "016x").rstrip("0") or "X" for i in ids]


def from_tokens(tokens: Sequence[str]) -> np.ndarray:
    try:
        return np.array([int(t.ljust(16, "0"), 16) for t in tokens], dtype=_U64)
    except (ValueError, AttributeError, OverflowError) as exc:
        raise SchemaError(f"bad S2 cell token in cells file: {exc}") from exc


# ---------------------------------------------------------------------------------------------------
# Partitions


@dataclass
class Partition:
    """The cells of one partition; a cell's class index is its position in `ids` (S2-id order when built
    here, the published order when imported)."""

    spec: PartitionSpec
    ids: np.ndarray  # uint64, in class order
    lat: np.ndarray  # float64 spherical mean of the training coordinates
    lon: np.ndarray
    n_images: np.ndarray  # int64
    parent: np.ndarray  # int64 index into the next coarser partition, -1 for the coarsest
    _bounds: tuple[np.ndarray, np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def levels(self) -> np.ndarray:
        return cell_levels(self.ids)

    def tokens(self) -> list[str]:
        return to_tokens(self.ids)

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        """Class index of the cell containing each S2 id (leaf or coarser), -1 where none does."""
        if self._bounds is None:
            order = np.argsort(self.ids, kind="stable")
            self._bounds = (*_ranges(self.ids[order]), order)
        lo, hi, order = self._bounds
        ids = np.asarray(ids, dtype=_U64)
        if not len(lo):
            return np.full(len(ids), -1, dtype=np.int64)
        idx = np.searchsorted(lo, ids, side="right") - 1
        ok = (idx >= 0) & (ids <= hi[np.maximum(idx, 0)])
        return np.where(ok, order[np.maximum(idx, 0)], -1).astype(np.int64)


@dataclass
class Geocells:
    """Partitions ordered coarse -> fine, with parent links; what a cell classifier is trained on."""

    partitions: list[Partition]
    n_input: int = 0  # coordinates the cells were built from

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.partitions]

    @property
    def fine(self) -> Partition:
        return self.partitions[-1]

    def partition(self, name: str) -> Partition:
        for p in self.partitions:
            if p.name == name:
                return p
        raise InputError(f"no partition {name!r}; have {', '.join(self.names)}")

    def assign(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        """(N, P) class index of each coordinate in every partition, -1 where its cell was dropped or the
        coordinate is missing (NaN) or out of range."""
        lat, lon = np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
        valid = np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180)
        leaves = leaf_ids(np.where(valid, lat, 0.0), np.where(valid, lon, 0.0))
        return np.stack([np.where(valid, p.lookup(leaves), -1) for p in self.partitions], axis=1)

    def ancestors(self) -> np.ndarray:
        """(n_fine, P): for each fine cell, the index of its enclosing cell in every partition."""
        out = np.empty((len(self.fine), len(self.partitions)), dtype=np.int64)
        out[:, -1] = np.arange(len(self.fine))
        for p in range(len(self.partitions) - 1, 0, -1):
            out[:, p - 1] = self.partitions[p].parent[out[:, p]]
        return out

    def to_table(self) -> pa.Table:
        cols: dict[str, list] = {k: [] for k in ("partition", "id", "level", "lat", "lon", "parent")}
        cols.update(polygon=[], n_images=[])
        for k, part in enumerate(self.partitions):
            tokens = part.tokens()
            parents = self.partitions[k - 1].tokens() if k else []
            cols["partition"] += [part.name] * len(part)
            cols["id"] += tokens
            cols["level"] += part.levels.tolist()
            cols["lat"] += part.lat.tolist()
            cols["lon"] += part.lon.tolist()
            cols["parent"] += (
                [parents[i] if i >= 0 else None for i in part.parent] if k else [None] * len(part)
            )
            cols["polygon"] += [cell_polygon_wkt(int(i)) for i in part.ids]
            cols["n_images"] += part.n_images.tolist()
        meta = {
            "format_version": FORMAT_VERSION,
            "n_input": self.n_input,
            "partitions": [
                {"name": p.name, "tau_min": p.spec.tau_min, "tau_max": p.spec.tau_max}
                for p in self.partitions
            ],
        }
        return pa.table(cols, schema=CELLS_SCHEMA).replace_schema_metadata({METADATA_KEY: json.dumps(meta)})

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the cells file atomically (temporary name, then rename)."""
        from geotag.io.parquet import check_output_path

        path = check_output_path(Path(path))
        try:
            with atomic_file(path, sync=False) as fh:
                pq.write_table(self.to_table(), fh, compression="zstd")
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Geocells:
        path = Path(path)
        return cls.from_table(read_table(path, "cells file", parquet=True), str(path))

    @classmethod
    def from_table(cls, table: pa.Table, source: str = "cells table") -> Geocells:
        missing = [
            c for c in ("partition", "id", "lat", "lon", "parent", "n_images") if c not in table.column_names
        ]
        if missing:
            raise SchemaError(
                f"{source} lacks the column(s) {', '.join(missing)}; is it a geotag cells file?"
            )
        meta = json.loads((table.schema.metadata or {}).get(METADATA_KEY, b"{}"))
        data = {
            c: table.column(c).to_pylist() for c in ("partition", "id", "lat", "lon", "parent", "n_images")
        }
        specs = {
            d["name"]: PartitionSpec(d["name"], d["tau_min"], d["tau_max"])
            for d in meta.get("partitions", [])
        }
        order = list(specs) or list(dict.fromkeys(data["partition"]))
        partitions: list[Partition] = []
        for name in order:
            rows = [r for r, p in enumerate(data["partition"]) if p == name]
            if not rows:
                raise SchemaError(f"{source}: partition {name!r} has no cells")
            ids = from_tokens([data["id"][r] for r in rows])  # row order is class order
            if len(np.unique(ids)) != len(ids):
                raise SchemaError(f"{source}: partition {name!r} lists a cell twice")
            part = Partition(
                spec=specs.get(name, PartitionSpec(name, 0, 0)),
                ids=ids,
                lat=np.array([data["lat"][r] for r in rows], dtype=np.float64),
                lon=np.array([data["lon"][r] for r in rows], dtype=np.float64),
                n_images=np.array([data["n_images"][r] or 0 for r in rows], dtype=np.int64),
                parent=np.full(len(rows), -1, dtype=np.int64),
            )
            if partitions:
                prev = partitions[-1]
                index = {t: k for k, t in enumerate(prev.tokens())}
                tokens = [data["parent"][r] for r in rows]
                if any(t not in index for t in tokens):
                    raise SchemaError(f"{source}: a {name!r} cell has no parent in partition {prev.name!r}")
                part.parent = np.array([index[t] for t in tokens], dtype=np.int64)
            partitions.append(part)
        return cls(partitions, int(meta.get("n_input", 0)))


CELLS_SCHEMA = pa.schema(
    [
        ("partition", pa.string()),
        ("id", pa.string()),
        ("level", pa.int8()),
        ("lat", pa.float64()),
        ("lon", pa.float64()),
        ("parent", pa.string()),
        ("polygon", pa.string()),
        ("n_images", pa.int64()),
    ]
)


# ---------------------------------------------------------------------------------------------------
# Building


def validate_specs(specs: Sequence[PartitionSpec]) -> None:
    """Nested partitions need tau_max non-increasing and tau_min non-decreasing from coarse to fine."""
    if not specs:
        raise InputError("at least one partition is needed")
    names = [s.name for s in specs]
    if len(set(names)) != len(names) or not all(names):
        raise InputError(f"partition names must be unique and non-empty, got {names}")
    for s in specs:
        if not 0 <= s.tau_min < s.tau_max:
            raise InputError(
                f"partition {s.name}: need 0 <= tau_min < tau_max (cells holding tau_min or fewer are "
                f"dropped), got {s.tau_min}, {s.tau_max}"
            )
    for a, b in zip(specs, specs[1:], strict=False):
        if b.tau_max > a.tau_max or b.tau_min < a.tau_min:
            raise InputError(
                f"partitions must go coarse to fine: {b.name} needs tau_max <= {a.tau_max} and tau_min >= "
                f"{a.tau_min}, so that every {b.name} cell lies inside one {a.name} cell"
            )


def scale_specs(specs: Sequence[PartitionSpec], n: int, scale: str | float = "auto") -> list[PartitionSpec]:
    """Thresholds for `n` coordinates: 'auto' multiplies by sqrt(n / MP-16 size) when n is smaller;
    'none' (or 1) keeps them; a number multiplies by that factor."""
    if scale == "none":
        return list(specs)
    if scale == "auto":
        factor = min(1.0, math.sqrt(max(n, 1) / MP16_IMAGES))
    else:
        try:
            factor = float(scale)
        except ValueError as exc:
            raise InputError(f"scale must be 'auto', 'none' or a number, got {scale!r}") from exc
        if not factor > 0:
            raise InputError(f"scale must be positive, got {scale!r}")
    if factor == 1.0:
        return list(specs)
    out = []
    for s in specs:
        tau_min = max(0, round(s.tau_min * factor))  # 0 keeps every non-empty cell
        out.append(PartitionSpec(s.name, tau_min, max(tau_min + 1, round(s.tau_max * factor))))
    return out


def adaptive_cells(
    leaves: np.ndarray, tau_min: int, tau_max: int, min_level: int = MIN_LEVEL
) -> tuple[np.ndarray, np.ndarray]:
    """(cell ids, counts) of one adaptive partition of the given leaf ids, sorted by id: start at
    `min_level`, split cells holding more than tau_max, drop those holding tau_min or fewer (GeoEstimation's
    rules; its first and last deletions drop the same cells as dropping each final cell here)."""
    open_ids = leaves
    kept_ids, kept_counts = [], []
    for level in range(min_level, MAX_LEVEL + 1):
        cells, inverse, counts = np.unique(
            parent_ids(open_ids, level), return_inverse=True, return_counts=True
        )
        split = counts > tau_max if level < MAX_LEVEL else np.zeros(len(cells), dtype=bool)
        final = ~split & (counts > tau_min)
        kept_ids.append(cells[final])
        kept_counts.append(counts[final])
        open_ids = open_ids[split[inverse]]
        if not len(open_ids):
            break
    ids = np.concatenate(kept_ids)
    order = np.argsort(ids)
    return ids[order], np.concatenate(kept_counts)[order].astype(np.int64)


def spherical_mean(lat: np.ndarray, lon: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """(n_groups, 2) lat/lon of the normalised sum of unit vectors per group; NaN for empty or
    degenerate groups (points that cancel out)."""
    phi, lam = np.radians(lat), np.radians(lon)
    xyz = np.stack([np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)], axis=1)
    sums = np.stack([np.bincount(groups, weights=xyz[:, k], minlength=n_groups) for k in range(3)], axis=1)
    norm = np.linalg.norm(sums, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = sums / norm[:, None]
    out = np.stack(
        [np.degrees(np.arcsin(np.clip(unit[:, 2], -1, 1))), np.degrees(np.arctan2(unit[:, 1], unit[:, 0]))],
        axis=1,
    )
    out[~(norm > 1e-9 * np.maximum(np.bincount(groups, minlength=n_groups), 1))] = np.nan
    return out


def build_cells(
    lat: np.ndarray,
    lon: np.ndarray,
    specs: Sequence[PartitionSpec] = DEFAULT_PARTITIONS,
    scale: str | float = "none",
) -> Geocells:
    """Adaptive S2 partitions of the given training coordinates (degrees), coarse to fine."""
    lat, lon = np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
    valid = np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180)
    lat, lon = lat[valid], lon[valid]
    if not len(lat):
        raise InputError("no valid coordinates to build cells from")
    specs = scale_specs(specs, len(lat), scale)
    validate_specs(specs)
    leaves = leaf_ids(lat, lon)
    partitions: list[Partition] = []
    for spec in specs:
        ids, counts = adaptive_cells(leaves, spec.tau_min, spec.tau_max)
        part = Partition(spec, ids, np.empty(0), np.empty(0), counts, np.full(len(ids), -1, dtype=np.int64))
        index = part.lookup(leaves)
        inside = index >= 0
        centre = spherical_mean(lat[inside], lon[inside], index[inside], len(ids))
        part.lat, part.lon = _fill_degenerate(centre, ids)
        if partitions:
            part.parent = partitions[-1].lookup(ids)
            if (part.parent < 0).any():  # cannot happen with validated specs; guard the invariant
                raise InputError(f"partition {spec.name} is not nested in {partitions[-1].name}")
        partitions.append(part)
    return Geocells(partitions, n_input=len(lat))


def _fill_degenerate(centre: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cells whose coordinates cancel out (antipodal pairs) fall back to the S2 cell centre."""
    import s2sphere

    for k in np.flatnonzero(np.isnan(centre[:, 0])):
        ll = s2sphere.CellId(int(ids[k])).to_lat_lng()
        centre[k] = (ll.lat().degrees, ll.lng().degrees)
    return centre[:, 0].copy(), centre[:, 1].copy()


# ---------------------------------------------------------------------------------------------------
# Geometry


def cell_polygon_wkt(cell_id: int) -> str:
    """The cell's boundary as a WKT polygon in lon/lat degrees (see the module docstring)."""
    import s2sphere

    cid = s2sphere.CellId(cell_id)
    level = cid.level()
    face, i, j, _ = cid.to_face_ij_orientation()
    size = 1 << (MAX_LEVEL - level)
    i0, j0 = i & -size, j & -size
    st_uv = s2sphere.CellId.st_to_uv
    u0, u1 = st_uv(i0 / (1 << MAX_LEVEL)), st_uv((i0 + size) / (1 << MAX_LEVEL))
    v0, v1 = st_uv(j0 / (1 << MAX_LEVEL)), st_uv((j0 + size) / (1 << MAX_LEVEL))
    steps = max(1, 16 >> level)  # large cells: densify the great-circle edges
    t = np.arange(steps) / steps
    u = np.concatenate([u0 + (u1 - u0) * t, np.full(steps, u1), u1 + (u0 - u1) * t, np.full(steps, u0)])
    v = np.concatenate([np.full(steps, v0), v0 + (v1 - v0) * t, np.full(steps, v1), v1 + (v0 - v1) * t])
    x, y, z = _face_uv_to_xyz(face, u, v)
    lat, lon = np.degrees(np.arctan2(z, np.hypot(x, y))), np.degrees(np.arctan2(y, x))
    pole = np.flatnonzero(np.hypot(x, y) < 1e-12 * np.abs(z))
    if len(pole):  # a corner on a pole becomes a segment along it, from the previous edge's longitude
        k = int(pole[0])
        lat = np.insert(lat, k + 1, lat[k])
        lon = np.insert(lon, k + 1, lon[(k + 1) % len(lon)])
        lon[k] = lon[k - 1]
    lon = np.unwrap(lon, period=360.0)
    lon -= 360.0 * math.floor((lon.min() + 180.0) / 360.0)  # the ring starts within [-180, 180)
    closing = lon[-1] + _wrap180(lon[0] - lon[-1])
    ring = list(zip(lon.tolist(), lat.tolist(), strict=True))
    if abs(closing - lon[0]) > 180:  # the ring goes around a pole: close it along the pole
        pole = 90.0 if z.mean() > 0 else -90.0
        ring += [(closing, float(lat[0])), (closing, pole), (float(lon[0]), pole)]
    ring.append(ring[0])
    return "POLYGON ((" + ", ".join(f"{a:.9g} {b:.9g}" for a, b in ring) + "))"


def _wrap180(d: float) -> float:
    return (d + 180.0) % 360.0 - 180.0


def _face_uv_to_xyz(face: int, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    one = np.ones_like(u)
    return {
        0: (one, u, v),
        1: (-u, one, v),
        2: (-u, -v, one),
        3: (-one, -v, -u),
        4: (v, -one, -u),
        5: (v, u, -one),
    }[face]


# ---------------------------------------------------------------------------------------------------
# Files


def read_manifest(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray, int]:
    """(lat, lon, rows) of a CSV or Parquet manifest with lat/latitude and lon/longitude/lng columns
    (any letter case). Rows without a valid coordinate are left out of lat/lon but counted in rows.
    Read with pyarrow alone: the gallery reader would pull in torch (seconds) for a CLI command."""
    path = Path(path)
    table = read_table(path, "manifest")
    where = f"manifest {path}"
    lat, lon = (
        float_column(table, require_column(table, names, where, SchemaError), where, error=SchemaError)
        for names in (LAT_NAMES, LON_NAMES)
    )
    keep = np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180)
    return lat[keep], lon[keep], table.num_rows


def parse_specs(
    names: str | None, tau_max: str | None, tau_min: str | None
) -> tuple[list[PartitionSpec], bool]:
    """Partition specs from the CLI's comma-separated lists, missing ones from the MP-16 defaults (one
    tau_min may serve every partition). The flag says whether thresholds were given explicitly."""
    name_list = [n.strip() for n in (names or ",".join(s.name for s in DEFAULT_PARTITIONS)).split(",")]
    try:
        maxes = [int(t) for t in (tau_max or ",".join(str(s.tau_max) for s in DEFAULT_PARTITIONS)).split(",")]
        mins = [int(t) for t in (tau_min or str(DEFAULT_PARTITIONS[0].tau_min)).split(",")]
    except ValueError as exc:
        raise InputError(f"thresholds must be comma-separated integers: {exc}") from exc
    if len(mins) == 1:
        mins = mins * len(maxes)
    if not (len(name_list) == len(maxes) == len(mins)):
        raise InputError(
            f"need one name and one tau_max (and one tau_min, or a single one) per partition: "
            f"got {len(name_list)} names, {len(maxes)} tau_max, {len(mins)} tau_min"
        )
    specs = [PartitionSpec(n, lo, hi) for n, lo, hi in zip(name_list, mins, maxes, strict=True)]
    return specs, tau_max is not None or tau_min is not None


@dataclass
class BuildSummary:
    rows: int
    used: int
    partitions: list[tuple[str, int, int, int, int]]  # name, tau_min, tau_max, cells, coordinates covered


def build_cells_file(
    manifest: str | os.PathLike[str],
    out: str | os.PathLike[str],
    specs: Sequence[PartitionSpec] = DEFAULT_PARTITIONS,
    scale: str | float = "none",
) -> BuildSummary:
    """`geotag cells build`: manifest in, cells file out (thresholds as given unless `scale` says)."""
    from geotag.io.parquet import check_output_path

    check_output_path(Path(out))
    lat, lon, rows = read_manifest(manifest)
    if not len(lat):
        raise InputError(f"manifest {manifest} has no valid lat/lon rows")
    cells = build_cells(lat, lon, specs, scale=scale)
    cells.save(out)
    return BuildSummary(
        rows=rows,
        used=len(lat),
        partitions=[
            (p.name, p.spec.tau_min, p.spec.tau_max, len(p), int(p.n_images.sum())) for p in cells.partitions
        ],
    )
