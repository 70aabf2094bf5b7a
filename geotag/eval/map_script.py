"""Browser code both interactive maps share (the report's map page and `geotag review`): the basemap
(tiles or offline borders and place names), the "lat, lon" parser, the error palette of points and
clusters. Plain JavaScript in Python strings, inlined by each page: there is no build step.
"""

from __future__ import annotations

BASEMAP_CSS = """
.leaflet-pane.leaflet-gtlabels-pane { pointer-events: none; }
.gt-place { white-space: nowrap; font: 11px system-ui, sans-serif; color: #222;
            text-shadow: 0 0 2px #fff, 0 0 2px #fff, 0 0 3px #fff; }
.gt-place i { display: inline-block; width: 5px; height: 5px; border-radius: 3px; background: #444;
              margin-right: 3px; vertical-align: middle; }
.gt-place.big { font-weight: 600; font-size: 12px; }
.gt-country { white-space: nowrap; font: 600 11px system-ui, sans-serif; color: #6b6b6b;
              letter-spacing: .08em; text-transform: uppercase; text-shadow: 0 0 2px #f4f1ea; }
"""

BASEMAP_JS = r"""
// Tiles where the user allowed the network, else borders and place names (geotag.eval.basemap).
function gtAttribution(map, text) {
  if (!map.gtAttr) map.gtAttr = L.control.attribution({prefix: false}).addTo(map);
  map.gtAttr.addAttribution(text);
}
function gtTiles(map, tiles) {
  const layer = L.tileLayer(tiles.url, {maxZoom: tiles.maxZoom, maxNativeZoom: tiles.maxZoom,
                                        crossOrigin: false});
  layer.addTo(map);
  gtAttribution(map, tiles.attribution);
  return layer;
}
function gtBorders(map, geojson, renderer) {
  return L.geoJSON(geojson, {interactive: false, renderer,
    style: {color: "#8a8a8a", weight: 0.7, fillColor: "#f4f1ea", fillOpacity: 1}}).addTo(map).bringToBack();
}
// towns by zoom: the largest first; at most MAX_LABELS in view, so any zoom stays quick
const GT_MIN_POP = [[2, 8e6], [3, 4e6], [4, 1.5e6], [5, 6e5], [6, 2.5e5], [7, 1e5], [8, 4e4], [99, 0]];
const GT_MAX_LABELS = 250;
function gtLabels(map, labels) {
  if (!map.getPane("gtlabels")) map.createPane("gtlabels").style.zIndex = 450;
  const layer = L.layerGroup().addTo(map);
  function label(cls, text, dot) {
    const el = document.createElement("div");
    el.className = cls;
    if (dot) el.appendChild(document.createElement("i"));
    el.appendChild(document.createTextNode(text));  // names are data: never parsed as HTML
    return L.divIcon({className: "", html: el, iconSize: null, iconAnchor: dot ? [4, 8] : [30, 7]});
  }
  // a label is placed only where it overlaps none placed before it (countries largest first, then towns
  // most populous first): an estimate of its box in screen pixels is enough to keep names legible
  function fits(boxes, a, o, text, charPx, anchorX) {  // anchorX: the icon's anchor (px from its left)
    const p = map.latLngToContainerPoint([a, o]), x = p.x - anchorX, w = text.length * charPx + 8;
    const box = [x - 2, p.y - 9, x + w + 2, p.y + 9];
    if (boxes.some(q => box[0] < q[2] && q[0] < box[2] && box[1] < q[3] && q[1] < box[3])) return false;
    boxes.push(box);
    return true;
  }
  function draw() {
    layer.clearLayers();
    const z = map.getZoom(), b = map.getBounds().pad(0.05), boxes = [];
    const minPop = GT_MIN_POP.find(([zz]) => z <= zz)[1];
    if (z <= 5) for (const [a, o, name] of labels.countries)
      if (b.contains([a, o]) && fits(boxes, a, o, name, 9, 30))
        L.marker([a, o], {icon: label("gt-country", name, false), pane: "gtlabels",
                          interactive: false, keyboard: false}).addTo(layer);
    let n = 0;
    for (const [a, o, name, pop] of labels.places) {
      if (pop < minPop || n >= GT_MAX_LABELS) break;
      if (!b.contains([a, o]) || !fits(boxes, a, o, name, pop >= 1e6 ? 7.5 : 6.5, 4)) continue;
      L.marker([a, o], {icon: label("gt-place" + (pop >= 1e6 ? " big" : ""), name, true), pane: "gtlabels",
                        interactive: false, keyboard: false}).addTo(layer);
      n++;
    }
    map.getContainer().dataset.labels = String(layer.getLayers().length);
  }
  map.on("zoomend moveend", draw);
  draw();
  gtAttribution(map, labels.attribution);
  return layer;
}
"""

