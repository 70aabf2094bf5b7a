"""`geotag segment PHOTOS --out MAPS/`: precompute ADE20K segmentation maps for TransLocator's
segmentation rows (`train` / `predict --seg-dir MAPS/`), as the paper did offline on whole images.

Each photo's whole image (not a crop) is segmented at the segmenter's size and its label map is written
as MAPS/STEM.png (mode L, 0-based ADE20K class indices), the photo's aspect kept with its short side at
that size; training cuts every map with the image's own random crop. Photos go through in batches on
the GPU when there is one. A map that exists is kept (resume: run the same command again); a photo that
cannot be read, or whose stem another photo of the run already took, is an error row in the summary.
Maps are written to a temporary file in MAPS/ and renamed, so a map is whole or absent.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from geotag.errors import InputError
from geotag.io.decode import load_rgb
from geotag.io.durable import atomic_path, real_dir
from geotag.io.scan import PathFilter, iter_image_paths
from geotag.models.segmentation import DEFAULT_SEGFORMER, SegmentationProvider

log = logging.getLogger(__name__)


@dataclass
class SegmentSummary:
    written: int = 0
    kept: int = 0  # maps already there (resume)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, why)


def map_size(w: int, h: int, short: int) -> tuple[int, int]:
    """(width, height) of a w x h photo's map: its aspect, the short side `short` px."""
    scale = short / min(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


def segment_batch(
    provider: SegmentationProvider, images: Sequence[Image.Image], size: int
) -> list[np.ndarray]:
    """Label maps (uint8, each its photo's aspect at short side `size`) of whole images, one forward."""
    device = next(provider.buffers(), torch.empty(0)).device
    x = torch.stack(
        [
            torch.from_numpy(np.asarray(im.resize((size, size), Image.BILINEAR), dtype=np.uint8).copy())
            for im in images
        ]
    )
    rgb = x.permute(0, 3, 1, 2).float().div(255).to(device)
    labels = provider.labels(rgb)[:, None].float()  # (B, 1, size, size): the whole image, squashed
    out = []
    for im, lab in zip(images, labels, strict=True):
        w, h = map_size(*im.size, size)
        back = F.interpolate(lab[None], size=(h, w), mode="nearest")[0, 0]
        out.append(back.clamp(0, 255).to(torch.uint8).cpu().numpy())
    return out


def write_map(labels: np.ndarray, target: Path) -> None:
    with atomic_path(target) as tmp:
        Image.fromarray(labels, mode="L").save(tmp, format="PNG")


def run_segment(
    paths: Iterable[str | os.PathLike[str]],
    out: Path,
    provider: SegmentationProvider,
    *,
    batch_size: int = 16,
    size: int | None = None,
    on_progress: Callable[[int], None] | None = None,
    only: PathFilter | None = None,
) -> SegmentSummary:
    """Segment every photo under `paths` into `out` (see the module docstring)."""
    if batch_size < 1:
        raise InputError("--batch-size must be at least 1")
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: not a folder")
    real_dir(out, parents=True)  # a link at the folder's name is refused, never written into
    size = size or int(getattr(provider, "size", 512))
    summary = SegmentSummary()
    stems: dict[str, str] = {}
    pending: list[tuple[Path, Path, Image.Image]] = []

    def flush() -> None:
        if not pending:
            return
        try:
            maps = segment_batch(provider, [im for _, _, im in pending], size)
        except Exception as exc:  # noqa: BLE001 - one failing batch becomes error rows, not a crash
            summary.errors.extend((str(p), f"segmentation failed: {exc}") for p, _, _ in pending)
        else:
            for (_, target, _), labels in zip(pending, maps, strict=True):
                write_map(labels, target)
                summary.written += 1
        if on_progress is not None:
            on_progress(len(pending))
        pending.clear()

    for path in iter_image_paths(paths, only):
        stem = path.stem
        if stem in stems:
            summary.errors.append((str(path), f"same file stem as {stems[stem]}: maps are found by stem"))
            continue
        stems[stem] = str(path)
        target = out / f"{stem}.png"
        if target.is_file():
            summary.kept += 1
            continue
        try:
            image = load_rgb(path, min_side=size)
        except Exception as exc:  # noqa: BLE001 - an unreadable photo is an error row
            summary.errors.append((str(path), f"cannot read: {exc}"))
            continue
        pending.append((path, target, image))
        if len(pending) >= batch_size:
            flush()
    flush()
    return summary


def load_provider(source: str | None, device: str) -> SegmentationProvider:
    """The semantic segmenter (hub id or local folder; default SegFormer-B0 ADE20K) on `device`."""
    from geotag.engine.predict import resolve_device
    from geotag.models.segmentation import load_segformer

    provider = load_segformer(source or DEFAULT_SEGFORMER)
    return provider.to(resolve_device(device))
