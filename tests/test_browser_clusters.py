"""Issue 28 item 8.4 and 8.5 on the report's map: clusters take the colour of their photos' median error
(the distance to the truth where known, else the error radius) in the legend's palette, not their count;
photos at one coordinate spread out when their cluster is clicked, so each can be picked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from browser_util import browser, offline_page  # noqa: F401 - the fixture

from geotag.eval.html_report import build_report
from geotag.io.parquet import PredictionWriter

PARIS = [(48.85 + 0.01 * k, 2.35, r) for k, r in enumerate((0.5, 0.6, 0.7, 100.0, 3000.0))]  # median 0.7
SYDNEY = [(-33.87 + 0.01 * k, 151.21, r) for k, r in enumerate((3000.0, 3100.0, 2600.0))]  # median 3000
# radius 0.1 km, but the truth is ~440 km away: the distance counts, not the radius
LYON = [(45.76 + 0.01 * k, 4.84, 0.1) for k in range(3)]
TOKYO = [(35.6812, 139.7671, 10.0)] * 4  # four photos at one coordinate


def _preds(tmp_path: Path) -> tuple[Path, dict[str, list[int]]]:
    path = tmp_path / "preds.parquet"
    groups: dict[str, list[int]] = {}
    i = 0
    with PredictionWriter(path) as w:
        for name, pts in (("paris", PARIS), ("sydney", SYDNEY), ("lyon", LYON), ("tokyo", TOKYO)):
            for lat, lon, radius in pts:
                row = {
                    "image_id": f"id{i}",
                    "path": f"photos/{name}{i}.jpg",
                    "status": "ok",
                    "pred_lat": lat,
                    "pred_lon": lon,
                    "confidence": 0.5,
                    "error_km": radius,
                    "model": "geoclip",
                }
                if name == "lyon":
                    row.update(gt_lat=lat + 4.0, gt_lon=lon)  # ~445 km north
                w.write(row)
                groups.setdefault(name, []).append(i)
                i += 1
    return path, groups


def _clusters(page: Any) -> list[dict[str, Any]]:
    return page.evaluate(
        """() => { const out = [];
          geotagMap.points._featureGroup.eachLayer(l => {
            if (!(l instanceof L.MarkerCluster) || !l._icon) return;
            const el = l._icon.querySelector('.gt-cluster');
            out.push({n: l.getChildCount(), lat: l.getLatLng().lat, lon: l.getLatLng().lng,
                      median: el.dataset.median === '' ? null : parseFloat(el.dataset.median),
                      bg: getComputedStyle(el).backgroundColor}); });
          return out; }"""
    )


def _rgb(hexa: str) -> str:
    r, g, b = (int(hexa[k : k + 2], 16) for k in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


def test_browser_clusters_coloured_by_median_error_and_spread_at_one_spot(
    browser: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    preds, groups = _preds(tmp_path)
    build_report([preds], tmp_path / "report")
    outside: list[str] = []
    page = offline_page(browser, outside)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto((tmp_path / "report" / "map-1.html").as_uri())
    page.wait_for_selector("body[data-clustered='1']", timeout=20_000)

    page.evaluate("void geotagMap.map.setView([47, 3], 5, {animate: false})")
    page.wait_for_timeout(300)
    by_n = {(c["n"], round(c["lat"])): c for c in _clusters(page)}
    paris, lyon = by_n[(5, 49)], by_n[(3, 46)]
    assert paris["median"] == 0.7 and paris["bg"] == _rgb("#1a9850")  # "< 1 km"
    assert 400 < lyon["median"] < 500 and lyon["bg"] == _rgb("#fdae61")  # "< 750 km": the truth's distance
    legend = page.inner_text(".legend")
    assert "< 1 km" in legend and "< 750 km" in legend and "median" in legend
    swatches = page.eval_on_selector_all(
        ".legend i", "els => els.map(e => getComputedStyle(e).backgroundColor)"
    )
    assert paris["bg"] in swatches and lyon["bg"] in swatches  # the clusters' colours are the legend's

    page.evaluate("void geotagMap.map.setView([-33.86, 151.21], 5, {animate: false})")
    page.wait_for_timeout(300)
    (sydney,) = (c for c in _clusters(page) if c["n"] == 3)
    assert sydney["median"] == 3000 and sydney["bg"] == _rgb("#a50026") and sydney["bg"] in swatches

    # four photos at one coordinate: still one cluster at zoom 16; a click spreads them out
    page.evaluate("void geotagMap.map.setView([35.6812, 139.7671], 16, {animate: false})")
    page.wait_for_timeout(300)
    (tokyo,) = (c for c in _clusters(page) if c["n"] == 4)
    x, y = page.evaluate("(p => [p.x, p.y])(geotagMap.map.latLngToContainerPoint([35.6812, 139.7671]))")
    page.mouse.click(x, y)
    page.wait_for_timeout(600)
    spots = page.evaluate(
        """rows => Object.values(geotagMap.map._layers).filter(l => l instanceof L.CircleMarker
             && rows.includes(l.rowIndex)).map(l => { const p = geotagMap.map.latLngToContainerPoint(
             l.getLatLng()); return [l.rowIndex, p.x, p.y]; })""",
        groups["tokyo"],
    )
    assert sorted(r for r, _, _ in spots) == groups["tokyo"]
    xy = [(px, py) for _, px, py in spots]
    assert (
        min(((a - c) ** 2 + (b - d) ** 2) ** 0.5 for k, (a, b) in enumerate(xy) for c, d in xy[k + 1 :]) > 12
    )
    # each spread photo can be picked: click the third, its row is the one selected
    row, px, py = spots[0]
    for _ in range(20):  # the canvas hit-tests on mouse moves; move until the marker answers
        page.mouse.move(px - 3, py - 3)
        page.mouse.move(px, py)
        if page.query_selector(".leaflet-tooltip"):
            break
        page.wait_for_timeout(200)
    assert f"tokyo{row}.jpg" in page.inner_text(".leaflet-tooltip")
    page.mouse.click(px, py)
    page.wait_for_timeout(200)
    assert page.evaluate("geotagMap.chosen.getLayers().length") >= 1
    assert page.evaluate("geotagMap.selected") == row
    assert not errors and not outside, (errors, outside)
