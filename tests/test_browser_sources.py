"""Where positions came from (`source`), in a real browser: the report map colours points by source and
filters them; the review page filters rows by source (Playwright + Debian's Chromium, offline)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from browser_util import browser, offline_page  # noqa: F401 - the fixture
from PIL import Image

from geotag.eval.html_report import build_report
from geotag.io.parquet import PredictionWriter
from geotag.io.scan import image_id
from geotag.review.app import make_server

SOURCES = ["track", "track", "sibling", "model", "model", "model"]
COLOURS = {"track": "#1f78b4", "sibling": "#33a02c", "model": "#ff7f00"}


def _preds(tmp_path: Path) -> Path:
    path = tmp_path / "preds.parquet"
    with PredictionWriter(path) as w:
        for i, source in enumerate(SOURCES):
            photo = tmp_path / "photos" / f"p{i}.jpg"
            photo.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (40, 30), (40 * i, 120, 200)).save(photo, "JPEG")
            lat, lon = 40.0 + i, -3.0 + i
            w.write(
                {
                    "image_id": image_id(photo),
                    "path": str(photo),
                    "status": "ok",
                    "pred_lat": lat,
                    "pred_lon": lon,
                    "gt_lat": lat + 0.01,
                    "gt_lon": lon,
                    "confidence": 0.9 if source != "model" else 0.3,
                    "error_km": 0.02 if source != "model" else 300.0,
                    "source": source,
                    "fix_dt_s": 12.0 if source != "model" else None,
                    "model": "geoclip" if source == "model" else None,
                }
            )
    return path


def _fills(page: Any) -> dict[int, str]:
    return page.evaluate(
        "Object.fromEntries(Object.values(geotagMap.map._layers)"
        ".filter(l => l instanceof L.CircleMarker && l.rowIndex !== undefined)"
        ".map(l => [l.rowIndex, l.options.fillColor]))"
    )


def test_browser_report_map_colours_and_filters_by_source(browser: Any, tmp_path: Path) -> None:  # noqa: F811
    build_report([_preds(tmp_path)], tmp_path / "report")
    outside: list[str] = []
    page = offline_page(browser, outside)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto((tmp_path / "report" / "map-1.html").as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=20_000)
    assert page.evaluate("geotagMap.sources") == ["track", "sibling", "model"]
    assert "track (2)" in page.inner_text("#sources") and "model (3)" in page.inner_text("#sources")
    # time placed some: coloured by source from the start (zoomed in so no cluster hides a point)
    page.evaluate("void geotagMap.map.setView([42.5, -0.5], 14, {animate: false})")
    assert page.input_value("#colour-by") == "source"
    markers = page.evaluate("geotagMap.markers")
    fills = page.evaluate("geotagMap.points.getLayers().map(m => [m.rowIndex, m.options.fillColor])")
    assert len(fills) == markers == 6
    assert {i: c for i, c in fills} == {i: COLOURS[s] for i, s in enumerate(SOURCES)}
    # untick model: only the 3 placed by time stay on the map
    page.uncheck(".source-filter[value='model']")
    assert page.get_attribute("body", "data-shown") == "3"
    assert sorted(m for m, _ in page.evaluate("geotagMap.points.getLayers().map(m => [m.rowIndex, 0])")) == [
        0,
        1,
        2,
    ]
    page.uncheck(".source-filter[value='track']")
    assert page.get_attribute("body", "data-shown") == "1"
    page.check(".source-filter[value='model']")
    assert page.get_attribute("body", "data-shown") == "4"
    # colour by error instead: every point is within 1 km or 25 km, none in the source colours
    page.select_option("#colour-by", "value")
    fills = page.evaluate("geotagMap.points.getLayers().map(m => m.options.fillColor)")
    assert set(fills) <= {"#1a9850", "#66bd63"}, fills
    assert "error" in page.inner_text(".legend")
    assert not errors and not outside, (errors, outside)


def test_browser_review_filters_by_source(browser: Any, tmp_path: Path) -> None:  # noqa: F811
    srv = make_server(_preds(tmp_path))
    srv.start_thread()
    try:
        page = offline_page(browser, [], viewport=(1000, 600))
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(srv.url)
        page.wait_for_selector("body[data-ready='1']", state="attached", timeout=20_000)
        assert page.inner_text("#count") == "1 / 6"
        options = page.evaluate("[...document.querySelectorAll('#fsource option')].map(o => o.value)")
        assert options == ["", "model", "sibling", "track"]
        page.select_option("#fsource", "track")
        assert page.inner_text("#count") == "1 / 2"
        assert "source track, 12 s from a fix" in page.inner_text("#where")
        page.select_option("#fsource", "sibling")
        assert page.inner_text("#count") == "1 / 1" and "p2.jpg" in page.inner_text("#where")
        page.select_option("#fsource", "model")
        assert page.inner_text("#count") == "1 / 3" and "source model" in page.inner_text("#where")
        page.select_option("#fsource", "")
        assert page.inner_text("#count").endswith("/ 6")
        assert not errors, errors
    finally:
        srv.shutdown()
        srv.server_close()
