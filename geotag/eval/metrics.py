"""Score predictions files against their ground truth with DuckDB SQL, streaming over the Parquet.

Each file is read with `read_parquet` (only the columns a query needs), so a file of millions of rows is
scored in seconds without loading it into Python. Conventions (GUIDE section 6): haversine on a sphere
of R = 6,371.0088 km, a row counts as correct at threshold t when `d <= t`.

Every row of a file falls in exactly one bucket, so n_rows = n_error + n_no_gt + n_no_pred + n_scored:

- n_error: `status = 'error'` (the file could not be read or predicted);
- n_no_gt: any other row without both gt_lat and gt_lon (NaN counts as missing);
- n_no_pred: a row with ground truth but without both pred_lat and pred_lon;
- n_scored: the rest; accuracy, median, mean and GeoScore are computed over these rows only and are
  null when there are none (for example a file written by `geotag scan`, which has no predictions).
"""

from __future__ import annotations

import glob
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa

from geotag.errors import InputError, SchemaError
from geotag.eval import truth_join
from geotag.geo.distance import DEFAULT_THRESHOLDS_KM, EARTH_RADIUS_KM, GEOSCORE_MAX, GEOSCORE_SCALE_KM
from geotag.io.parquet import PART_GLOB, require_columns
from geotag.io.truth import read_header

NEEDED_COLUMNS = ("path", "status", "gt_lat", "gt_lon", "pred_lat", "pred_lon")
DERIVED_BY = ("folder",)
COUNT_KEYS = ("n_rows", "n_error", "n_no_gt", "n_no_pred", "n_scored")
STAT_KEYS = ("median_km", "mean_km", "geoscore", "country_acc")
COUNTRY_COLUMNS = ("country", "gt_country")  # country_acc: share of scored rows with country = gt_country


def sql_double(value: float) -> str:
    """A DOUBLE literal that round-trips exactly (a bare `1.5` would be parsed as a DECIMAL)."""
    return f"CAST('{float(value)!r}' AS DOUBLE)"


MACROS = f"""
CREATE OR REPLACE MACRO haversine_km(lat1, lon1, lat2, lon2) AS
    2.0 * {sql_double(EARTH_RADIUS_KM)} * asin(sqrt(least(1.0, greatest(0.0,
        pow(sin((radians(lat2) - radians(lat1)) / 2.0), 2)
        + cos(radians(lat1)) * cos(radians(lat2)) * pow(sin(radians(lon2 - lon1) / 2.0), 2)))));
CREATE OR REPLACE MACRO present(x) AS (x IS NOT NULL AND NOT isnan(x));
CREATE OR REPLACE MACRO parent_folder(p) AS CASE
    WHEN p IS NULL THEN NULL
    WHEN parse_dirpath(p) <> '' THEN parse_dirpath(p)
    WHEN starts_with(p, '/') OR starts_with(p, '\\') THEN left(p, 1)
    ELSE '.' END;
"""


ROW_COLUMNS = """
    coalesce(CAST(status AS VARCHAR) = 'error', false) AS is_error,
    present(CAST(gt_lat AS DOUBLE)) AND present(CAST(gt_lon AS DOUBLE)) AS has_gt,
    present(CAST(pred_lat AS DOUBLE)) AND present(CAST(pred_lon AS DOUBLE)) AS has_pred,
    CAST(gt_lat AS DOUBLE) AS gt_lat, CAST(gt_lon AS DOUBLE) AS gt_lon,
    CAST(pred_lat AS DOUBLE) AS pred_lat, CAST(pred_lon AS DOUBLE) AS pred_lon,"""
"""The per-row flags and coordinates every scoring query starts from (needs the `present` macro)."""


def parse_thresholds(text: str) -> list[float]:
    """Parse "1,25,200" into sorted, unique, positive km values; bad text raises InputError."""
    parts = [p.strip() for p in str(text).split(",")]
    if not any(parts):
        raise InputError("--thresholds is empty; give comma-separated km values such as 1,25,200")
    values: list[float] = []
    for part in parts:
        if not part:
            continue
        try:
            value = float(part.removesuffix("km").strip())
        except ValueError:
            raise InputError(f"--thresholds: {part!r} is not a number (expected e.g. 1,25,200)") from None
        values.append(value)
    return normalise_thresholds(values)


