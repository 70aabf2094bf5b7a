"""Ground truth from manifests: the CSV / Parquet files that come with the standard test sets.

A benchmark's photos carry no GPS of their own (or wrong GPS): its ground truth is a manifest. This
module reads one, recognises its format by its columns (case-insensitive), normalises every row to
(key, lat, lon, scene, country) and matches the photos of a run to it:

- `places365`: the GeoEstimation CSVs of Im2GPS / Im2GPS3k / YFCC4k (IMG_ID, AUTHOR, LAT, LON,
  S3_Label, ...). S3_Label 0 / 1 / 2 becomes scene indoor / natural / urban. The 2018 release of these
  files has its header's LAT and LON swapped (the values are latitude, longitude in that order); it is
  recognised by the column order and read by position, with a note.
- `osv5m`: OpenStreetView-5M (id, latitude, longitude, country, ...) and its small extracts (image,
  lat, lon, country). The country is kept as given (ISO 3166-1 alpha-2 in OSV-5M), only trimmed.
- `plain`: a key column (path, file, filename, image, name, id, ...) with lat and lon, and optional
  `scene` and `country` columns.

Matching a photo: the longest relative path of the manifest that ends the photo's path wins, then its
file name, then its file name without extension (ids such as OSV-5M's). Two manifest rows with the same
name (files of the same name in different folders) are never guessed between: a photo that only their
name could match is reported as ambiguous. Memory is a few dict entries a row, fine for millions.

The manifest is the benchmark's ground truth, so it wins over EXIF GPS for the gt columns (gt_lat,
gt_lon, gt_source = manifest, and gt_country: the manifest's country, or null for the places lookup to
fill from the new position); where EXIF and manifest differ by more than 1 km, `gt_note` says so. The
manifest's scene fills `scene` only where a row has none: a model's own scene prediction is kept.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from geotag.errors import InputError, SchemaError
from geotag.geo.distance import haversine_np
from geotag.io.tables import float_column, read_table, text_convert

DISAGREE_KM = 1.0
"""EXIF and manifest further apart than this get a note on the row."""

S3_SCENES = {"0": "indoor", "1": "natural", "2": "urban"}
"""GeoEstimation's S3_Label (places365 hierarchy, level 1)."""

_AMBIGUOUS = -1


@dataclass(frozen=True)
class ManifestFormat:
    """How to read one kind of manifest: candidate column names (lower case), first present wins."""

    name: str
    marker: tuple[str, ...]  # columns that identify the format (all must be present)
    key: tuple[str, ...]
    lat: tuple[str, ...]
    lon: tuple[str, ...]
    scene: tuple[str, ...] = ()
    country: tuple[str, ...] = ()


FORMATS = (
    ManifestFormat(
        "places365", ("img_id",), key=("img_id",), lat=("lat",), lon=("lon",), scene=("s3_label",)
    ),
    ManifestFormat(
        "osv5m",
        ("country",),
        key=("id", "image"),
        lat=("latitude", "lat"),
        lon=("longitude", "lon"),
        country=("country",),
    ),
    ManifestFormat(
        "plain",
        (),
        key=("path", "filepath", "file", "filename", "image_path", "image", "img", "name", "id", "photo_id"),
        # gt_* first: a geotag scan, predictions or export file as the truth (its lat / country, where
        # present, are the prediction's)
        lat=("gt_lat", "lat", "latitude"),
        lon=("gt_lon", "lon", "lng", "long", "longitude"),
        scene=("scene",),
        country=("gt_country", "country"),
    ),
)


@dataclass
class Match:
    """What the manifest says about one photo: a row index, or why there is none."""

    index: int | None = None
    ambiguous: int = 0  # > 0: this many manifest rows share the only name that matched
    name: str = ""


@dataclass
class TruthReport:
    """Counts for the summary line of scan / predict / benchmark."""

    manifest: str
    format: str
    rows: int
    matched: int = 0  # photos given manifest ground truth
    not_in_manifest: int = 0  # photos the manifest does not list
    ambiguous: int = 0  # photos only an ambiguous name could match
    disagree: int = 0  # photos whose EXIF GPS is more than 1 km from the manifest
    unmatched_rows: int = 0  # manifest rows no photo of the run matched
    done_earlier: int = 0  # photos a resumed run skipped (their rows keep their truth) that it lists
    unmatched_examples: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _norm_key(text: str) -> str:
    """Manifest keys and photo paths compare as POSIX relative paths without './' prefixes."""
    text = text.strip().replace("\\", "/")
    while text.startswith("./"):
        text = text[2:]
    return text.lstrip("/")


