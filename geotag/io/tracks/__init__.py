"""Read GPS tracks and location histories into one `Fixes` table (geotag.geo.fixes).

`read_track(path)` reads one file, its format found by content first and extension second;
`read_tracks(paths)` reads files and folders (walked for the known extensions, names sorted) and merges
every fix by time, as exiftool merges segments and files. `filter_quality` drops fixes worse than
exiftool-style limits (GeoMaxHDOP / GeoMaxPDOP / GeoMinSats). Formats and their libraries: docs/time.md.

A malformed file raises TrackError (an InputError: exit 2) with one line naming the file and the record;
a file with no timed point is a warning string, not an error. Files are data: XML goes through
defusedxml, every file is bounded (MAX_TRACK_BYTES, MAX_ZIP_MEMBER_BYTES).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geotag.errors import TrackError
from geotag.geo.fixes import Fixes
from geotag.io.tracks._base import MAX_TRACK_BYTES, MAX_ZIP_MEMBER_BYTES, Builder, fail
from geotag.io.tracks.detect import FORMAT_NAMES, TRACK_EXTENSIONS, detect_format

__all__ = [
    "FORMAT_NAMES",
    "MAX_TRACK_BYTES",
    "MAX_ZIP_MEMBER_BYTES",
    "TRACK_EXTENSIONS",
    "TrackError",
    "TrackSet",
    "detect_format",
    "filter_quality",
    "read_track",
    "read_tracks",
]


@dataclass(frozen=True)
class TrackSet:
    """Every fix of the files read, merged and sorted by time (`fixes.sources` names each file), the
    files read in order, and warnings (one line each, naming the file) for the caller to show."""

    fixes: Fixes
    files: tuple[str, ...]
    warnings: tuple[str, ...]


# reader name -> (module in this package, function); imported on first use, so reading a GPX never
# imports fitdecode or ijson
_READERS = {
    "gpx": ("gpx", "read_gpx"),
    "nmea": ("nmea", "read_nmea"),
    "kml": ("kml", "read_kml"),
    "kmz": ("kml", "read_kmz"),
    "geojson": ("geojson", "read_geojson"),
    "csv": ("csvlog", "read_csv"),
    "fit": ("garmin", "read_fit"),
    "tcx": ("garmin", "read_garmin_xml"),
    "garmin-xml": ("garmin", "read_garmin_xml"),
    "igc": ("igc", "read_igc"),
    "takeout-records": ("takeout", "read_takeout"),
    "takeout-timeline": ("takeout", "read_takeout"),
}


def _reader(fmt: str) -> Callable[[Path, str], Builder]:
    module, function = _READERS[fmt]
    return getattr(importlib.import_module(f"{__name__}.{module}"), function)


def read_track(path: str | os.PathLike[str], warnings: list[str] | None = None) -> Fixes:
    """The timed fixes of one track file, sorted by time (`sources` = (path,)).

    Raises TrackError for a missing, unknown, oversized or malformed file. Notes about the file (points
    without a time, void sentences skipped, no timed point at all) are appended to `warnings` if given.
    """
    p = Path(path)
    name = str(p)
    fmt = detect_format(p)
    if fmt is None:
        raise fail(name, None, f"not a track format geotag reads ({', '.join(FORMAT_NAMES)})")
    builder = _reader(fmt)(p, name)
    fixes = builder.fixes(name)
    if warnings is not None:
        if not len(fixes):
            warnings.append(f"{name}: no point with a time; not used")
        elif builder.untimed:
            warnings.append(f"{name}: {builder.untimed} point(s) without a time; not used")
        warnings.extend(f"{name}: {note}" for note in builder.notes)
    return fixes


def _walk(root: Path, seen: set[tuple[int, int]]) -> Iterable[Path]:
    try:
        st = root.stat()
        key = (st.st_dev, st.st_ino)
        if key in seen:
            return
        seen.add(key)
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            if entry.is_dir(follow_symlinks=True):
                yield from _walk(Path(entry.path), seen)
            elif entry.is_file(follow_symlinks=True) and Path(entry.name).suffix.lower() in TRACK_EXTENSIONS:
                yield Path(entry.path)
        except OSError:
            continue


def read_tracks(paths: Iterable[str | os.PathLike[str]]) -> TrackSet:
    """Every track under `paths` (files and folders), merged by time.

    A file named explicitly must be a readable track (else TrackError). A file found in a folder whose
    content is no track format (a .json or .csv that is something else) is skipped with a warning; one
    that is a track but malformed is still an error: a half-read history would mislead.
    """
    parts: list[Fixes] = []
    files: list[str] = []
    warnings: list[str] = []
    seen_files: set[tuple[int, int]] = set()
    seen_dirs: set[tuple[int, int]] = set()
    for item in paths:
        p = Path(item)
        if p.is_dir():
            found = [(f, False) for f in _walk(p, seen_dirs)]
            if not found:
                warnings.append(f"{p}: no track files in this folder")
        elif p.exists():
            found = [(p, True)]
        else:
            raise TrackError(f"{p}: no such file or folder")
        for path, named in found:
            try:
                st = path.stat()
                key: tuple[int, int] | None = (st.st_dev, st.st_ino)
            except OSError:
                key = None
            if key is not None:
                if key in seen_files:
                    continue
                seen_files.add(key)
            if not named and detect_format(path, by_extension=False) is None:
                warnings.append(f"{path}: not a track format geotag reads; skipped")
                continue
            parts.append(read_track(path, warnings))
            files.append(str(path))
    return TrackSet(fixes=Fixes.concat(parts), files=tuple(files), warnings=tuple(warnings))


def filter_quality(
    fixes: Fixes,
    *,
    max_hdop: float | None = None,
    max_pdop: float | None = None,
    min_sats: float | None = None,
    max_accuracy_m: float | None = None,
) -> Fixes:
    """The fixes no worse than each limit given (exiftool's GeoMaxHDOP, GeoMaxPDOP, GeoMinSats; and a
    horizontal accuracy radius for phone histories). A fix whose quality is unknown (NaN) is kept, as
    exiftool keeps fixes without the value."""
    keep = np.ones(len(fixes), dtype=bool)
    for column, limit, worse in (
        (fixes.hdop, max_hdop, np.greater),
        (fixes.pdop, max_pdop, np.greater),
        (fixes.sats, min_sats, np.less),
        (fixes.accuracy_m, max_accuracy_m, np.greater),
    ):
        if limit is not None:
            keep &= ~worse(column, limit)  # NaN compares False: unknown quality is kept
    return fixes if keep.all() else fixes.take(keep)