def normalise_thresholds(values: Sequence[float]) -> list[float]:
    """Sorted unique floats; each must be finite and > 0, and there must be at least one."""
    if not values:
        raise InputError("no thresholds given; give km values such as 1,25,200")
    out = sorted({float(v) for v in values})
    bad = [v for v in out if not (math.isfinite(v) and v > 0)]
    if bad:
        raise InputError(f"thresholds must be positive finite km values, got {bad[0]:g}")
    return out


def threshold_key(t: float) -> str:
    """Result key for a threshold: 1.0 -> "acc_1km", 0.5 -> "acc_0.5km"."""
    t = float(t)
    text = str(int(t)) if t.is_integer() else repr(t)
    return f"acc_{text}km"


@dataclass
class EvalResult:
    """Scores per (file, group): see the module docstring for the meaning of the counts.

    Accuracy values are fractions in 0..1 (keys from `threshold_key`); distances are km; `geoscore` is
    the mean GeoScore in 0..5000. Metrics are None where a group has no scored rows.
    """

    thresholds: list[float]
    by: list[str]
    rows: list[dict[str, object]]
    notes: list[str] = field(default_factory=list)  # caveats a reader must see (e.g. UNTRAINED weights)

    @property
    def accuracy_keys(self) -> list[str]:
        return [threshold_key(t) for t in self.thresholds]

    @property
    def columns(self) -> list[str]:
        """Row keys in display order."""
        return ["file", *self.by, *COUNT_KEYS, *self.accuracy_keys, *STAT_KEYS]

    def to_records(self) -> list[dict]:
        """Rows as JSON-safe dicts (NaN/inf -> None, dates -> ISO text, other objects -> str)."""
        return [{key: json_safe(row.get(key)) for key in self.columns} for row in self.rows]


