"""How the report's interactive map copes with many rows: page size, build time, Chromium load time.

    PYTHONPATH=. python bench/map_50k.py --rows 50000 --out /tmp/map50k

Rows are synthetic (random predictions and truths around the world, 5 candidates each; photo paths that
do not exist, so no thumbnails). Needs playwright and a chromium binary (Debian: apt-get install chromium).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--out", type=Path, default=Path("/tmp/map-bench"))
    args = ap.parse_args()
    from browser_util import chromium_path
    from playwright.sync_api import sync_playwright

    from geotag.eval import map_page
    from geotag.eval.metrics import connect
    from geotag.eval.report_data import open_sources
    from geotag.io.parquet import PredictionWriter

    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    n = args.rows
    glat, glon = rng.uniform(-60, 70, n), rng.uniform(-180, 180, n)
    plat, plon = (
        np.clip(glat + rng.normal(0, 5, n), -89, 89),
        ((glon + rng.normal(0, 5, n) + 180) % 360) - 180,
    )
    preds = args.out / "preds.parquet"
    with PredictionWriter(preds) as w:
        for i in range(n):
            w.write(
                {
                    "image_id": f"id{i}",
                    "path": f"photos/{i // 1000}/img{i}.jpg",
                    "status": "ok",
                    "pred_lat": float(plat[i]),
                    "pred_lon": float(plon[i]),
                    "gt_lat": float(glat[i]),
                    "gt_lon": float(glon[i]),
                    "confidence": float(rng.uniform()),
                    "error_km": 100.0,
                    "topk": [
                        {"lat": float(plat[i]) + j, "lon": float(plon[i]), "score": 0.1} for j in range(5)
                    ],
                }
            )
    t0 = time.perf_counter()
    con = connect()
    sources, _ = open_sources(con, [preds])
    data = map_page.map_rows(con, sources[0], args.out)
    page = args.out / "map.html"
    page.write_text(map_page.page_html("bench", data), encoding="utf-8")
    build = time.perf_counter() - t0
    print(f"rows {n}: page {page.stat().st_size / 1e6:.1f} MB, built in {build:.1f} s")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox", "--disable-gpu"])
        p = b.new_page(viewport={"width": 1280, "height": 800})
        p.on("pageerror", lambda exc: print("page error:", exc))
        t0 = time.perf_counter()
        p.goto(page.as_uri(), timeout=300_000)  # a loaded machine takes over 30 s
        p.wait_for_selector("body[data-ready='1']", state="attached", timeout=300_000)
        ready = time.perf_counter() - t0
        p.wait_for_selector("body[data-clustered='1']", state="attached", timeout=600_000)
        p.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        load = time.perf_counter() - t0
        print(f"chromium: page script done {ready:.1f} s, clustered and painted {load:.1f} s")
        for z in (4, 8, 12):
            t0 = time.perf_counter()
            p.evaluate(f"void geotagMap.map.setView([48, 2], {z}, {{animate: false}})")
            p.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
            print(f"zoom to {z}: {1000 * (time.perf_counter() - t0):.0f} ms")
        t0 = time.perf_counter()
        for _ in range(10):
            p.mouse.move(640, 400)
            p.mouse.move(700, 450)
        print(f"hover moves: {100 * (time.perf_counter() - t0):.0f} ms each")
        b.close()


if __name__ == "__main__":
    main()
