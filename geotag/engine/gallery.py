"""`geotag gallery build`: embed geotagged photos into a kNN gallery file (see geotag.io.embeddings).

Positions come from each photo's EXIF GPS (read by the scan code), or from a manifest CSV / Parquet
(a path column with lat and lon; relative paths are taken from the manifest's folder), which wins over
EXIF. Photos without a position are counted and skipped, unreadable ones counted as failed. Decoding
runs in DataLoader workers exactly as `geotag predict` does (same decode, same preprocessing), so
gallery and query features agree.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from geotag.config import GalleryConfig
from geotag.engine.predict import auto_batch_size, auto_workers, decode_into_row, resolve_device
from geotag.engine.scan import scan_file
from geotag.errors import InputError
from geotag.io.decode import normalize
from geotag.io.embeddings import GalleryInfo, GalleryWriter
from geotag.io.parquet import check_parquet_path
from geotag.io.pathtext import from_text, to_text
from geotag.io.scan import ImageRecord, PathFilter, iter_records, validate_paths
from geotag.io.tables import LAT_NAMES, LON_NAMES, float_column, read_table, require_column
from geotag.io.truth import Truth, TruthReport, load_truth
from geotag.models.backbones import Backbone, create_backbone
from geotag.models.base import Preprocess
from geotag.progress import progress_bar

log = logging.getLogger(__name__)

MANIFEST_SUFFIXES = (".csv", ".tsv", ".parquet")
PATH_NAMES = ("path", "file", "filepath", "filename", "image", "image_path")
WORK_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("size", pa.int64()),
        ("mtime", pa.timestamp("us", tz="UTC")),
        ("lat", pa.float64()),
        ("lon", pa.float64()),
    ]
)


@dataclass
class GallerySummary:
    total: int = 0  # files looked at
    embedded: int = 0  # rows in the gallery
    no_gps: int = 0  # readable photos without a position
    failed: int = 0  # unreadable / undecodable files
    backbone: str = ""
    weights: str = ""
    feature_dim: int = 0
    device: str = "cpu"
    truth: TruthReport | None = None  # what --truth gave, when passed


def is_manifest(paths: list[Path]) -> bool:
    """One file argument with a table suffix is a manifest; anything else is photos or folders."""
    return len(paths) == 1 and paths[0].is_file() and paths[0].suffix.lower() in MANIFEST_SUFFIXES


def manifest_records(path: Path) -> Iterator[tuple[ImageRecord, float, float]]:
    """(record, lat, lon) per manifest row with valid coordinates; the path column is found by name."""
    table = read_table(path, "manifest")
    where = f"manifest {path}"
    path_col = require_column(table, PATH_NAMES, where)
    lat = float_column(table, require_column(table, LAT_NAMES, where), where)
    lon = float_column(table, require_column(table, LON_NAMES, where), where)
    ok = np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180)
    names = table.column(path_col).to_pylist()
    base = path.parent
    for i in np.flatnonzero(ok):
        name = names[i]
        if not name:
            continue
        photo = Path(name) if Path(name).is_absolute() else base / name
        if not photo.exists():
            records = [_missing(photo)]
        elif not (photo.is_file() or photo.is_dir()):  # a device or FIFO: an error row, never opened
            records = [_missing(photo, NOT_REGULAR)]
        else:
            records = list(iter_records([photo]))
        for record in records:
            yield record, float(lat[i]), float(lon[i])


NOT_REGULAR = -2
"""The size of a work-list record whose manifest path names a device, FIFO or socket (counted as failed)."""


def _missing(path: Path, size: int = -1) -> ImageRecord:
    from datetime import UTC, datetime

    return ImageRecord(path=path.absolute(), size=size, mtime=datetime.fromtimestamp(0, UTC))


def truth_records(
    paths: list[Path], truth: Truth, only: PathFilter | None = None
) -> Iterator[tuple[ImageRecord, float | None, float | None]]:
    """The photos under paths, each with its position from the --truth manifest (the reader every command
    shares), or none: then its EXIF GPS, if any, is used."""
    for record in iter_records(paths, only):
        row: dict[str, Any] = {"path": str(record.path)}
        truth.apply(row)
        if row.get("gt_source") == "manifest":
            yield record, row["gt_lat"], row["gt_lon"]
        else:
            yield record, None, None


def write_work_list(cfg: GalleryConfig, folder: Path, truth: Truth | None = None) -> tuple[Path, int]:
    """The run's files (and manifest positions) as an Arrow IPC file the workers memory-map."""
    paths = validate_paths(cfg.paths)
    only = PathFilter.from_options(cfg.include, cfg.exclude, cfg.ext)
    if truth is not None:
        items: Iterator[tuple[ImageRecord, float | None, float | None]] = truth_records(paths, truth, only)
    elif is_manifest(paths):
        items = manifest_records(paths[0])
    else:
        items = ((r, None, None) for r in iter_records(paths, only))
    out = folder / "files.arrow"
    n = 0
    buf: list[tuple[ImageRecord, float | None, float | None]] = []
    with ipc.new_file(out, WORK_SCHEMA) as sink:

        def flush() -> None:
            cols = [
                [to_text(r.path) for r, _, _ in buf],  # lossless for names that are not UTF-8
                [r.size for r, _, _ in buf],
                [r.mtime for r, _, _ in buf],
                [a for _, a, _ in buf],
                [b for _, _, b in buf],
            ]
            sink.write_batch(pa.record_batch(cols, schema=WORK_SCHEMA))
            buf.clear()

        for item in items:
            buf.append(item)
            n += 1
            if len(buf) >= 10_000:
                flush()
        if buf:
            flush()
    return out, n


