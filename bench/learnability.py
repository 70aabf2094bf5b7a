"""Learnability benchmark: can geotag learn where a picture was taken when the picture says so?

    .venv/bin/python bench/learnability.py [--n-train 3000] [--n-val 600] [--epochs 8] [--device auto]

It renders a synthetic world whose images depend on where they are, trains a small model on CPU for a
few minutes through the whole pipeline, and scores it against constant answers:

- the world: 12 regions (clusters of photos around fixed centres, like continents), landmarks (8 fixed
  places with many photos each, like tourist spots) and a few photos anywhere. An image shows a sky
  whose tint depends on the hemisphere, ground coloured by climate band (tropical / arid / temperate /
  boreal / polar) with a shade that varies continuously with latitude and longitude, a region texture
  (stripes whose angle and spacing name the region, whose phase follows the longitude), a landmark
  glyph (shape and colour of its own) near a landmark, and nuisances (sun, hills, brightness, noise);
- the pipeline: images written as JPEGs with GPS EXIF, a training manifest (path, lat, lon) and a
  validation manifest, `geotag.engine.train.run_train` with the TransLocator task (geocells built from
  the training coordinates, per-partition cross-entropy 0.5 / 0.3 / 0.2, hierarchical inference) on a
  small random-init ViT (TransLocator's RGB-only ablation row), then `run_predict` with the checkpoint
  (`predict --weights`) and `geotag eval`'s SQL on the predictions file;
- the baselines: always the spherical mean of the training coordinates; always the centroid of the most
  populous fine cell.

`--variant vit+seg` / `vit+seg+mff` train the segmentation rows on the maps the renderer knows (sky,
ground and each landmark as ADE20K classes, written as PNGs and read with --seg-dir), so `--fusion sum`
(the paper) and `--fusion mean` can be compared.

It proves that data, cells, losses, the hierarchy, checkpoints and inference work together. It is not
an accuracy claim about real photos. On a GPU (one H100), a bigger run:

    python bench/learnability.py --device cuda --n-train 40000 --n-val 4000 --epochs 20 \
        --width 192 --depth 6 --batch-size 256 --workers 8
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import random
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from rich.console import Console
from rich.table import Table

from geotag.config import PredictConfig, TrainConfig
from geotag.engine.predict import run_predict
from geotag.engine.train import distance_metrics, mean_location, run_train
from geotag.eval.metrics import evaluate
from geotag.geo.cells import Geocells
from geotag.geo.distance import DEFAULT_THRESHOLDS_KM, EARTH_RADIUS_KM
from geotag.models.tasks import TransLocatorTask
from geotag.models.translocator import CELLS_FILE, BackboneConfig
from geotag.sample_data import Place, make_exif

REGIONS = (  # (lat, lon) centres, roughly where people take photos
    (48.0, 5.0),
    (40.0, -95.0),
    (35.0, 135.0),
    (-25.0, 135.0),
    (-15.0, -55.0),
    (0.0, 20.0),
    (25.0, 80.0),
    (55.0, 40.0),
    (15.0, 105.0),
    (-35.0, -65.0),
    (60.0, -110.0),
    (25.0, 45.0),
)
LANDMARKS = (  # (lat, lon, shape, colour)
    (48.8584, 2.2945, "triangle", (200, 40, 40)),
    (40.6892, -74.0445, "star", (40, 200, 60)),
    (35.6586, 139.7454, "circle", (240, 240, 40)),
    (-33.8568, 151.2153, "square", (40, 80, 220)),
    (29.9792, 31.1342, "diamond", (250, 140, 20)),
    (-22.9519, -43.2105, "cross", (220, 40, 220)),
    (27.1751, 78.0421, "ring", (20, 220, 220)),
    (55.7539, 37.6208, "bars", (120, 60, 20)),
)
CLIMATE = (  # (upper |lat|, ground colour)
    (15.0, (40, 150, 50)),
    (35.0, (200, 170, 100)),
    (55.0, (90, 140, 60)),
    (66.0, (30, 90, 60)),
    (90.0, (230, 235, 240)),
)


# ------------------------------------------------------------------------------------------------
# The world


def sample_locations(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """15 % near a landmark (sigma 40 km), 75 % in a region (sigma 6 degrees), 10 % anywhere."""
    kind = rng.choice(3, size=n, p=[0.15, 0.75, 0.10])
    lat, lon = np.empty(n), np.empty(n)
    for i in range(n):
        if kind[i] == 0:
            c = LANDMARKS[rng.integers(len(LANDMARKS))]
            s = 40.0 / 111.2
            lat[i], lon[i] = c[0] + rng.normal(0, s), c[1] + rng.normal(0, s) / math.cos(math.radians(c[0]))
        elif kind[i] == 1:
            c = REGIONS[rng.integers(len(REGIONS))]
            lat[i], lon[i] = c[0] + rng.normal(0, 6.0), c[1] + rng.normal(0, 6.0)
        else:
            lat[i], lon[i] = math.degrees(math.asin(rng.uniform(-0.87, 0.97))), rng.uniform(-180, 180)
    return np.clip(lat, -89.0, 89.0), (lon + 180.0) % 360.0 - 180.0


def _km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = (
        math.sin((p2 - p1) / 2) ** 2
        + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(min(1.0, a)))


def _shade(colour: tuple[int, int, int], f: float) -> tuple[int, int, int]:
    return tuple(int(max(0, min(255, c * f))) for c in colour)  # type: ignore[return-value]


def _glyph(
    draw: ImageDraw.ImageDraw, shape: str, colour: tuple[int, int, int], cx: int, cy: int, r: int
) -> None:
    if shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    elif shape == "star":
        pts = []
        for k in range(10):
            rr = r if k % 2 == 0 else r // 2
            a = math.pi / 2 + k * math.pi / 5
            pts.append((cx + rr * math.cos(a), cy - rr * math.sin(a)))
        draw.polygon(pts, fill=colour)
    elif shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif shape == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=colour)
    elif shape == "cross":
        w = max(1, r // 3)
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=colour)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=colour)
    elif shape == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=colour, width=max(2, r // 3))
    else:  # bars
        for k in range(3):
            x = cx - r + k * r
            draw.rectangle([x, cy - r, x + max(1, r // 3), cy + r], fill=colour)


SEG_SKY, SEG_GROUND = 2, 13  # ADE20K class ids (sky, earth): the map the renderer knows
SEG_LANDMARKS = (1, 25, 48, 84, 20, 32, 42, 12)  # one ADE20K id per landmark glyph


def render(
    lat: float, lon: float, size: int, rng: random.Random, seg: Image.Image | None = None
) -> Image.Image:
    """One picture of the synthetic world at (lat, lon); see the module docstring. `seg` (mode L, the
    same size) receives its segmentation map: sky, ground and each landmark's own class."""
    img = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(img)
    seg_draw = ImageDraw.Draw(seg) if seg is not None else None
    if seg_draw is not None:
        seg_draw.rectangle([0, 0, size, size], fill=SEG_SKY)
    horizon = int(size * rng.uniform(0.35, 0.55))
    tint = (90, 150, 235) if lat >= 0 else (150, 120, 235)  # hemisphere
    bright = 0.75 + 0.35 * math.cos(math.radians(lat))
    for y in range(horizon):
        t = y / max(1, horizon)
        draw.line([(0, y), (size, y)], fill=_shade(tint, bright * (0.8 + 0.3 * t)))
    sx = rng.randint(0, size)
    draw.ellipse([sx - size // 10, size // 10, sx + size // 10, size // 10 + size // 5], fill=(255, 230, 120))
    band = next(i for i, (top, _) in enumerate(CLIMATE) if abs(lat) <= top)
    lo = CLIMATE[band - 1][0] if band else 0.0
    within = (abs(lat) - lo) / (CLIMATE[band][0] - lo)
    base = CLIMATE[band][1]
    ground = (
        int(base[0] * (0.75 + 0.5 * within)),
        int(base[1] * (0.85 + 0.3 * (0.5 + 0.5 * math.sin(math.radians(lon))))),
        int(base[2] * (0.85 + 0.3 * (0.5 + 0.5 * math.cos(math.radians(lon))))),
    )
    ground = _shade(ground, 1.0)
    amp, phase = rng.uniform(2, size / 10), rng.uniform(0, math.tau)
    pts = [(x, horizon + amp * math.sin(x / (size / 6) + phase)) for x in range(0, size + 4, 4)]
    draw.polygon([(0, size), *pts, (size, size)], fill=ground)
    if seg_draw is not None:
        seg_draw.polygon([(0, size), *pts, (size, size)], fill=SEG_GROUND)
    region = min(range(len(REGIONS)), key=lambda k: _km(lat, lon, *REGIONS[k]))
    angle = math.radians(region * 15.0)
    spacing = 4 + (region % 4) * 2
    shift = (lon - REGIONS[region][1]) / 6.0 * spacing  # continuous within the region
    dark = _shade(ground, 0.6)
    dx, dy = math.cos(angle), math.sin(angle)
    for k in range(-2 * size // spacing, 2 * size // spacing):
        off = k * spacing + shift
        cx, cy = size / 2 + off * -dy, size / 2 + off * dx
        a = (cx - dx * size * 1.5, cy - dy * size * 1.5)
        b = (cx + dx * size * 1.5, cy + dy * size * 1.5)
        draw.line([a, b], fill=dark, width=1)
    draw.rectangle([0, 0, size, horizon], fill=None)
    for k, (lm_lat, lm_lon, shape, colour) in enumerate(LANDMARKS):
        if _km(lat, lon, lm_lat, lm_lon) <= 150.0:
            r = rng.randint(size // 8, size // 5)
            cx, cy = rng.randint(r, size - r), rng.randint(r, horizon + r)
            _glyph(draw, shape, colour, cx, cy, r)
            if seg_draw is not None:
                _glyph(seg_draw, shape, SEG_LANDMARKS[k], cx, cy, r)  # type: ignore[arg-type]
    arr = np.asarray(img, dtype=np.float32) * rng.uniform(0.85, 1.15)
    arr += np.random.default_rng(rng.getrandbits(32)).normal(0, 6, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def write_split(
    folder: Path,
    name: str,
    lat: np.ndarray,
    lon: np.ndarray,
    size: int,
    seed: int,
    seg_dir: Path | None = None,
) -> Path:
    """JPEGs with GPS EXIF under folder/name/, and folder/name.csv (path, lat, lon); with `seg_dir`,
    each image's segmentation map as seg_dir/STEM.png (ADE20K labels, as `geotag segment` writes)."""
    (folder / name).mkdir(parents=True, exist_ok=True)
    manifest = folder / f"{name}.csv"
    with manifest.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["path", "lat", "lon"])
        for i, (a, b) in enumerate(zip(lat.tolist(), lon.tolist(), strict=True)):
            stem = f"{name}-{i:06d}" if seg_dir is not None else f"{i:06d}"  # one maps folder for both
            rel = f"{name}/{stem}.jpg"
            place = Place(rel, a, b, rel)
            seg = Image.new("L", (size, size)) if seg_dir is not None else None
            img = render(a, b, size, random.Random(f"{seed}:{name}:{i}"), seg)
            if seg is not None and seg_dir is not None:
                seg.save(seg_dir / f"{stem}.png")
            img.save(folder / rel, quality=92, exif=make_exif(place, datetime(2024, 1, 1)).tobytes())
            out.writerow([rel, f"{a:.6f}", f"{b:.6f}"])
    return manifest


# ------------------------------------------------------------------------------------------------
# The run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=3000)
    ap.add_argument("--n-val", type=int, default=600)
    ap.add_argument("--size", type=int, default=64, help="image size (px)")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--width", type=int, default=128, help="ViT embedding width")
    ap.add_argument("--depth", type=int, default=3, help="ViT blocks")
    ap.add_argument("--patch", type=int, default=8)
    ap.add_argument("--tau-km", type=float, default=None, help="PIGEON label smoothing (off by default)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temporary one)")
    ap.add_argument(
        "--variant",
        default="vit",
        choices=("vit", "vit+seg", "vit+seg+mff"),
        help="TransLocator row; the seg rows read the maps the renderer writes (--seg-dir)",
    )
    ap.add_argument("--fusion", default=None, choices=("sum", "mean"), help="[CLS] fusion (default: sum)")
    args = ap.parse_args(argv)
    console = Console(width=110)
    logging.getLogger("geotag").setLevel(logging.ERROR)  # the random-init backbone warning is expected

    with tempfile.TemporaryDirectory(prefix="geotag-learnability-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        rng = np.random.default_rng(args.seed)
        lat, lon = sample_locations(rng, args.n_train + args.n_val)
        seg_dir = work / "seg" if args.variant != "vit" else None
        if seg_dir is not None:
            seg_dir.mkdir(exist_ok=True)
        n = args.n_train
        train_csv = write_split(work, "train", lat[:n], lon[:n], args.size, args.seed, seg_dir)
        val_csv = write_split(work, "val", lat[n:], lon[n:], args.size, args.seed, seg_dir)
        t_render = time.monotonic() - t0

        backbone = BackboneConfig(
            arch="vit_tiny_patch16_224",
            tag="none",
            overrides={
                "embed_dim": args.width,
                "depth": args.depth,
                "num_heads": 4,
                "patch_size": args.patch,
            },
        )
        task = TransLocatorTask(
            args.variant,
            tau_km=args.tau_km,
            model_kwargs={"backbone": backbone, "img_size": args.size},
            cells_scale="auto",
        )
        cfg = TrainConfig(
            data=[train_csv],
            val=val_csv,
            out=work / "run",
            model="translocator",
            variant=args.variant,
            fusion=args.fusion,
            seg_dir=seg_dir,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            weight_decay=0.05,
            warmup_steps=max(1, args.n_train // args.batch_size // 2),
            freeze_backbone=False,
            augment=True,
            allow_untrained=True,
            device=args.device,
            workers=args.workers,
            seed=args.seed,
            label_smoothing_km=args.tau_km,
        )
        t1 = time.monotonic()
        summary = run_train(cfg, task=task)
        t_train = time.monotonic() - t1

        t2 = time.monotonic()
        preds = work / "val-preds.parquet"
        run_predict(
            PredictConfig(
                paths=[work / "val"],
                out=preds,
                model="translocator",
                weights=summary.checkpoint,
                seg_dir=seg_dir,
                device=args.device,
                batch_size=args.batch_size,
                workers=args.workers,
                top_k=1,
            )
        )
        model_row = evaluate([preds]).rows[0]
        t_predict = time.monotonic() - t2

        val_lat, val_lon = lat[args.n_train :], lon[args.n_train :]
        m_lat, m_lon = mean_location(lat[: args.n_train], lon[: args.n_train])
        n = len(val_lat)
        mean_row = distance_metrics(np.full(n, m_lat), np.full(n, m_lon), val_lat, val_lon)
        assert summary.checkpoint is not None
        fine = Geocells.load(summary.checkpoint / CELLS_FILE).fine
        top = int(np.argmax(fine.n_images))
        cell_row = distance_metrics(np.full(n, fine.lat[top]), np.full(n, fine.lon[top]), val_lat, val_lon)

    table = Table(title=f"learnability: {args.n_train} train / {n} val synthetic images at {args.size} px")
    table.add_column("answer")
    for t in DEFAULT_THRESHOLDS_KM:
        table.add_column(f"{t} km", justify="right")
    table.add_column("median km", justify="right")
    rows = [
        ("constant: mean location", mean_row),
        ("constant: biggest fine cell", cell_row),
        (
            f"TransLocator-tiny {args.variant} (fusion {args.fusion or 'sum'}), "
            f"ViT {args.width}x{args.depth}, {summary.steps} steps",
            model_row,
        ),
    ]
    for name, row in rows:
        accs = [f"{100 * float(row[f'acc_{t}km']):.1f}%" for t in DEFAULT_THRESHOLDS_KM]
        table.add_row(name, *accs, f"{float(row['median_km']):,.0f}")
    console.print(table)
    best = max(float(mean_row["acc_750km"]), float(cell_row["acc_750km"]))
    best200 = max(float(mean_row["acc_200km"]), float(cell_row["acc_200km"]))
    console.print(
        f"model {100 * float(model_row['acc_200km']):.1f}% @200 km vs constant {100 * best200:.1f}%, "
        f"{100 * float(model_row['acc_750km']):.1f}% @750 km vs {100 * best:.1f}%; render {t_render:.0f} s, "
        f"train {t_train:.0f} s on {summary.device}, predict + eval {t_predict:.0f} s",
        highlight=False,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