def file_stem(text: str) -> str:
    """The file name without its last extension ('a/b/x.y.jpg' -> 'x.y'); DuckDB's parse_filename agrees."""
    name = text.replace("\\", "/").rsplit("/", 1)[-1]
    stem, dot, _ = name.rpartition(".")
    return stem if dot and stem else name


def ids_sha256(ids: Iterable[str]) -> str:
    """The pinned form of a test set's id list: sha256 of the sorted unique ids joined by newlines."""
    return hashlib.sha256("\n".join(sorted(set(ids))).encode("utf-8")).hexdigest()


def read_header(path: Path) -> list[str]:
    """A manifest's column names (InputError when it cannot be read)."""
    return _read_header(Path(path))


def _read_header(path: Path) -> list[str]:
    if path.suffix.lower() == ".parquet":
        try:
            return list(pq.ParquetFile(path).schema_arrow.names)
        except (OSError, pa.ArrowException) as exc:
            raise InputError(f"--truth {path} is not a readable Parquet file ({exc})") from exc
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            return next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"--truth {path}: cannot read ({exc})") from exc


def detect_format(columns: Iterable[str]) -> tuple[ManifestFormat, dict[str, str]]:
    """The manifest format of a header and the chosen actual column per role; SchemaError if none fits."""
    lower = {c.strip().lower(): c for c in columns}
    for fmt in FORMATS:
        if not all(m in lower for m in fmt.marker):
            continue
        chosen: dict[str, str] = {}
        for role in ("key", "lat", "lon", "scene", "country"):
            actual = next((lower[c] for c in getattr(fmt, role) if c in lower), None)
            if actual is not None:
                chosen[role] = actual
        if {"key", "lat", "lon"} <= chosen.keys():
            return fmt, chosen
    raise SchemaError(
        f"cannot tell the manifest format from its columns {list(columns)}: expected the places365 CSVs "
        "(IMG_ID, LAT, LON, ...), OSV-5M (id or image, latitude or lat, longitude or lon, country) or "
        "a key column (path, file, image, id, ...) with lat and lon"
    )


def _swapped_places365(columns: list[str], chosen: Mapping[str, str]) -> bool:
    """The 2018 GeoEstimation CSVs say 'LON,LAT' where the values are latitude, longitude."""
    return columns.index(chosen["lat"]) > columns.index(chosen["lon"])


def _read_columns(path: Path, chosen: Mapping[str, str], extra: Sequence[str] = ()) -> pa.Table:
    """The chosen columns (and `extra` ones); a CSV's keys, scenes, countries and extras as text (only
    empty cells are null: "NA" is Namibia, not a missing value) and its coordinates as numbers (a
    non-number fails the read)."""
    names = list(dict.fromkeys([*chosen.values(), *extra]))
    parquet = path.suffix.lower() == ".parquet"
    types = {chosen[r]: pa.string() for r in ("key", "scene", "country") if r in chosen}
    types |= {name: pa.string() for name in extra if name not in types}
    types |= {chosen["lat"]: pa.float64(), chosen["lon"]: pa.float64()}
    convert = text_convert(include_columns=names, column_types=types, quoted_strings_can_be_null=False)
    kind = "Parquet file" if parquet else "CSV"
    message = f"--truth {{path}}: cannot read the {kind} ({{reason}})"
    table = read_table(path, "--truth", parquet=parquet, columns=names, convert=convert, message=message)
    for column in table.schema:  # a Parquet file may hold lists or structs where keys and numbers belong
        if pa.types.is_nested(column.type) or pa.types.is_binary(column.type):
            raise SchemaError(f"--truth {path}: column {column.name} is {column.type}, not text or a number")
    return table


def _as_str_list(column: pa.ChunkedArray) -> list[str | None]:
    if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
        column = pc.cast(column, pa.string())
    return column.to_pylist()


