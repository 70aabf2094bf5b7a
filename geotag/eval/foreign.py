"""Someone else's predictions (a CSV or Parquet of any layout) scored by `geotag eval` and `report`.

A published predictions file names its columns its own way (G3's `IMG_ID, LAT, LON, LAT_pred, LON_pred`,
geotag's own `export --out x.csv`). The columns are mapped by name where that is unambiguous, or by
`--columns pred_lat=LAT_pred,pred_lon=LON_pred,path=IMG_ID`, and the mapping is reported. The file is
then rewritten as a small geotag-shaped Parquet in a temporary folder (path, status, truth, prediction,
confidence), so the same DuckDB scoring runs on it, and a `--truth` manifest (or scan) joins by file
name as for geotag's own files.

Honest counts: a prediction at exactly (0, 0) is a placeholder (a failed run writes it), counted and
treated as no prediction; rows without a prediction are counted; with a manifest, its photos that the
file does not name at all become rows without a prediction, so `--missing-as-wrong` can score them as
misses, as papers do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from geotag.errors import InputError, SchemaError
from geotag.io.tables import PARQUET_MAGIC, float_column, read_table, text_convert
from geotag.io.truth import file_stem, load_truth

ROLES: dict[str, tuple[str, ...]] = {
    "path": (
        "path",
        "filepath",
        "file_path",
        "file",
        "filename",
        "file_name",
        "image_path",
        "img_path",
        "image",
        "img_id",
        "image_id",
        "img",
        "photo",
        "photo_id",
        "name",
        "id",
    ),
    "pred_lat": ("pred_lat", "lat_pred", "predicted_lat", "lat_predicted", "pred_latitude", "latitude_pred"),
    "pred_lon": (
        "pred_lon",
        "lon_pred",
        "pred_lng",
        "lng_pred",
        "predicted_lon",
        "lon_predicted",
        "pred_longitude",
        "longitude_pred",
    ),
    "gt_lat": ("gt_lat", "lat_gt", "true_lat", "lat_true", "gt_latitude", "lat", "latitude"),
    "gt_lon": ("gt_lon", "lon_gt", "true_lon", "lon_true", "gt_longitude", "lon", "lng", "longitude"),
    "confidence": ("confidence", "conf", "score", "probability"),
}
"""Candidate names per role (lower case). `path` takes the first present (a file name or path, by which
the truth joins); geotag's own name (`gt_lat`, as `export --out x.csv` writes beside its `lat`) wins;
otherwise two candidates of one role are ambiguous and need --columns."""
REQUIRED = ("path", "pred_lat", "pred_lon")
GEOTAG_NEEDED = ("path", "status", "gt_lat", "gt_lon", "pred_lat", "pred_lon")


@dataclass
class Prepared:
    """What eval / report read in place of the files given, and what they must tell the reader."""

    files: list[Path]
    notes: list[str] = field(default_factory=list)


def parse_columns(text: str | None) -> dict[str, str]:
    """`pred_lat=LAT_pred,pred_lon=LON_pred,path=IMG_ID` -> {role: column}; bad text: InputError."""
    out: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        role, sep, column = part.partition("=")
        role = role.strip().lower()
        role = "path" if role in ("key", "id", "file") else role
        if not sep or not column.strip():
            raise InputError(f"--columns {part.strip()!r}: give ROLE=COLUMN, e.g. pred_lat=LAT_pred")
        if role not in ROLES:
            raise InputError(f"--columns: unknown role {role!r}; roles: {', '.join(ROLES)}")
        out[role] = column.strip()
    return out


def map_columns(names: Sequence[str], given: dict[str, str], where: str) -> dict[str, str]:
    """The file's column for each role: `given` first (each must exist), then by name."""
    lower: dict[str, list[str]] = {}
    for name in names:
        lower.setdefault(name.strip().lower(), []).append(name)
    chosen: dict[str, str] = {}
    for role, column in given.items():
        if column not in names:
            raise InputError(f"{where}: --columns {role}={column}: no such column; has: {', '.join(names)}")
        chosen[role] = column
    taken = set(chosen.values())
    for role, candidates in ROLES.items():
        if role in chosen:
            continue
        found = [c for cand in candidates for c in lower.get(cand, []) if c not in taken]
        if not found:
            continue
        if role != "path" and len(found) > 1 and found[0].lower() != role:  # geotag's own name wins
            raise InputError(
                f"{where}: columns {', '.join(found)} could each be {role}; "
                f"say which with --columns {role}=NAME"
            )
        chosen[role] = found[0]
        taken.add(found[0])
    if "pred_lat" not in chosen and "pred_lon" not in chosen and {"gt_lat", "gt_lon"} <= chosen.keys():
        raise InputError(
            f"{where}: columns {chosen['gt_lat']}, {chosen['gt_lon']} could be the predictions or the truth; "
            f"say which with --columns pred_lat={chosen['gt_lat']},pred_lon={chosen['gt_lon']}"
        )
    missing = [r for r in REQUIRED if r not in chosen]
    if missing:
        raise SchemaError(
            f"{where}: no {' / '.join(missing)} column found among {', '.join(names)}; "
            f"map them with --columns {missing[0]}=NAME"
        )
    return chosen


