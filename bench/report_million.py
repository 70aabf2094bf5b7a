"""Benchmark `geotag report` (and `geotag export`) on a synthetic file of a million rows (target: < 60 s).

    .venv/bin/python bench/report_million.py [--rows 1000000] [--keep DIR] [--no-export]

The predictions file is eval_million's synthetic table (predictions at log-uniform distances, 0.5 %
error rows, scenes, 50 folders) with the truth bunched around 300 places on land, as in a real photo
collection, and `country` / `gt_country` from the offline lookup, so every section of the page is drawn.
The report runs twice in one process: cold (imports, the Natural Earth borders) and warm. Prints a
table and a one-line summary.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_million import offset_points, synthetic_table  # noqa: E402  (a sibling script, not a package)

from geotag.eval.html_report import build_report  # noqa: E402
from geotag.geo.places import countries  # noqa: E402
from geotag.io.export import export_points  # noqa: E402
from geotag.io.parquet import PredictionWriter, wkb_points  # noqa: E402

TARGET_S = 60.0


def clustered_truth(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth like a real collection: photos bunched around 300 places on land (2-degree spread)."""
    rng = np.random.default_rng(seed)
    cand_lat = np.degrees(np.arcsin(rng.uniform(-0.8, 0.95, 6000)))
    cand_lon = rng.uniform(-180.0, 180.0, 6000)
    codes, _ = countries(cand_lat, cand_lon)
    land = np.flatnonzero([c is not None for c in codes])[:300]
    weight = rng.pareto(1.2, land.size) + 0.05  # a few big cities, many small places
    pick = land[rng.choice(land.size, n, p=weight / weight.sum())]
    lat = np.clip(cand_lat[pick] + rng.normal(0.0, 2.0, n), -89.9, 89.9)
    lon = (cand_lon[pick] + rng.normal(0.0, 2.0, n) + 180.0) % 360.0 - 180.0
    return lat, lon


def write_file(path: Path, n: int) -> float:
    """The synthetic table, truth clustered on land, both country columns filled; returns its seconds."""
    start = time.perf_counter()
    table = synthetic_table(n)
    rng = np.random.default_rng(1)
    gt_lat, gt_lon = clustered_truth(n)
    pred_lat, pred_lon = offset_points(rng, gt_lat, gt_lon)
    for column, values in {
        "gt_lat": gt_lat,
        "gt_lon": gt_lon,
        "pred_lat": pred_lat,
        "pred_lon": pred_lon,
    }.items():
        old = table.column(column)
        table = table.set_column(
            table.schema.get_field_index(column),
            column,
            pa.array(values, pa.float64(), mask=old.is_null().to_numpy()),
        )
    for geom, (lat, lon) in {
        "geometry": ("pred_lat", "pred_lon"),
        "gt_geometry": ("gt_lat", "gt_lon"),
    }.items():
        la = table.column(lat).to_numpy(zero_copy_only=False)
        lo = table.column(lon).to_numpy(zero_copy_only=False)
        table = table.set_column(table.schema.get_field_index(geom), geom, wkb_points(la, lo))
    for column, (lat, lon) in {
        "country": ("pred_lat", "pred_lon"),
        "gt_country": ("gt_lat", "gt_lon"),
    }.items():
        la = table.column(lat).to_numpy(zero_copy_only=False)
        lo = table.column(lon).to_numpy(zero_copy_only=False)
        codes, _ = countries(la, lo)
        table = table.set_column(table.schema.get_field_index(column), column, pa.array(codes, pa.string()))
    with PredictionWriter(path) as writer:
        writer.write_table(table)
    return time.perf_counter() - start


def run(folder: Path, rows: int, export: bool, console: Console) -> None:
    preds = folder / "bench-preds.parquet"
    gen_s = write_file(preds, rows)
    size_mb = preds.stat().st_size / 1e6
    table = Table(title=f"report on {rows:,} rows ({size_mb:.0f} MB Parquet, written in {gen_s:.1f} s)")
    for col in ("case", "seconds", "rows/s", "output"):
        table.add_column(col, justify="left" if col in ("case", "output") else "right")
    timings: dict[str, float] = {}
    for case in ("report (cold)", "report (warm)"):
        start = time.perf_counter()
        summary = build_report([preds], folder / "report")
        timings[case] = time.perf_counter() - start
        out = f"{len(summary.figures)} figures, {summary.index.stat().st_size / 1e3:.0f} kB html"
        table.add_row(case, f"{timings[case]:.1f}", f"{rows / timings[case]:,.0f}", out)
    if export:
        for fmt in ("gpkg", "geojson", "csv"):
            start = time.perf_counter()
            s = export_points(preds, folder / f"points.{fmt}")
            seconds = time.perf_counter() - start
            size = s.out.stat().st_size / 1e6
            table.add_row(
                f"export {fmt}",
                f"{seconds:.1f}",
                f"{rows / seconds:,.0f}",
                f"{s.written:,} points, {size:.0f} MB",
            )
    console.print(table)
    cold = timings["report (cold)"]
    verdict = "ok" if cold < TARGET_S else "TOO SLOW"
    console.print(
        f"report {rows:,} rows: {cold:.1f} s cold, {timings['report (warm)']:.1f} s warm "
        f"(target < {TARGET_S:.0f} s) {verdict}",
        highlight=False,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the synthetic file")
    parser.add_argument(
        "--keep", type=Path, default=None, help="work in this folder and keep what is written"
    )
    parser.add_argument("--no-export", action="store_true", help="time the report only")
    args = parser.parse_args()
    console = Console()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        run(args.keep, args.rows, not args.no_export, console)
        return
    with tempfile.TemporaryDirectory() as tmp:
        run(Path(tmp), args.rows, not args.no_export, console)


if __name__ == "__main__":
    main()
