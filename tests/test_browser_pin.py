"""Issue 28 item 8.2: a pin placed precisely in `geotag review`: zoom onto the pin (z) and drag it there,
type a "lat, lon" (g) or paste one; each reaches the decisions file as that position."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from browser_util import browser, offline_page  # noqa: F401 - the fixture
from test_browser_review import _saved
from test_review import make_preds

from geotag.io import decisions
from geotag.review.app import make_server

PARSED = {
    "48.8584, 2.2945": [48.8584, 2.2945],
    "48.8584 2.2945": [48.8584, 2.2945],
    " 48.8584,2.2945 ": [48.8584, 2.2945],
    "(-33.8568, 151.2153)": [-33.8568, 151.2153],
    "48.8584; -2.2945": [48.8584, -2.2945],
    "48°51'30\"N 2°17'40\"E": [48.858333, 2.294444],
    "48° 51′ 30″ N, 2° 17′ 40″ E": [48.858333, 2.294444],
    "33°51'24.5\"S 151°12'55\"E": [-33.856806, 151.215278],
    "2°17'40\"E 48°51'30\"N": [48.858333, 2.294444],
    "48.8584 N 2.2945 W": [48.8584, -2.2945],
    "91, 0": None,
    "10, 181": None,
    "Paris": None,
    "48°51'30\"N": None,
    "48°N 49°N": None,
    "1 2 3": None,
}


def _open(browser: Any, tmp_path: Path, n: int) -> tuple[Any, Any, list[str]]:  # noqa: F811
    srv = make_server(make_preds(tmp_path, n=n))
    srv.start_thread()
    page = offline_page(browser, [], viewport=(1100, 650))
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(srv.url)
    page.wait_for_selector("body[data-ready='1']", state="attached", timeout=20_000)
    return srv, page, errors


def test_browser_parse_lat_lon(browser: Any, tmp_path: Path) -> None:  # noqa: F811
    srv, page, errors = _open(browser, tmp_path, 1)
    try:
        got = page.evaluate("texts => texts.map(gtParseLatLon)", list(PARSED))
    finally:
        srv.shutdown()
        srv.server_close()
    for (text, want), have in zip(PARSED.items(), got, strict=True):
        if want is None:
            assert have is None, text
        else:
            assert have == pytest.approx(want, abs=1e-6), text
    assert not errors, errors


def test_browser_pin_zoom_drag_type_and_paste(browser: Any, tmp_path: Path) -> None:  # noqa: F811
    srv, page, errors = _open(browser, tmp_path, 3)
    try:
        # row 0: z twice zooms onto the pin; a drag there moves it by metres, not kilometres
        start = page.evaluate("map.getZoom()")
        page.keyboard.press("z")
        page.keyboard.press("z")
        zoom = page.evaluate("map.getZoom()")
        assert zoom >= start + 6 and zoom >= 12
        assert page.evaluate("map.getCenter().distanceTo(pin.getLatLng())") < 1.0  # centred on the pin
        page.wait_for_timeout(200)
        box = page.locator(".leaflet-marker-icon[title='pin']").bounding_box()
        assert box is not None
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] - 3
        page.mouse.move(x, y)
        page.mouse.down()
        page.mouse.move(x + 40, y + 25, steps=8)
        page.mouse.up()
        assert page.evaluate("map.getZoom()") == zoom  # the drag kept the zoom
        dropped = page.evaluate("(ll => [ll.lat, ll.lng])(pin.getLatLng())")
        page.keyboard.press("a")
        _saved(page, 1)
        # row 1: g, type a position, Enter, a
        page.wait_for_timeout(300)
        page.keyboard.press("g")
        page.keyboard.type("48.8584, 2.2945")
        page.keyboard.press("Enter")
        assert "pin at 48.858400, 2.294500" in page.inner_text("#status")
        assert page.evaluate("map.getZoom()") >= 12
        page.keyboard.press("a")
        _saved(page, 2)
        # row 2: a bad text says so; a pasted DMS position moves the pin
        page.wait_for_timeout(300)
        paste = (
            "t => document.body.dispatchEvent(new ClipboardEvent('paste', {bubbles: true, "
            "clipboardData: (() => { const d = new DataTransfer(); d.setData('text/plain', t); return d; })()"
            "}))"
        )
        page.evaluate(paste, "somewhere nice")
        assert "not a position" in page.inner_text("#status")
        page.evaluate(paste, "33°51'24.5\"S 151°12'55\"E")
        assert "pin at -33.856806, 151.215278" in page.inner_text("#status")
        page.keyboard.press("a")
        _saved(page, 3)
        assert not errors, errors
    finally:
        srv.shutdown()
        srv.server_close()
    rows = srv.session.rows
    got = decisions.read(srv.session.decisions_path)
    assert got[0].source == "moved"
    assert (got[0].lat, got[0].lon) == pytest.approx(dropped, abs=1e-9)
    d_lat, d_lon = rows[0]["pred_lat"] - got[0].lat, got[0].lon - rows[0]["pred_lon"]
    assert 0 < d_lat < 0.01 and 0 < d_lon < 0.01, (d_lat, d_lon)  # down and right, by under a km
    assert (got[1].lat, got[1].lon, got[1].source) == (48.8584, 2.2945, "moved")
    assert (got[2].lat, got[2].lon) == pytest.approx((-33.856806, 151.215278), abs=1e-6)


def test_browser_candidates_at_one_coordinate_are_spread_and_each_can_be_clicked(
    browser: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Issue 28 item 8.5 in review: three candidates at one spot are drawn apart; clicking each puts the
    pin on that candidate, at the exact coordinate."""
    import pyarrow.parquet as pq

    from geotag.io.parquet import PredictionWriter

    path = make_preds(tmp_path, n=1)
    rows = pq.read_table(path).to_pylist()
    same = {"lat": 41.9, "lon": 12.5}
    rows[0]["topk"] = [{**same, "score": 0.4}, {**same, "score": 0.3}, {**same, "score": 0.2}]
    path.unlink()
    with PredictionWriter(path) as w:
        w.write({k: v for k, v in rows[0].items() if v is not None})
    srv = make_server(path)
    srv.start_thread()
    try:
        page = offline_page(browser, [], viewport=(1100, 650))
        page.goto(srv.url)
        page.wait_for_selector("body[data-ready='1']", state="attached", timeout=20_000)
        boxes = [
            page.locator(f".leaflet-marker-icon[title='candidate {k}']").bounding_box() for k in (1, 2, 3)
        ]
        centres = [(b["x"] + b["width"] / 2, b["y"] + b["height"] / 2) for b in boxes if b]
        assert len(centres) == 3
        gaps = [
            ((a - c) ** 2 + (b - d) ** 2) ** 0.5
            for k, (a, b) in enumerate(centres)
            for c, d in centres[k + 1 :]
        ]
        assert min(gaps) >= 20, gaps  # discs 20 px wide: none hides another
        for k in (3, 2):
            page.click(f".leaflet-marker-icon[title='candidate {k}']", force=True)
            assert page.inner_text("#status") == f"pin on candidate {k}: press a to accept"
            assert page.evaluate("(ll => [ll.lat, ll.lng])(pin.getLatLng())") == [41.9, 12.5]
    finally:
        srv.shutdown()
        srv.server_close()
