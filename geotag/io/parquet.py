"""The predictions file: one versioned schema for `scan` and `predict`, a streaming writer, readers.

Rows are buffered and written one row group at a time, so memory stays flat for millions of files.
The file is written to a temporary name in the target folder, fsynced and renamed on close: a reader
never sees half a file, and an existing file is replaced only by a complete one.

GeoParquet 1.1 metadata declares two WKB point columns in EPSG:4326, `geometry` (primary) and
`gt_geometry` (the EXIF / manifest ground truth), and a `bbox` struct column as the primary column's
bbox covering, so geopandas, GDAL >= 3.9 and DuckDB read the file as geodata and can skip row groups
by their bbox statistics. The primary point is the prediction in a predictions file and the ground
truth in a scan file (which has no prediction yet), so GIS tools show a scan's photos where they were
taken. docs/schema.md documents every column.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import suppress
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Self

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from geotag import __version__
from geotag.errors import AGAIN_HINT, InputError, OutputError, SchemaError, disk_full
from geotag.io.durable import default_mode, is_disk_full, new_temp, replace_checked
from geotag.io.pathtext import safe_text, to_text

SCHEMA_VERSION = "3"
"""Bumped whenever a column changes meaning or type; stored in the file's `geotag` metadata.
2: the `bbox` covering column; a scan file's `geometry` holds the ground truth (it was empty).
3: time as evidence: the photo's UTC time and zone, GPS time, camera serial, where a position came
from (`source`) and the track fixes it was placed from; `self_match` (kNN rows answered by the photo's
own entry in the gallery: a column added, the version kept); `session` and `single_*` (predict
--fuse: columns added, the version kept)."""

BBOX_TYPE = pa.struct([(k, pa.float64()) for k in ("xmin", "ymin", "xmax", "ymax")])
TOPK_TYPE = pa.list_(pa.struct([("lat", pa.float64()), ("lon", pa.float64()), ("score", pa.float64())]))

SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("path", pa.string()),
        ("size", pa.int64()),
        ("mtime", pa.timestamp("us", tz="UTC")),
        ("status", pa.string()),
        ("error", pa.string()),
        ("format", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("taken_at", pa.timestamp("us")),
        ("camera_make", pa.string()),
        ("camera_model", pa.string()),
        ("orientation", pa.int16()),
        ("camera_serial", pa.string()),
        ("taken_at_utc", pa.timestamp("us", tz="UTC")),
        ("time_zone", pa.string()),
        ("time_zone_source", pa.string()),
        ("gps_time", pa.timestamp("us", tz="UTC")),
        ("gt_lat", pa.float64()),
        ("gt_lon", pa.float64()),
        ("gt_alt", pa.float64()),
        ("gt_source", pa.string()),
        ("gt_note", pa.string()),
        ("pred_lat", pa.float64()),
        ("pred_lon", pa.float64()),
        ("confidence", pa.float64()),
        ("error_km", pa.float64()),
        ("pred_alt", pa.float64()),
        ("source", pa.string()),
        ("clock_offset_s", pa.float64()),
        ("fix_before", pa.timestamp("us", tz="UTC")),
        ("fix_after", pa.timestamp("us", tz="UTC")),
        ("fix_dt_s", pa.float64()),
        ("fix_source", pa.string()),
        ("topk", TOPK_TYPE),
        ("session", pa.int64()),
        ("single_lat", pa.float64()),
        ("single_lon", pa.float64()),
        ("single_confidence", pa.float64()),
        ("single_error_km", pa.float64()),
        ("single_topk", TOPK_TYPE),
        ("cell", pa.string()),
        ("scene", pa.string()),
        ("country", pa.string()),
        ("gt_country", pa.string()),
        ("model", pa.string()),
        ("weights", pa.string()),
        ("self_match", pa.string()),
        ("geotag_version", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("geometry", pa.binary()),
        ("gt_geometry", pa.binary()),
        ("bbox", BBOX_TYPE),
    ]
)
COLUMNS = tuple(SCHEMA.names)
GEOMETRY_COLUMNS = ("geometry", "gt_geometry")
POINTS = {"pred": ("pred_lat", "pred_lon"), "gt": ("gt_lat", "gt_lon")}
"""Which coordinates a file's primary `geometry` (and its `bbox`) holds: `pred` in predictions files,
`gt` in scan files. `gt_geometry` always holds the ground truth."""


def _epsg4326_projjson() -> dict[str, Any]:
    text = resources.files("geotag.io").joinpath("epsg4326.projjson.json").read_text()
    return json.loads(text)


def geo_metadata() -> dict[str, Any]:
    """GeoParquet 1.1 `geo` metadata for the two point columns; `bbox` covers the primary one."""
    crs = _epsg4326_projjson()
    column = {"encoding": "WKB", "geometry_types": ["Point"], "crs": crs, "edges": "planar"}
    covering = {"bbox": {k: ["bbox", k] for k in ("xmin", "ymin", "xmax", "ymax")}}
    return {
        "version": "1.1.0",
        "primary_column": "geometry",
        "columns": {"geometry": {**column, "covering": covering}, "gt_geometry": dict(column)},
    }


def file_metadata(extra: Mapping[str, Any] | None = None, geometry: str = "pred") -> dict[bytes, bytes]:
    info = {
        "schema_version": SCHEMA_VERSION,
        "geotag_version": __version__,
        "geometry": geometry,  # see POINTS
        **(extra or {}),
    }
    return {b"geo": json.dumps(geo_metadata()).encode(), b"geotag": json.dumps(info).encode()}


def wkb_points(lat: np.ndarray, lon: np.ndarray) -> pa.Array:
    """Little-endian WKB points (x = lon, y = lat), null where either coordinate is missing.

    Vectorised with numpy: 21 bytes a point (byte order, type 1, two float64), which is all the
    GeoParquet spec asks of a Point; shapely would do the same at the cost of a heavy import.
    """
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    n = lat.shape[0]
    valid = ~(np.isnan(lat) | np.isnan(lon))
    record = np.dtype([("order", "u1"), ("kind", "<u4"), ("x", "<f8"), ("y", "<f8")])
    buf = np.zeros(n, dtype=record)
    buf["order"] = 1
    buf["kind"] = 1
    buf["x"] = np.where(valid, lon, 0.0)
    buf["y"] = np.where(valid, lat, 0.0)
    offsets = np.arange(n + 1, dtype=np.int32) * record.itemsize
    data = pa.py_buffer(buf.tobytes())
    validity = None if valid.all() else pa.array(valid).buffers()[1]
    return pa.BinaryArray.from_buffers(
        pa.binary(), n, [validity, pa.py_buffer(offsets.tobytes()), data], null_count=int((~valid).sum())
    )


def point_bboxes(lat: np.ndarray, lon: np.ndarray) -> pa.StructArray:
    """The GeoParquet bbox covering of points: xmin = xmax = lon, ymin = ymax = lat; null without a point."""
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    missing = np.isnan(lat) | np.isnan(lon)  # null children too: no NaN in the row groups' statistics
    x, y = pa.array(lon, mask=missing), pa.array(lat, mask=missing)
    return pa.StructArray.from_arrays([x, y, x, y], fields=list(BBOX_TYPE), mask=pa.array(missing))


def wkb_xy(geometry: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(lat, lon) of WKB points (NaN where null): the inverse of wkb_points, for tables read back."""
    values = geometry.to_pylist()
    xy = np.full((len(values), 2), np.nan)
    for i, blob in enumerate(values):
        if blob is not None and len(blob) >= 21:
            xy[i] = np.frombuffer(blob, dtype="<f8" if blob[0] == 1 else ">f8", count=2, offset=5)
    return xy[:, 1], xy[:, 0]


