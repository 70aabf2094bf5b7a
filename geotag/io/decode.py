"""Decode photos fast and the same way for every model: EXIF orientation applied, JPEG draft mode.

Decisions a user should know:
- Pillow refuses images over ~89 MP by default as a decompression-bomb guard. Panoramas are real
  photos, so geotag raises the limit to 1 gigapixel (`MAX_PIXELS`); JPEGs are decoded at a reduced
  scale by draft mode anyway, so memory stays modest.
- JPEGs are decoded with `draft()` to the smallest 1/2, 1/4 or 1/8 DCT scale whose shortest side is
  still at least the model's input size: about 3.5x faster than a full decode of a 12 MP photo, and the
  image is resized down to the input size afterwards regardless.
- Decompression bombs: a 389 KB PNG can declare 20000 x 20000 pixels, and only JPEG can be decoded
  reduced (Pillow has no reduced decode for PNG, TIFF, WebP or HEIC). So an image that would still
  hold more than `DECODE_LIMIT_PIXELS` (100 MP) once decoded is refused (an error row) before a byte
  of it is decoded; a larger JPEG is decoded at a draft scale that fits. Memory per worker stays
  about 100 MP x 4 bytes at most, whatever the file claims (docs/performance.md).
- A truncated file is an error (Pillow's LOAD_TRUNCATED_IMAGES stays False): a grey half-image would
  give a confident wrong answer.
- Camera RAW files (by extension) go to LibRaw (geotag.io.raw): their embedded preview, else a half-size
  demosaic.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np
import pillow_heif
from PIL import Image, ImageOps

from geotag.io.shards import open_ref

if TYPE_CHECKING:  # torch is imported where tensors are made, so scan never pays its 2 s and 1 GB
    import torch

MAX_PIXELS = 1_000_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
DECODE_LIMIT_PIXELS = 100_000_000
"""The most pixels an image may hold once decoded (after JPEG draft scaling): 400 MB as RGBA."""
pillow_heif.register_heif_opener()

_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


def _is_raw(path: object) -> bool:
    from geotag.io.scan import is_raw_name

    return isinstance(path, str | os.PathLike) and is_raw_name(path)


def jpeg_is_truncated(source: str | os.PathLike[str] | bytes) -> bool:
    """Whether a JPEG (a file, or its bytes already read) ends before its end-of-image marker, found
    without decoding: the segments are walked to the first scan (SOS), then FFD9 is searched after it (in
    entropy-coded data 0xFF is always followed by 00 or a restart marker, and an EXIF thumbnail's own
    FFD9 lies before the scan). Data appended after the marker (phone trailers) does not matter. A file
    that is no JPEG: False."""
    if isinstance(source, bytes | bytearray):
        return _jpeg_truncated(source)
    import mmap

    with open(source, "rb") as fh:
        if os.fstat(fh.fileno()).st_size < 4:
            return False
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _jpeg_truncated(data)


def _jpeg_truncated(data: Any) -> bool:
    """jpeg_is_truncated over bytes or an mmap (both slice, index and find alike)."""
    size = len(data)
    if size < 4 or data[:2] != b"\xff\xd8":
        return False
    pos = 2
    while pos + 4 <= size:
        if data[pos] != 0xFF:
            return True  # the segment chain breaks off: no scan follows
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA:
            return data.rfind(b"\xff\xd9", pos + 2 + length) < 0  # from the end: the marker is there
        if marker == 0xD9:
            return False
        pos += 2 + length
    return True


def read_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Format and stored size from the header alone (no pixel decode); raises if it is no image."""
    if _is_raw(path):
        from geotag.io.raw import read_raw_header

        return read_raw_header(path)
    with Image.open(path) as im:
        return {"format": im.format, "width": im.width, "height": im.height}


