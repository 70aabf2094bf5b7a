"""`geotag experts extract`: cut the feature crops the directed feature experts train on.

Photos come as `geotag train` reads them (train_data.load_samples): a manifest (CSV / Parquet: path, lat,
lon, optional country) or folders of EXIF-tagged photos. Each photo is decoded exactly as `geotag predict`
decodes it for the experts model (its centre square at `image_size`), the instance segmenter finds its
features, and the features of the four groups are cut as `geotag predict` cuts them (experts.py:
select_features, square_boxes, cut_crops), so training crops and prediction crops agree.

Output folder:
- `<group>/<key>-<k>.jpg`: the crops (JPEG, quality 95), `key` a hash of the photo's image id;
- `crops.csv`: one row per crop: path (relative), lat, lon, country, group, label, score, source (the
  photo), image_id (the photo's, so `geotag train`'s hash split keeps a photo's crops on one side):
  a `geotag train --model experts --data OUT/crops.csv` manifest;
- `extract.json`: the crop settings and the segmenter, which the trained checkpoint keeps.

A photo's country is the manifest's `country`, else the point-in-polygon country of its position
(places.py); photos with none (at sea, or no country data) are skipped and counted.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import torch
import xxhash
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from geotag.engine.predict import auto_batch_size, auto_workers, resolve_device
from geotag.errors import InputError, OutputError
from geotag.io.decode import decode_for_model
from geotag.io.durable import atomic_file, check_not_link, real_dir, write_file
from geotag.models.experts import (
    CROPS_MANIFEST,
    EXTRACT_FILE,
    GROUPS,
    CropSettings,
    cut_crops,
    label_groups,
    select_features,
    square_boxes,
)
from geotag.models.segmentation import DEFAULT_INSTANCE_SEGMENTER, InstanceSegmenter, load_instance_segmenter
from geotag.progress import progress_bar

log = logging.getLogger(__name__)

EXTRACT_FORMAT = "geotag-expert-crops"


@dataclass
class ExtractConfig:
    """Everything `geotag experts extract` needs."""

    paths: list[Path]  # one manifest, or photo files / folders (EXIF GPS)
    out: Path  # crops folder
    segmenter: str = DEFAULT_INSTANCE_SEGMENTER  # hub id or local Mask2Former folder
    label_set: str = "auto"
    min_score: float = 0.5
    max_crops: int = 16
    min_area: float = 0.01
    context: float = 0.1
    image_size: int = 512
    crop_size: int = 224
    image_root: Path | None = None
    device: str = "auto"
    batch_size: int | None = None
    workers: int | None = None
    progress: bool = False

    def settings(self, segmenter_source: str | None) -> CropSettings:
        return CropSettings(
            segmenter=segmenter_source,
            label_set=self.label_set,
            min_score=self.min_score,
            max_crops=self.max_crops,
            min_area=self.min_area,
            context=self.context,
            image_size=self.image_size,
        )


@dataclass
class ExtractSummary:
    photos: int = 0  # photos with a position
    with_crops: int = 0  # photos that gave at least one crop
    crops: dict[str, int] = field(default_factory=lambda: dict.fromkeys(GROUPS, 0))
    no_country: int = 0
    failed: int = 0  # unreadable photos
    device: str = "cpu"
    manifest: Path | None = None
    notes: list[str] = field(default_factory=list)


class _Photos(Dataset[dict[str, Any]]):
    def __init__(self, paths: list[str], size: int) -> None:
        self.paths, self.size = paths, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        try:
            pixels: torch.Tensor | None = decode_for_model(self.paths[i], self.size)
        except Exception as exc:  # noqa: BLE001 - an unreadable photo is counted, not fatal
            log.debug("skipping %s: %s", self.paths[i], exc)
            pixels = None
        return {"index": i, "pixels": pixels}


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    good = [it for it in items if it["pixels"] is not None]
    return {
        "index": [it["index"] for it in good],
        "pixels": torch.stack([it["pixels"] for it in good]) if good else None,
        "failed": len(items) - len(good),
    }


def _source_name(cfg: ExtractConfig, segmenter: InstanceSegmenter) -> str:
    """What extract.json records: a hub id as is, a folder as an absolute path (training may run
    elsewhere)."""
    source = segmenter.source or cfg.segmenter
    return str(Path(source).resolve()) if Path(source).is_dir() else source


def run_extract(cfg: ExtractConfig, segmenter: InstanceSegmenter | None = None) -> ExtractSummary:
    """Cut every photo's feature crops into cfg.out (see the module docstring); `segmenter` may be given
    (tests, notebooks), else it is loaded from cfg.segmenter."""
    from geotag.engine.train_data import load_samples
    from geotag.geo.places import countries

    if cfg.image_size < 16 or cfg.crop_size < 8:
        raise InputError("--image-size and --crop-size are too small")
    out = check_not_link(Path(cfg.out))  # refused early, before any photo is read
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file; give a folder for the crops")
    if (out / CROPS_MANIFEST).exists():
        raise OutputError(f"{out} already holds crops ({CROPS_MANIFEST}): choose another --out")
    samples = load_samples(cfg.paths, cfg.image_root)
    # photos of a folder that could not be read count as failed here too (exit 1), as crops that fail do
    summary = ExtractSummary(photos=len(samples), notes=list(samples.notes), failed=samples.unreadable)
    names = [c.strip().upper() if c and c.strip() else None for c in samples.country.to_pylist()]
    todo = [i for i, c in enumerate(names) if c is None]
    if todo:
        found, _ = countries(samples.lat[todo].tolist(), samples.lon[todo].tolist())
        for i, code in zip(todo, found, strict=True):
            names[i] = code
    keep = [i for i, c in enumerate(names) if c]
    summary.no_country = len(samples) - len(keep)

    device = resolve_device(cfg.device)
    summary.device = str(device)
    if segmenter is None:
        segmenter = load_instance_segmenter(cfg.segmenter, min_score=0.0)
    segmenter = segmenter.eval().to(device)
    settings = cfg.settings(_source_name(cfg, segmenter))
    table = label_groups(segmenter.labels, settings.label_set)
    group_of = {label: GROUPS.index(group) for label, group in table.items()}
    if not group_of:
        raise InputError(f"segmenter {segmenter.name}: none of its classes is in a feature group")

    paths = samples.paths.to_pylist()
    ids = samples.image_ids.to_pylist()
    workers = auto_workers(device) if cfg.workers is None else cfg.workers
    loader = DataLoader(
        _Photos([paths[i] for i in keep], cfg.image_size),
        batch_size=cfg.batch_size or auto_batch_size(device),
        num_workers=workers,
        collate_fn=_collate,
    )
    real_dir(out, parents=True)  # no folder here is ever a link; every file is a temp renamed into place
    for group in GROUPS:
        real_dir(out / group)
    rows: dict[str, list[Any]] = {
        k: [] for k in ("path", "lat", "lon", "country", "group", "label", "score", "source", "image_id")
    }
    with progress_bar(len(keep), "extract", enabled=cfg.progress) as bar, torch.inference_mode():
        for batch in loader:
            summary.failed += batch["failed"]
            bar.update(len(batch["index"]) + batch["failed"])
            if batch["pixels"] is None:
                continue
            images = batch["pixels"].to(device).float().div_(255.0)
            h, w = images.shape[-2:]
            feats = select_features(segmenter.detect(images), group_of, h, w, settings)
            boxes = square_boxes(feats.boxes, h, w, settings.context)
            crops = cut_crops(images, feats.owner, boxes, cfg.crop_size)
            pixels = (crops.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            counter: dict[int, int] = {}
            for n, (b, g) in enumerate(zip(feats.owner.tolist(), feats.group.tolist(), strict=True)):
                i = keep[batch["index"][b]]
                k = counter[b] = counter.get(b, -1) + 1
                key = xxhash.xxh64_hexdigest(str(ids[i]).encode())
                rel = f"{GROUPS[g]}/{key}-{k:02d}.jpg"
                with atomic_file(out / rel, sync=False) as fh:
                    Image.fromarray(np.ascontiguousarray(pixels[n])).save(fh, "JPEG", quality=95)
                summary.crops[GROUPS[g]] += 1
                for name, value in (
                    ("path", rel),
                    ("lat", float(samples.lat[i])),
                    ("lon", float(samples.lon[i])),
                    ("country", names[i]),
                    ("group", GROUPS[g]),
                    ("label", feats.labels[n]),
                    ("score", round(feats.scores[n], 4)),
                    ("source", paths[i]),
                    ("image_id", str(ids[i])),  # the photo's: a hash split keeps its crops together
                ):
                    rows[name].append(value)
            summary.with_crops += len(counter)

    manifest = out / CROPS_MANIFEST
    with atomic_file(manifest) as fh:
        pacsv.write_csv(pa.table(rows, schema=_SCHEMA), fh)
    from geotag import __version__

    info = {
        "format": EXTRACT_FORMAT,
        "format_version": 1,
        "geotag_version": __version__,
        "crops": dataclasses.asdict(settings),
        "crop_size": cfg.crop_size,
        "segmenter_labels": len(segmenter.labels),
        "counts": {**summary.crops, "photos": summary.photos, "no_country": summary.no_country},
    }
    write_file(out / EXTRACT_FILE, (json.dumps(info, indent=2) + "\n").encode())
    summary.manifest = manifest
    return summary


_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("lat", pa.float64()),
        ("lon", pa.float64()),
        ("country", pa.string()),
        ("group", pa.string()),
        ("label", pa.string()),
        ("score", pa.float64()),
        ("source", pa.string()),
        ("image_id", pa.string()),
    ]
)
