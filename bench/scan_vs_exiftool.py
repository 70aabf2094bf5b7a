"""`geotag scan` against `exiftool -r -n -j -gps:all` on the same folder, in one run.

    .venv/bin/python bench/scan_vs_exiftool.py [--n 2000] [--src FOLDER] [--dir FOLDER] [--repeat 2]

Copies the JPEGs under --src (default: the shared geotagged fixtures) round-robin into N files of a
temporary folder (each copy made unique by appending a few bytes after the image end), warms the page
cache once, then runs each tool --repeat times as a fresh process and keeps its best run. Reports
files/s, start-up (the same command on an empty folder), and peak RSS (wait4's ru_maxrss: the largest
single process, worker processes included). Targets (issue 20): scan >= 2x exiftool's files/s, start-up
< 0.5 s, peak memory < 300 MB.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SRC = REPO.parent / "shared" / "fixtures" / "geotagged"


def run_measured(cmd: list[str]) -> tuple[float, float, int]:
    """(wall seconds, peak RSS in MB, exit code) of one fresh process."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    return wall, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)


def make_folder(src: Path, dest: Path, n: int) -> None:
    photos = sorted(p for p in src.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg"})
    if not photos:
        raise SystemExit(f"no JPEGs under {src}")
    dest.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        data = photos[i % len(photos)].read_bytes() + i.to_bytes(4, "big")
        (dest / f"{i:05d}.jpg").write_bytes(data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--src", type=Path, default=DEFAULT_SRC)
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    exiftool = shutil.which("exiftool")
    work = Path(tempfile.mkdtemp(dir=args.dir, prefix="scan-vs-exiftool-"))
    try:
        photos, empty = work / "photos", work / "empty"
        make_folder(args.src, photos, args.n)
        empty.mkdir()
        for p in photos.iterdir():  # warm the page cache so both tools read from memory
            p.read_bytes()
        geotag = [sys.executable, "-m", "geotag.cli", "scan"]
        tools = {"geotag scan": lambda d: [*geotag, str(d), "--out", str(work / "scan.parquet")]}
        if exiftool:
            tools["exiftool"] = lambda d: [exiftool, "-r", "-n", "-j", "-gps:all", str(d)]
        results = {}
        for name, cmd in tools.items():
            runs = [run_measured(cmd(photos)) for _ in range(args.repeat)]
            wall, rss, code = min(runs)
            start_up = min(run_measured(cmd(empty))[0] for _ in range(args.repeat))
            results[name] = (args.n / wall, start_up, max(r[1] for r in runs), code)
        print(f"{args.n} JPEGs, best of {args.repeat}:")
        print("| tool | files/s | start-up s | peak RSS MB | exit |")
        for name, (fps, start_up, rss, code) in results.items():
            print(f"| {name} | {fps:.0f} | {start_up:.2f} | {rss:.0f} | {code} |")
        if exiftool:
            ratio = results["geotag scan"][0] / results["exiftool"][0]
            fps, start_up, rss, _ = results["geotag scan"]
            print(
                f"summary: scan {ratio:.2f}x exiftool's files/s (target >= 2), start-up {start_up:.2f} s"
                f" (target < 0.5), peak {rss:.0f} MB (target < 300)"
            )
        else:
            print("summary: exiftool not on PATH; geotag scan alone measured")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
