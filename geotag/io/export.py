"""`geotag export`: predictions as points for GIS tools (GeoJSON, GeoPackage, CSV, KML).

Why these formats and this route: QGIS, ArcGIS, kepler.gl and Google Earth open one of them without a
plugin, and GDAL (inside pyogrio, geopandas' I/O engine) writes GeoJSON, GPKG and KML offline with no
extra library; its KML driver puts `name` and `description` in each Placemark and the other columns in
ExtendedData. The rows stream: Parquet batches become Arrow batches with a WKB point column, and one
`pyogrio.write_arrow` call consumes them, so memory stays flat and the file is opened once (appending
batch by batch through `geopandas.to_file` made GDAL re-read a growing GeoJSON each time: quadratic).
CSV is written by Arrow's CSV writer with `lon`, `lat` first (QGIS's "delimited text" picks them up);
it writes the same text as GDAL's CSV driver, about ten times faster. A text cell that begins with `=`,
`+`, `-`, `@`, a tab or a carriage return (a file named `=HYPERLINK(...).jpg`) gets a leading `'`, as
spreadsheet tools expect (OWASP's rule against formula injection); numbers are never changed.

Output goes to a temporary name beside the target and is renamed at the end: an existing file is
replaced only by a complete one.

Each point (`--what pred`: the prediction, `--what gt`: the ground truth) carries: name (the photo's file
name), image_id, path, pred_lat, pred_lon, confidence, error_km (the model's own error radius), gt_lat,
gt_lon, dist_km (haversine distance from the prediction to the ground truth: the real error), country,
gt_country, scene, model, weights, taken_at (ISO text). Rows without the chosen point are skipped and
counted. Coordinates are EPSG:4326 (longitude, latitude).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from geotag.errors import InputError, OutputError
from geotag.geo.distance import haversine_np
from geotag.io.durable import atomic_new_name
from geotag.io.parquet import check_output_path, require_columns, wkb_points

FORMATS = {"geojson": "GeoJSON", "gpkg": "GPKG", "csv": "CSV", "kml": "KML"}
SUFFIXES = {".geojson": "geojson", ".json": "geojson", ".gpkg": "gpkg", ".csv": "csv", ".kml": "kml"}
WHAT = {"pred": ("pred_lat", "pred_lon"), "gt": ("gt_lat", "gt_lon")}
NEEDED = ("path", "pred_lat", "pred_lon", "gt_lat", "gt_lon")
ATTRIBUTES = (
    "image_id",
    "path",
    "pred_lat",
    "pred_lon",
    "confidence",
    "error_km",
    "gt_lat",
    "gt_lon",
    "dist_km",
    "country",
    "gt_country",
    "scene",
    "model",
    "weights",
    "taken_at",
)
FLOATS = {"pred_lat", "pred_lon", "confidence", "error_km", "gt_lat", "gt_lon", "dist_km"}


@dataclass(frozen=True)
class ExportSummary:
    """What was written: `written` points, `skipped` rows without the chosen point (or error rows)."""

    out: Path
    fmt: str
    what: str
    written: int
    skipped: int
    odd_parts: int = 0  # part files of a Ray folder that are no regular files (a FIFO...): left out


def resolve_format(fmt: str | None, out: Path) -> str:
    """The format key: given, or from the output's suffix; InputError names the choices."""
    if fmt:
        key = fmt.strip().lower()
        if key not in FORMATS:
            raise InputError(f"--format {fmt}: unknown format; choose one of {', '.join(FORMATS)}")
        return key
    key = SUFFIXES.get(out.suffix.lower())
    if key is None:
        raise InputError(
            f"cannot tell the format from {out.name!r}; pass --format {'|'.join(FORMATS)} "
            "or end the name in .geojson, .gpkg, .csv or .kml"
        )
    return key


def check_types(pf: Any) -> None:
    """InputError (exit 2) when a number column holds something else: a wrong file, not a bug."""
    for field in pf.schema_arrow:
        if field.name in FLOATS and not (
            pa.types.is_floating(field.type)
            or pa.types.is_integer(field.type)
            or pa.types.is_null(field.type)
        ):
            raise InputError(
                f"column {field.name} is {field.type}, not a number; is it a geotag predictions file?"
            )
        text = (
            pa.types.is_string(field.type)
            or pa.types.is_large_string(field.type)
            or pa.types.is_null(field.type)
        )
        if field.name in ("status", "path") and not text:
            raise InputError(
                f"column {field.name} is {field.type}, not text; is it a geotag predictions file?"
            )


def batches(predictions: Path, what: str, batch_rows: int) -> Iterator[tuple[pa.Table, int]]:
    """(rows with the chosen point as a table of ATTRIBUTES, rows skipped) per Parquet batch."""
    pf = require_columns(predictions, NEEDED)
    names = pf.schema_arrow.names
    read = [c for c in (*ATTRIBUTES, "status") if c in names]
    lat_col, lon_col = WHAT[what]
    for batch in pf.iter_batches(batch_size=batch_rows, columns=read):
        table = pa.Table.from_batches([batch])
        n = table.num_rows
        cols = {c: table.column(c) if c in names else pa.nulls(n) for c in (*ATTRIBUTES, "status")}
        lat = _floats(cols[lat_col])
        lon = _floats(cols[lon_col])
        keep = np.isfinite(lat) & np.isfinite(lon)
        if "status" in names:
            keep &= ~np.asarray(pc.fill_null(pc.equal(cols["status"], "error"), False))
        gl, gn, pl, pn = (_floats(cols[c]) for c in ("gt_lat", "gt_lon", "pred_lat", "pred_lon"))
        with np.errstate(invalid="ignore"):
            dist = haversine_np(gl, gn, pl, pn)
        cols["dist_km"] = pa.array(dist, mask=~np.isfinite(dist))
        out = {c: pc.cast(cols[c], pa.float64() if c in FLOATS else pa.string()) for c in ATTRIBUTES}
        yield pa.table(out).filter(pa.array(keep)), int(n - keep.sum())