def rows_to_table(rows: list[Mapping[str, Any]], geometry: str = "pred") -> pa.Table:
    """Turn row dicts (any subset of COLUMNS) into a table of the full schema, geometry and bbox filled
    in; `geometry` picks the primary point (POINTS)."""
    present = set().union(*(r.keys() for r in rows)) if rows else set()
    unknown = present - set(COLUMNS)
    if unknown:
        raise ValueError(f"unknown columns: {sorted(unknown)}")
    arrays = {}
    for field in SCHEMA:
        if field.name in (*GEOMETRY_COLUMNS, "bbox"):
            continue
        if field.name not in present:  # a column no row has (scan rows have about half): no Nones to convert
            arrays[field.name] = pa.nulls(len(rows), field.type)
            continue
        values = [r.get(field.name) for r in rows]
        try:
            arrays[field.name] = pa.array(values, type=field.type)
        except UnicodeEncodeError:  # a name that is not UTF-8: the path losslessly, other text escaped
            clean = to_text if field.name == "path" else safe_text
            arrays[field.name] = pa.array([clean(v) if isinstance(v, str) else v for v in values], field.type)

    def coords(source: str) -> tuple[np.ndarray, np.ndarray]:
        lat_col, lon_col = POINTS[source]
        return tuple(arrays[c].to_numpy(zero_copy_only=False).astype(np.float64) for c in (lat_col, lon_col))

    arrays["geometry"] = wkb_points(*coords(geometry))
    arrays["gt_geometry"] = wkb_points(*coords("gt"))
    arrays["bbox"] = point_bboxes(*coords(geometry))
    return pa.table([arrays[name] for name in COLUMNS], schema=SCHEMA)


