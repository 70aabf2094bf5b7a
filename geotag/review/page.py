"""The `geotag review` page: the photo beside the map, its candidates and error radius, decision keys.

Plain HTML and JavaScript, no build step; Leaflet comes from the server's /assets/ (geotag.eval.leaflet).
Keys: a or Enter accept the pin; 1-9 move the pin to candidate k; r reject; n / right arrow next,
p / left arrow previous; u toggles 'undecided only', w 'without GPS'; z zooms onto the pin, o back to
the overview, g types a "lat, lon" (pasting one anywhere does the same). Filters: confidence, folder,
country, and source (where the position came from: track, sibling, model, ...). The pin can be dragged
at any zoom; accepting then saves the moved position. Every decision is POSTed at once and shown as
saved only when the server says so. The page opens on the first photo a decision can be written for.
"""

from __future__ import annotations

import html

from geotag.eval import map_script
from geotag.eval.basemap import Tiles
from geotag.eval.leaflet import ASSET_NAMES, json_for_script


def page_html(title: str, tiles: Tiles | None = None) -> str:
    """The page shell: it holds no token and no data; its script takes the token from the tab's
    sessionStorage (put there by the login answer, see server.py) and fetches rows and photos with it.
    `tiles`: the tile server of the basemap (None: the offline borders and place names)."""
    css = "".join(f'<link rel="stylesheet" href="/assets/{n}">' for n in ASSET_NAMES if n.endswith(".css"))
    js = "".join(f'<script src="/assets/{n}"></script>' for n in ASSET_NAMES if n.endswith(".js"))
    js += f'<script id="tiles" type="application/json">{json_for_script(tiles and tiles.for_page())}</script>'
    js += f"<style>{map_script.BASEMAP_CSS}</style>"
    js += f"<script>{map_script.BASEMAP_JS}{map_script.COORDS_JS}</script>"
    return PAGE.replace("%TITLE%", html.escape(title)).replace("%HEAD%", css + js)


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>geotag review: %TITLE%</title>
%HEAD%
<style>
html, body { margin: 0; height: 100%; font: 14px system-ui, sans-serif; }
#app { display: grid; grid-template-columns: minmax(320px, 40%) 1fr; grid-template-rows: auto 1fr auto;
       height: 100%; }
#bar { grid-column: 1 / 3; padding: 6px 10px; background: #2c3e50; color: #fff; display: flex; gap: 14px;
       align-items: center; flex-wrap: wrap; }
#bar select, #bar input { font: inherit; }
#photo { background: #111; display: flex; align-items: center; justify-content: center; overflow: hidden; }
#photo img { max-width: 100%; max-height: 100%; object-fit: contain; }
#map { background: #cfe3f0; }
#info { grid-column: 1 / 3; padding: 6px 10px; background: #f4f4f4; display: flex; gap: 10px;
        align-items: center; flex-wrap: wrap; }