def _floats(col: Any) -> np.ndarray:
    """A float64 numpy array with NaN for nulls."""
    arr = pc.cast(col, pa.float64())
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.float64)


def with_extras(table: pa.Table, what: str, fmt: str) -> pa.Table:
    """`name` first, then the attributes; a WKB `geometry` (GDAL formats) or `lon`, `lat` first (CSV);
    KML also gets a one-line `description` for the balloon Google Earth shows."""
    lat_col, lon_col = WHAT[what]
    name = pc.replace_substring_regex(table.column("path"), pattern=r"^.*[/\\]", replacement="")
    table = table.add_column(0, "name", name)
    if fmt == "csv":
        table = pa.table(
            {c: _no_formula(col) for c, col in zip(table.column_names, table.columns, strict=True)}
        )
        return table.add_column(0, "lat", table.column(lat_col)).add_column(0, "lon", table.column(lon_col))
    if fmt == "kml":
        table = table.append_column("description", describe(table, what))
    lat, lon = _floats(table.column(lat_col)), _floats(table.column(lon_col))
    return table.append_column("geometry", wkb_points(lat, lon))


FORMULA_START = r"^([=+\-@\t\r])"
"""Text a spreadsheet would run as a formula (OWASP CSV injection); such a cell is given a leading `'`."""


def _no_formula(col: Any) -> Any:
    """A text column with formula-like cells escaped by a leading `'`; other columns as they are."""
    if not pa.types.is_string(col.type):
        return col
    return pc.replace_substring_regex(col, pattern=FORMULA_START, replacement="'\\1", max_replacements=1)


def describe(table: pa.Table, what: str) -> pa.Array:
    """'predicted position; confidence 0.87; 12.3 km from the truth; model knn', parts skipped if null."""

    def part(prefix: str, value: Any, suffix: str = "") -> Any:
        return pc.binary_join_element_wise(prefix, pc.cast(value, pa.string()), suffix, "")

    head = "predicted position" if what == "pred" else "ground truth"
    other = "truth" if what == "pred" else "prediction"
    n = table.num_rows
    return pc.binary_join_element_wise(
        pa.array([head] * n, pa.string()),
        part("confidence ", pc.round(table.column("confidence"), 2)),
        part("", pc.round(table.column("dist_km"), 1), f" km from the {other}"),
        part("model ", table.column("model")),
        "; ",
        null_handling="skip",
    )


def export_points(
    predictions: Path,
    out: Path,
    fmt: str | None = None,
    what: str = "pred",
    batch_rows: int = 65_536,
) -> ExportSummary:
    """Write the predicted (or true) points of a predictions file for GIS tools; see the module doc."""
    import pyogrio

    if what not in WHAT:
        raise InputError(f"--what {what}: choose pred (the predictions) or gt (the ground truth)")
    out = check_output_path(Path(out))
    key = resolve_format(fmt, out)
    pf = require_columns(predictions, NEEDED)
    check_types(pf)  # a bad input fails before anything is created
    counts = {"written": 0, "skipped": 0}

    def stream() -> Iterator[pa.RecordBatch]:
        for table, skipped in batches(Path(predictions), what, batch_rows):
            counts["skipped"] += skipped
            counts["written"] += table.num_rows
            yield from with_extras(table, what, key).to_batches()

    empty = pa.table({c: pa.array([], pa.float64() if c in FLOATS else pa.string()) for c in ATTRIBUTES})
    schema = with_extras(empty, what, key).schema
    reader = pa.RecordBatchReader.from_batches(schema, stream())
    try:
        # GDAL creates the file itself: a fresh name (suffix kept) in a private folder beside `out`
        with atomic_new_name(out) as tmp:
            _write(reader, tmp, out, key, schema)
    except OSError as exc:
        raise OutputError(f"cannot write {out}: {exc.strerror or exc}") from exc
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
        raise OutputError(f"cannot write {out}: {exc}") from exc
    return ExportSummary(
        out=out,
        fmt=key,
        what=what,
        written=counts["written"],
        skipped=counts["skipped"],
        odd_parts=pf.skipped,
    )


def _write(reader: pa.RecordBatchReader, tmp: Path, out: Path, key: str, schema: pa.Schema) -> None:
    import pyogrio

    if key == "csv":
        with pa_csv.CSVWriter(tmp, schema) as writer:
            for batch in reader:
                writer.write_batch(batch)
        return
    pyogrio.write_arrow(
        reader,
        tmp,
        layer=out.stem or "points",
        driver=FORMATS[key],
        geometry_name="geometry",
        geometry_type="Point",
        crs="EPSG:4326",
        **_options(key),
    )


def _options(key: str) -> dict[str, Any]:
    """Driver options: RFC 7946 GeoJSON (no legacy `crs` member, lon/lat, 7 decimals: about 1 cm);
    KML name / description fields."""
    if key == "geojson":
        return {"layer_options": {"RFC7946": "YES", "WRITE_NAME": "NO"}}
    if key == "kml":
        return {"dataset_options": {"NameField": "name", "DescriptionField": "description"}}
    return {}