def conform(table: pa.Table) -> pa.Table:
    """Cast a table read from a geotag file (possibly an older column order) to SCHEMA; a file from
    before the bbox column gets it computed from its `geometry`."""
    if "bbox" not in table.column_names and "geometry" in table.column_names:
        table = table.append_column("bbox", point_bboxes(*wkb_xy(table.column("geometry"))))
    missing = [n for n in COLUMNS if n not in table.column_names]
    for name in missing:
        table = table.append_column(name, pa.nulls(len(table), SCHEMA.field(name).type))
    return table.select(list(COLUMNS)).cast(SCHEMA)


# Names that promise another format: a Parquet writer refuses them rather than write Parquet under them.
NOT_PARQUET = {".csv", ".tsv", ".txt", ".json", ".geojson", ".gpkg", ".kml", ".xlsx", ".html"}


def check_parquet_path(path: Path) -> Path:
    """check_output_path, and the name must not promise CSV / JSON / ...: those come from `geotag export`."""
    path = check_output_path(path)
    if path.suffix.lower() in NOT_PARQUET:
        raise OutputError(
            f"{path}: this command writes Parquet; name it .parquet (CSV, GeoJSON, GPKG, KML: geotag export)"
        )
    return path


def check_output_path(path: Path) -> Path:
    """Fail early, with one clear line, when `path` cannot receive a file."""
    path = Path(path)
    if str(path) == "-":
        raise OutputError("--out - (standard output) is not supported; give a file name (see geotag export)")
    if path.exists() and path.is_dir():
        raise OutputError(f"output {path} is a directory; give a file name such as {path}/preds.parquet")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.exists():
        raise OutputError(f"output folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise OutputError(f"output folder {folder} is not writable")
    return path


class AtomicParquetWriter:
    """A Parquet file written under a temporary name beside `path` and moved into place on close.

    Use as a context manager: on a clean exit the temporary file is fsynced and renamed onto `path`;
    on an exception it is removed and `path` is left as it was. Subclasses buffer rows, write them in
    `flush()` through `self._writer` and count them in `rows_written`.

    A failed write (a full disk) drops the temporary file at once and raises one line (DiskFullError,
    ending in `hint`, or OutputError): the file is whole or absent, and a second `close()` does nothing.
    """

    hint = AGAIN_HINT  # what a full disk's line tells the user to do (PartWriter: run again with --resume)

    def __init__(self, path: str | os.PathLike[str], schema: pa.Schema) -> None:
        self.path = check_parquet_path(Path(path))
        try:  # an exclusive, unpredictable temp written through its descriptor (geotag.io.durable)
            self._fd, self.tmp_path = new_temp(self.path)
            os.fchmod(self._fd, default_mode())
            self._fh = os.fdopen(os.dup(self._fd), "wb")
            self._writer = pq.ParquetWriter(self._fh, schema, compression="zstd")
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full(self.path, self.hint) from exc
            raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        self.rows_written = 0
        self._closed = False

    def flush(self) -> None:
        """Write the buffered rows (nothing to do here: subclasses buffer)."""

    def failed(self, exc: BaseException) -> OutputError:
        """Drop the temporary file after a failed write; the one-line error to raise."""
        self.abort()
        if is_disk_full(exc):
            return disk_full(self.path, self.hint)
        return OutputError(f"cannot write {self.path}: {getattr(exc, 'strerror', None) or exc}")

    def close(self) -> None:
        """Finish the file and move it into place atomically (once: a failed close removed the temp)."""
        if self._closed:
            return
        try:
            self.flush()
            self._writer.close()
            if not self._fh.closed:
                self._fh.close()
            os.fsync(self._fd)
        except (OSError, pa.ArrowException) as exc:
            raise self.failed(exc) from exc
        self._closed = True
        try:
            replace_checked(self._fd, self.tmp_path, self.path)
        finally:
            os.close(self._fd)
            self.tmp_path.unlink(missing_ok=True)

    def abort(self) -> None:
        """Drop the temporary file; `path` keeps whatever it held before."""
        if not self._closed:
            self._closed = True
            try:
                with suppress(OSError, pa.ArrowException):  # a full disk fails the footer: dropped anyway
                    self._writer.close()
                with suppress(OSError):
                    self._fh.close()
            finally:
                os.close(self._fd)
                self.tmp_path.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        elif isinstance(exc, BaseException) and is_disk_full(exc) and not self._closed:
            raise self.failed(exc) from exc  # a subclass's own write filled the disk: one line
        else:
            self.abort()


class PredictionWriter(AtomicParquetWriter):
    """Streams rows into a Parquet file of SCHEMA, one row group per `row_group_size` rows (written
    atomically: see AtomicParquetWriter)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        row_group_size: int = 65_536,
        metadata: Mapping[str, Any] | None = None,
        geometry: str = "pred",
    ) -> None:
        """`geometry`: the primary point of the rows written (POINTS): `gt` for scan files."""
        super().__init__(path, SCHEMA.with_metadata(file_metadata(metadata, geometry)))
        self.row_group_size = row_group_size
        self.geometry = geometry
        self._buffer: list[Mapping[str, Any]] = []

    def write(self, row: Mapping[str, Any]) -> None:
        self._buffer.append(row)
        if len(self._buffer) >= self.row_group_size:
            self.flush()

    def write_rows(self, rows: Iterable[Mapping[str, Any]]) -> None:
        for row in rows:
            self.write(row)

    def write_table(self, table: pa.Table) -> None:
        """Append a table already in SCHEMA (for example rows copied from another geotag file)."""
        self.flush()
        if table.num_rows:
            table = conform(table)
            try:
                self._writer.write_table(table, row_group_size=self.row_group_size)
            except (OSError, pa.ArrowException) as exc:
                raise self.failed(exc) from exc
            self.rows_written += table.num_rows

    def flush(self) -> None:
        if not self._buffer:
            return
        table = rows_to_table(self._buffer, self.geometry)
        try:
            self._writer.write_table(table, row_group_size=self.row_group_size)
        except (OSError, pa.ArrowException) as exc:
            raise self.failed(exc) from exc
        self.rows_written += len(self._buffer)
        self._buffer = []


def now_utc() -> datetime:
    return datetime.now(UTC)


def open_parquet(path: str | os.PathLike[str]) -> pq.ParquetFile:
    """Open a Parquet file or fail with one line that says why."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path} is a directory, not a Parquet file")
    if not path.is_file():  # a FIFO or device: opening it could block or never end
        raise InputError(f"{path} is not a regular file")
    try:
        return pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{path} is not a readable Parquet file ({exc})") from exc


