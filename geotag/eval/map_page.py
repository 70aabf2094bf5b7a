"""The report's interactive map (`map-N.html` beside index.html): pan, zoom, hover, offline.

Why a page of its own: the static PNG stays for papers; this one is for looking. Leaflet and
markercluster are inlined (geotag.eval.leaflet), the basemap is the Natural Earth country layer, and the
rows travel as one columnar JSON array, so 50,000 rows make a page of a few MB that clusters in the
browser. Points are coloured by error (by confidence where there is no truth) or by where the position
came from (`source`: track, sibling, model, exif, fused; the default when time placed any), and a
filter shows only the sources ticked; lines to the truth, the
truth itself, and for a clicked point its top-k candidates and error radius are layers to switch on.
Tooltips show the photo (loaded only on hover, by a path relative to the report), path and confidence.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import quote as url_quote

import duckdb

from geotag.eval import basemap, leaflet, map_script, report_data
from geotag.eval.basemap import Tiles
from geotag.eval.report_data import Source

MAX_TOPK = 10
MAX_ROWS = 50_000  # beyond this a deterministic sample, so the page still opens (measured: ~10 s)


def _num(value: Any, digits: int = 5) -> float | None:
    if value is None:
        return None
    value = float(value)
    return round(value, digits) if math.isfinite(value) else None


def map_rows(
    con: duckdb.DuckDBPyConnection, src: Source, out_dir: Path, thumbs: dict[str, str] | None = None
) -> dict[str, list[Any]]:
    """The page's data, column by column: every row with a prediction or a truth."""
    from geotag.eval.report_data import resolve_photo

    where = "NOT is_error AND (has_pred OR has_gt)"
    n = int(report_data.query(con, src, f"SELECT count(*) AS n FROM r WHERE {where}")[0]["n"])
    sample = f" ORDER BY hash(path, pred_lat, pred_lon) LIMIT {MAX_ROWS}" if n > MAX_ROWS else ""
    rows = report_data.query(
        con,
        src,
        "SELECT path, pred_lat, pred_lon, gt_lat, gt_lon, d, confidence, error_km, source, fix_dt_s, "
        f"list_slice(topk, 1, {MAX_TOPK}) AS topk, is_measured FROM r WHERE {where}" + sample,
    )
    thumbs = thumbs or {}
    old_file = "source" not in src.columns  # before schema 3 every position came from a visual model
    names = ("lat", "lon", "glat", "glon", "d", "c", "r", "s", "t", "p", "img", "k", "m")
    cols: dict[str, list[Any]] = {k: [] for k in names}
    base = src.path.parent
    for row in rows:
        path = row["path"] or ""
        cols["lat"].append(_num(row["pred_lat"]))
        cols["lon"].append(_num(row["pred_lon"]))
        cols["glat"].append(_num(row["gt_lat"]))
        cols["glon"].append(_num(row["gt_lon"]))
        cols["d"].append(_num(row["d"], 3))
        cols["c"].append(_num(row["confidence"], 4))
        cols["r"].append(_num(row["error_km"], 3))
        has_pred = row["pred_lat"] is not None and row["pred_lon"] is not None
        cols["s"].append(row["source"] or ("model" if old_file and has_pred else None))
        cols["t"].append(_num(row["fix_dt_s"], 1))
        cols["p"].append(path)
        cols["m"].append(1 if row["is_measured"] else 0)  # measured GPS kept by --skip-tagged
        img = thumbs.get(path)
        if img is None:
            photo = resolve_photo(path, base)
            rel = os.path.relpath(photo.absolute(), out_dir.absolute()) if photo else ""
            img = url_quote(os.fsencode(rel))  # the name's bytes: also one that is not UTF-8
        cols["img"].append(img)
        topk = row["topk"] or []
        cols["k"].append(
            [
                [_num(t["lat"]), _num(t["lon"]), _num(t["score"], 4)]
                for t in topk[:MAX_TOPK]
                if t and _num(t["lat"]) is not None and _num(t["lon"]) is not None
            ]
        )
    cols["total"] = [n]  # rows the file has; more than shown when sampled
    return cols


def page_html(title: str, data: dict[str, list[Any]], tiles: Tiles | None = None) -> str:
    """The whole self-contained page; with `tiles` its basemap comes from that tile server instead of
    the inlined borders and place names."""
    offline = tiles is None
    return PAGE.substitute(
        title=_escape(title),
        head=leaflet.inline_head(),
        mapcss=map_script.BASEMAP_CSS,
        mapjs=map_script.BASEMAP_JS + map_script.PALETTE_JS,
        basemap=leaflet.script_safe(leaflet.basemap_geojson()) if offline else "null",
        labels=leaflet.script_safe(basemap.labels_json()) if offline else "null",
        tiles=leaflet.json_for_script(None if offline else tiles.for_page()),
        data=leaflet.json_for_script(data),
    )