button { font: inherit; padding: 3px 10px; }
#status.saved { color: #1a7f37; } #status.error { color: #b00020; font-weight: 600; }
.cand { background: #6c3483; color: #fff; border-radius: 10px; width: 20px; height: 20px; text-align: center;
        line-height: 20px; font-size: 12px; font-weight: 700; border: 1px solid #fff; }
.pin { width: 18px; height: 18px; background: #d62728; border: 2px solid #fff; border-radius: 50% 50% 50% 0;
       transform: rotate(-45deg); box-shadow: 0 1px 4px rgba(0, 0, 0, .5); cursor: move; }
kbd { background: #fff; border: 1px solid #bbb; border-radius: 3px; padding: 0 4px; }
</style></head>
<body><div id="app">
<div id="bar"><b>geotag review</b><span>%TITLE%</span>
 <label>min confidence <input id="fconf" type="number" min="0" max="1" step="0.05" value="0"
  style="width:5em"></label>
 <label>folder <select id="ffolder"><option value="">all</option></select></label>
 <label>country <select id="fcountry"><option value="">all</option></select></label>
 <label>source <select id="fsource"><option value="">all</option></select></label>
 <label><input id="fundecided" type="checkbox"> undecided only</label>
 <label title="w: photos without measured GPS only (those write-exif will write)"><input id="fnogps"
  type="checkbox"> without GPS</label>
 <span id="count"></span></div>
<div id="photo"><img id="img" alt=""></div>
<div id="map"></div>
<div id="info"><span id="where"></span>
 <button id="accept" title="a / Enter">Accept pin</button>
 <button id="reject" title="r">Reject</button>
 <button id="prev" title="p / left">Previous</button><button id="next" title="n / right">Next</button>
 <input id="coords" placeholder="lat, lon (g)" title="type or paste a position, then Enter" size="22">
 <button id="zoompin" title="z">Zoom to pin</button>
 <span id="decision"></span><span id="status"></span>
 <span class="small"><kbd>a</kbd> accept <kbd>1</kbd>-<kbd>9</kbd> candidate <kbd>r</kbd> reject
 <kbd>n</kbd>/<kbd>p</kbd> next/previous <kbd>z</kbd> zoom to pin <kbd>o</kbd> overview <kbd>g</kbd> type a
 position (or paste one), drag the pin to move it</span></div>
</div>
<script>
"use strict";
const TOKEN = sessionStorage.getItem("geotag-review-token");
const $ = id => document.getElementById(id);
if (location.pathname !== "/" || location.search) history.replaceState(null, "", "/");
const api = (path, opts = {}) =>
  fetch(path, {...opts, headers: {...(opts.headers || {}), "X-Geotag-Token": TOKEN}});
let photoUrl = null, photoSeq = 0;
async function loadPhoto(i) {
  const seq = ++photoSeq;
  try {
    const res = await api("/photo/" + i);
    if (!res.ok) throw new Error(res.status);
    const blob = await res.blob();
    if (seq !== photoSeq) return;
    if (photoUrl) URL.revokeObjectURL(photoUrl);
    photoUrl = URL.createObjectURL(blob);
    $("img").src = photoUrl;
  } catch (e) { if (seq === photoSeq) $("img").removeAttribute("src"); }
}
let ROWS = [], view = [], pos = 0, pin = null, pinSource = "prediction";
const TILES = JSON.parse($("tiles").textContent);
const MAX_ZOOM = TILES ? TILES.maxZoom : 18;
const map = L.map("map", {worldCopyJump: true, attributionControl: false, minZoom: 1, maxZoom: MAX_ZOOM})
  .setView([20, 0], 2);
const marks = L.layerGroup().addTo(map);
if (TILES) gtTiles(map, TILES);
else {
  fetch("/basemap.json").then(r => r.json()).then(g => gtBorders(map, g));
  fetch("/labels.json").then(r => r.json()).then(g => gtLabels(map, g));
}

function filtered() {
  const c = parseFloat($("fconf").value) || 0, f = $("ffolder").value, k = $("fcountry").value;
  const u = $("fundecided").checked, s = $("fsource").value, g = $("fnogps").checked;
  return ROWS.filter(r => r.ok && (r.conf === null ? c <= 0 : r.conf >= c) && (!f || r.folder === f)
                    && (!k || r.country === k) && (!s || r.source === s) && (!u || !r.decision)
                    && (!g || !r.has_gps))
             .map(r => r.i);
}
function refilter(keep) {
  const cur = view[pos];
  view = filtered();
  const at = keep === undefined ? view.indexOf(cur) : -1;
  const after = view.findIndex(i => i > cur);  // the current row filtered out: the next one that is in
  pos = at >= 0 ? at : after >= 0 ? after : Math.max(0, view.length - 1);
  show();
}
function fillSelect(id, values) {
  const s = $(id);
  [...new Set(values.filter(v => v))].sort().forEach(v => { const o = document.createElement("option");
    o.value = v; o.textContent = v; s.appendChild(o); });
}
function decisionText(d) {
  if (!d) return "undecided";
  return d.action === "reject" ? "rejected" : "accepted (" + d.source + ") at " + d.lat.toFixed(4) + ", "
    + d.lon.toFixed(4);
}
function show() {
  marks.clearLayers();
  $("count").textContent = view.length ? (pos + 1) + " / " + view.length : "no photos match";
  if (!view.length) { $("img").removeAttribute("src"); $("where").textContent = ""; pin = null; return; }
  const r = ROWS[view[pos]];
  loadPhoto(r.i);
  $("img").alt = r.path;
  $("where").textContent = r.path + "  confidence " + (r.conf === null ? "?" : r.conf.toFixed(3))
    + (r.radius_km === null ? "" : "  radius " + r.radius_km.toFixed(0) + " km")
    + (r.country ? "  " + r.country : "")
    + (r.source ? "  source " + r.source : "")
    + (r.source && r.fix_dt_s !== null ? ", " + r.fix_dt_s.toFixed(0) + " s from a fix" : "")
    + (r.has_gps ? "  (has GPS: write-exif will not replace it)" : "");
  $("decision").textContent = decisionText(r.decision);
  $("status").textContent = ""; $("status").className = "";
  const at = r.decision && r.decision.action === "accept" ? [r.decision.lat, r.decision.lon] : [r.lat, r.lon];
  pinSource = r.decision && r.decision.action === "accept" ? r.decision.source : "prediction";
  if (r.radius_km) L.circle([r.lat, r.lon], {radius: r.radius_km * 1000, color: "#2c3e50", weight: 1,
                                            fillOpacity: 0.08, interactive: false}).addTo(marks);
  const spread = spreadOffsets([[r.lat, r.lon], ...r.topk]).slice(1);  // the pin takes the slot above
  r.topk.forEach(([a, b, s], j) => {
    const [dx, dy] = spread[j];
    const icon = L.divIcon({className: "", iconSize: [20, 20], iconAnchor: [10 - dx, 10 - dy],
                            html: '<div class="cand">' + (j + 1) + "</div>"});
    const m = L.marker([a, b], {icon, title: "candidate " + (j + 1)});
    m.on("click", () => pick(j));
    m.addTo(marks);
  });
  pin = L.marker(at, {draggable: true, title: "pin", autoPan: true, zIndexOffset: 1000,
                      icon: L.divIcon({className: "", html: '<div class="pin"></div>', iconSize: [22, 22],
                                       iconAnchor: [11, 22]})}).addTo(marks);
  pin.on("dragend", () => { pinSource = "moved"; $("status").textContent = "pin moved: press a to accept"; });
  overview(r);
}
function overview(r) {  // the prediction, its candidates and its error radius in view
  map.invalidateSize();
  const pts = [[r.lat, r.lon], ...r.topk.map(([a, b]) => [a, b])];
  map.fitBounds(L.latLngBounds(pts).pad(0.5), {maxZoom: 9, animate: false});
  if (r.radius_km) {
    const b = L.latLng(r.lat, r.lon).toBounds(r.radius_km * 2500).extend(L.latLngBounds(pts));
    map.fitBounds(b, {maxZoom: 9, animate: false, padding: [30, 30]});
  }
}
// placing the pin precisely: zoom onto it (z, again for closer), back to the overview (o), or a typed
// or pasted "lat, lon" (g focuses the box); dragging works at whatever zoom the map is at
function zoomToPin() {
  if (!pin) return;
  map.setView(pin.getLatLng(), Math.min(MAX_ZOOM, Math.max(map.getZoom() + 3, 6)), {animate: false});
}
function placeAt(text) {
  const ll = gtParseLatLon(text);
  if (!pin || !ll) {
    $("status").textContent = "not a position: " + String(text).slice(0, 60) + ' (try "48.8584, 2.2945")';
    $("status").className = "error";
    return false;
  }
  pin.setLatLng(ll);
  pinSource = "moved";
  map.setView(ll, Math.max(map.getZoom(), 12), {animate: false});
  $("status").textContent = "pin at " + ll[0].toFixed(6) + ", " + ll[1].toFixed(6) + ": press a to accept";
  $("status").className = "";
  return true;
}
// candidates at one coordinate (or at the pin's) would hide each other: their discs are set out on a
// small circle around it (the positions stay exact), so each can be seen and clicked
function spreadOffsets(points) {
  const groups = new Map();
  points.forEach(([a, b], j) => {
    const key = a.toFixed(6) + "," + b.toFixed(6);
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(j);
  });
  const out = points.map(() => [0, 0]);
  for (const members of groups.values()) {
    if (members.length < 2) continue;
    const radius = 9 + 4 * members.length;
    members.forEach((j, k) => {
      const t = -Math.PI / 2 + 2 * Math.PI * k / members.length;
      out[j] = [Math.round(radius * Math.cos(t)), Math.round(radius * Math.sin(t))];
    });
  }
  return out;
}
function pick(j) {
  const r = ROWS[view[pos]];
  if (!r || j >= r.topk.length) return;
  pin.setLatLng([r.topk[j][0], r.topk[j][1]]);
  pinSource = j === 0 ? "prediction" : "candidate";
  $("status").textContent = "pin on candidate " + (j + 1) + ": press a to accept";
}
async function decide(action) {
  const r = ROWS[view[pos]];
  if (!r) return;
  const at = pin.getLatLng(), ll = Math.abs(at.lng) > 180 ? at.wrap() : at;  // wrap() rounds 2.2945
  const body = {row: r.i, action, source: action === "accept" ? pinSource : "prediction",
                lat: action === "accept" ? ll.lat : null, lon: action === "accept" ? ll.lng : null};
  $("status").textContent = "saving..."; $("status").className = "";
  try {
    const res = await api("/api/decide", {method: "POST", headers: {"Content-Type": "application/json"},
                          body: JSON.stringify(body)});
    const out = await res.json();
    if (!res.ok) throw new Error(out.error || res.status);
    r.decision = {action: out.action, lat: out.lat, lon: out.lon, source: out.source};
    $("status").textContent = "saved"; $("status").className = "saved";
    document.body.dataset.saved = String((+document.body.dataset.saved || 0) + 1);
    setTimeout(() => step(1), 150);
  } catch (e) {
    $("status").textContent = "NOT saved: " + e.message; $("status").className = "error";
  }
}
function step(d) {
  if ($("fundecided").checked) { refilter(); return; }
  pos = Math.max(0, Math.min(view.length - 1, pos + d)); show();
}
$("coords").addEventListener("keydown", e => {
  if (e.key === "Enter") {
    e.preventDefault();
    if (placeAt($("coords").value)) $("coords").blur();
  } else if (e.key === "Escape") $("coords").blur();
});
document.addEventListener("paste", e => {  // a position pasted anywhere but a text box moves the pin
  if (["INPUT", "SELECT", "TEXTAREA"].includes(e.target.tagName)) return;
  const text = (e.clipboardData || window.clipboardData).getData("text");
  if (text) { e.preventDefault(); placeAt(text); }
});
$("zoompin").onclick = zoomToPin;
$("accept").onclick = () => decide("accept");
$("reject").onclick = () => decide("reject");
$("next").onclick = () => step(1);
$("prev").onclick = () => step(-1);
["fconf", "ffolder", "fcountry", "fsource", "fundecided", "fnogps"]
  .forEach(id => $(id).addEventListener("change", () => { refilter(); if (id !== "fconf") $(id).blur(); }));
document.addEventListener("keydown", e => {
  if (["INPUT", "SELECT"].includes(e.target.tagName) || e.ctrlKey || e.metaKey || e.altKey) return;
  const k = e.key;
  if (k === "a" || k === "Enter") decide("accept");
  else if (k === "r" || k === "x") decide("reject");
  else if (k === "n" || k === "ArrowRight") step(1);
  else if (k === "p" || k === "ArrowLeft") step(-1);
  else if (k === "u") { $("fundecided").checked = !$("fundecided").checked; refilter(); }
  else if (k === "w") { $("fnogps").checked = !$("fnogps").checked; refilter(); }
  else if (k >= "1" && k <= "9") pick(+k - 1);
  else if (k === "z") zoomToPin();
  else if (k === "o") { if (view.length) overview(ROWS[view[pos]]); }
  else if (k === "g") { $("coords").focus(); $("coords").select(); }
  else return;
  e.preventDefault();
});
if (!TOKEN) document.body.textContent = "Not signed in: open the URL geotag review printed.";
else api("/api/rows").then(r => r.json()).then(d => {
  ROWS = d.rows;
  fillSelect("ffolder", ROWS.map(r => r.folder));
  fillSelect("fcountry", ROWS.map(r => r.country));
  fillSelect("fsource", ROWS.map(r => r.source));
  view = filtered();
  // start on the first photo a decision can be written for: undecided, without measured GPS
  const writable = view.findIndex(i => !ROWS[i].decision && !ROWS[i].has_gps);
  const first = writable >= 0 ? writable : view.findIndex(i => !ROWS[i].decision);
  pos = first >= 0 ? first : 0;
  show();
  document.body.dataset.ready = "1";
});
</script></body></html>
"""
