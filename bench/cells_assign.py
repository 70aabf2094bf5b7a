"""Benchmark geocell assignment: a million coordinates to their cells in every partition.

    .venv/bin/python bench/cells_assign.py [--points 1000000] [--train 1000000] [--reference 20000]
        [--repeat 3]

Builds coarse / middle / fine partitions (MP-16 thresholds, scaled to the training size) from clustered
synthetic training coordinates, then times `Geocells.assign` on uniformly random points: the numpy S2
leaf ids, then one sorted-range lookup per partition. s2sphere, the reference implementation, is timed
on `--reference` points (its ids are checked equal to ours) and extrapolated. Prints a table and a
one-line summary.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import s2sphere
from rich.console import Console
from rich.table import Table

from geotag.geo.cells import DEFAULT_PARTITIONS, build_cells, leaf_ids


def uniform(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.degrees(np.arcsin(rng.uniform(-1, 1, n))), rng.uniform(-180, 180, n)


def clustered(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Photo-like density: 2,000 'cities' of log-normal size and spread, plus 5 % background."""
    clat, clon = uniform(rng, 2000)
    weight = rng.lognormal(0, 1.5, 2000)
    k = rng.choice(2000, n, p=weight / weight.sum())
    spread = rng.lognormal(-1, 1, 2000)[k]
    lat = np.clip(clat[k] + rng.normal(0, 1, n) * spread, -90, 90)
    lon = (clon[k] + rng.normal(0, 1, n) * spread + 180) % 360 - 180
    m = n // 20
    lat[:m], lon[:m] = uniform(rng, m)
    return lat, lon


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--train", type=int, default=1_000_000)
    parser.add_argument("--reference", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)

    start = time.perf_counter()
    cells = build_cells(*clustered(rng, args.train), DEFAULT_PARTITIONS, scale="auto")
    build_s = time.perf_counter() - start
    lat, lon = uniform(rng, args.points)
    leaf_ids(lat[:1000], lon[:1000])  # warm up (lookup table, page faults)

    leaves = leaf_ids(lat, lon)
    leaf_s = best_of(args.repeat, lambda: leaf_ids(lat, lon))
    lookup_s = best_of(args.repeat, lambda: [p.lookup(leaves) for p in cells.partitions])
    assign_s = best_of(args.repeat, lambda: cells.assign(lat, lon))

    ref_n = min(args.reference, args.points)
    start = time.perf_counter()
    ref = [
        s2sphere.CellId.from_lat_lng(s2sphere.LatLng.from_degrees(a, b)).id()
        for a, b in zip(lat[:ref_n].tolist(), lon[:ref_n].tolist(), strict=True)
    ]
    ref_s = time.perf_counter() - start
    same = bool(np.array_equal(np.array(ref, dtype=np.uint64), leaves[:ref_n]))
    ref_per_point = ref_s / ref_n
    ref_assign_s = (
        ref_per_point * args.points
    )  # leaf ids alone; s2sphere's per-cell parent() calls come on top

    table = Table(title=f"geocell assignment, {args.points:,} points", box=None)
    table.add_column("step")
    table.add_column("seconds", justify="right")
    table.add_column("µs / point", justify="right")
    parts = ", ".join(f"{p.name} {len(p):,}" for p in cells.partitions)
    table.add_row(f"build cells from {args.train:,} coordinates ({parts})", f"{build_s:.2f}", "")
    table.add_row("S2 leaf ids (numpy)", f"{leaf_s:.3f}", f"{leaf_s / args.points * 1e6:.3f}")
    table.add_row(
        f"lookup in {len(cells.partitions)} partitions",
        f"{lookup_s:.3f}",
        f"{lookup_s / args.points * 1e6:.3f}",
    )
    table.add_row("assign total (numpy)", f"{assign_s:.3f}", f"{assign_s / args.points * 1e6:.3f}")
    table.add_row(
        f"s2sphere leaf ids ({ref_n:,} points, extrapolated)",
        f"{ref_assign_s:.1f}",
        f"{ref_per_point * 1e6:.2f}",
    )
    Console().print(table)
    print(
        f"assign {args.points:,} points to {len(cells.partitions)} partitions in {assign_s:.2f} s "
        f"({args.points / assign_s / 1e6:.1f} M points/s); s2sphere leaf ids alone ~{ref_assign_s:.1f} s "
        f"({ref_assign_s / assign_s:.0f}x slower); ids identical on {ref_n:,} points: {same}"
    )


if __name__ == "__main__":
    main()