PART_GLOB = "part-*.parquet"
"""The parts of a `geotag predict --engine ray` output folder (docs/scale.md)."""


class Predictions:
    """A predictions file, or a Ray output folder's parts read as one table (in part-name order), so
    every command that takes predictions takes either. The parts share the schema the engine writes."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.skipped = 0  # part files that are no regular files (a FIFO, a folder): left out
        if self.path.is_dir():
            found = sorted(self.path.glob(PART_GLOB))
            self.files = [f for f in found if f.is_file()]
            self.skipped = len(found) - len(self.files)
            if not self.files:
                raise InputError(
                    f"{self.path} is a folder without {PART_GLOB} files (a `predict --engine ray` output "
                    "folder holds them)"
                )
        else:
            self.files = [self.path]
        self.schema_arrow: pa.Schema = open_parquet(self.files[0]).schema_arrow

    @property
    def num_rows(self) -> int:
        return sum(pq.read_metadata(f).num_rows for f in self.files)

    def iter_batches(
        self, batch_size: int = 65_536, columns: list[str] | None = None
    ) -> Iterator[pa.RecordBatch]:
        for f in self.files:  # one part open at a time: a folder may hold thousands
            with open_parquet(f) as pf:
                have = pf.schema_arrow
                read = None if columns is None else [c for c in columns if c in have.names]
                for batch in pf.iter_batches(batch_size=batch_size, columns=read):
                    yield batch if columns is None else self._conform(batch, columns, f)

    def _conform(self, batch: pa.RecordBatch, columns: list[str], part: Path) -> pa.RecordBatch:
        """A part's batch with the first part's `columns`: a column it lacks is null, one of another
        type is cast (one InputError line when it cannot be)."""
        arrays = []
        for name in columns:
            field = self.schema_arrow.field(name) if name in self.schema_arrow.names else None
            want = field.type if field is not None else pa.null()
            if name not in batch.schema.names:
                arrays.append(pa.nulls(batch.num_rows, want))
                continue
            column = batch.column(name)
            if column.type != want and field is not None:
                try:
                    column = column.cast(want)
                except (pa.ArrowException, ValueError) as exc:
                    raise InputError(
                        f"{part}: column {name} is {column.type}, not {want} as in the first part"
                    ) from exc
            arrays.append(column)
        return pa.RecordBatch.from_arrays(arrays, names=list(columns))


def require_columns(path: str | os.PathLike[str], columns: Iterable[str]) -> Predictions:
    """A predictions file or Ray output folder that has `columns` and whose known columns have their
    kind (check_types), or one line that says what lacks."""
    pf = Predictions(path)
    missing = [c for c in columns if c not in pf.schema_arrow.names]
    if missing:
        raise SchemaError(
            f"{path} lacks the column(s) {', '.join(missing)}; is it a geotag predictions file?"
        )
    check_types(path, pf.schema_arrow)
    return pf


TEXT_COLUMNS = ("path", "status", "error", "scene", "country", "gt_country", "model", "weights", "image_id")
NUMBER_COLUMNS = ("gt_lat", "gt_lon", "pred_lat", "pred_lon", "confidence", "error_km")


def _is_text(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        return _is_text(t.value_type)
    return (
        pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t) or t == pa.string_view()
    )


def _is_nested(t: pa.DataType) -> bool:
    return pa.types.is_nested(t) or (pa.types.is_dictionary(t) and pa.types.is_nested(t.value_type))


def check_types(path: str | os.PathLike[str], schema: pa.Schema) -> None:
    """SchemaError (one line) when a column geotag knows has another kind (a list `gt_country`, a number
    `weights`, text coordinates): checked once where predictions are opened, so no reader meets a type
    it cannot handle."""
    for field in schema:
        if field.name in TEXT_COLUMNS and not _is_text(field.type):
            kind = "text"
        elif field.name in NUMBER_COLUMNS and _is_nested(field.type):  # text numbers: per-row skips
            kind = "a number"
        else:
            continue
        raise SchemaError(
            f"{path}: column {field.name} is {field.type}, not {kind}; is it a geotag predictions file?"
        )


def iter_batches(
    path: str | os.PathLike[str], columns: list[str] | None = None, batch_size: int = 65_536
) -> Iterator[pa.RecordBatch]:
    pf = require_columns(path, columns or [])
    yield from pf.iter_batches(batch_size=batch_size, columns=columns)


def read_image_ids(path: str | os.PathLike[str]) -> set[str]:
    """The image_ids already in a file (for resume); memory is one string per row."""
    ids: set[str] = set()
    for batch in iter_batches(path, ["image_id"]):
        ids.update(x for x in batch.column(0).to_pylist() if x is not None)
    return ids


def _escape_glob(text: str) -> str:
    """A literal name as a glob pattern (DuckDB's and Python's alike): `[` `*` `?` as one-character sets."""
    return text.replace("[", "[[]").replace("*", "[*]").replace("?", "[?]")


def duck_path(pattern: Path) -> str:
    """What DuckDB's read_parquet (and Python's glob) is given for a parquet_source pattern: an existing
    file or folder escaped so that it is read literally, the part-file glob of a folder kept, a user's
    glob as given."""
    if pattern.exists():
        return _escape_glob(str(pattern))
    if pattern.name == PART_GLOB and pattern.parent.is_dir():
        return f"{_escape_glob(str(pattern.parent))}/{PART_GLOB}"
    return str(pattern)
