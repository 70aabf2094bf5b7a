"""How `geotag train` scales with data-parallel processes (engine/distributed.py), weak scaling: each
process keeps --per-process-batch images per micro-batch, so the global --batch-size is that times N.

    .venv/bin/python bench/train_scaling.py [--procs 1,2] [--steps 12] [--per-process-batch 8]
                                            [--size tiny|small|base] [--device cpu|cuda] [--dir FOLDER]

For each N it starts `torchrun --standalone --nproc-per-node N` on this script (worker mode when
WORLD_SIZE is set), which trains TransLocator's ViT (random init, full fine-tuning, no validation) on
synthetic EXIF-tagged JPEGs for --steps optimizer steps. Rank 0 times the steps; the first is left out
(it pays start-up). Printed per N: global images/s, images/s per process, and the scaling efficiency
(images/s at N) / (N x images/s at 1). On CPU each process gets one torch thread, so N processes need
N free cores; GPU command in docs/training.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

SIZES = {
    "tiny": ({"embed_dim": 32, "depth": 2, "num_heads": 2, "patch_size": 16}, 32),
    "small": ({"embed_dim": 192, "depth": 6, "num_heads": 3, "patch_size": 16}, 96),
    "base": ({"embed_dim": 768, "depth": 12, "num_heads": 12, "patch_size": 16}, 224),
}


def make_photos(folder: Path, n: int) -> None:
    from geotag.sample_data import Place, make_exif, render

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        place = Place(f"P{i}", -60 + (i * 7) % 120, -170 + (i * 37) % 340, f"p{i:04d}.jpg", tagged=True)
        render(place, size=(320, 240)).save(
            folder / place.file, exif=make_exif(place, datetime(2024, 1, 1)).tobytes()
        )


def worker(args: argparse.Namespace) -> None:
    import torch

    from geotag.config import TrainConfig
    from geotag.engine.train import TrainMonitor, run_train
    from geotag.models.tasks import TransLocatorTask
    from geotag.models.translocator import BackboneConfig

    if args.device == "cpu":
        torch.set_num_threads(1)
    world = int(os.environ["WORLD_SIZE"])
    overrides, img = SIZES[args.size]

    class Clock(TrainMonitor):
        times: list[float] = []

        def step(self, step: int, logs: dict[str, float]) -> None:
            self.times.append(time.monotonic())

    clock = Clock()
    backbone = BackboneConfig(arch="vit_base_patch16_224", tag="none", overrides=overrides)
    task = TransLocatorTask("vit", model_kwargs={"backbone": backbone, "img_size": img}, cells_scale="auto")
    cfg = TrainConfig(
        data=[Path(args.dir) / "photos"],
        out=Path(args.dir) / f"run-{world}",
        model="translocator",
        variant="vit",
        epochs=100,
        max_steps=args.steps,
        batch_size=args.per_process_batch * world,
        workers=args.workers,
        device=args.device,
        allow_untrained=True,
        freeze_backbone=False,
        val_fraction=0.0,
        log_to=(),
        keep=1,
    )
    run_train(cfg, task=task, monitor=clock)
    if int(os.environ["RANK"]) == 0:
        t = clock.times
        rate = (len(t) - 1) * cfg.batch_size / (t[-1] - t[0])
        print("RESULT " + json.dumps({"procs": world, "images_per_s": rate}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--procs", default="1,2")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--per-process-batch", type=int, default=8)
    ap.add_argument("--size", choices=sorted(SIZES), default="small")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    if "WORLD_SIZE" in os.environ:
        worker(args)
        return
    procs = [int(p) for p in args.procs.split(",")]
    base = Path(args.dir or tempfile.mkdtemp(prefix="geotag-train-scaling-"))
    args.dir = str(base)
    need = args.per_process_batch * max(procs) * (args.steps + 1)
    if not (base / "photos").is_dir():
        make_photos(base / "photos", need)
    torchrun = Path(sys.executable).with_name("torchrun")
    results: dict[int, float] = {}
    for n in procs:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        cmd = [str(torchrun), "--standalone", "--nproc-per-node", str(n), __file__]
        cmd += ["--steps", str(args.steps), "--per-process-batch", str(args.per_process_batch)]
        cmd += ["--size", args.size, "--device", args.device, "--workers", str(args.workers)]
        cmd += ["--dir", args.dir]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if proc.returncode or line is None:
            sys.exit(f"{n} process(es) failed: {proc.stderr[-2000:]}")
        results[n] = json.loads(line[7:])["images_per_s"]
        shutil.rmtree(base / f"run-{n}", ignore_errors=True)
    one = results.get(1)
    print(f"{args.size} ViT, {args.device}, {args.per_process_batch} images per process and micro-batch")
    print("| processes | images/s | images/s per process | scaling efficiency |")
    print("|---|---|---|---|")
    for n, rate in results.items():
        eff = f"{rate / (n * one) * 100:.0f} %" if one else "n/a"
        print(f"| {n} | {rate:.1f} | {rate / n:.1f} | {eff} |")


if __name__ == "__main__":
    main()