def _escape(text: str) -> str:
    import html

    return html.escape(text, quote=True)


PAGE = Template(
    """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
$head
<style>
html, body { margin: 0; height: 100%; font: 14px system-ui, sans-serif; }
#map { position: absolute; inset: 0; background: #cfe3f0; }
.legend { background: #fff; padding: 6px 9px; border-radius: 4px; line-height: 1.5; }
.legend i { display: inline-block; width: 11px; height: 11px; border-radius: 6px; margin-right: 5px; }
.gt-cluster-icon { background: none; border: none; }
.gt-cluster { width: 100%; height: 100%; border-radius: 50%; border: 2px solid #333;
              box-sizing: border-box; display: flex; align-items: center; justify-content: center;
              font: 600 12px system-ui, sans-serif;
              color: #111; text-shadow: 0 0 2px #fff, 0 0 2px #fff; opacity: .9; }
.gt-truth { background: #fff; border-color: #1f4e9e; color: #1f4e9e; }
.tip img { display: block; max-width: 180px; max-height: 140px; margin-bottom: 4px; }
.tip { max-width: 260px; white-space: normal; }
#title { position: absolute; z-index: 1000; left: 55px; top: 10px; background: #fff; padding: 4px 9px;
         border-radius: 4px; font-weight: 600; }
.sources { background: #fff; padding: 6px 9px; border-radius: 4px; line-height: 1.6; }
.sources label { display: block; cursor: pointer; }
$mapcss
</style></head>
<body><div id="map"></div><div id="title">$title</div>
<script id="basemap" type="application/json">$basemap</script>
<script id="labels" type="application/json">$labels</script>
<script id="tiles" type="application/json">$tiles</script>
<script>$mapjs</script>
<script id="rows" type="application/json">$data</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("rows").textContent);
const N = D.lat.length;
const TILES = JSON.parse(document.getElementById("tiles").textContent);
const canvas = L.canvas({padding: 0.5});  // the one canvas: a second one on top would hide the points
const map = L.map("map", {preferCanvas: true, renderer: canvas, worldCopyJump: true,
                          attributionControl: false, minZoom: 1, maxZoom: TILES ? TILES.maxZoom : 18})
  .setView([20, 0], 2);
if (TILES) gtTiles(map, TILES);
else {
  gtBorders(map, JSON.parse(document.getElementById("basemap").textContent), canvas);
  gtLabels(map, JSON.parse(document.getElementById("labels").textContent));
}
// one palette (map_script.PALETTE_JS) for points, clusters and the legend: error in km, the distance to
// the truth where known, else the model's error radius; confidence only where a file has neither
const byError = D.d.some(v => v !== null) || D.r.some(v => v !== null);
const SCALE = byError ? GT_ERR : GT_CONF;
const value = i => byError ? (D.d[i] !== null ? D.d[i] : D.r[i]) : D.c[i];
// where each position came from (`source`): the points' colour by default when time placed any
const SRC = {track: "#1f78b4", sibling: "#33a02c", model: "#ff7f00", exif: "#6a3d9a", fused: "#e31a1c"};
const SRC_ORDER = ["track", "sibling", "model", "exif", "fused"];
const srcKey = i => D.s[i] === null ? "(none)" : D.s[i];
const srcCount = {};
for (let i = 0; i < N; i++) {  // measured GPS (D.m) has a layer of its own, not a source to filter
  if (D.lat[i] !== null && !D.m[i]) srcCount[srcKey(i)] = (srcCount[srcKey(i)] || 0) + 1;
}
const present = Object.keys(srcCount).sort((a, b) =>
  (SRC_ORDER.indexOf(a) + 1 || 99) - (SRC_ORDER.indexOf(b) + 1 || 99) || a.localeCompare(b));
let colourBy = present.some(k => k !== "model" && k !== "(none)") ? "source" : "value";
const colour = i => colourBy === "source" ? SRC[D.s[i]] || GT_UNKNOWN : gtColour(SCALE, value(i));
function km(v) {
  return v === null ? "?" : v < 1 ? (v * 1000).toFixed(0) + " m" : v.toFixed(v < 10 ? 1 : 0) + " km";
}
function esc(s) { return String(s).replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;",
  '"': "&quot;", "'": "&#39;"}[c])); }
function tip(i) {
  let h = '<div class="tip">';
  if (D.img[i]) h += '<img src="' + esc(D.img[i]) + '" alt="">';
  h += esc(D.p[i]) + "<br>confidence " + (D.c[i] === null ? "?" : D.c[i].toFixed(3));
  if (D.s[i] !== null) {
    h += "<br>source " + esc(D.s[i]) + (D.t[i] === null ? "" : ", " + D.t[i] + " s from a fix");
  }
  if (D.d[i] !== null) h += "<br>error " + km(D.d[i]);
  if (D.r[i] !== null) h += "<br>radius " + km(D.r[i]);
  return h + "</div>";
}
// one synchronous addLayers: markercluster 1.1 (the bundled one) breaks when the map zooms while it
// is still adding in chunks; 50,000 points take a few seconds once
// clusters take the median of their photos' values, in the points' palette; from zoom 12 only points
// at (nearly) one spot stay together, and clicking them spreads them out (spiderfy) so each can be picked
function clusterIcon(cluster) {
  const n = cluster.getChildCount(), med = gtMedian(cluster.getAllChildMarkers().map(m => value(m.rowIndex)));
  const size = n < 10 ? 30 : n < 100 ? 36 : n < 1000 ? 42 : 48;
  const el = document.createElement("div");
  el.className = "gt-cluster";
  el.style.background = gtColour(SCALE, med);
  el.dataset.median = med === null ? "" : String(med);
  el.title = n + " photos, median " + (byError ? "error " + km(med) : "confidence " +
             (med === null ? "?" : med.toFixed(2)));
  el.textContent = String(n);
  return L.divIcon({html: el, className: "gt-cluster-icon", iconSize: [size, size]});
}
// animate: false: the animated spiderfy needs its legs in SVG, whose layer would hide the canvas points
const points = L.markerClusterGroup({maxClusterRadius: z => z >= 12 ? 3 : 50, iconCreateFunction: clusterIcon,
                                     animate: false, spiderLegPolylineOptions: {weight: 1.5, color: "#222",
                                     opacity: 0.6, renderer: canvas, interactive: false},
                                     spiderfyDistanceMultiplier: 1.4});
points.on("spiderfied unspiderfied", e => {  // the faded cluster disc must not catch clicks meant for points
  if (e.cluster._icon) e.cluster._icon.style.pointerEvents = e.type === "spiderfied" ? "none" : "";
});
const truth = L.markerClusterGroup({maxClusterRadius: 40, iconCreateFunction: c => {  // not in the palette
  const el = document.createElement("div");
  el.className = "gt-cluster gt-truth";
  el.textContent = String(c.getChildCount());
  return L.divIcon({html: el, className: "gt-cluster-icon", iconSize: [30, 30]});
}});
const measured = L.markerClusterGroup({maxClusterRadius: 40});
const markers = [], truths = [], segs = [], kept = [];
for (let i = 0; i < N; i++) {
  if (D.m[i]) {  // the photo's own measured GPS (predict --skip-tagged, source = exif): no prediction
    const s = L.circleMarker([D.lat[i], D.lon[i]], {radius: 5, color: "#0b3d91", weight: 2,
                                                   fillColor: "#5dade2", fillOpacity: 1, renderer: canvas});
    s.bindTooltip(() => "measured GPS: " + esc(D.p[i]));
    kept.push(s);
    continue;
  }
  if (D.lat[i] !== null) {
    const m = L.circleMarker([D.lat[i], D.lon[i]], {radius: 6, color: "#333", weight: 1, fillColor: colour(i),
                                                   fillOpacity: 0.9, renderer: canvas});
    m.bindTooltip(() => tip(i), {direction: "top"});
    m.on("click", () => select(i));
    m.rowIndex = i;
    markers.push(m);
    if (D.glat[i] !== null) segs.push([[D.glat[i], D.glon[i]], [D.lat[i], D.lon[i]]]);
  }
  if (D.glat[i] !== null) {
    const t = L.circleMarker([D.glat[i], D.glon[i]], {radius: 4, color: "#1f4e9e", weight: 1,
                                                     fillColor: "#fff", fillOpacity: 1, renderer: canvas});
    t.bindTooltip(() => "truth: " + esc(D.p[i]));
    truths.push(t);
  }
}
if (markers.length) {  // before the clusters are built
  const la = D.lat.filter(v => v !== null), lo = D.lon.filter(v => v !== null);
  const lim = (xs, f) => xs.reduce((m, v) => f(m, v));
  const b = [[lim(la, Math.min), lim(lo, Math.min)], [lim(la, Math.max), lim(lo, Math.max)]];
  map.fitBounds(b, {maxZoom: 8, padding: [20, 20]});
}
points.addTo(map);
points.addLayers(markers);
document.body.dataset.clustered = "1";
truth.addLayers(truths);
measured.addTo(map);
measured.addLayers(kept);
const lines = L.polyline(segs, {color: "#c0392b", weight: 1, opacity: 0.6, renderer: canvas,
                               interactive: false});
const chosen = L.layerGroup().addTo(map);
function select(i) {
  chosen.clearLayers();
  window.geotagMap.selected = i;
  const at = [D.lat[i], D.lon[i]];
  if (D.r[i] !== null) L.circle(at, {radius: D.r[i] * 1000, color: "#2c3e50", weight: 1, fillOpacity: 0.08,
                                      renderer: canvas}).addTo(chosen);
  D.k[i].forEach(([a, b, s], j) => L.circleMarker([a, b], {radius: 5, color: "#6c3483", weight: 2,
      fillOpacity: 0.3, renderer: canvas}).bindTooltip("candidate " + (j + 1) + ": p=" + (s === null ? "?" :
      s.toFixed(3))).addTo(chosen));
  if (D.glat[i] !== null) L.polyline([[D.glat[i], D.glon[i]], at], {color: "#c0392b", weight: 2,
      renderer: canvas}).addTo(chosen);
}
L.control.layers(null, {"predictions": points, "measured GPS (not predicted)": measured, "truth": truth,
                        "prediction to truth lines": lines,
                        "clicked point: top-k and error radius": chosen}, {collapsed: false}).addTo(map);
const legend = L.control({position: "bottomleft"});
let legendDiv = null;
function legendHtml() {
  const bySource = colourBy === "source";
  const scale = bySource ? present.map(k => [0, SRC[k] || GT_UNKNOWN, k]) : SCALE;
  const title = bySource ? "source" : byError ? "error (to the truth, else the radius)" : "confidence";
  return "<b>" + title + "</b><br>" +
    scale.map(([, c, t]) => '<i style="background:' + c + '"></i>' + esc(t)).join("<br>") +
    "<br>" + '<i style="background:' + GT_UNKNOWN + '"></i>unknown' +
    "<br>numbered discs: clusters, in the colour<br>of the median " +
    (byError ? "error" : "confidence") + " of their photos" +
    '<br><i style="background:#fff;border:2px solid #1f4e9e"></i>truth' +
    (kept.length ? '<br><i style="background:#5dade2"></i>measured GPS (not predicted)' : "") +
    "<br>" + markers.length + " predictions, " + truths.length + " truths" +
    (kept.length ? ", " + kept.length + " measured" : "") +
    (D.total[0] > N ? "<br><b>a sample of " + N + " of " + D.total[0] + " rows</b>" : "");
}
legend.onAdd = () => {
  legendDiv = L.DomUtil.create("div", "legend");
  legendDiv.innerHTML = legendHtml();
  return legendDiv;
};
legend.addTo(map);
// where each position came from: colour by it, and show only the sources ticked
const shown = new Set(present);
function applySources() {
  points.clearLayers();
  points.addLayers(markers.filter(m => shown.has(srcKey(m.rowIndex))));
  markers.forEach(m => m.setStyle({fillColor: colour(m.rowIndex)}));
  if (legendDiv) legendDiv.innerHTML = legendHtml();
  document.body.dataset.shown = String(points.getLayers().length);
}
const sources = L.control({position: "topright"});
sources.onAdd = () => {
  const div = L.DomUtil.create("div", "sources");
  div.id = "sources";
  let h = '<b>colour by</b> <select id="colour-by"><option value="value">' +
    (byError ? "error" : "confidence") +
    '</option><option value="source">source</option></select><br><b>sources</b>';
  for (const k of present) h += '<label><input type="checkbox" class="source-filter" value="' + esc(k) +
    '" checked> <i style="display:inline-block;width:10px;height:10px;border-radius:5px;background:' +
    (SRC[k] || GT_UNKNOWN) + '"></i> ' + esc(k) + " (" + srcCount[k] + ")</label>";
  div.innerHTML = h;
  L.DomEvent.disableClickPropagation(div);
  div.querySelector("#colour-by").value = colourBy;
  div.querySelector("#colour-by").addEventListener("change", ev => {
    colourBy = ev.target.value;
    applySources();
  });
  div.querySelectorAll(".source-filter").forEach(box => box.addEventListener("change", () => {
    if (box.checked) shown.add(box.value); else shown.delete(box.value);
    applySources();
  }));
  return div;
};
if (present.length) sources.addTo(map);
document.body.dataset.shown = String(markers.length);
window.geotagMap = {map, points, truth, lines, chosen, measured, markers: markers.length,
                    measuredMarkers: kept.length, ready: true, sources: present, applySources};
document.body.dataset.ready = "1";
</script></body></html>
"""
)
