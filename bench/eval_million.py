"""Benchmark `geotag eval` on a synthetic predictions file of a million rows (target: well under 10 s).

    .venv/bin/python bench/eval_million.py [--rows 1000000] [--keep preds.parquet] [--repeat 3]

The file follows the predictions SCHEMA (written by PredictionWriter): random ground truth and
predictions scattered around it, about 0.5 % error rows, 2 % rows without ground truth, 1 % without a
prediction, a `scene` column and paths in 50 folders. Prints a table and a one-line summary.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
from rich.console import Console
from rich.table import Table

from geotag.eval.metrics import EvalResult, evaluate
from geotag.io.parquet import SCHEMA, PredictionWriter, wkb_points

SCENES = np.array(["indoor", "natural", "urban"])
TARGET_S = 10.0


def random_points(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Points uniform on the sphere (degrees)."""
    lat = np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, n)))
    lon = rng.uniform(-180.0, 180.0, n)
    return lat, lon


def offset_points(
    rng: np.random.Generator, lat: np.ndarray, lon: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Predictions at log-uniform distances (about 0.1 to 10,000 km) from the truth; lon wrapped."""
    km = 10 ** rng.uniform(-1.0, 4.0, lat.shape[0])
    bearing = rng.uniform(0.0, 2 * np.pi, lat.shape[0])
    dlat = np.degrees(km * np.cos(bearing) / 6371.0)
    dlon = np.degrees(km * np.sin(bearing) / 6371.0) / np.maximum(np.cos(np.radians(lat)), 0.05)
    plat = np.clip(lat + dlat, -90.0, 90.0)
    plon = (lon + dlon + 180.0) % 360.0 - 180.0
    return plat, plon


def masked(values: np.ndarray, mask: np.ndarray) -> pa.Array:
    return pa.array(values, type=pa.float64(), mask=mask)


def synthetic_table(n: int, seed: int = 0) -> pa.Table:
    """A SCHEMA table of n rows built with numpy and pyarrow (no per-row Python dicts)."""
    rng = np.random.default_rng(seed)
    is_error = rng.random(n) < 0.005
    no_gt = is_error | (rng.random(n) < 0.02)
    no_pred = is_error | (rng.random(n) < 0.01)
    gt_lat, gt_lon = random_points(rng, n)
    pred_lat, pred_lon = offset_points(rng, gt_lat, gt_lon)
    scene = SCENES[rng.integers(0, len(SCENES), n)]
    folder = rng.integers(0, 50, n)
    ids = np.arange(n)
    columns = {
        "image_id": pa.array([f"{i:016x}" for i in ids]),
        "path": pa.array([f"/photos/f{f:02d}/IMG_{i:07d}.jpg" for f, i in zip(folder, ids, strict=True)]),
        "status": pa.array(np.where(is_error, "error", "ok")),
        "error": pa.array(np.where(is_error, "cannot decode", None)),
        "gt_lat": masked(gt_lat, no_gt),
        "gt_lon": masked(gt_lon, no_gt),
        "pred_lat": masked(pred_lat, no_pred),
        "pred_lon": masked(pred_lon, no_pred),
        "confidence": masked(rng.random(n), no_pred),
        "scene": pa.array(np.where(no_pred, None, scene)),
        "model": pa.array(np.full(n, "bench")),
    }
    columns["geometry"] = wkb_points(np.where(no_pred, np.nan, pred_lat), np.where(no_pred, np.nan, pred_lon))
    columns["gt_geometry"] = wkb_points(np.where(no_gt, np.nan, gt_lat), np.where(no_gt, np.nan, gt_lon))
    arrays = [columns.get(f.name, pa.nulls(n, f.type)) for f in SCHEMA]
    return pa.Table.from_arrays([a.cast(f.type) for a, f in zip(arrays, SCHEMA, strict=True)], schema=SCHEMA)


def write_file(path: Path, n: int) -> float:
    start = time.perf_counter()
    table = synthetic_table(n)
    with PredictionWriter(path) as writer:
        writer.write_table(table)
    return time.perf_counter() - start


def best_of(repeat: int, fn: Callable[[], EvalResult]) -> tuple[float, EvalResult]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    assert result is not None
    return min(times), result


def run(path: Path, rows: int, repeat: int, console: Console) -> None:
    gen_s = write_file(path, rows)
    size_mb = path.stat().st_size / 1e6
    cases = {"eval": (), "eval --by scene": ("scene",), "eval --by folder": ("folder",)}
    table = Table(title=f"eval on {rows:,} rows ({size_mb:.0f} MB Parquet, written in {gen_s:.1f} s)")
    for col in ("case", "groups", "best s", "rows/s", "scored"):
        table.add_column(col, justify="left" if col == "case" else "right")
    timings = {}
    for name, by in cases.items():
        seconds, result = best_of(repeat, lambda by=by: evaluate([path], by=by))
        timings[name] = seconds
        scored = sum(int(r["n_scored"]) for r in result.rows)
        table.add_row(name, str(len(result.rows)), f"{seconds:.2f}", f"{rows / seconds:,.0f}", f"{scored:,}")
    console.print(table)
    verdict = "ok" if timings["eval"] < TARGET_S else "TOO SLOW"
    console.print(
        f"eval {rows:,} rows: {timings['eval']:.2f} s (target < {TARGET_S:.0f} s) {verdict}; "
        f"--by scene {timings['eval --by scene']:.2f} s",
        highlight=False,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the synthetic file")
    parser.add_argument("--keep", type=Path, default=None, help="write the file here and keep it")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case; the best is reported")
    args = parser.parse_args()
    console = Console()
    if args.keep:
        run(args.keep, args.rows, args.repeat, console)
        return
    with tempfile.TemporaryDirectory() as tmp:
        run(Path(tmp) / "bench-preds.parquet", args.rows, args.repeat, console)


if __name__ == "__main__":
    main()