class Truth:
    """A loaded manifest, indexed for matching photos to its rows; counts what it matched."""

    def __init__(self, path: Path, extra: Sequence[str] = ()) -> None:
        """`extra`: further manifest columns kept as text (`eval --by author`); SchemaError if absent."""
        self.path = Path(path)
        if not self.path.exists():
            raise InputError(f"--truth {self.path}: no such file")
        if self.path.is_dir():
            raise InputError(f"--truth {self.path} is a directory, not a CSV or Parquet file")
        columns = _read_header(self.path)
        fmt, chosen = detect_format(columns)
        self.format = fmt.name
        self.notes: list[str] = []
        missing = [name for name in extra if name not in columns]
        if missing:
            raise SchemaError(f"--truth {self.path}: no column {missing[0]}; it has {', '.join(columns)}")
        table = _read_columns(self.path, chosen, extra)
        lat_col, lon_col = chosen["lat"], chosen["lon"]
        if fmt.name == "places365" and _swapped_places365(columns, chosen):
            lat_col, lon_col = lon_col, lat_col
            self.notes.append(
                "the header says LON before LAT (the 2018 GeoEstimation release); read by position as "
                "latitude, longitude"
            )
        keys = _as_str_list(table[chosen["key"]])
        lat = float_column(table, lat_col, f"--truth {self.path}", strict=True)
        lon = float_column(table, lon_col, f"--truth {self.path}", strict=True)
        scene = self._scenes(table, chosen, fmt)
        country = _as_str_list(table[chosen["country"]]) if "country" in chosen else None

        ok = np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180)
        ok &= np.array([bool(k and k.strip()) for k in keys], dtype=bool)
        if not ok.all():
            self.notes.append(f"{int((~ok).sum())} row(s) without a key or valid coordinates were skipped")
        keep = np.flatnonzero(ok)
        self.keys = [_norm_key(keys[i]) for i in keep]  # type: ignore[arg-type]
        self.lat = lat[keep]
        self.lon = lon[keep]
        self.scene = [scene[i] for i in keep] if scene is not None else None
        self.country = [(country[i] or "").strip() or None for i in keep] if country is not None else None
        texts = {name: _as_str_list(table[name]) for name in extra}
        self.extra = {name: [values[i] for i in keep] for name, values in texts.items()}
        self._index()
        self.seen = np.zeros(len(self.keys), dtype=bool)
        self.report = TruthReport(manifest=str(self.path), format=self.format, rows=len(self.keys))
        self.report.notes.extend(self.notes)

    def _scenes(
        self, table: pa.Table, chosen: Mapping[str, str], fmt: ManifestFormat
    ) -> list[str | None] | None:
        if "scene" not in chosen:
            return None
        raw = _as_str_list(table[chosen["scene"]])
        if fmt.name == "places365":
            return [S3_SCENES.get((s or "").strip().split(".")[0]) for s in raw]
        return [(s or "").strip().lower() or None for s in raw]

    def _index(self) -> None:
        """Dicts from relative path, file name and stem to a row (or _AMBIGUOUS), built once."""
        self._by_path: dict[str, int] = {}
        self._by_name: dict[str, int] = {}
        self._by_stem: dict[str, int] = {}
        self._dup_count: dict[str, int] = {}
        for i, key in enumerate(self.keys):
            name = key.rsplit("/", 1)[-1]
            if "/" in key:
                self._put(self._by_path, key, i)
            self._put(self._by_name, name, i)
            stem = file_stem(name)
            if stem != name:
                self._put(self._by_stem, stem, i)

    def _put(self, index: dict[str, int], key: str, i: int) -> None:
        if key in index:
            index[key] = _AMBIGUOUS
            self._dup_count[key] = self._dup_count.get(key, 1) + 1
        else:
            index[key] = i

    def __len__(self) -> int:
        return len(self.keys)

    def match(self, photo: str | Path) -> Match:
        """The manifest row of a photo: longest relative path first, then file name, then stem."""
        parts = PurePosixPath(_norm_key(str(photo))).parts
        for start in range(len(parts) - 1):  # suffixes of two or more components, longest first
            i = self._by_path.get("/".join(parts[start:]))
            if i is not None and i != _AMBIGUOUS:
                return Match(index=i)
        if not parts:
            return Match()
        name, stem = parts[-1], file_stem(parts[-1])
        # the name as listed; its stem against listed names with an extension; against bare ids
        for index, key in ((self._by_name, name), (self._by_stem, stem), (self._by_name, stem)):
            i = index.get(key)
            if i == _AMBIGUOUS:
                return Match(ambiguous=self._dup_count.get(key, 2), name=key)
            if i is not None:
                return Match(index=i)
        return Match()

    def apply(self, row: MutableMapping[str, Any]) -> None:
        """Fill a predictions row's gt columns (and its scene where empty) from the manifest."""
        found = self.match(row.get("path") or "")
        if found.index is None:
            if found.ambiguous:
                self.report.ambiguous += 1
                _add_note(
                    row,
                    f"manifest lists {found.ambiguous} files named {found.name}; not matched "
                    "(give relative paths in the manifest)",
                )
            else:
                self.report.not_in_manifest += 1
                _add_note(row, "not in the manifest")
            return
        i = found.index
        self.seen[i] = True
        self.report.matched += 1
        lat, lon = float(self.lat[i]), float(self.lon[i])
        exif = (row.get("gt_lat"), row.get("gt_lon")) if row.get("gt_source") == "exif" else (None, None)
        if exif[0] is not None and exif[1] is not None:
            d = float(haversine_np(exif[0], exif[1], lat, lon))
            if d > DISAGREE_KM:
                self.report.disagree += 1
                _add_note(row, f"exif and manifest differ by {d:,.1f} km (exif {exif[0]:.5f}, {exif[1]:.5f})")
        gt_country = self.country[i] if self.country is not None else None
        row.update(gt_lat=lat, gt_lon=lon, gt_source="manifest", gt_country=gt_country)
        if self.scene is not None and not row.get("scene") and self.scene[i]:
            row["scene"] = self.scene[i]

    def mark_done(self, path: str) -> None:
        """A photo a resumed run skips: its manifest row counts as matched (not as "matched no file")."""
        found = self.match(path)
        if found.index is not None:
            self.seen[found.index] = True
            self.report.done_earlier += 1

    def finish(self, examples: int = 5) -> TruthReport:
        """The report, with the manifest rows no photo matched (a benchmark's missing images)."""
        unmatched = np.flatnonzero(~self.seen)
        self.report.unmatched_rows = int(unmatched.size)
        self.report.unmatched_examples = [self.keys[i] for i in unmatched[:examples]]
        return self.report

    def stems(self) -> list[str]:
        """The manifest's ids: each key's file name without extension."""
        return [file_stem(k) for k in self.keys]

    def by_stem_table(self) -> tuple[pa.Table, int]:
        """(key, lat, lon, scene, country) keyed by file stem for a SQL join; ambiguous stems left out."""
        stems = self.stems()
        counts: dict[str, int] = {}
        for s in stems:
            counts[s] = counts.get(s, 0) + 1
        keep = [i for i, s in enumerate(stems) if counts[s] == 1]
        n = len(keep)
        table = pa.table(
            {
                "key": pa.array([stems[i] for i in keep], pa.string()),
                "lat": pa.array(self.lat[keep] if n else [], pa.float64()),
                "lon": pa.array(self.lon[keep] if n else [], pa.float64()),
                "scene": pa.array([self.scene[i] for i in keep] if self.scene else [None] * n, pa.string()),
                "country": pa.array(
                    [self.country[i] for i in keep] if self.country else [None] * n, pa.string()
                ),
                **{
                    f"extra_{name}": pa.array([v[i] for i in keep], pa.string())
                    for name, v in self.extra.items()
                },
            }
        )
        return table, len(stems) - n


