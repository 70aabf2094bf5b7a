"""`geotag review` in a real browser: keyboard and mouse decisions reach the decisions file, and
`write-exif --decisions` then writes exactly the accepted photos."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from browser_util import browser, offline_page, wait_until  # noqa: F401 - the fixture
from test_review import make_preds

from geotag.engine.write_exif import WriteOptions, run_write_exif
from geotag.io import decisions
from geotag.io.exif import read_exif
from geotag.review.app import make_server, write_login_file


def _saved(page: Any, n: int) -> None:
    page.wait_for_selector(f"body[data-saved='{n}']", state="attached", timeout=10_000)


def test_browser_review_decisions_reach_the_file_and_write_exif(browser: Any, tmp_path: Path) -> None:  # noqa: F811
    preds = make_preds(tmp_path, n=4)
    srv = make_server(preds)
    srv.start_thread()
    outside: list[str] = []
    try:
        page = offline_page(browser, outside, viewport=(1100, 650))
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(srv.url)
        page.wait_for_selector("body[data-ready='1']", state="attached", timeout=20_000)
        wait_until(
            page, "document.getElementById('img').complete && document.getElementById('img').naturalWidth"
        )
        if os.environ.get("GEOTAG_SCREENSHOTS"):
            page.wait_for_timeout(500)
            page.screenshot(path=os.path.join(os.environ["GEOTAG_SCREENSHOTS"], "review.png"))
        # row 0: keyboard, accept the prediction
        page.keyboard.press("a")
        _saved(page, 1)
        # row 1: keyboard picks candidate 2, the mouse clicks Accept
        page.wait_for_timeout(300)
        page.keyboard.press("2")
        page.click("#accept")
        _saved(page, 2)
        # row 2: drag the pin with the mouse, then accept with Enter
        page.wait_for_timeout(300)
        box = page.locator(".leaflet-marker-icon[title='pin']").bounding_box()
        assert box is not None
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] - 3
        page.mouse.move(x, y)
        page.mouse.down()
        page.mouse.move(x + 60, y + 40, steps=8)
        page.mouse.up()
        page.keyboard.press("Enter")
        _saved(page, 3)
        # row 3: reject with the mouse
        page.wait_for_timeout(300)
        page.click("#reject")
        _saved(page, 4)
        assert not errors and not outside, (errors, outside)
    finally:
        srv.shutdown()
        srv.server_close()

    got = decisions.read(decisions.default_path(preds))
    rows = srv.session.rows
    assert [got[i].action for i in range(4)] == ["accept", "accept", "accept", "reject"]
    assert (got[0].lat, got[0].lon, got[0].source) == (rows[0]["pred_lat"], rows[0]["pred_lon"], "prediction")
    assert (got[1].lat, got[1].lon, got[1].source) == (
        rows[1]["topk"][1]["lat"],
        rows[1]["topk"][1]["lon"],
        "candidate",
    )
    assert got[2].source == "moved" and (got[2].lat, got[2].lon) != (rows[2]["pred_lat"], rows[2]["pred_lon"])
    assert got[2].lat < rows[2]["pred_lat"] and got[2].lon > rows[2]["pred_lon"]  # dragged right and down

    photos = [Path(r["path"]) for r in rows]
    rejected = photos[3].read_bytes()
    summary = run_write_exif(
        WriteOptions(
            preds, journal=tmp_path / "j.jsonl", writer="python", decisions=decisions.default_path(preds)
        )
    )
    assert summary.written == 3
    for i in range(3):
        info = read_exif(photos[i])
        assert info.gt_lat == pytest.approx(got[i].lat, abs=1e-6) and info.gt_lon == pytest.approx(
            got[i].lon, abs=1e-6
        )
    assert photos[3].read_bytes() == rejected and read_exif(photos[3]).gt_lat is None


def test_browser_review_filters(browser: Any, tmp_path: Path) -> None:  # noqa: F811
    preds = make_preds(tmp_path, n=4)  # confidences 0.2 0.5 0.8 1.1; folders a b a b; countries FR DE FR DE
    srv = make_server(preds)
    srv.start_thread()
    try:
        page = offline_page(browser, [], viewport=(1000, 600))
        page.goto(srv.url)
        page.wait_for_selector("body[data-ready='1']", state="attached", timeout=20_000)
        assert page.inner_text("#count") == "1 / 4"
        page.fill("#fconf", "0.6")
        page.dispatch_event("#fconf", "change")
        assert page.inner_text("#count").endswith("/ 2")
        page.fill("#fconf", "0")
        page.dispatch_event("#fconf", "change")
        page.select_option("#fcountry", "DE")
        assert page.inner_text("#count").endswith("/ 2") and "/b/" in page.inner_text("#where")
        page.select_option("#fcountry", "")
        page.select_option("#ffolder", str(tmp_path / "photos" / "a"))
        assert page.inner_text("#count").endswith("/ 2") and "/a/" in page.inner_text("#where")
        page.evaluate("document.activeElement.blur()")  # keys typed into a filter box are not shortcuts
        page.keyboard.press("r")
        _saved(page, 1)
        page.check("#fundecided")
        page.dispatch_event("#fundecided", "change")
        assert page.inner_text("#count") == "1 / 1"
    finally:
        srv.shutdown()
        srv.server_close()


def test_browser_login_file_leaves_a_clean_url_and_survives_reload(browser: Any, tmp_path: Path) -> None:  # noqa: F811
    """Issue 27 item 5 in a real browser: the private login file (what `geotag review` opens) signs in
    through POST /login; the tab ends on the bare `/` (no token in the address bar or history), photos
    load through the header token, a reload works (sessionStorage), and the printed URL does the same."""
    preds = make_preds(tmp_path, n=2)
    srv = make_server(preds)
    srv.start_thread()
    folder, login = write_login_file(srv)
    try:
        page = offline_page(browser, [], viewport=(1000, 600))
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        for start in (login.as_uri(), srv.url):
            page.goto(start)
            page.wait_for_selector("body[data-ready='1']", state="attached", timeout=20_000)
            wait_until(page, "document.getElementById('img').naturalWidth > 0")
            assert page.url == f"http://127.0.0.1:{srv.port}/", page.url
            assert srv.token not in page.evaluate("history.length + location.href + document.referrer")
            page.reload()
            page.wait_for_selector("body[data-ready='1']", state="attached", timeout=20_000)
            assert page.inner_text("#count") == "1 / 2"
        page.keyboard.press("r")
        _saved(page, 1)
        assert not errors, errors
    finally:
        srv.shutdown()
        srv.server_close()
        shutil.rmtree(folder)