COORDS_JS = r"""
// "48.8584, 2.2945", "48.8584 2.2945", "48.8584 N 2.2945 E", "48°51'30"N 2°17'40"E" -> [lat, lon] or null
function gtParseLatLon(text) {
  const s = String(text).trim().replace(/[\u2032\u2019\u00b4]/g, "'").replace(/[\u2033\u201d]|''/g, '"')
    .replace(/[º˚]/g, "°");
  const ok = (a, o) => Number.isFinite(a) && Number.isFinite(o) && Math.abs(a) <= 90 && Math.abs(o) <= 180
    ? [a, o] : null;
  let m = s.match(/^\(?\s*([+-]?\d+(?:\.\d+)?)\s*°?\s*(?:[,;]\s*|\s+)([+-]?\d+(?:\.\d+)?)\s*°?\s*\)?$/);
  if (m) return ok(parseFloat(m[1]), parseFloat(m[2]));
  const part = new RegExp("(\\d+(?:[.,]\\d+)?)\\s*(?:°\\s*(?:(\\d+(?:[.,]\\d+)?)\\s*'\\s*)?"
                          + '(?:(\\d+(?:[.,]\\d+)?)\\s*"\\s*)?)?([NSEW])', "gi");
  const got = [...s.matchAll(part)];
  if (got.length !== 2 || s.replace(part, "").replace(/[\s,;]/g, "") !== "") return null;
  const num = x => x === undefined ? 0 : parseFloat(x.replace(",", "."));
  let lat = null, lon = null;
  for (const g of got) {
    const v = (num(g[1]) + num(g[2]) / 60 + num(g[3]) / 3600) * ("SWsw".includes(g[4]) ? -1 : 1);
    if ("NSns".includes(g[4])) { if (lat !== null) return null; lat = v; }
    else { if (lon !== null) return null; lon = v; }
  }
  return lat === null || lon === null ? null : ok(lat, lon);
}
"""

PALETTE_JS = r"""
// one palette for points, clusters and the legend: error in km (truth distance, else the error radius)
const GT_ERR = [[1, "#1a9850", "< 1 km"], [25, "#66bd63", "< 25 km"], [200, "#d9ef8b", "< 200 km"],
                [750, "#fdae61", "< 750 km"], [2500, "#f46d43", "< 2500 km"],
                [Infinity, "#a50026", ">= 2500 km"]];
const GT_CONF = [[0.1, "#a50026", "conf < 0.1"], [0.3, "#f46d43", "< 0.3"], [0.5, "#fdae61", "< 0.5"],
                 [0.7, "#d9ef8b", "< 0.7"], [0.9, "#66bd63", "< 0.9"], [Infinity, "#1a9850", ">= 0.9"]];
const GT_UNKNOWN = "#9e9e9e";
function gtColour(scale, v) {
  if (v === null || v === undefined || Number.isNaN(v)) return GT_UNKNOWN;
  for (const [lim, col] of scale) if (v < lim) return col;
  return GT_UNKNOWN;
}
function gtMedian(xs) {
  const v = xs.filter(x => x !== null && x !== undefined && !Number.isNaN(x)).sort((a, b) => a - b);
  if (!v.length) return null;
  const h = v.length >> 1;
  return v.length % 2 ? v[h] : (v[h - 1] + v[h]) / 2;
}
"""
