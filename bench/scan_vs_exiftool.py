"""`geotag scan` against `exiftool -r -n -j -gps:all` on the same folder, side by side in one run.

    .venv/bin/python bench/scan_vs_exiftool.py [--n 3000] [--src FOLDER ...] [--dir FOLDER] [--repeat 3]
        [--baseline CHECKOUT]

Copies the JPEGs under --src (default: the 71 OSV-5M street photos, real JPEGs of about 54 KB with no
EXIF: the case where exiftool is fastest) round-robin into N files of a temporary folder, each copy made
unique (a different content hash) by appending 4 bytes after the JPEG's end-of-image marker. Warms the
page cache once, then runs the tools in turn, --repeat rounds, each run a fresh process, so every tool
meets the same load; keeps each tool's best run. Reports files/s (wall), CPU seconds (user + sys of the
process and its workers: the steadier figure on a shared machine), start-up (wall and CPU seconds of
the same command on an empty folder, from process start to exit: for geotag scan, Python's start, the
imports, parsing, the walk and writing the empty Parquet file), peak RSS (the largest single process),
and Python's own start (`python -c pass`, `python -S -c pass`): the floor under any start-up. Python
runs as installed, byte-code cached (PYTHONDONTWRITEBYTECODE is dropped; the first round writes it).
--baseline runs another checkout's `geotag scan` too (e.g. `git archive` of an earlier commit), for
before/after under the same load; each checkout runs from its own folder, so `-m geotag.cli` finds it.
Targets (issue 28, item 11): scan >= 2x exiftool's files/s, start-up < 0.2 s.
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
FIXTURES = REPO.parent / "shared" / "fixtures"
DEFAULT_SRC = FIXTURES / "osv5m-71"


def run_measured(cmd: list[str], pythonpath: Path = REPO) -> tuple[float, float, float, int]:
    """(wall seconds, CPU seconds, peak RSS in MB, exit code) of one fresh process."""
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: byte-code cached after the first run
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=pythonpath
    )  # cwd: `python -m` puts the working folder first on sys.path
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)


def make_folder(sources: list[Path], dest: Path, n: int) -> None:
    photos = sorted(p for src in sources for p in src.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg"})
    if not photos:
        raise SystemExit(f"no JPEGs under {', '.join(map(str, sources))}")
    dest.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        data = photos[i % len(photos)].read_bytes() + i.to_bytes(4, "big")
        (dest / f"{i:05d}.jpg").write_bytes(data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--src", type=Path, action="append", help="folder of real JPEGs (repeatable)")
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--baseline", type=Path, default=None, help="another geotag checkout to run as well")
    args = ap.parse_args()
    sources = args.src or [DEFAULT_SRC]
    exiftool = shutil.which("exiftool")
    work = Path(tempfile.mkdtemp(dir=args.dir, prefix="scan-vs-exiftool-"))
    try:
        photos, empty = work / "photos", work / "empty"
        make_folder(sources, photos, args.n)
        empty.mkdir()
        size = sum(p.stat().st_size for p in photos.iterdir()) / args.n / 1024
        for p in photos.iterdir():  # warm the page cache so every tool reads from memory
            p.read_bytes()
        scan = [sys.executable, "-m", "geotag.cli", "scan"]
        tools = {"geotag scan": (lambda d: [*scan, str(d), "--out", str(work / "scan.parquet")], REPO)}
        if args.baseline:
            tools["geotag scan (baseline)"] = (tools["geotag scan"][0], args.baseline.resolve())
        if exiftool:
            tools["exiftool"] = (lambda d: [exiftool, "-r", "-n", "-j", "-gps:all", str(d)], REPO)
        runs: dict[str, list[tuple[float, float, float, int]]] = {name: [] for name in tools}
        starts: dict[str, list[tuple[float, float, float, int]]] = {name: [] for name in tools}
        floors = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "python -S -c pass": [sys.executable, "-S", "-c", "pass"],
        }
        floor_runs: dict[str, list[tuple[float, float, float, int]]] = {name: [] for name in floors}
        load = os.getloadavg()[0]
        for _ in range(args.repeat):  # rounds: each tool in turn, so all meet the same load
            for name, (cmd, path) in tools.items():
                runs[name].append(run_measured(cmd(photos), path))
                starts[name].append(run_measured(cmd(empty), path))
            for name, cmd_line in floors.items():
                floor_runs[name].append(run_measured(cmd_line))
        print(
            f"{args.n} JPEGs (copies of {', '.join(s.name for s in sources)}; mean {size:.0f} KB), best of "
            f"{args.repeat}, load average {load:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs:"
        )
        print("| tool | files/s | CPU s | start-up wall s | start-up CPU s | peak RSS MB | exit |")
        best = {}
        for name in tools:
            wall, cpu = min(r[0] for r in runs[name]), min(r[1] for r in runs[name])
            rss, code = max(r[2] for r in runs[name]), max(r[3] for r in runs[name])
            start_wall, start_cpu = min(r[0] for r in starts[name]), min(r[1] for r in starts[name])
            best[name] = (args.n / wall, cpu, start_wall, start_cpu)
            cells = [
                f"{args.n / wall:.0f}",
                f"{cpu:.2f}",
                f"{start_wall:.2f}",
                f"{start_cpu:.2f}",
                f"{rss:.0f}",
            ]
            print(f"| {name} | {' | '.join(cells)} | {code} |")
        for name in floors:
            start_wall, start_cpu = min(r[0] for r in floor_runs[name]), min(r[1] for r in floor_runs[name])
            print(f"| {name} (floor) | | | {start_wall:.2f} | {start_cpu:.2f} | | |")
        if exiftool:
            fps, cpu, start_wall, start_cpu = best["geotag scan"]
            ratio, cpu_ratio = fps / best["exiftool"][0], best["exiftool"][1] / cpu
            line = f"summary: scan {ratio:.2f}x exiftool's files/s ({cpu_ratio:.2f}x in CPU s; target >= 2)"
            if args.baseline:
                base = best["geotag scan (baseline)"]
                line += (
                    f", baseline {base[0] / best['exiftool'][0]:.2f}x ({best['exiftool'][1] / base[1]:.2f}x)"
                )
            print(f"{line}; start-up {start_wall:.2f} s wall, {start_cpu:.2f} s CPU (target < 0.2)")
        else:
            print("summary: exiftool not on PATH; geotag scan alone measured")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
