"""The report's interactive map in a real browser (Playwright + Debian's Chromium), offline."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from browser_util import browser, offline_page  # noqa: F401 - the fixture
from PIL import Image

from geotag.eval.html_report import build_report
from geotag.io.parquet import PredictionWriter

PLACES = [(48.8566, 2.3522, 48.0, 3.0), (-33.87, 151.21, -35.0, 149.0), (40.71, -74.0, 51.5, -0.12)]


def _preds(tmp_path: Path) -> Path:
    (tmp_path / "photos").mkdir()
    path = tmp_path / "preds.parquet"
    with PredictionWriter(path) as w:
        for i, (glat, glon, plat, plon) in enumerate(PLACES):
            photo = tmp_path / "photos" / f"photo{i}.jpg"
            Image.new("RGB", (40, 30), (80 * i, 120, 200)).save(photo, "JPEG")
            w.write(
                {
                    "image_id": f"id{i}",
                    "path": str(photo),
                    "status": "ok",
                    "pred_lat": plat,
                    "pred_lon": plon,
                    "gt_lat": glat,
                    "gt_lon": glon,
                    "confidence": 0.3 * (i + 1),
                    "error_km": 50.0,
                    "model": "geoclip",
                    "topk": [
                        {"lat": plat, "lon": plon, "score": 0.5},
                        {"lat": plat + 1, "lon": plon + 1, "score": 0.2},
                        {"lat": plat - 1, "lon": plon - 1, "score": 0.1},
                    ],
                }
            )
    return path


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.refs += [v for k, v in attrs if k in ("src", "href") and v]


def test_map_page_has_no_network_references(tmp_path: Path) -> None:
    summary = build_report([_preds(tmp_path)], tmp_path / "report")
    page = tmp_path / "report" / "map-1.html"
    assert page in summary.figures
    assert 'href="map-1.html"' in (tmp_path / "report" / "index.html").read_text()
    parser = _Refs()
    parser.feed(page.read_text())
    assert all(not urlparse(r).scheme and not urlparse(r).netloc for r in parser.refs), parser.refs


def test_browser_report_map_shows_markers_tooltips_and_topk(browser: Any, tmp_path: Path) -> None:  # noqa: F811
    build_report([_preds(tmp_path)], tmp_path / "report")
    outside: list[str] = []
    page = offline_page(browser, outside)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto((tmp_path / "report" / "map-1.html").as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=20_000)
    assert page.evaluate("geotagMap.markers") == 3
    page.wait_for_selector("body[data-clustered='1']", timeout=20_000)
    assert page.evaluate("geotagMap.points.getLayers().length") == 3
    # zoom onto the Sydney prediction: a single marker there, hover and click it
    page.evaluate("void geotagMap.map.setView([-35.0, 149.0], 10, {animate: false})")
    page.wait_for_timeout(300)
    drawn = page.evaluate(
        "Object.values(geotagMap.map._layers)"
        ".filter(l => l instanceof L.CircleMarker && l.rowIndex === 1).length"
    )
    assert drawn == 1
    x, y = page.evaluate("(p => [p.x, p.y])(geotagMap.map.latLngToContainerPoint([-35.0, 149.0]))")
    for _ in range(20):  # the canvas hit-tests on mouse moves; move until the marker answers
        page.mouse.move(x - 3, y - 3)
        page.mouse.move(x, y)
        if page.query_selector(".leaflet-tooltip"):
            break
        page.wait_for_timeout(200)
    page.wait_for_selector(".leaflet-tooltip", timeout=5_000)
    tip = page.inner_text(".leaflet-tooltip")
    assert "photo1.jpg" in tip and "confidence 0.600" in tip
    assert (
        page.evaluate("document.querySelector('.leaflet-tooltip img').naturalWidth") == 40
    )  # the photo loaded
    page.mouse.click(x, y)
    assert page.evaluate("geotagMap.chosen.getLayers().length") == 1 + 3 + 1  # radius, 3 candidates, line
    assert not errors and not outside, (errors, outside)


def test_map_rows_are_sampled_above_the_limit(tmp_path: Path, monkeypatch) -> None:
    from geotag.eval import map_page
    from geotag.eval.metrics import connect
    from geotag.eval.report_data import open_sources

    monkeypatch.setattr(map_page, "MAX_ROWS", 2)
    con = connect()
    sources, _ = open_sources(con, [_preds(tmp_path)])
    data = map_page.map_rows(con, sources[0], tmp_path)
    assert len(data["lat"]) == 2 and data["total"] == [3]
    assert map_page.map_rows(con, sources[0], tmp_path)["p"] == data["p"]  # the same sample every time
