"""Leaflet for pages that work with no network: the JavaScript and CSS inlined, a country basemap.

Why folium-offline: it ships Leaflet 1.9 and Leaflet.markercluster inside the wheel (folium itself links
to CDNs), so a report opened on a plane, or the review app on a machine without internet, still has its
map. We take only those files from it and write our own small page script: a page with 50,000 points
must carry them as one JSON array, not as 50,000 generated statements. The basemap is the Natural Earth
admin-0 layer geotag already uses for country lookups (geotag.geo.places), simplified, as GeoJSON.
"""

from __future__ import annotations

import json
from functools import cache, lru_cache

from geotag.errors import InputError

BASEMAP_SIMPLIFY_DEG = 0.08  # ~9 km: fine at country scale, ~1.5 MB for the whole world

_FILES = {
    "leaflet.js": "https://cdn.jsdelivr.net/npm/leaflet@1.9.3/dist/leaflet.js",
    "leaflet.css": "https://cdn.jsdelivr.net/npm/leaflet@1.9.3/dist/leaflet.css",
    "markercluster.js": "https://cdnjs.cloudflare.com/ajax/libs/leaflet.markercluster/1.1.0/leaflet.markercluster.js",
    "markercluster.css": "https://cdnjs.cloudflare.com/ajax/libs/leaflet.markercluster/1.1.0/MarkerCluster.css",
    "markercluster-default.css": (
        "https://cdnjs.cloudflare.com/ajax/libs/leaflet.markercluster/1.1.0/MarkerCluster.Default.css"
    ),
}
ASSET_NAMES = tuple(_FILES)


@cache
def asset(name: str) -> str:
    """One bundled file's text (keys of ASSET_NAMES); InputError when folium-offline is missing."""
    try:
        from offlinefolium.elements import _res  # the wheel's bundle: original URL -> file text
    except ImportError as exc:
        raise InputError("interactive maps need folium-offline: pip install folium-offline") from exc
    try:
        return _res[_FILES[name]]
    except KeyError as exc:  # a folium-offline release that bundles other versions
        raise InputError(f"this folium-offline does not bundle {_FILES[name]}") from exc


def inline_head() -> str:
    """<style> and <script> elements with Leaflet and markercluster, for a self-contained page."""
    css = "".join(f"<style>{asset(n)}</style>" for n in ASSET_NAMES if n.endswith(".css"))
    js = "".join(f"<script>{_safe_script(asset(n))}</script>" for n in ASSET_NAMES if n.endswith(".js"))
    return css + js


def _safe_script(text: str) -> str:
    return text.replace("</script", "<\\/script")


@lru_cache(maxsize=1)
def basemap_geojson() -> str:
    """Country polygons as a GeoJSON FeatureCollection text; an empty collection where the borders are
    not installed (the map then shows the points on a plain background)."""
    from geotag.geo.places import country_index

    index = country_index()
    if index is None:
        return '{"type":"FeatureCollection","features":[]}'
    import shapely

    geoms = shapely.simplify(index.geoms, BASEMAP_SIMPLIFY_DEG, preserve_topology=True)
    texts = shapely.to_geojson(shapely.set_precision(geoms, 0.01))
    features = [
        f'{{"type":"Feature","properties":{json.dumps({"name": n})},"geometry":{t}}}'
        for t, n, g in zip(texts, index.names, geoms, strict=True)
        if not shapely.is_empty(g)
    ]
    return '{"type":"FeatureCollection","features":[' + ",".join(features) + "]}"


_SCRIPT_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def script_safe(json_text: str) -> str:
    """A JSON text made safe inside a <script> element: `<`, `>` and `&` as \\u escapes, so data such
    as a file named `<!--<script>.jpg` can neither end the element nor switch the HTML parser into its
    escaped states. Valid for any JSON text: those characters only occur inside its strings."""
    return json_text.translate(_SCRIPT_ESCAPES)


def json_for_script(value: object) -> str:
    """`value` as compact JSON for a <script> element (every page that embeds JSON uses this)."""
    return script_safe(json.dumps(value, separators=(",", ":"), allow_nan=False))
