"""Is peak host memory of `geotag predict` flat in the number of files? (issue 7, GUIDE section 1)

    .venv/bin/python bench/memory_flat.py [--counts 1000,100000] [--workers W] [--dir FOLDER]

Makes N tiny 8x8 JPEGs with GPS EXIF (1,000 per folder, as cameras do), then, in a fresh process per N
(so one N's peak cannot hide in another's), measures peak host memory (RSS plus the private memory of
the DataLoader workers) for: the folder walk into the work list; `run_predict` end to end with a stub
model (decode and prediction cost nothing, so listing, scanning, the stager, the writer thread, part
files and the final merge are all that is left); and a `--resume` run that finds everything done.
Prints a table and a one-line summary with the growth from the smallest to the largest N.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from geotag.config import PredictConfig
from geotag.models.base import GeoModel, Prediction, Preprocess
from geotag.sample_data import Place, make_exif

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predict_throughput import Measure  # noqa: E402  (same folder: the memory sampler)

PER_FOLDER = 1000


class StubModel(GeoModel):
    """A model that costs nothing: the prediction is a function of each image's mean grey level."""

    name = "stub"
    weights_label = "stub (no weights)"

    def preprocess(self) -> Preprocess:
        return Preprocess(8, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bilinear")

    def predict(self, images: torch.Tensor, top_k: int) -> Prediction:
        m = images.float().mean(dim=(1, 2, 3)).double()
        lat, lon = (m * 60).clamp(-89, 89), (m * 170).clamp(-180, 180)
        steps = torch.arange(top_k, dtype=torch.float64)
        topk_lat, topk_lon = lat[:, None] - steps, lon[:, None] + steps
        score = torch.full((len(m), top_k), 1.0 / top_k)
        return Prediction(lat, lon, score[:, 0].clone(), topk_lat, topk_lon, score)


def make_tiny_photos(folder: Path, n: int) -> None:
    """n distinct 8x8 JPEGs with GPS EXIF (made once; a marker file says they are complete)."""
    done = folder / ".complete"
    if done.exists() and done.read_text() == str(n):
        return
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    exif = make_exif(Place("x", 48.85, 2.35, "x.jpg"), datetime(2024, 1, 1)).tobytes()
    Image.new("RGB", (8, 8), (90, 140, 200)).save(buf, "JPEG", quality=90, exif=exif)
    base = buf.getvalue()
    for i in range(n):
        sub = folder / f"{i // PER_FOLDER:04d}"
        if i % PER_FOLDER == 0:
            sub.mkdir(exist_ok=True)
        tag = f"{i}".encode()
        com = b"\xff\xfe" + (len(tag) + 2).to_bytes(2, "big") + tag  # a unique image_id per file
        (sub / f"IMG_{i:07d}.jpg").write_bytes(base[:2] + com + base[2:])
    done.write_text(str(n))


def child(folder: Path, workers: int | None, out_dir: Path) -> dict[str, Any]:
    """One N, in its own process: listing, a full run, a resume run; peak host memory of each."""
    from geotag.engine.predict import run_predict
    from geotag.io.parts import PartStore
    from geotag.io.scan import iter_records

    device = torch.device("cpu")
    result: dict[str, Any] = {}
    with Measure(device) as m:
        store = PartStore(out_dir / "list.parquet")
        _, listed, _, _ = store.write_file_list(iter_records([folder]))
    result["files"] = listed
    result["listing"] = (m.peak_host, m.seconds)
    cfg = PredictConfig(paths=[folder], out=out_dir / "preds.parquet", workers=workers, device="cpu")
    model = StubModel()
    with Measure(device) as m:
        summary = run_predict(cfg, model=model)
    assert summary.total == listed and summary.failed == 0, summary
    result["predict"] = (m.peak_host, m.seconds)
    resume = PredictConfig(**{**cfg.__dict__, "resume": True})
    with Measure(device) as m:
        summary = run_predict(resume, model=model)
    assert summary.skipped == listed, summary
    result["resume"] = (m.peak_host, m.seconds)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--counts", default="1000,100000")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--dir", type=Path, default=None, help="where the photos are made (kept)")
    ap.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(child(args.child, args.workers, Path(tmp))))
        return 0
    root = args.dir or Path(tempfile.mkdtemp(prefix="geotag-memflat-"))
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    results = []
    for n in (int(c) for c in args.counts.split(",")):
        folder = root / f"tiny-{n}"
        t0 = time.perf_counter()
        make_tiny_photos(folder, n)
        print(f"{n:,} photos ready in {time.perf_counter() - t0:.1f}s", flush=True)
        cmd = [sys.executable, __file__, "--child", str(folder)]
        if args.workers is not None:
            cmd += ["--workers", str(args.workers)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return 1
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(res)
        print(f"{n:,}: done", flush=True)
    print("\n| files | phase | peak host MiB (RSS + workers' private) | seconds | files/s |")
    print("|---|---|---|---|---|")
    for res in results:
        for phase in ("listing", "predict", "resume"):
            peak, secs = res[phase]
            rate = res["files"] / secs
            print(f"| {res['files']:,} | {phase} | {peak / 2**20:,.0f} | {secs:,.1f} | {rate:,.0f} |")
    first, last = results[0], results[-1]
    growth = []
    for phase in ("listing", "predict", "resume"):
        extra = (last[phase][0] - first[phase][0]) / 2**20
        per_k = extra / max(1, (last["files"] - first["files"]) / 1000)
        growth.append(f"{phase} {extra:+,.0f} MiB ({per_k:+.2f} MiB per 1,000 files)")
    print(f"\nsummary: {first['files']:,} -> {last['files']:,} files: " + "; ".join(growth))
    if args.dir is None:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