def load_rgb(path: str | os.PathLike[str], min_side: int | None = None) -> Image.Image:
    """Fully decoded RGB image, upright per EXIF orientation.

    `min_side`: the shortest side the caller needs; JPEG decoding then uses draft mode to the smallest
    DCT scale that still has at least that many pixels on each side.
    """
    if _is_raw(path):
        from geotag.io.raw import load_raw_rgb

        return load_raw_rgb(path, min_side)
    with Image.open(path) as im:
        fit_decode(im, min_side)
        im.load()
        upright = ImageOps.exif_transpose(im)
        return upright.convert("RGB")


class ImageTooLarge(ValueError):
    """An image that would take more than DECODE_LIMIT_PIXELS to decode (a decompression bomb, or a
    huge non-JPEG): refused before decoding."""


def fit_decode(im: Image.Image, min_side: int | None = None) -> None:
    """Prepare an opened, not yet loaded image for a bounded decode: JPEG draft scaling (to `min_side`,
    and further if the draft would still hold more than DECODE_LIMIT_PIXELS), else ImageTooLarge."""
    if im.format in ("JPEG", "MPO"):  # MPO: phone JPEGs with a second image appended
        want = (min_side, min_side) if min_side else im.size
        if im.width * im.height > DECODE_LIMIT_PIXELS:  # 1/2 .. 1/8 scale: the largest that fits
            scale = next((s for s in (2, 4, 8) if im.width * im.height <= DECODE_LIMIT_PIXELS * s * s), 8)
            want = (min(want[0], im.width // scale), min(want[1], im.height // scale))
        if want != im.size:
            im.draft("RGB", want)
    if im.width * im.height > DECODE_LIMIT_PIXELS:
        raise ImageTooLarge(
            f"{im.width} x {im.height} pixels ({im.width * im.height / 1e6:.0f} MP) is over the decode "
            f"limit of {DECODE_LIMIT_PIXELS // 1_000_000} MP for {im.format or 'this format'} "
            "(only JPEG decodes reduced; see docs/performance.md)"
        )


def resize_center_crop(img: Image.Image, size: int, interpolation: str = "bicubic") -> Image.Image:
    """Shortest side to `size`, then a centred size x size crop (the CLIP image processor's geometry)."""
    w, h = img.size
    if w <= h:
        new_w, new_h = size, int(size * h / w)
    else:
        new_w, new_h = int(size * w / h), size
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), _RESAMPLE[interpolation])
    top = (new_h - size) // 2
    left = (new_w - size) // 2
    return img.crop((left, top, left + size, top + size))


def to_uint8_tensor(img: Image.Image) -> torch.Tensor:
    """(3, H, W) uint8: a quarter of float32's bytes across the host-to-device copy. The HWC -> CHW
    copy is numpy's: torch's permute().contiguous() on uint8 was 2-15x slower on a 2-core machine."""
    import torch

    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def load_photo(path: str, min_side: int | None = None) -> Image.Image:
    """load_rgb of a photo named by a path or an archive reference, read through open_ref's bounds (a
    regular file of bounded size, or an archive member's bytes): a RAW file goes to LibRaw by its name
    after those checks, everything else is decoded from the opened bytes."""
    with open_ref(path) as fh:
        return load_rgb(path if _is_raw(path) else fh, min_side)


def decode_for_model(
    path: str | os.PathLike[str], size: int, interpolation: str = "bicubic", *, draft: bool = True
) -> torch.Tensor:
    """Decode, orient, resize and crop one photo to the model's input: (3, size, size) uint8. A shard
    or zip member reference (geotag.io.shards) is read from its archive."""
    img = load_photo(str(path), min_side=size if draft else None)
    return to_uint8_tensor(resize_center_crop(img, size, interpolation))


def normalize(batch: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 (B,3,H,W) -> float32 normalised, on whatever device the batch is on."""
    import torch

    m = torch.tensor(mean, device=batch.device, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, device=batch.device, dtype=torch.float32).view(1, 3, 1, 1)
    return (batch.float().div_(255.0) - m) / s
