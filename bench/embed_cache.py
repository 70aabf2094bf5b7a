"""The embedding cache (`geotag embed`, `train --embeddings`): images/s of embedding, and seconds per
epoch of GeoCLIP's head training (image MLP + logit scale, GPS queue) on cached features.

    .venv/bin/python bench/embed_cache.py [--photos 64] [--rows 4096] [--batch-size 256]
        [--backbone geoclip|efficientnet_lite0.imagenet] [--backbone-weights PATH] [--device cpu|cuda]

1. embed: --photos synthetic EXIF-tagged JPEGs (320x240) through --backbone on --device; images/s is
   decoding + forward (the run's loop, without the model build). With no --backbone-weights the geoclip
   tower is a tiny random CLIP (64 px), so on CPU this row times decoding more than a ViT-L.
2. heads: a synthetic cache of --rows random 768-d features with random coordinates, stamped with the
   fingerprint of the model's tower (so `train --embeddings` accepts it), then one epoch of GeoCLIP's
   head training at --batch-size with the 4096 GPS queue. The head's cost does not depend on the tower
   (the features are read, not computed), so the tiny tower times it faithfully. Printed: steps, epoch
   seconds (from the loop's start to its last step; the queue fills during the first 4096 / batch
   steps) and samples/s. GPU command and the 8-GPU target in docs/training.md ("Cached embeddings").
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # make_photos lives beside, in train_scaling
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' tiny weights

from tiny_weights import save_tiny_hf_clip  # noqa: E402
from train_scaling import make_photos  # noqa: E402


def synthetic_cache(folder: Path, rows: int, fingerprint_of: object, shard: int = 100_000) -> None:
    """--rows random features as a complete cache made by `fingerprint_of` (an engine.embed FeatureSource)."""
    import dataclasses

    import numpy as np
    import pyarrow as pa

    from geotag.engine.train import fingerprint
    from geotag.io.embed_cache import CacheInfo, write_info, write_part
    from geotag.io.samples import TrainSamples

    src = fingerprint_of
    rng = np.random.default_rng(0)
    lat, lon = np.degrees(np.arcsin(rng.uniform(-1, 1, rows))), rng.uniform(-180, 180, rows)
    ids = pa.array([f"s{i:08d}" for i in range(rows)])
    samples = TrainSamples(ids, ids, lat, lon, np.full(rows, -1), pa.nulls(rows, pa.string()))
    pre = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(src.preprocess).items()}  # type: ignore[attr-defined]
    info = CacheInfo(
        backbone=src.name,  # type: ignore[attr-defined]
        weights=src.weights,  # type: ignore[attr-defined]
        fingerprint=src.fingerprint,  # type: ignore[attr-defined]
        feature_dim=src.feature_dim,  # type: ignore[attr-defined]
        dtype="float16",
        preprocess=pre,
        shard_size=shard,
        n_samples=rows,
        data_fingerprint=fingerprint(samples),
    )
    folder.mkdir(parents=True)
    for k in range(info.n_parts):
        idx = np.arange(k * shard, min(rows, (k + 1) * shard))
        feats = rng.standard_normal((len(idx), info.feature_dim), dtype=np.float32)
        write_part(folder, k, info, samples.take(idx), ["synthetic"] * len(idx), feats, [None] * len(idx))
    info.ok, info.complete = rows, True
    write_info(folder, info)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=64)
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--backbone", default="geoclip")
    ap.add_argument("--backbone-weights", type=Path, default=None)
    ap.add_argument("--clip-weights", type=Path, default=None, help="heads stage: GeoCLIP's tower [tiny]")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args()

    from geotag.config import EmbedConfig, TrainConfig
    from geotag.engine.embed import resolve_source, run_embed
    from geotag.engine.train import TrainMonitor, run_train
    from geotag.engine.train_data import load_samples

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        clip = args.clip_weights or save_tiny_hf_clip(root / "tinyclip")
        weights = args.backbone_weights or (clip if args.backbone == "geoclip" else None)
        make_photos(root / "photos", args.photos)
        ecfg = EmbedConfig(
            data=[root / "photos"],
            out=root / "cache",
            backbone=args.backbone,
            backbone_weights=weights,
            device=args.device,
            workers=args.workers,
        )
        s = run_embed(ecfg)
        embed_rate = s.embedded / max(s.loop_seconds, 1e-9)

        heads = replace(ecfg, backbone="geoclip", backbone_weights=clip)
        synthetic_cache(root / "synthetic", args.rows, resolve_source(heads, load_samples([root / "photos"])))
        tcfg = TrainConfig(
            data=[],
            out=root / "run",
            model="geoclip",
            backbone_weights=clip,
            allow_mismatched_heads=True,
            epochs=1,
            batch_size=args.batch_size,
            val_fraction=0.0,
            device=args.device,
            log_to=(),
            augment=False,
            embeddings=root / "synthetic",
        )

        class Clock(TrainMonitor):
            times: list[float] = []

            def start(self, total_steps: int, done_steps: int, info: dict) -> None:
                self.times.append(time.monotonic())  # the loop starts: data and model are ready

            def step(self, step: int, logs: dict[str, float]) -> None:
                self.times.append(time.monotonic())

        clock = Clock()
        started = time.monotonic()
        summary = run_train(tcfg, monitor=clock)
        wall = time.monotonic() - started
        epoch_s = clock.times[-1] - clock.times[0]  # every step of the epoch, the queue filling included
    print(f"| stage | {'size':>24} | {'rate':>16} | {'seconds':>8} |")
    print("|---|---:|---:|---:|")
    print(
        f"| embed ({s.backbone}, {args.device}) | {s.embedded:>15} photos | {embed_rate:>9.1f} img/s | "
        f"{s.loop_seconds:>8.2f} |"
    )
    print(
        f"| geoclip heads, 1 epoch | {args.rows:>10} rows, {summary.steps} steps | "
        f"{args.rows / epoch_s:>7.0f} samples/s | {epoch_s:>8.2f} |"
    )
    print(
        f"embed {embed_rate:.1f} images/s; GeoCLIP-head epoch on {args.rows} cached embeddings: "
        f"{epoch_s:.2f} s (batch {args.batch_size}, queue 4096, {args.device}; wall with setup {wall:.1f} s)"
    )


if __name__ == "__main__":
    main()