def _add_note(row: MutableMapping[str, Any], note: str) -> None:
    old = row.get("gt_note")
    row["gt_note"] = f"{old}; {note}" if old else note


def load_truth(path: str | Path, extra: Sequence[str] = ()) -> Truth:
    """Read and index a manifest; InputError / SchemaError with one clear line when it cannot be used."""
    return Truth(Path(path), extra)


def apply_truth(row: MutableMapping[str, Any], truth: Truth | None) -> None:
    """`truth.apply(row)` when a manifest was given; rows pass unchanged otherwise."""
    if truth is not None:
        truth.apply(row)


def describe(report: TruthReport) -> str:
    """One line for stderr: what the manifest gave this run."""
    parts = [f"manifest {Path(report.manifest).name} ({report.format}, {report.rows:,} rows): "]
    parts.append(f"{report.matched:,} file(s) matched")
    if report.done_earlier:
        parts.append(f" (and {report.done_earlier:,} done by an earlier run)")
    if report.not_in_manifest:
        parts.append(f", {report.not_in_manifest:,} not in it")
    if report.ambiguous:
        parts.append(f", {report.ambiguous:,} ambiguous")
    if report.disagree:
        parts.append(f", {report.disagree:,} where EXIF differs by > {DISAGREE_KM:g} km")
    if report.unmatched_rows:
        shown = ", ".join(report.unmatched_examples)
        more = "" if report.unmatched_rows <= len(report.unmatched_examples) else ", ..."
        parts.append(f"; {report.unmatched_rows:,} manifest row(s) matched no file ({shown}{more})")
    return "".join(parts)