class GalleryDataset(Dataset[dict[str, Any]]):
    """Item i: its scan row (with the manifest's position when given) and pixels when it has a position."""

    def __init__(self, work_list: Path, pre: Preprocess, draft: bool) -> None:
        self.work_list = work_list
        self.pre = pre
        self.draft = draft
        self._table: pa.Table | None = None
        with ipc.open_file(work_list) as reader:
            self._len = sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))

    def __len__(self) -> int:
        return self._len

    def _records(self) -> pa.Table:
        if self._table is None:
            self._table = ipc.open_file(pa.memory_map(str(self.work_list))).read_all()
        return self._table

    def __getitem__(self, i: int) -> dict[str, Any]:
        t = self._records()
        record = ImageRecord(
            Path(from_text(t["path"][i].as_py())), t["size"][i].as_py(), t["mtime"][i].as_py()
        )
        if record.size == NOT_REGULAR:
            row = {
                "path": str(record.path),
                "status": "error",
                "error": "not a regular file (device or FIFO)",
            }
            return {"row": row, "pixels": None}
        row = scan_file(record)
        lat, lon = t["lat"][i].as_py(), t["lon"][i].as_py()
        if lat is not None and lon is not None:
            row.update(gt_lat=lat, gt_lon=lon, gt_source="manifest")
        pixels = None
        if row["status"] == "ok" and row.get("gt_lat") is not None and row.get("gt_lon") is not None:
            pixels = decode_into_row(row, self.pre, self.draft)
        return {"row": row, "pixels": pixels}


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    with_pixels = [it for it in items if it["pixels"] is not None]
    return {
        "rows": [it["row"] for it in items],
        "embed": [it["row"] for it in with_pixels],
        "pixels": torch.stack([it["pixels"] for it in with_pixels]) if with_pixels else None,
    }


