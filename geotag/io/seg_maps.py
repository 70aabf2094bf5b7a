"""Reading precomputed segmentation maps (PNG): a colour map, or class labels, cropped like the photo.

The segmentation models (geotag.models.segmentation) turn what this returns into tensors; they read
no files themselves.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from geotag.errors import ImageError, InputError
from geotag.io.decode import ImageTooLarge, fit_decode, resize_center_crop

LABEL_MODES = ("L", "P", "I", "I;16", "LA", "PA")


def read_map(
    path: Path, size: int, box: tuple[float, float, float, float] | None = None
) -> tuple[str, np.ndarray]:
    """One PNG map, centre-cropped to `size` with nearest-neighbour resampling: ("rgb", (size, size, 3)
    uint8) for a colour map, ("labels", (size, size) int64) for a label map; one error line otherwise.
    `box` (left, top, right, bottom as fractions of the image) is the photo's training crop, cut from
    the map first so map and photo stay aligned."""
    try:
        with Image.open(path) as im:
            fit_decode(im)  # a decompression bomb is refused, not decoded
            im.load()
            img = im
    except (OSError, ImageTooLarge) as exc:
        raise ImageError(f"cannot read segmentation map {path}: {exc}") from exc
    if box is not None:
        w, h = img.size
        img = img.crop((round(box[0] * w), round(box[1] * h), round(box[2] * w), round(box[3] * h)))
    if img.mode in ("RGB", "RGBA"):
        return "rgb", np.asarray(resize_center_crop(img.convert("RGB"), size, "nearest"), dtype=np.uint8)
    if img.mode not in LABEL_MODES:
        raise InputError(f"segmentation map {path} has mode {img.mode}; need a label (L/P/I;16) or RGB PNG")
    if img.mode in ("LA", "PA"):
        img = img.getchannel(0)
    return "labels", np.asarray(resize_center_crop(img, size, "nearest")).astype(np.int64)
