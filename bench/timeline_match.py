"""Benchmark time matching: photos placed on timed fixes by exiftool's rules (geotag.geo.timeline.match).

    .venv/bin/python bench/timeline_match.py [--photos 100000] [--fixes 1000000] [--repeat 3]

Rows: a synthetic logger track (fixes 1-10 s apart, a 1-3 h gap every ~2,000 fixes, three files, 5 %
without altitude) given sorted and given shuffled; exiftool's test track Geotag.gpx (../shared/fixtures,
read with gpxpy) repeated end to end to the same size, so the numbers are not only synthetic; then the
error radius and confidence, and the zone resolution of the photos' local times with an IANA zone
(Europe/Berlin, three years of photos, daylight saving through zoneinfo). Best of `--repeat`. Prints a
table and a one-line summary; the issue's bar is 100,000 photos against 1,000,000 fixes in under 10 s.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from geotag.geo.fixes import Fixes
from geotag.geo.photo_time import resolve_photo_utc
from geotag.geo.timeline import confidence, error_km, match

GEOTAG_GPX = Path(__file__).resolve().parents[1].parent / "shared/fixtures/tracks/exiftool/Geotag.gpx"
START = 1.7e9  # 2023-11-14


def best_of(repeat: int, fn: Callable[[], object]) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def synthetic_fixes(rng: np.random.Generator, n: int) -> Fixes:
    steps = rng.uniform(1, 10, n)
    gaps = rng.random(n) < 1 / 2000
    steps[gaps] += rng.uniform(3600, 3 * 3600, int(gaps.sum()))
    t = START + np.cumsum(steps)
    lat = np.clip(-34.6 + np.cumsum(rng.normal(0, 1e-4, n)), -89, 89)
    lon = (-58.4 + np.cumsum(rng.normal(0, 1e-4, n)) + 180) % 360 - 180
    alt = 25 + np.cumsum(rng.normal(0, 0.2, n))
    alt[rng.random(n) < 0.05] = np.nan
    source = (np.arange(n) * 3 // n).astype(np.int32)
    hdop = rng.uniform(0.7, 3.0, n)
    return Fixes(
        t=t, lat=lat, lon=lon, alt=alt, hdop=hdop, source=source, sources=("a.gpx", "b.gpx", "c.gpx")
    )


def tiled_gpx(n: int) -> Fixes | None:
    """exiftool's Geotag.gpx (9 real fixes over 3.5 minutes) repeated end to end, 10 minutes apart."""
    if not GEOTAG_GPX.is_file():
        return None
    import gpxpy

    gpx = gpxpy.parse(GEOTAG_GPX.read_text())
    pts = [p for trk in gpx.tracks for seg in trk.segments for p in seg.points]
    t0 = np.array([p.time.timestamp() for p in pts])
    span = t0.max() - t0.min() + 600
    reps = -(-n // len(pts))
    t = (t0[None, :] + span * np.arange(reps)[:, None]).reshape(-1)[:n]
    tile = lambda values: np.tile(np.array(values, dtype=float), reps)[:n]  # noqa: E731
    return Fixes(
        t=t,
        lat=tile([p.latitude for p in pts]),
        lon=tile([p.longitude for p in pts]),
        alt=tile([p.elevation for p in pts]),
        sources=(str(GEOTAG_GPX),),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=100_000)
    parser.add_argument("--fixes", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    table = Table(title="geotag time matching (exiftool's rules)")
    for name in ("case", "photos", "fixes", "seconds", "photos/s", "placed"):
        table.add_column(name, justify="left" if name == "case" else "right")

    def row(case: str, seconds: float, fixes: int, placed: float | None) -> None:
        share = "" if placed is None else f"{placed:.1%}"
        rate = f"{args.photos / seconds:,.0f}"
        table.add_row(case, f"{args.photos:,}", f"{fixes:,}" if fixes else "", f"{seconds:.3f}", rate, share)

    fixes = synthetic_fixes(rng, args.fixes)
    photos = rng.uniform(fixes.t[0] - 3600, fixes.t[-1] + 3600, args.photos)
    seconds, placement = best_of(args.repeat, lambda: match(photos, fixes))
    headline = seconds
    row("synthetic track, sorted", seconds, len(fixes), float(placement.placed.mean()))
    shuffled = fixes.take(rng.permutation(len(fixes)))
    seconds, shuffled_placement = best_of(args.repeat, lambda: match(photos, shuffled))
    assert np.array_equal(shuffled_placement.lat, placement.lat, equal_nan=True)
    row("synthetic track, shuffled", seconds, len(fixes), float(shuffled_placement.placed.mean()))
    seconds, _ = best_of(args.repeat, lambda: confidence(error_km(placement, fixes)))
    row("error_km + confidence", seconds, len(fixes), None)
    real = tiled_gpx(args.fixes)
    if real is not None:
        real_photos = rng.uniform(real.t[0] - 600, real.t[-1] + 600, args.photos)
        seconds, real_placement = best_of(args.repeat, lambda: match(real_photos, real))
        row("Geotag.gpx repeated", seconds, len(real), float(real_placement.placed.mean()))
    local = rng.uniform(START, START + 3 * 365 * 86400, args.photos)
    seconds, times = best_of(args.repeat, lambda: resolve_photo_utc(local, tz="Europe/Berlin"))
    row("zones: Europe/Berlin, 3 years", seconds, 0, float(np.isfinite(times.utc_s).mean()))
    day = rng.uniform(START, START + 86400, args.photos)
    seconds, _ = best_of(args.repeat, lambda: resolve_photo_utc(day, tz="Europe/Berlin"))
    row("zones: Europe/Berlin, one day", seconds, 0, None)
    Console(width=120).print(table)
    verdict = "under" if headline < 10 else "OVER"
    print(
        f"{args.photos:,} photos against {args.fixes:,} fixes matched in {headline:.3f} s "
        f"({verdict} the 10 s bar), {placement.placed.mean():.1%} placed"
    )


if __name__ == "__main__":
    main()
