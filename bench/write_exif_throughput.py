"""Benchmark `geotag write-exif` end to end: files per minute, per-file latency, and undo.

    .venv/bin/python bench/write_exif_throughput.py [--n 2000] [--size 640x480] [--writer auto]
                                                    [--dir FOLDER] [--keep]

Makes N JPEGs without GPS from the sample renderer (geotag.sample_data.render / make_exif; a few
renders, each copy made unique by a JPEG comment so hashes and backups are realistic), a predictions
file for them (positions in all four quadrants, confidence, error_km), then times the library call
`run_write_exif` (hash check, read, write, read-back, fsync, backup, journal, atomic rename: the whole
path the CLI takes) and `run_undo`. The issue's target: thousands of files a minute.
Prints a table and a one-line summary.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from geotag.engine.write_exif import BATCH_SIZE, FileResult, WriteOptions, run_undo, run_write_exif
from geotag.io.parquet import PredictionWriter
from geotag.io.scan import image_id_of_bytes
from geotag.sample_data import PLACES, make_exif, render

TARGET_PER_MINUTE = 2000
BASE_RENDERS = 8


def make_photos(folder: Path, n: int, size: tuple[int, int]) -> list[tuple[Path, str]]:
    """N unique JPEGs without GPS: a few renders, each copy with its own COM segment after SOI."""
    untagged = [p for p in PLACES if p.tagged]
    bases = []
    for i in range(BASE_RENDERS):
        place = untagged[i % len(untagged)]
        exif = make_exif(
            type(place)(place.name, place.lat, place.lon, place.file, tagged=False), datetime(2024, 1, 1)
        )
        buf = io.BytesIO()
        render(place, size).save(buf, "JPEG", quality=90, exif=exif.tobytes())
        bases.append(buf.getvalue())
    out = []
    for i in range(n):
        base = bases[i % len(bases)]
        comment = f"bench copy {i}".encode()
        data = base[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + base[2:]
        path = folder / f"{i // 1000:03d}" / f"img_{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        out.append((path, image_id_of_bytes(data)))
    return out


def write_predictions(path: Path, photos: list[tuple[Path, str]], seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, len(photos))))
    lon = rng.uniform(-180, 180, len(photos))
    with PredictionWriter(path, metadata={"command": "bench"}) as writer:
        for (photo, digest), la, lo in zip(photos, lat, lon, strict=True):
            writer.write(
                {
                    "image_id": digest,
                    "path": str(photo.absolute()),
                    "status": "ok",
                    "pred_lat": float(la),
                    "pred_lon": float(lo),
                    "confidence": float(rng.uniform(0.2, 0.9)),
                    "error_km": float(rng.uniform(1, 2000)),
                    "model": "geoclip",
                }
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="number of photos")
    parser.add_argument("--size", default="640x480", help="rendered size WxH")
    parser.add_argument("--writer", default="auto", choices=["auto", "exiftool", "python"])
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    console = Console()

    work = Path(tempfile.mkdtemp(prefix="geotag-bench-", dir=args.dir))
    try:
        t0 = time.perf_counter()
        photos = make_photos(work / "photos", args.n, (width, height))
        preds = work / "preds.parquet"
        write_predictions(preds, photos)
        setup_s = time.perf_counter() - t0

        stamps: list[float] = []
        results: list[FileResult] = []

        def report(result: FileResult) -> None:
            stamps.append(time.perf_counter())
            results.append(result)

        journal = work / "journal.jsonl"
        start = time.perf_counter()
        summary = run_write_exif(WriteOptions(preds, writer=args.writer, journal=journal), report=report)
        write_s = time.perf_counter() - start
        # results arrive a batch at a time: per-file latency is a batch's time over its size
        ends = [start, *stamps[BATCH_SIZE - 1 :: BATCH_SIZE]]
        if len(stamps) % BATCH_SIZE:
            ends.append(stamps[-1])
        sizes = [BATCH_SIZE] * (len(ends) - 1)
        if len(stamps) % BATCH_SIZE:
            sizes[-1] = len(stamps) % BATCH_SIZE
        per_file_ms = np.diff(ends) * 1000 / np.array(sizes)

        start = time.perf_counter()
        undone = run_undo(journal)
        undo_s = time.perf_counter() - start

        mean_bytes = statistics.mean(p.stat().st_size for p, _ in photos[:50])
        kb = mean_bytes / 1024
        title = f"write-exif throughput ({summary.writer}, {args.n} JPEGs {args.size}, ~{kb:.0f} KB)"
        table = Table(title=title)
        for col in ("step", "files", "seconds", "files/min", "ms/file", "batch p50", "p95", "max"):
            table.add_column(col, justify="right" if col != "step" else "left")
        table.add_row(
            "write-exif",
            str(summary.written),
            f"{write_s:.2f}",
            f"{summary.written / write_s * 60:,.0f}",
            f"{per_file_ms.mean():.1f}",
            f"{np.percentile(per_file_ms, 50):.1f}",
            f"{np.percentile(per_file_ms, 95):.1f}",
            f"{per_file_ms.max():.1f}",
        )
        table.add_row(
            "undo",
            str(undone.restored),
            f"{undo_s:.2f}",
            f"{undone.restored / undo_s * 60:,.0f}",
            f"{undo_s / max(1, undone.restored) * 1000:.1f}",
            "",
            "",
            "",
        )
        table.add_row("(setup: render + predictions)", str(args.n), f"{setup_s:.2f}", "", "", "", "", "")
        console.print(table)
        if summary.failed or undone.failed or summary.written != args.n:
            console.print(f"[red]problems:[/] {summary.describe()}; undo: {undone.describe()}")
        rate = summary.written / write_s * 60
        verdict = "meets" if rate >= TARGET_PER_MINUTE else "MISSES"
        console.print(
            f"write-exif: {summary.written} files in {write_s:.1f} s = {rate:,.0f} files/minute "
            f"({per_file_ms.mean():.1f} ms/file, {summary.writer}, {os.cpu_count()} cores); "
            f"undo {undone.restored / undo_s * 60:,.0f} files/minute; "
            f"{verdict} the {TARGET_PER_MINUTE:,}/min target",
            highlight=False,
        )
        return 0 if not summary.failed and not undone.failed else 1
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