def run_gallery_build(cfg: GalleryConfig, backbone: Backbone | None = None) -> GallerySummary:
    """Embed every photo with a position under cfg.paths (or listed in a manifest) into cfg.out."""
    check_parquet_path(cfg.out)
    device = resolve_device(cfg.device)
    module, pre, dim = backbone or create_backbone(
        cfg.backbone, weights=cfg.backbone_weights, allow_untrained=cfg.allow_untrained
    )
    module = module.to(device).eval()
    info = GalleryInfo(module.name, module.weights_label, module.fingerprint(), dim)
    summary = GallerySummary(
        backbone=module.name, weights=module.weights_label, feature_dim=dim, device=str(device)
    )
    amp = cfg.amp and device.type == "cuda"
    with tempfile.TemporaryDirectory(prefix=".geotag-gallery-", dir=cfg.out.parent) as tmp:
        truth = load_truth(cfg.truth) if cfg.truth is not None else None
        work_list, listed = write_work_list(cfg, Path(tmp), truth)
        if truth is not None:
            summary.truth = truth.finish()
        loader = DataLoader(
            GalleryDataset(work_list, pre, cfg.draft),
            batch_size=cfg.batch_size or auto_batch_size(device),
            num_workers=auto_workers(device) if cfg.workers is None else cfg.workers,
            collate_fn=_collate,
            pin_memory=device.type == "cuda",
        )
        writer = GalleryWriter(cfg.out, info)
        with writer, progress_bar(listed, "gallery", enabled=cfg.progress) as bar:
            for batch in loader:
                for row in batch["rows"]:
                    summary.total += 1
                    summary.failed += row["status"] == "error"
                    summary.no_gps += row["status"] == "ok" and row.get("gt_lat") is None
                if batch["pixels"] is not None:
                    x = normalize(batch["pixels"].to(device, non_blocking=True), pre.mean, pre.std)
                    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if amp else nullcontext()
                    with torch.inference_mode(), autocast:
                        feats = module(x)
                    feats = F.normalize(feats.float(), dim=1)
                    rows = [
                        {
                            "image_id": r.get("image_id"),
                            "path": to_text(r["path"]),
                            "lat": r["gt_lat"],
                            "lon": r["gt_lon"],
                            "gt_source": r.get("gt_source"),
                        }
                        for r in batch["embed"]
                    ]
                    writer.write(rows, feats)
                    summary.embedded += len(rows)
                bar.update(len(batch["rows"]))
            if summary.embedded == 0:
                raise InputError(
                    f"no photo with a position among {summary.total} file(s): a gallery needs geotagged "
                    "photos (EXIF GPS) or a manifest with path, lat, lon"
                )
    return summary


def gallery_from_cache(folder: Path, out: Path) -> GallerySummary:
    """A kNN gallery from an embedding cache (`geotag embed`): its raw features L2-normalised, with no
    photo decoded again. The cache's backbone must be a registry backbone (the kNN model rebuilds it)."""
    from geotag.io.embed_cache import read_cache, read_sources
    from geotag.models.backbones import BACKBONES

    check_parquet_path(out)
    info, samples, feats = read_cache(folder)
    if info.backbone not in BACKBONES:
        raise InputError(
            f"--embeddings {folder}: a kNN gallery needs a registry backbone "
            f"({', '.join(sorted(BACKBONES))}); this cache holds {info.backbone} features"
        )
    sources = read_sources(folder)
    summary = GallerySummary(
        total=info.n_samples,
        embedded=len(samples),
        failed=info.errors,
        backbone=info.backbone,
        weights=info.weights,
        feature_dim=info.feature_dim,
    )
    ids, paths = samples.image_ids.to_pylist(), samples.paths.to_pylist()
    with GalleryWriter(
        out, GalleryInfo(info.backbone, info.weights, info.fingerprint, info.feature_dim)
    ) as w:
        for lo in range(0, len(samples), 16_384):
            hi = min(len(samples), lo + 16_384)
            rows = [
                {"image_id": ids[i], "path": paths[i], "lat": samples.lat[i], "lon": samples.lon[i]}
                | {"gt_source": sources[i]}
                for i in range(lo, hi)
            ]
            w.write(rows, F.normalize(torch.from_numpy(feats[lo:hi]).float(), dim=1))
    return summary
