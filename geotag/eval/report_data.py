"""What `geotag report` draws, aggregated in DuckDB so a file of millions of rows never enters Python.

Every query reads one predictions file through a per-row view (`rows_sql`): the columns a report needs,
NULL where a foreign file lacks one, and `d`, the haversine error in km of a scored row (the same
macro and the same row buckets as geotag.eval.metrics, so the page and `geotag eval` agree). What comes
back is small: a histogram of errors on a log grid, a confidence histogram, a 1-degree density grid or a
deterministic sample of at most a few thousand points, and the N worst rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from geotag.errors import InputError
from geotag.eval import truth_join
from geotag.eval.metrics import (
    NEEDED_COLUMNS,
    READ,
    capped_source,
    duck_path,
    file_labels,
    parquet_source,
    part_note,
    quote,
    read_note,
    row_columns,
    scored_when,
    self_match_sql,
    sql_double,
)
from geotag.io.parquet import require_columns
from geotag.io.row_paths import row_path

OPTIONAL = {
    "error": "VARCHAR",
    "confidence": "DOUBLE",
    "scene": "VARCHAR",
    "country": "VARCHAR",
    "gt_country": "VARCHAR",
    "model": "VARCHAR",
    "weights": "VARCHAR",
    "error_km": "DOUBLE",
    "source": "VARCHAR",
    "fix_dt_s": "DOUBLE",
    "topk": "STRUCT(lat DOUBLE, lon DOUBLE, score DOUBLE)[]",
    "self_match": "VARCHAR",
}
CDF_MIN_KM, CDF_MAX_KM, CDF_BINS = 0.01, 20_100.0, 480  # 10 m .. half the circumference, 80 bins a decade
CONF_BINS = 100  # --min-confidence is chosen on a 0.01 grid
MIN_ROWS = 10  # a --min-confidence that writes fewer photos than this is neither suggested nor drawn
SCATTER_MAX = 20_000  # more points than this are drawn as a density grid, never as markers
LINES_MAX = 600  # error lines drawn at most (a deterministic sample beyond)


@dataclass(frozen=True)
class Source:
    """One predictions file as a FROM item (`sql`, reading the `?` parameter) with its column names."""

    path: Path
    label: str
    columns: list[str]
    sql: str
    include_self: bool = False  # score self-matches (never in the --min-confidence advice)
    raw_columns: tuple[str, ...] = ()  # the file's own columns, before a --truth join added any


def open_sources(
    con: duckdb.DuckDBPyConnection,
    files: Sequence[Path],
    truth: Path | None = None,
    include_self: bool = False,
) -> tuple[list[Source], list[str]]:
    """Check every file before any work (one clear error for the first bad one); notes from --truth."""
    if not files:
        raise InputError("no predictions file given")
    given = [Path(f) for f in files]
    paths, samples = zip(*(parquet_source(p) for p in given), strict=True)  # a Ray folder's parts, a glob
    schemas = [list(require_columns(p, NEEDED_COLUMNS).schema_arrow.names) for p in samples]
    notes = truth_join.register_truth(con, truth) if truth else []
    notes += [n for g, p in zip(given, paths, strict=True) if (n := read_note(con, g, p)) is not None]
    notes += [note for p in given if (note := part_note(p))]
    sources = []
    for path, label, columns in zip(paths, file_labels(given), schemas, strict=True):
        if truth:
            joined = truth_join.joined_columns(columns)
            sql = capped_source(joined, truth_join.joined_source(columns))
            sources.append(Source(path, label, joined, sql, include_self, tuple(columns)))
        else:
            sources.append(
                Source(path, label, columns, capped_source(columns, READ), include_self, tuple(columns))
            )
    return sources, notes


def rows_sql(src: Source) -> str:
    """Per-row view: identity, coordinates, optional columns (NULL when absent), `is_self` and the error
    `d` in km (NULL for a self-match unless the source scores them, as geotag.eval.metrics does)."""

    def opt(name: str, sql_type: str) -> str:
        value = f"CAST({quote(name)} AS {sql_type})" if name in src.columns else f"CAST(NULL AS {sql_type})"
        return f"{value} AS {quote(name)}"

    optional = ", ".join(opt(name, t) for name, t in OPTIONAL.items())
    return f"""
        SELECT *, CASE WHEN {scored_when(src.include_self)}
                       THEN haversine_km(gt_lat, gt_lon, pred_lat, pred_lon) END AS d
        FROM (
            SELECT CAST(path AS VARCHAR) AS path,
                {row_columns(src.columns)}
                {self_match_sql(src.columns)}
                {optional}
            FROM {src.sql}
        )"""


def query(con: duckdb.DuckDBPyConnection, src: Source, sql: str) -> list[dict[str, Any]]:
    """Run `sql` (which names the per-row view `r`) on one file; DuckDB errors become one InputError line."""
    full = f"WITH r AS ({rows_sql(src)}) {sql}"
    try:
        return con.sql(full, params=[duck_path(src.path)]).to_arrow_table().to_pylist()
    except duckdb.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"{src.path}: cannot read for the report ({first})") from exc


@dataclass
class ErrorCdf:
    """Share of scored rows with error <= km[i]; `n` scored rows."""

    km: np.ndarray
    share: np.ndarray
    n: int


def error_cdf(con: duckdb.DuckDBPyConnection, src: Source) -> ErrorCdf:
    """The cumulative error curve from a log-binned histogram (one GROUP BY over the file)."""
    lo, step = np.log10(CDF_MIN_KM), (np.log10(CDF_MAX_KM) - np.log10(CDF_MIN_KM)) / CDF_BINS
    sql = f"""
        SELECT least({CDF_BINS}, greatest(0, CAST(ceil((log10(greatest(d, {sql_double(CDF_MIN_KM)}))
               - {sql_double(lo)}) / {sql_double(step)}) AS INTEGER))) AS b, count(*) AS n
        FROM r WHERE d IS NOT NULL GROUP BY b"""
    counts = np.zeros(CDF_BINS + 1, dtype=np.int64)
    for row in query(con, src, sql):
        counts[int(row["b"])] += int(row["n"])
    total = int(counts.sum())
    km = 10.0 ** (lo + step * np.arange(CDF_BINS + 1))
    share = np.cumsum(counts) / total if total else np.zeros_like(km)
    return ErrorCdf(km=km, share=share, n=total)


@dataclass
class Calibration:
    """Per 0.01-wide confidence bin: scored rows `n` and those within `threshold_km` (`hits`)."""

    threshold_km: float
    n: np.ndarray
    hits: np.ndarray

    @property
    def total(self) -> int:
        return int(self.n.sum())

    def coarse(self, bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(bin centres, accuracy, count) over `bins` equal confidence bins; accuracy NaN where empty."""
        n = self.n.reshape(bins, -1).sum(axis=1)
        hits = self.hits.reshape(bins, -1).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            acc = np.where(n > 0, hits / np.maximum(n, 1), np.nan)
        return (np.arange(bins) + 0.5) / bins, acc, n

    def at_least(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """For each c = 0, 0.01, ..: (c, accuracy of rows with confidence >= c, share kept, rows kept).

        This is what `write-exif --min-confidence c` would write: the photos kept and how many of them
        land within threshold_km.
        """
        kept = np.cumsum(self.n[::-1])[::-1]
        hits = np.cumsum(self.hits[::-1])[::-1]
        with np.errstate(invalid="ignore", divide="ignore"):
            acc = np.where(kept > 0, hits / np.maximum(kept, 1), np.nan)
        share = kept / max(self.total, 1)
        return np.arange(CONF_BINS) / CONF_BINS, acc, share, kept


def calibration(con: duckdb.DuckDBPyConnection, src: Source, threshold_km: float = 25.0) -> Calibration:
    """Confidence histogram of scored rows, with the hits at `threshold_km` per bin. Self-matches never
    count, even when scored: the advice is for photos the gallery does not hold."""
    sql = f"""
        SELECT least({CONF_BINS - 1}, greatest(0, CAST(floor(confidence * {CONF_BINS}) AS INTEGER))) AS b,
               count(*) AS n, count(*) FILTER (WHERE d <= {sql_double(threshold_km)}) AS hits
        FROM r WHERE d IS NOT NULL AND NOT is_self AND present(confidence) GROUP BY b"""
    n = np.zeros(CONF_BINS, dtype=np.int64)
    hits = np.zeros(CONF_BINS, dtype=np.int64)
    for row in query(con, src, sql):
        n[int(row["b"])] += int(row["n"])
        hits[int(row["b"])] += int(row["hits"])
    return Calibration(threshold_km=threshold_km, n=n, hits=hits)


@dataclass(frozen=True)
class Suggestion:
    """The lowest --min-confidence whose written photos reach `target` accuracy (None: never)."""

    target: float
    min_confidence: float | None
    accuracy: float | None
    share_kept: float | None
    rows_kept: int


def suggest_min_confidence(
    cal: Calibration, targets: Sequence[float] = (0.5, 0.75, 0.9), min_rows: int = MIN_ROWS
) -> list[Suggestion]:
    """For each target accuracy at cal.threshold_km, the lowest c whose kept rows (at least `min_rows`,
    so a handful of lucky photos cannot decide it) reach the target."""
    c, acc, share, kept = cal.at_least()
    out = []
    for target in targets:
        ok = np.flatnonzero((kept >= min_rows) & (acc >= target))
        if ok.size == 0:
            out.append(Suggestion(target, None, None, None, 0))
            continue
        i = int(ok[0])
        out.append(Suggestion(target, float(c[i]), float(acc[i]), float(share[i]), int(kept[i])))
    return out


@dataclass
class MapData:
    """What the world map shows: every point (small files) or a density grid plus a sample of lines."""

    n_pred: int
    n_gt: int
    n_pairs: int
    pred: np.ndarray  # (k, 2) lat, lon: every prediction when n_pred <= SCATTER_MAX, else empty
    gt: np.ndarray  # (k, 2) likewise for the ground truth
    pairs: np.ndarray  # (k, 5) gt_lat, gt_lon, pred_lat, pred_lon, d: at most LINES_MAX, a stable sample
    density: np.ndarray | None = None  # (180, 360) predictions per 1-degree cell, rows from -90 up
    gt_density: np.ndarray | None = None

    @property
    def dense(self) -> bool:
        return self.density is not None


def _points(con: duckdb.DuckDBPyConnection, src: Source, lat: str, lon: str, where: str) -> np.ndarray:
    rows = query(con, src, f"SELECT {lat} AS a, {lon} AS b FROM r WHERE {where}")
    return np.array([(x["a"], x["b"]) for x in rows], dtype=np.float64).reshape(-1, 2)


def _grid(con: duckdb.DuckDBPyConnection, src: Source, lat: str, lon: str, where: str) -> np.ndarray:
    sql = f"""
        SELECT least(179, greatest(0, CAST(floor({lat} + 90) AS INTEGER))) AS i,
               least(359, greatest(0, CAST(floor({lon} + 180) AS INTEGER))) AS j, count(*) AS n
        FROM r WHERE {where} GROUP BY i, j"""
    grid = np.zeros((180, 360), dtype=np.int64)
    for row in query(con, src, sql):
        grid[int(row["i"]), int(row["j"])] += int(row["n"])
    return grid


def map_data(con: duckdb.DuckDBPyConnection, src: Source) -> MapData:
    """Counts first, then either the points themselves or 1-degree grids; lines are always a sample."""
    has_pred, has_gt = "NOT is_error AND has_pred", "NOT is_error AND has_gt"
    counts = query(
        con,
        src,
        f"""SELECT count(*) FILTER (WHERE {has_pred}) AS p, count(*) FILTER (WHERE {has_gt}) AS g,
                   count(d) AS pairs FROM r""",
    )[0]
    n_pred, n_gt, n_pairs = int(counts["p"]), int(counts["g"]), int(counts["pairs"])
    pairs_sql = f"""
        SELECT gt_lat, gt_lon, pred_lat, pred_lon, d FROM r WHERE d IS NOT NULL
        ORDER BY hash(path, gt_lat, pred_lat) LIMIT {LINES_MAX}"""
    pairs = np.array([tuple(x.values()) for x in query(con, src, pairs_sql)], dtype=np.float64).reshape(-1, 5)
    empty = np.zeros((0, 2))
    if max(n_pred, n_gt) <= SCATTER_MAX:
        pred = _points(con, src, "pred_lat", "pred_lon", has_pred)
        gt = _points(con, src, "gt_lat", "gt_lon", has_gt)
        return MapData(n_pred, n_gt, n_pairs, pred, gt, pairs)
    density = _grid(con, src, "pred_lat", "pred_lon", has_pred)
    gt_density = _grid(con, src, "gt_lat", "gt_lon", has_gt)
    return MapData(n_pred, n_gt, n_pairs, empty, empty, pairs, density, gt_density)


@dataclass(frozen=True)
class FileFacts:
    """Counts and provenance shown in the page's header and error section."""

    n_rows: int
    n_error: int
    n_self: int  # rows with ground truth and a prediction marked self_match
    models: list[tuple[str | None, str | None, int]]  # (model, weights, rows), most rows first
    error_rows: list[tuple[str | None, str | None]] = field(default_factory=list)  # (path, reason)


def file_facts(con: duckdb.DuckDBPyConnection, src: Source, n_errors: int = 10) -> FileFacts:
    counts = query(
        con,
        src,
        "SELECT count(*) AS n, count(*) FILTER (WHERE is_error) AS e, "
        "count(*) FILTER (WHERE is_self AND NOT is_error AND has_gt AND has_pred) AS s FROM r",
    )[0]
    models = query(
        con,
        src,
        "SELECT model, weights, count(*) AS n FROM r WHERE model IS NOT NULL OR weights IS NOT NULL "
        "GROUP BY ALL ORDER BY n DESC, model LIMIT 5",
    )
    errors = query(
        con, src, f"SELECT path, error FROM r WHERE is_error ORDER BY path NULLS LAST LIMIT {int(n_errors)}"
    )
    return FileFacts(
        n_rows=int(counts["n"]),
        n_error=int(counts["e"]),
        n_self=int(counts["s"]),
        models=[(m["model"], m["weights"], int(m["n"])) for m in models],
        error_rows=[(e["path"], e["error"]) for e in errors],
    )


def worst_rows(con: duckdb.DuckDBPyConnection, src: Source, n: int = 12) -> list[dict[str, Any]]:
    """The `n` scored rows with the largest error, largest first (ties by path, so the list is stable)."""
    sql = f"""
        SELECT path, gt_lat, gt_lon, pred_lat, pred_lon, d, confidence, scene, country, gt_country, model
        FROM r WHERE d IS NOT NULL ORDER BY d DESC, path LIMIT {int(n)}"""
    return query(con, src, sql)


def resolve_photo(path_text: str | None, base: Path) -> Path | None:
    """The photo a row names: absolute as written, relative under `base`, the predictions file's folder
    (never the current folder: geotag.io.row_paths, the rule write-exif and review follow too)."""
    if not path_text:
        return None
    try:  # a name too long for the system (ENAMETOOLONG) or otherwise odd is a photo not found
        path = row_path(path_text, base)
        return path if path.is_file() else None
    except (OSError, ValueError):
        return None
