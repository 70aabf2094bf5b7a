"""Score predictions files against their ground truth with DuckDB SQL, streaming over the Parquet.

Each file is read with `read_parquet` (only the columns a query needs), so a file of millions of rows is
scored in seconds without loading it into Python. Conventions (GUIDE section 6): haversine on a sphere
of R = 6,371.0088 km, a row counts as correct at threshold t when `d <= t`.

Every row of a file falls in exactly one bucket, so
n_rows = n_error + n_no_gt + n_no_pred + n_self_match + n_scored:
- n_self_match: a row with both whose `self_match` is set (a kNN answer that came from the photo's own
  entry in the gallery, geotag.models.knn): its perfect score says nothing about untagged photos, so it
  is left out unless `include_self` (then it is scored and this count is 0);

- n_error: `status = 'error'` (the file could not be read or predicted);
- n_no_gt: any other row without both gt_lat and gt_lon (NaN counts as missing);
- n_no_pred: a row with ground truth but without both pred_lat and pred_lon, or whose position is the
  photo's own measured GPS (`source = exif`, kept by `predict --skip-tagged`: no prediction, so never
  scored; a note says how many);
- n_scored: the rest; accuracy, median, mean and GeoScore are computed over these rows only and are
  null when there are none (for example a file written by `geotag scan`, which has no predictions).
"""

from __future__ import annotations

import glob
import math
import os
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa

from geotag.errors import InputError, SchemaError
from geotag.eval import foreign, truth_join
from geotag.geo.distance import DEFAULT_THRESHOLDS_KM, EARTH_RADIUS_KM, GEOSCORE_MAX, GEOSCORE_SCALE_KM
from geotag.io.parquet import PART_GLOB, duck_path, require_columns
from geotag.io.truth import read_header

READ = "read_parquet(?, union_by_name = true)"
"""How every query reads a predictions file or a Ray folder's parts (a column some parts lack is NULL)."""
DUCKDB_MEMORY = "1GB"  # DuckDB's memory_limit for eval / report: larger work spills or fails with a line
DUCKDB_THREADS = max(1, min(4, os.cpu_count() or 1))  # each thread holds its own buffers
EXACT_MEDIAN_ROWS = 2_000_000  # up to this many scored rows DuckDB's median (8 bytes a row) is used
MEDIAN_BUCKETS = 65_536  # buckets of each narrowing pass of the bounded median (two passes, mostly)
MEDIAN_PASSES = 80  # a double's range narrows to one value in far fewer passes than this
LABEL_CHARS = 200  # characters of a label (scene, country, model, weights, error) eval and report show
PATH_CHARS = 4096  # characters of a path they show (PATH_MAX)
CAPPED = ("path", "error", "scene", "country", "gt_country", "model", "weights")
MEDIAN_MAX_KM = 20_100.0  # above half the Earth's circumference: every haversine distance is below it
NEEDED_COLUMNS = ("path", "status", "gt_lat", "gt_lon", "pred_lat", "pred_lon")
DERIVED_BY = ("folder", "source")
"""`--by` names a file may lack: `folder` (the path's parent) and `source` (a file from before schema 3
has no `source` column; every position in it came from a visual model)."""
COUNT_KEYS = ("n_rows", "n_error", "n_no_gt", "n_no_pred", "n_self_match", "n_scored")
SELF_MATCH = "self_match"


def self_match_sql(columns: Sequence[str]) -> str:
    """The per-row `is_self` flag: the row's `self_match` is set (false for files without the column)."""
    if SELF_MATCH in columns:
        return f"CAST({quote(SELF_MATCH)} AS VARCHAR) IS NOT NULL AS is_self,"
    return "false AS is_self,"


def scored_when(include_self: bool) -> str:
    """The condition under which a row of the per-row view gets its distance `d`."""
    return "NOT is_error AND has_gt AND has_pred" + ("" if include_self else " AND NOT is_self")


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
CREATE OR REPLACE MACRO lat_ok(x) AS (x IS NOT NULL AND isfinite(x) AND abs(x) <= 90.0);
CREATE OR REPLACE MACRO lon_ok(x) AS (x IS NOT NULL AND isfinite(x) AND abs(x) <= 180.0);
CREATE OR REPLACE MACRO point_ok(lat, lon) AS (lat_ok(lat) AND lon_ok(lon));
CREATE OR REPLACE MACRO point_bad(lat, lon) AS (present(lat) AND present(lon) AND NOT point_ok(lat, lon));
CREATE OR REPLACE MACRO parent_folder(p) AS CASE
    WHEN p IS NULL THEN NULL
    WHEN parse_dirpath(p) <> '' THEN parse_dirpath(p)
    WHEN starts_with(p, '/') OR starts_with(p, '\\') THEN left(p, 1)
    ELSE '.' END;