def json_safe(value: object) -> object:
    """A value json.dumps accepts and that round-trips meaningfully."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return json_safe(float(value))
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def file_labels(files: Sequence[Path]) -> list[str]:
    """File stems, with parent folder names prepended until distinct files differ; repeats get "#2"."""
    paths = [Path(f).absolute() for f in files]
    depth = [0] * len(paths)

    def label(i: int) -> str:
        parents = paths[i].parent.parts[1:]  # drop the root / drive
        kept = parents[len(parents) - depth[i] :] if depth[i] else ()
        return "/".join([*kept, paths[i].stem])

    while True:
        labels = [label(i) for i in range(len(paths))]
        groups: dict[str, set[Path]] = {}
        for i, lab in enumerate(labels):
            groups.setdefault(lab, set()).add(paths[i])
        grow = [
            i
            for i, lab in enumerate(labels)
            if len(groups[lab]) > 1 and depth[i] < len(paths[i].parent.parts) - 1
        ]
        if not grow:
            break
        for i in grow:
            depth[i] += 1
    seen: Counter[str] = Counter()
    unique = []
    for lab in labels:
        seen[lab] += 1
        unique.append(lab if seen[lab] == 1 else f"{lab}#{seen[lab]}")
    return unique


def quote(name: str) -> str:
    """A SQL identifier, double-quoted."""
    return '"' + name.replace('"', '""') + '"'


def check_by(path: Path, schema: pa.Schema, by: Sequence[str]) -> None:
    """Every `by` name must be a category column of the file (text, integer, boolean) or a derived one,
    and not clash with a result key: grouping by a float, list, struct or binary column (confidence, topk,
    geometry) would make a group per row, or fail."""
    categories = [f.name for f in schema if _is_category(f.type)]
    valid = ", ".join(sorted(set(categories) | set(DERIVED_BY)))
    for name in by:
        if name in DERIVED_BY:
            continue
        if name not in schema.names:
            raise SchemaError(f"--by {name}: {path} has no such column; valid: {valid}")
        if name not in categories:
            kind = schema.field(name).type
            raise SchemaError(f"--by {name}: a {kind} column, not a category; group by one of: {valid}")
    reserved = {"file", *COUNT_KEYS, *STAT_KEYS}
    clash = [name for name in by if name in reserved or name.startswith("acc_")]
    if clash:
        raise SchemaError(f"--by {clash[0]}: the name clashes with a result column; rename it in the file")


def _is_category(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return (
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_string_view(kind)
        or pa.types.is_integer(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_date(kind)
        or pa.types.is_null(kind)  # a column with no values: one group
    )


def relative_folders(rows: list[dict[str, object]]) -> str | None:
    """Show `folder` groups relative to their common root (None when there is nothing to shorten)."""
    folders = {r["folder"] for r in rows if isinstance(r.get("folder"), str)}
    if len(folders) < 2:
        return None
    try:
        root = os.path.commonpath(list(folders))  # type: ignore[arg-type]
    except ValueError:  # absolute and relative mixed
        return None
    if not root or root in ("/", "."):
        return None
    for r in rows:
        if isinstance(r.get("folder"), str):
            r["folder"] = os.path.relpath(str(r["folder"]), root)
    return root


def group_expr(name: str, columns: Sequence[str]) -> str:
    if name == "folder" and "folder" not in columns:
        return "parent_folder(CAST(path AS VARCHAR))"
    return quote(name)


def build_query(
    thresholds: Sequence[float], by: Sequence[str], columns: Sequence[str], source: str = "read_parquet(?)"
) -> str:
    """SQL that scores one file (the `?` parameter, read through `source`) grouped by `by`."""
    groups = [f"{group_expr(name, columns)} AS {quote(f'g{i}')}" for i, name in enumerate(by)]
    group_names = [quote(f"g{i}") for i in range(len(by))]
    acc = [f"avg(CAST(d <= {sql_double(t)} AS DOUBLE)) AS {quote(threshold_key(t))}" for t in thresholds]
    select_groups = "".join(f"{g}, " for g in group_names)
    group_by = f"GROUP BY {', '.join(group_names)} ORDER BY {', '.join(group_names)} NULLS LAST" if by else ""
    has_countries = all(c in columns for c in COUNTRY_COLUMNS)
    countries = ", ".join(
        f"CAST({quote(c) if has_countries else 'NULL'} AS VARCHAR) AS {quote('c_' + c)}"
        for c in COUNTRY_COLUMNS
    )
    return f"""
    WITH src AS (
        SELECT {"".join(f"{g}, " for g in groups)}
            {ROW_COLUMNS}
            {countries}
        FROM {source}
    ), scored AS (
        SELECT *, CASE WHEN NOT is_error AND has_gt AND has_pred
                       THEN haversine_km(gt_lat, gt_lon, pred_lat, pred_lon) END AS d
        FROM src
    )
    SELECT {select_groups}
        count(*) AS n_rows,
        count(*) FILTER (WHERE is_error) AS n_error,
        count(*) FILTER (WHERE NOT is_error AND NOT has_gt) AS n_no_gt,
        count(*) FILTER (WHERE NOT is_error AND has_gt AND NOT has_pred) AS n_no_pred,
        count(d) AS n_scored,
        {", ".join(acc)},
        median(d) AS median_km,
        avg(d) AS mean_km,
        avg({sql_double(GEOSCORE_MAX)} * exp(-d / {sql_double(GEOSCORE_SCALE_KM)})) AS geoscore,
        avg(CAST(coalesce(c_country = c_gt_country, false) AS DOUBLE))
            FILTER (WHERE d IS NOT NULL AND c_gt_country IS NOT NULL) AS country_acc
    FROM scored
    {group_by}
    """


def connect() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the haversine macro (and helpers) defined."""
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    con.execute(MACROS)
    return con


def evaluate_file(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    label: str,
    columns: Sequence[str],
    thresholds: Sequence[float],
    by: Sequence[str],
    source: str = "read_parquet(?)",
) -> list[dict[str, object]]:
    """Score one file whose column names are `columns`; one dict per group (just one without `by`)."""
    sql = build_query(thresholds, by, columns, source)
    try:  # fetched through Arrow: group values of any type (timestamps with a zone, lists) convert cleanly
        records = con.sql(sql, params=[str(path)]).to_arrow_table().to_pylist()
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: cannot evaluate ({first})") from exc
    rows = []
    for record in records:
        row: dict[str, object] = {"file": label}
        row.update({name: record.pop(f"g{i}") for i, name in enumerate(by)})
        row.update({k: v if k in COUNT_KEYS else to_float(v) for k, v in record.items()})
        rows.append(row)
    return rows


