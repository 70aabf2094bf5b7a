"""`geotag eval --truth`: join a manifest's ground truth onto existing predictions files, in DuckDB.

The manifest (geotag.io.truth) is registered as a small Arrow view keyed by file stem (the file name
without its extension), and each predictions file is read through a LEFT JOIN on the stem of its `path`,
so files of millions of rows are never loaded into Python. As in `scan` / `predict --truth`, the manifest
wins for gt_lat / gt_lon / gt_country (a file's own gt_country is kept when the manifest has no country)
and fills `scene` only where the file has none. Stems that occur
twice in the manifest are left out of the join (and counted): matching by relative path needs
`scan` / `predict --truth`, which see the real paths.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import duckdb
import pyarrow as pa

from geotag.io.parquet import duck_path
from geotag.io.truth import load_truth

TRUTH_VIEW = "manifest_truth"
ADDED = ("scene", "gt_country")  # columns every joined file has, whether or not the file had them


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def register_truth(con: duckdb.DuckDBPyConnection, truth: Path, extra: Sequence[str] = ()) -> list[str]:
    """Load the manifest (with its `extra` columns) into the view TRUTH_VIEW; returns notes for the reader
    (skipped rows etc.)."""
    manifest = load_truth(truth, extra)
    table, ambiguous = manifest.by_stem_table()
    con.register(TRUTH_VIEW, table)
    notes = [f"--truth {manifest.path.name}: {note}" for note in manifest.notes]
    if ambiguous:
        notes.append(
            f"--truth {manifest.path.name}: {ambiguous} row(s) share a file name with another row and were "
            "left out of the join (scan / predict --truth match them by relative path)"
        )
    return notes


def joined_columns(columns: Sequence[str], extra: Sequence[str] = ()) -> list[str]:
    """The columns a file has once the manifest is joined (it may bring scene and gt_country, and the
    `extra` manifest columns the file lacks)."""
    return list(dict.fromkeys([*columns, *ADDED, *extra]))


def joined_schema(schema: pa.Schema, extra: Sequence[str] = ()) -> pa.Schema:
    """The schema a file has once the manifest is joined (scene, gt_country and `extra` become text)."""
    added = [*ADDED, *(name for name in extra if name not in schema.names)]
    kept = [f for f in schema if f.name not in added]
    return pa.schema([*kept, *(pa.field(name, pa.string()) for name in added)])


def joined_source(columns: Sequence[str], extra: Sequence[str] = ()) -> str:
    """A FROM item: the file (the `?` parameter) with the manifest's ground truth joined on file stem."""
    replaced = [c for c in ("gt_lat", "gt_lon", *ADDED) if c in columns]
    keep = f"p.* EXCLUDE ({', '.join(_quote(c) for c in replaced)})" if replaced else "p.*"

    def own(name: str, sql_type: str) -> str:
        return f"CAST(p.{_quote(name)} AS {sql_type})" if name in columns else f"CAST(NULL AS {sql_type})"

    return f"""(
        SELECT {keep},
            CASE WHEN t.key IS NULL THEN {own("gt_lat", "DOUBLE")} ELSE t.lat END AS gt_lat,
            CASE WHEN t.key IS NULL THEN {own("gt_lon", "DOUBLE")} ELSE t.lon END AS gt_lon,
            coalesce({own("scene", "VARCHAR")}, t.scene) AS scene,
            CASE WHEN t.key IS NULL THEN {own("gt_country", "VARCHAR")}
                 ELSE coalesce(t.country, {own("gt_country", "VARCHAR")}) END AS gt_country,
            {"".join(f"t.{_quote('extra_' + n)} AS {_quote(n)}, " for n in extra if n not in columns)}
            t.key IS NOT NULL AS in_manifest
        FROM read_parquet(?, union_by_name = true) AS p
        LEFT JOIN {TRUTH_VIEW} AS t ON t.key = parse_filename(CAST(p.path AS VARCHAR), true, 'both_slash')
    ) AS with_truth"""


def match_note(con: duckdb.DuckDBPyConnection, path: Path, label: str, columns: Sequence[str]) -> str:
    """'label: N of M rows matched the manifest' for the notes under the table."""
    sql = f"SELECT count(*) AS n, count(*) FILTER (WHERE in_manifest) AS hit FROM {joined_source(columns)}"
    row = con.sql(sql, params=[duck_path(path)]).to_arrow_table().to_pylist()[0]
    return f"{label}: {row['hit']:,} of {row['n']:,} rows matched the --truth manifest by file name"
