"""Issue 28 item 8.3: review starts on the first row a decision can be written for (not an error row,
not a photo with measured GPS), and a "without GPS" filter (w) shows only the photos write-exif would
write; a truth joined from a manifest is not measured GPS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from browser_util import browser, offline_page  # noqa: F401 - the fixture
from test_review import make_preds

from geotag.io.parquet import PredictionWriter
from geotag.review.app import make_server


def _archive(tmp_path: Path) -> Path:
    """Row 0 an error, row 1 with EXIF GPS, row 2 kept by predict with source exif (not in the queue: no
    estimate to decide on), row 3 with a manifest truth only, rows 4 and 5 plain predictions."""
    path = make_preds(tmp_path, n=6)
    rows = pq.read_table(path).to_pylist()
    rows[0].update(status="error", error="cannot decode", pred_lat=None, pred_lon=None)
    rows[1].update(gt_lat=45.0, gt_lon=7.0, gt_source="exif")
    rows[2].update(source="exif")
    rows[3].update(gt_lat=46.0, gt_lon=8.0, gt_source="manifest")
    path.unlink()
    with PredictionWriter(path) as w:
        for r in rows:
            w.write({k: v for k, v in r.items() if v is not None})
    return path


def test_browser_review_starts_on_a_writable_row_and_filters_without_gps(
    browser: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    srv = make_server(_archive(tmp_path))
    srv.start_thread()
    try:
        page = offline_page(browser, [], viewport=(1100, 650))
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(srv.url)
        page.wait_for_selector("body[data-ready='1']", state="attached", timeout=20_000)
        # rows 1, 3, 4, 5 (row 2 kept its measured GPS: nothing to decide); row 3 is the first writable one
        assert page.inner_text("#count") == "2 / 4"
        assert "p3.jpg" in page.inner_text("#where") and "has GPS" not in page.inner_text("#where")
        page.keyboard.press("p")
        assert "p1.jpg" in page.inner_text("#where") and "has GPS" in page.inner_text("#where")
        page.keyboard.press("w")  # without GPS: rows 3, 4, 5
        assert page.is_checked("#fnogps")
        assert page.inner_text("#count") == "1 / 3" and "p3.jpg" in page.inner_text("#where")
        page.keyboard.press("r")
        page.wait_for_selector("body[data-saved='1']", state="attached", timeout=10_000)
        page.wait_for_timeout(400)
        assert "p4.jpg" in page.inner_text("#where")
        page.click("#fnogps")
        assert page.inner_text("#count").endswith("/ 4")
        # reopened, the session starts on the first writable row still undecided: row 4
        page.reload()
        page.wait_for_selector("body[data-ready='1']", state="attached", timeout=20_000)
        assert page.inner_text("#count") == "3 / 4" and "p4.jpg" in page.inner_text("#where")
        assert not errors, errors
    finally:
        srv.shutdown()
        srv.server_close()
