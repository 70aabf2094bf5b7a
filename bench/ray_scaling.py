"""How `geotag predict --engine ray` scales with workers, on CPU, on one machine (docs/scale.md).

    .venv/bin/python bench/ray_scaling.py [--n 240] [--size 1600x1200] [--configs 1:1,2:1,2:2]
                                          [--block-rows 16] [--batch-size 16] [--dir FOLDER]

Makes N unique JPEGs (the sample renderer at --size, EXIF, a comment per copy; 20 to a sub-folder, so
listing has units to spread), a kNN gallery of the sample photos with the offline EfficientNet-Lite0
weights (real weights, no network), then for each `CPUS:ACTORS` config starts a fresh local Ray with
that many CPUs and runs the Ray engine with that many CPU model actors (one torch thread each). The
local engine (one decode worker) runs first as the reference.

Reported per config: wall time (Ray start-up excluded, actor start-up and model load included) and the
steady rate, measured from the finish times of the part files: (rows after the first part) / (last part
time - first part time), which leaves out the fixed start-up cost a long run amortises; and the CPU time
per image of each stage (from Ray Data's stats), which other load on the machine does not inflate.
With --repeat R the configs run R times, interleaved, and the best steady rate of each is kept.
Prints a table and a one-line summary.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import pyarrow.parquet as pq

from geotag.config import GalleryConfig, PredictConfig
from geotag.engine.gallery import run_gallery_build
from geotag.engine.predict import run_predict
from geotag.sample_data import PLACES, make_exif, make_sample_data, render

PER_FOLDER = 20


def make_photos(folder: Path, n: int, size: tuple[int, int]) -> None:
    """N unique JPEGs from a few renders (a COM segment per copy makes every hash distinct)."""
    bases = []
    for i, place in enumerate(PLACES[:6]):
        buf = io.BytesIO()
        render(place, size).save(buf, "JPEG", quality=90, exif=make_exif(place, datetime(2024, 1, 1 + i)))
        bases.append(buf.getvalue())
    for i in range(n):
        base = bases[i % len(bases)]
        comment = f"bench copy {i}".encode()
        data = base[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + base[2:]
        path = folder / f"d{i // PER_FOLDER:03d}" / f"img_{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def steady_rate(out: Path) -> tuple[float, int]:
    """(images/s between the first and the last finished part, parts) of a Ray output folder."""
    parts = sorted(out.glob("part-*.parquet"), key=lambda p: p.stat().st_mtime)
    if len(parts) < 2:
        return float("nan"), len(parts)
    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in parts[1:])
    span = parts[-1].stat().st_mtime - parts[0].stat().st_mtime
    return rows / span if span > 0 else float("nan"), len(parts)


class StatsCapture(logging.Handler):
    """Keeps the Ray Data stats the engine logs at DEBUG after each run."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.text = ""

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("ray data stats"):
            self.text = record.getMessage()


def cpu_seconds(stats: str) -> dict[str, float]:
    """Total remote CPU seconds per operator (list_blocks, read_block, Predictor) from Ray's stats text."""
    found: dict[str, float] = {}
    for block in re.split(r"\nOperator \d+ ", stats):
        name = re.match(r"MapBatches\((\w+)\)", block)
        cpu = re.search(r"Remote cpu time: .*?([\d.]+)(m?s) total", block)
        if name and cpu:
            found[name.group(1)] = float(cpu.group(1)) / (1000 if cpu.group(2) == "ms" else 1)
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=240)
    ap.add_argument("--size", default="1600x1200")
    ap.add_argument("--configs", default="1:1,2:1,2:2", help="CPUS:ACTORS pairs")
    ap.add_argument("--block-rows", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=1, help="rounds over the configs; the best is kept")
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args(argv)
    import ray

    w, h = (int(v) for v in args.size.split("x"))
    root = args.dir or Path(tempfile.mkdtemp(prefix="geotag-ray-bench-"))
    photos, sample, gallery = root / "photos", root / "sample", root / "gallery.parquet"
    if not photos.exists():
        make_photos(photos, args.n, (w, h))
    if not gallery.exists():
        make_sample_data(sample, trip=False)
        run_gallery_build(GalleryConfig(paths=[sample], out=gallery, device="cpu", workers=0))
    common = {
        "model": "knn",
        "gallery": gallery,
        "device": "cpu",
        "batch_size": args.batch_size,
        "checkpoint_rows": args.block_rows,
    }
    rows: list[tuple[str, float, float, str]] = []
    capture = StatsCapture()
    engine_log = logging.getLogger("geotag.engine.ray_predict")
    engine_log.setLevel(logging.DEBUG)
    engine_log.addHandler(capture)

    out = root / "local.parquet"
    t = time.perf_counter()
    s = run_predict(PredictConfig(paths=[photos], out=out, workers=1, **common))  # type: ignore[arg-type]
    local_wall = time.perf_counter() - t
    rows.append(("local engine (1 decode worker, torch default threads)", local_wall, s.new / local_wall, ""))

    best: dict[str, tuple[str, float, float, str]] = {}
    specs = [spec for _ in range(args.repeat) for spec in args.configs.split(",")]  # rounds interleave
    for spec in specs:
        cpus, actors = (int(v) for v in spec.split(":"))
        out = root / f"ray-{cpus}cpu-{actors}actor"
        shutil.rmtree(out, ignore_errors=True)
        ray.init(num_cpus=cpus, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        try:
            from geotag.engine.ray_predict import run_ray_predict

            cfg = PredictConfig(paths=[photos], out=out, engine="ray", ray_actors=actors, **common)  # type: ignore[arg-type]
            t = time.perf_counter()
            s = run_ray_predict(cfg)
            wall = time.perf_counter() - t
        finally:
            ray.shutdown()
        rate, parts = steady_rate(out)
        cpu = cpu_seconds(capture.text)
        per_image = "; ".join(f"{k} {1000 * v / max(1, s.new):.0f} ms" for k, v in cpu.items())
        label = f"ray: {cpus} CPU(s), {actors} model actor(s)"
        load = os.getloadavg()[0]
        note = f"{s.new} rows, {parts} parts; CPU per image: {per_image}; load avg {load:.1f}"
        if label not in best or rate > best[label][2]:
            best[label] = (label, wall, rate, note)
    rows.extend(best.values())

    print(
        f"\n{args.n} JPEGs {args.size}, kNN (EfficientNet-Lite0, offline weights), CPU, "
        f"{os.cpu_count()} cores"
    )
    print("| run | wall s | images/s | notes |\n|---|---:|---:|---|")
    for label, wall, rate, note in rows:
        print(f"| {label} | {wall:.1f} | {rate:.1f} | {note} |")
    ray_rates = [r[2] for r in rows[1:]]
    if len(ray_rates) >= 2 and ray_rates[0] == ray_rates[0]:
        print(
            f"summary: steady rate {ray_rates[0]:.1f} -> {ray_rates[-1]:.1f} images/s "
            f"({ray_rates[-1] / ray_rates[0]:.2f}x) from the first to the last config"
        )
    if args.dir is None:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