def is_geotag_file(path: Path) -> bool:
    """A geotag predictions file (or Ray folder / glob), read as it is: everything else is foreign."""
    if path.is_dir() or any(c in str(path) for c in "*?["):
        return True
    try:
        with path.open("rb") as fh:
            if fh.read(len(PARQUET_MAGIC)) != PARQUET_MAGIC:
                return path.suffix.lower() == ".parquet"  # a broken .parquet: geotag's reader says so
        names = set(pq.ParquetFile(path).schema_arrow.names)
    except Exception:  # noqa: BLE001 - unreadable: let the geotag reader give its one-line error
        return True
    return set(GEOTAG_NEEDED) <= names


def convert(path: Path, given: dict[str, str], truth: Path | None, out: Path) -> list[str]:
    """Rewrite one foreign predictions file as a geotag-shaped Parquet `out`; returns the notes."""
    table, notes = geotag_table(path, given, truth)
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out)
    return notes


def geotag_table(path: Path, given: dict[str, str], truth: Path | None = None) -> tuple[pa.Table, list[str]]:
    """One foreign predictions file as a table of geotag's columns (path, status, gt_*, pred_*,
    confidence; `image_id` null), and the notes on what was mapped, placeholders and missing rows."""
    where = path.name
    table = read_table(path, "predictions file", convert=text_convert())
    chosen = map_columns(table.column_names, given, where)
    notes = [
        f"{where}: read as foreign predictions, columns " + ", ".join(f"{r}={c}" for r, c in chosen.items())
    ]
    n = table.num_rows
    keys = [None if v is None else str(v) for v in table.column(chosen["path"]).to_pylist()]
    plat = float_column(table, chosen["pred_lat"], where)
    plon = float_column(table, chosen["pred_lon"], where)
    nan = np.full(n, np.nan)
    glat = float_column(table, chosen["gt_lat"], where) if "gt_lat" in chosen else nan
    glon = float_column(table, chosen["gt_lon"], where) if "gt_lon" in chosen else nan
    conf = float_column(table, chosen["confidence"], where) if "confidence" in chosen else nan
    placeholder = (plat == 0.0) & (plon == 0.0)
    bad = ~(np.isfinite(plat) & np.isfinite(plon) & (np.abs(plat) <= 90) & (np.abs(plon) <= 180))
    if placeholder.any():
        notes.append(
            f"{where}: {int(placeholder.sum()):,} prediction(s) at (0, 0), a placeholder: counted as none"
        )
    if (bad & ~placeholder).any():
        notes.append(f"{where}: {int((bad & ~placeholder).sum()):,} row(s) without a valid prediction")
    plat = np.where(placeholder | bad, np.nan, plat)
    plon = np.where(placeholder | bad, np.nan, plon)
    if truth is not None:
        manifest = load_truth(truth)
        have = {file_stem(k) for k in keys if k}
        absent = [s for s in dict.fromkeys(manifest.stems()) if s not in have]
        if absent:
            notes.append(
                f"{where}: {len(absent):,} of the --truth manifest's photos have no row in the file "
                "(no prediction; --missing-as-wrong scores them as misses)"
            )
            keys += absent
            extra = np.full(len(absent), np.nan)
            plat, plon, glat, glon, conf = (
                np.concatenate([a, extra]) for a in (plat, plon, glat, glon, conf)
            )
    m = len(keys)
    columns = {
        "path": pa.array(keys, pa.string()),
        "status": pa.array(["ok"] * m, pa.string()),
        "gt_lat": pa.array(glat, pa.float64(), from_pandas=True),
        "gt_lon": pa.array(glon, pa.float64(), from_pandas=True),
        "pred_lat": pa.array(plat, pa.float64(), from_pandas=True),
        "pred_lon": pa.array(plon, pa.float64(), from_pandas=True),
        "confidence": pa.array(conf, pa.float64(), from_pandas=True),
    }
    if pc.sum(pc.is_null(columns["path"])).as_py():
        notes.append(f"{where}: rows without a {chosen['path']} value cannot be joined to a manifest")
    columns["image_id"] = pa.nulls(m, pa.string())
    return pa.table(columns), notes


def prepare(files: Sequence[Path], columns: str | None, truth: Path | None, folder: Path) -> Prepared:
    """Each file as eval reads it: geotag's own as it is (unless --columns is given), a foreign one
    converted into `folder` under its own stem (so tables show the same label)."""
    given = parse_columns(columns)
    prepared = Prepared(files=[])
    for i, file in enumerate(Path(f) for f in files):
        if not given and is_geotag_file(file):
            prepared.files.append(file)
            continue
        out = folder / str(i) / f"{file.stem}.parquet"
        prepared.notes += convert(file, given, truth, out)
        prepared.files.append(out)
    return prepared