def to_float(value: object) -> float | None:
    return None if value is None else float(value)


def evaluate(
    files: Sequence[Path],
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS_KM,
    by: Sequence[str] = (),
    truth: Path | None = None,
) -> EvalResult:
    """Score each predictions file (grouped by the `by` columns) and return one row per (file, group).

    `truth`: a ground-truth manifest joined onto every file by file name (see geotag.eval.truth_join).
    """
    if not files:
        raise InputError("no predictions file given")
    thresholds = normalise_thresholds(list(thresholds))
    by = list(dict.fromkeys(by))
    given = [Path(f) for f in files]
    paths, samples = zip(*(parquet_source(p) for p in given), strict=True)
    arrow_schemas = [require_columns(sample, NEEDED_COLUMNS).schema_arrow for sample in samples]
    schemas = [schema.names for schema in arrow_schemas]
    extra = manifest_by(truth, by, arrow_schemas) if truth else []
    for path, schema in zip(paths, arrow_schemas, strict=True):  # fail on the first bad file before any work
        check_by(path, truth_join.joined_schema(schema, extra) if truth else schema, by)
    con = connect()
    try:
        rows = []
        notes = truth_join.register_truth(con, truth, extra) if truth else []
        for path, label, columns in zip(paths, file_labels(given), schemas, strict=True):
            source, cols = "read_parquet(?)", columns
            if truth:
                source = truth_join.joined_source(columns, extra)
                cols = truth_join.joined_columns(columns, extra)
            groups = evaluate_file(con, path, label, cols, thresholds, by, source)
            groups.sort(key=lambda r: -int(r["n_rows"]))  # type: ignore[call-overload]  # largest first
            if "folder" in by and (root := relative_folders(groups)):
                notes.append(f"{label}: folders are shown relative to {root}")
            rows.extend(groups)
            if truth:
                notes.append(truth_join.match_note(con, path, label, columns))
            if has_untrained_rows(con, path, columns):
                notes.append(
                    f"{label}: predictions made with UNTRAINED weights; "
                    "these figures show the pipeline, not a model's accuracy"
                )
    finally:
        con.close()
    return EvalResult(thresholds=thresholds, by=by, rows=rows, notes=notes)


def manifest_by(truth: Path, by: Sequence[str], schemas: Sequence[pa.Schema]) -> list[str]:
    """The `by` names a --truth manifest brings (author, ...): columns of the manifest, not of every file."""
    header = set(read_header(truth))
    return [n for n in by if n in header and n not in DERIVED_BY and not all(n in s.names for s in schemas)]


def parquet_source(path: Path) -> tuple[Path, Path]:
    """(what DuckDB reads, one file whose schema stands for it): a file as given; a folder of part files
    (`geotag predict --engine ray`) as FOLDER/part-*.parquet, as geotag.io.parquet.Predictions reads it; a
    quoted glob as given. All read as one table."""
    if path.is_dir():
        pattern = path / PART_GLOB
    elif any(c in str(path) for c in "*?["):
        pattern = path
    else:
        return path, path
    matches = sorted(glob.glob(str(pattern)))
    if not matches:
        raise InputError(f"{path}: no Parquet files match {pattern}")
    return pattern, Path(matches[0])


def has_untrained_rows(con: duckdb.DuckDBPyConnection, path: Path, columns: Sequence[str]) -> bool:
    """Whether any row's `weights` says UNTRAINED (a random backbone, as in the offline demo)."""
    if "weights" not in columns:
        return False
    sql = "SELECT count(*) FROM read_parquet(?) WHERE weights LIKE '%UNTRAINED%'"
    return bool(con.sql(sql, params=[str(path)]).to_arrow_table().column(0)[0].as_py())