"""


def row_columns(columns: Sequence[str] = ()) -> str:
    """The per-row flags and coordinates every scoring query starts from (needs the MACROS). A coordinate
    that is infinite or out of range (|lat| > 90, |lon| > 180) counts as missing; `bad_point` flags the
    row so that the count can be said. `is_measured`: the row's position is measured GPS kept by
    `predict --skip-tagged` (`source = exif`): not a prediction, so `has_pred` is false for it
    (`columns`: the file's, to know whether it has one)."""
    measured = "coalesce(CAST(source AS VARCHAR) = 'exif', false)" if "source" in columns else "false"
    return f"""
    coalesce(CAST(status AS VARCHAR) = 'error', false) AS is_error,
    point_ok(CAST(gt_lat AS DOUBLE), CAST(gt_lon AS DOUBLE)) AS has_gt,
    point_ok(CAST(pred_lat AS DOUBLE), CAST(pred_lon AS DOUBLE)) AND NOT {measured} AS has_pred,
    point_bad(CAST(gt_lat AS DOUBLE), CAST(gt_lon AS DOUBLE))
        OR point_bad(CAST(pred_lat AS DOUBLE), CAST(pred_lon AS DOUBLE)) AS bad_point,
    {measured} AS is_measured,
    CAST(gt_lat AS DOUBLE) AS gt_lat, CAST(gt_lon AS DOUBLE) AS gt_lon,
    CAST(pred_lat AS DOUBLE) AS pred_lat, CAST(pred_lon AS DOUBLE) AS pred_lon,"""


ROW_COLUMNS = row_columns()
"""row_columns of a file without a `source` column."""


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
    if name == "source" and "source" not in columns:
        return "CASE WHEN present(pred_lat) AND present(pred_lon) THEN 'model' END"
    return quote(name)


def scored_ctes(
    by: Sequence[str],
    columns: Sequence[str],
    source: str,
    include_self: bool = False,
    missing_as_wrong: bool = False,
) -> str:
    """`WITH src AS (...), scored AS (...)`: per row the groups g0.., the flags and `d`, the error in km
    of a scored row (the rest NULL). Self-matches get no `d` unless `include_self`; with
    `missing_as_wrong` a row with ground truth and no prediction is scored as a miss at MISS_KM."""
    miss = (
        f"WHEN NOT is_error AND has_gt AND NOT has_pred THEN {sql_double(MISS_KM)}"
        if missing_as_wrong
        else ""
    )
    groups = [f"{group_expr(name, columns)} AS {quote(f'g{i}')}" for i, name in enumerate(by)]
    has_countries = all(c in columns for c in COUNTRY_COLUMNS)
    countries = ", ".join(
        f"CAST({quote(c) if has_countries else 'NULL'} AS VARCHAR) AS {quote('c_' + c)}"
        for c in COUNTRY_COLUMNS
    )
    return f"""
    WITH src AS (
        SELECT {"".join(f"{g}, " for g in groups)}
            {row_columns(columns)}
            {self_match_sql(columns)}
            {countries}
        FROM {source}
    ), scored AS (
        SELECT *, CASE WHEN {scored_when(include_self)}
                       THEN haversine_km(gt_lat, gt_lon, pred_lat, pred_lon)
                       {miss} END AS d
        FROM src
    )"""


def build_query(
    thresholds: Sequence[float],
    by: Sequence[str],
    columns: Sequence[str],
    source: str = READ,
    include_self: bool = False,
    missing_as_wrong: bool = False,
) -> str:
    """SQL that scores one file (the `?` parameter, read through `source`) grouped by `by`. Every
    aggregate holds a few numbers per group (the median comes from `group_medians`), so memory does not
    grow with the rows of the file."""
    group_names = [quote(f"g{i}") for i in range(len(by))]
    acc = [f"avg(CAST(d <= {sql_double(t)} AS DOUBLE)) AS {quote(threshold_key(t))}" for t in thresholds]
    select_groups = "".join(f"{g}, " for g in group_names)
    group_by = f"GROUP BY {', '.join(group_names)} ORDER BY {', '.join(group_names)} NULLS LAST" if by else ""
    return f"""{scored_ctes(by, columns, source, include_self, missing_as_wrong)}
    SELECT {select_groups}
        count(*) AS n_rows,
        count(*) FILTER (WHERE is_error) AS n_error,
        count(*) FILTER (WHERE NOT is_error AND NOT has_gt) AS n_no_gt,
        count(*) FILTER (WHERE NOT is_error AND has_gt AND NOT has_pred AND d IS NULL) AS n_no_pred,
        count(*) FILTER (WHERE NOT is_error AND has_gt AND has_pred AND d IS NULL) AS n_self_match,
        count(d) AS n_scored,
        {", ".join(acc)},
        CAST(NULL AS DOUBLE) AS median_km,
        avg(d) AS mean_km,
        avg({sql_double(GEOSCORE_MAX)} * exp(-d / {sql_double(GEOSCORE_SCALE_KM)})) AS geoscore,
        avg(CAST(coalesce(c_country = c_gt_country, false) AS DOUBLE))
            FILTER (WHERE d IS NOT NULL AND c_gt_country IS NOT NULL) AS country_acc,
        count(*) FILTER (WHERE NOT is_error AND bad_point) AS n_bad_point
    FROM scored
    {group_by}
    """


def capped_source(columns: Sequence[str], source: str) -> str:
    """`source` with its text columns cut to LABEL_CHARS characters (PATH_CHARS for `path`; a cut
    value ends in '…'): a 50 MB scene name in a tiny file never reaches a table, a chart or a page."""
    caps = [(c, PATH_CHARS if c == "path" else LABEL_CHARS) for c in CAPPED if c in columns]
    if not caps:
        return source

    def cut(name: str, n: int) -> str:
        text = f"CAST({quote(name)} AS VARCHAR)"
        short = f"left({text}, {n - 1}) || '…'"
        return f"CASE WHEN length({text}) > {n} THEN {short} ELSE {text} END AS {quote(name)}"

    return f"(SELECT * REPLACE ({', '.join(cut(c, n) for c, n in caps)}) FROM {source}) AS capped"


def connect() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the haversine macro (and helpers) defined, and a memory
    limit (DUCKDB_MEMORY): aggregates that outgrow it spill to a temporary folder or fail with one line,
    never take the machine's memory."""
    con = duckdb.connect(":memory:", config={"memory_limit": DUCKDB_MEMORY, "threads": DUCKDB_THREADS})
    con.execute("SET TimeZone = 'UTC'")
    con.execute(MACROS)
    return con


def _fetch(con: duckdb.DuckDBPyConnection, sql: str, params: list[object], path: Path) -> list[dict]:
    try:  # fetched through Arrow: group values of any type (timestamps with a zone, lists) convert cleanly
        return con.sql(sql, params=params).to_arrow_table().to_pylist()
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: cannot evaluate ({first})") from exc


def evaluate_file(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    label: str,
    columns: Sequence[str],
    thresholds: Sequence[float],
    by: Sequence[str],
    source: str = READ,
    notes: list[str] | None = None,
    include_self: bool = False,
    missing_as_wrong: bool = False,
) -> list[dict[str, object]]:
    """Score one file whose column names are `columns`; one dict per group (just one without `by`).
    `notes` gets a line when rows had infinite or out-of-range coordinates (scored as missing)."""
    sql = build_query(thresholds, by, columns, source, include_self, missing_as_wrong)
    records = _fetch(con, sql, [duck_path(path)], path)
    ctes = scored_ctes(by, columns, source, include_self, missing_as_wrong)
    medians = group_medians(con, path, by, ctes, [r["n_scored"] for r in records], records)
    bad = 0
    rows = []
    for record, median in zip(records, medians, strict=True):
        bad += int(record.pop("n_bad_point"))
        record["median_km"] = median
        row: dict[str, object] = {"file": label}
        row.update({name: record.pop(f"g{i}") for i, name in enumerate(by)})
        row.update({k: v if k in COUNT_KEYS else to_float(v) for k, v in record.items()})
        rows.append(row)
    if bad and notes is not None:
        notes.append(
            f"{label}: {bad:,} row(s) with an infinite or out-of-range coordinate (|lat| > 90, |lon| > 180) "
            "counted as missing"
        )
    return rows


def group_medians(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    by: Sequence[str],
    ctes: str,
    counts: Sequence[int],
    records: Sequence[dict[str, object]],
) -> list[float | None]:
    """The exact median of `d` per group (records in the order of `build_query`'s result).

    Up to EXACT_MEDIAN_ROWS scored rows, DuckDB's `median` (it holds every value: 8 bytes a row). Beyond,
    the value of each middle rank is found by narrowing a window of distances: one pass per step counts
    the rows of each of MEDIAN_BUCKETS buckets of the window (with their min and max) and keeps the one
    holding the rank, until the rank is its first or last value or it holds one distinct value: two
    passes for most files, and memory of a few numbers per group and bucket."""
    names = [quote(f"g{i}") for i in range(len(by))]
    if sum(counts) <= EXACT_MEDIAN_ROWS:
        group = f"GROUP BY {', '.join(names)}" if by else ""
        sql = f"{ctes} SELECT {''.join(f'{g}, ' for g in names)} median(d) AS m FROM scored {group}"
        found = {_key(r, len(by)): r["m"] for r in _fetch(con, sql, [duck_path(path)], path)}
        return [to_float(found.get(_key(r, len(by)))) for r in records]
    # windows: (group index, rank within the window, lo, hi); two ranks for an even count
    windows: dict[int, list[float]] = {}
    owner: dict[int, int] = {}
    for i, n in enumerate(counts):
        for rank in sorted({(n - 1) // 2, n // 2}) if n else []:
            wid = len(windows)
            windows[wid] = [float(rank), 0.0, MEDIAN_MAX_KM, math.nan]  # rank, lo, hi, value
            owner[wid] = i
    join = " AND ".join([f"s.{g} IS NOT DISTINCT FROM w.{g}" for g in names] + ["s.d BETWEEN w.lo AND w.hi"])
    for _ in range(MEDIAN_PASSES):
        todo = [wid for wid, w in windows.items() if math.isnan(w[3])]
        if not todo:
            break
        con.register("median_windows", _windows_table(records, names, todo, owner, windows))
        sql = f"""{ctes}, hist AS (
                SELECT w.wid, w.rank, least({MEDIAN_BUCKETS - 1}, greatest(0, CAST(floor(
                           (s.d - w.lo) / greatest(w.hi - w.lo, 1e-300) * {MEDIAN_BUCKETS}) AS BIGINT))) AS b,
                       count(*) AS n, min(s.d) AS lo, max(s.d) AS hi
                FROM scored AS s JOIN median_windows AS w ON {join}
                WHERE s.d IS NOT NULL GROUP BY ALL
            ), cum AS (
                SELECT *, sum(n) OVER (PARTITION BY wid ORDER BY b ROWS UNBOUNDED PRECEDING) - n AS before
                FROM hist
            )
            SELECT wid, CAST(rank - before AS BIGINT) AS rank, n, lo, hi FROM cum
            WHERE before <= rank AND rank < before + n"""
        found = {int(r["wid"]): r for r in _fetch(con, sql, [duck_path(path)], path)}
        con.unregister("median_windows")
        for wid in todo:
            w, row = windows[wid], found.get(wid)
            if row is None:  # the window lost its rows (it cannot): no median rather than a loop
                w[3] = math.inf
            elif row["lo"] == row["hi"] or row["rank"] == 0:
                w[3] = float(row["lo"])
            elif row["rank"] == row["n"] - 1:
                w[3] = float(row["hi"])
            else:
                w[0], w[1], w[2] = float(row["rank"]), float(row["lo"]), float(row["hi"])
    out: list[float | None] = [None] * len(records)
    for i in range(len(records)):
        values = [windows[wid][3] for wid in windows if owner[wid] == i]
        if values and all(math.isfinite(v) for v in values):
            out[i] = values[0] + (values[-1] - values[0]) * 0.5
    return out


def _windows_table(
    records: Sequence[dict[str, object]],
    names: Sequence[str],
    todo: Sequence[int],
    owner: dict[int, int],
    windows: dict[int, list[float]],
) -> pa.Table:
    """The open windows as an Arrow table for the join: wid, lo, hi and the group values (their types
    as DuckDB returned them)."""
    cols: dict[str, object] = {
        "wid": pa.array(todo, pa.int64()),
        "rank": pa.array([int(windows[w][0]) for w in todo], pa.int64()),
        "lo": pa.array([windows[w][1] for w in todo], pa.float64()),
        "hi": pa.array([windows[w][2] for w in todo], pa.float64()),
    }
    for g in names:
        name = g.strip('"')
        cols[name] = pa.array([records[owner[w]][name] for w in todo])
    return pa.table(cols)


def _key(record: dict[str, object], n: int) -> str:
    """A hashable key of a record's group values (lists and dicts included)."""
    return repr(tuple(record[f"g{i}"] for i in range(n)))


def to_float(value: object) -> float | None:
    return None if value is None else float(value)


def evaluate(
    files: Sequence[Path],
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS_KM,
    by: Sequence[str] = (),
    truth: Path | None = None,
    include_self: bool = False,
    columns: str | None = None,
    missing_as_wrong: bool = False,
) -> EvalResult:
    """Score each predictions file (grouped by the `by` columns) and return one row per (file, group).

    `truth`: a ground-truth manifest joined onto every file by file name (see geotag.eval.truth_join).
    `include_self`: score self-matches too (by default they are counted and left out, with a note).
    `columns`: the role=column mapping of someone else's predictions file (geotag.eval.foreign; such a
    file is recognised and mapped by name without it). `missing_as_wrong`: a row with ground truth and no
    prediction (a manifest photo the file does not name included) is a miss at MISS_KM.
    """
    if not files:
        raise InputError("no predictions file given")
    thresholds = normalise_thresholds(list(thresholds))
    by = list(dict.fromkeys(by))
    labels = file_labels([Path(f) for f in files])
    with tempfile.TemporaryDirectory(prefix="geotag-eval-") as tmp:
        prepared = foreign.prepare(files, columns, truth, Path(tmp))
        result = _evaluate(prepared.files, labels, thresholds, by, truth, include_self, missing_as_wrong)
    result.notes[:0] = prepared.notes
    return result


def _evaluate(
    given: list[Path],
    labels: list[str],
    thresholds: list[float],
    by: list[str],
    truth: Path | None,
    include_self: bool,
    missing_as_wrong: bool,
) -> EvalResult:
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
        notes += [note for p in given if (note := part_note(p))]
        for asked, path, label, columns in zip(given, paths, labels, schemas, strict=True):
            source, cols = READ, columns
            if truth:
                source = truth_join.joined_source(columns, extra)
                cols = truth_join.joined_columns(columns, extra)
            source = capped_source(cols, source)
            groups = evaluate_file(
                con, path, label, cols, thresholds, by, source, notes, include_self, missing_as_wrong
            )
            groups.sort(key=lambda r: -int(r["n_rows"]))  # type: ignore[call-overload]  # largest first
            if "folder" in by and (root := relative_folders(groups)):
                notes.append(f"{label}: folders are shown relative to {root}")
            rows.extend(groups)
            if missing_as_wrong:
                notes += miss_notes(con, path, label, source)
            notes += self_match_notes(con, path, label, cols, source, include_self)
            if (note := read_note(con, asked, path)) is not None:
                notes.append(note)
            if truth:
                notes.append(truth_join.match_note(con, path, label, columns))
            if (measured := measured_rows(con, path, columns)) and (note := measured_note(label, measured)):
                notes.append(note)
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


def self_match_notes(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    label: str,
    columns: Sequence[str],
    source: str,
    include_self: bool,
) -> list[str]:
    """One line per file that has self-matches: how many, and whether they were scored."""
    if SELF_MATCH not in columns:
        return []
    sql = f"""SELECT count(*) FILTER (WHERE self_match IS NOT NULL) AS n,
                     count(*) FILTER (WHERE self_match IS NOT NULL AND {ROW_HAS_BOTH}) AS scorable
              FROM (SELECT CAST({quote(SELF_MATCH)} AS VARCHAR) AS self_match, {ROW_COLUMNS} 0 AS _
                    FROM {source})"""
    row = _fetch(con, sql, [duck_path(path)], path)[0]
    if not row["scorable"]:
        return []
    if include_self:
        return [
            f"{label}: {row['scorable']:,} self-match row(s) scored (--include-self-matches): the gallery "
            "holds these photos or their positions, so their scores overstate the model"
        ]
    return [
        f"{label}: {row['scorable']:,} self-match row(s) left out of the scores: the gallery holds these "
        "photos or their positions (column self_match); --include-self-matches scores them"
    ]


ROW_HAS_BOTH = "NOT is_error AND has_gt AND has_pred"
MISS_KM = math.pi * EARTH_RADIUS_KM
"""--missing-as-wrong: the distance a missing prediction is scored at (the antipode: a miss at every
threshold, GeoScore about 0), as papers count a photo they could not place."""


def miss_notes(con: duckdb.DuckDBPyConnection, path: Path, label: str, source: str) -> list[str]:
    """How many rows --missing-as-wrong scored as misses (rows with ground truth and no prediction)."""
    sql = (
        "SELECT count(*) FILTER (WHERE NOT is_error AND has_gt AND NOT has_pred) AS n "
        f"FROM (SELECT {ROW_COLUMNS} 0 AS _ FROM {source})"
    )
    n = _fetch(con, sql, [duck_path(path)], path)[0]["n"]
    return [f"{label}: {n:,} row(s) without a prediction scored as misses (--missing-as-wrong)"] if n else []


GLOB_CHARS = "*?["


def parquet_source(path: Path) -> tuple[Path, Path]:
    """(what DuckDB reads, one file whose schema stands for it), all read as one table: a file as given;
    a folder of part files (`geotag predict --engine ray`) as FOLDER/part-*.parquet, as
    geotag.io.parquet.Predictions reads it. A path that exists is taken literally, glob characters and
    all (`run [1]/preds.parquet`); only one that does not exist is expanded as a glob (`'runs/*.parquet'`,
    quoted), and `read_note` says which files that read. `duck_path` gives DuckDB the exact form."""
    if path.is_dir():
        pattern = path / PART_GLOB
    elif path.exists() or not any(c in str(path) for c in GLOB_CHARS):
        return path, path
    else:
        pattern = path
    matches = sorted(m for m in glob.glob(duck_path(pattern)) if os.path.isfile(m))  # DuckDB skips the others
    if not matches:
        raise InputError(f"{path}: no Parquet files match {pattern}")
    return pattern, Path(matches[0])


def read_note(con: duckdb.DuckDBPyConnection, given: Path, pattern: Path) -> str | None:
    """For a glob the user gave: 'PATTERN: read N file(s): a, b, ...' (as DuckDB expands it)."""
    if given.exists():
        return None
    sql = "SELECT file FROM glob(?) ORDER BY file"
    files = [r[0] for r in con.sql(sql, params=[duck_path(pattern)]).fetchall()]
    shown = ", ".join(files[:10]) + (f", ... ({len(files) - 10} more)" if len(files) > 10 else "")
    return f"{given}: read {len(files)} file(s) matching the pattern: {shown}"


def part_note(path: Path) -> str | None:
    """A note when a Ray output folder (or glob) holds part files that are no regular files (a FIFO, a
    device, a folder): they are skipped, and the reader must know."""
    pattern = path / PART_GLOB if path.is_dir() else path
    if not (path.is_dir() or any(c in str(path) for c in "*?[")):
        return None
    odd = [m for m in glob.glob(duck_path(pattern)) if not os.path.isfile(m)]
    return f"{path}: {len(odd)} part file(s) that are not regular files skipped" if odd else None


def measured_rows(con: duckdb.DuckDBPyConnection, path: Path, columns: Sequence[str]) -> int:
    """Rows whose position is the photo's measured GPS (`source = exif`, predict --skip-tagged)."""
    if "source" not in columns:
        return 0
    sql = f"SELECT count(*) FROM {READ} WHERE CAST(source AS VARCHAR) = 'exif'"
    return int(con.sql(sql, params=[duck_path(path)]).to_arrow_table().column(0)[0].as_py())


def measured_note(label: str, n: int) -> str | None:
    if not n:
        return None
    return (
        f"{label}: {n:,} row(s) keep the photo's measured GPS (source = exif, predict --skip-tagged): "
        "not predictions, so not scored (counted in n_no_pred)"
    )


def has_untrained_rows(con: duckdb.DuckDBPyConnection, path: Path, columns: Sequence[str]) -> bool:
    """Whether any row's `weights` says UNTRAINED (a random backbone, as in the offline demo)."""
    if "weights" not in columns:
        return False
    sql = f"SELECT count(*) AS n FROM {READ} WHERE CAST(weights AS VARCHAR) LIKE '%UNTRAINED%'"
    return bool(_fetch(con, sql, [duck_path(path)], path)[0]["n"])
