"""JPEG decoding on the GPU (nvJPEG through torchvision), with the checks that make it safe.

Why: a 12 MP JPEG costs about 35-40 ms of one CPU core even in draft mode (entropy decoding dominates
and does not shrink with the DCT scale), so on a GPU machine the CPU cores alone cannot feed a ViT-L.
`geotag predict --gpu-decode` sends a share of the large JPEGs to nvJPEG and keeps the CPU workers on
the rest, so both decode at once.

Why the checks: torchvision's nvJPEG path returned no error for a truncated JPEG (GUIDE section 7), and
a half-grey image gives a confident wrong answer. So a file goes to the GPU only when, on the CPU,
- its header parses up to the start of scan (SOF found, 8-bit, 1 or 3 components, baseline or extended
  sequential Huffman: the cases nvJPEG decodes; progressive, arithmetic, lossless, 12-bit, CMYK and
  Adobe-RGB files stay on the CPU), and
- its last bytes are the FFD9 end-of-image marker (trailing zero padding allowed).
Every other file takes the CPU path (Pillow), which reports truncation as an error row. A batch that
nvJPEG still rejects is retried file by file, and a file it rejects is decoded by Pillow.

Pixels: nvJPEG decodes at full size; the GPU then averages blocks of the size Pillow's draft mode would
pick (1/8 of a 12 MP photo for a 224 px model: an 8x8 block mean is exactly the DC term that draft mode
keeps, and it cuts the antialiased resize that follows 64-fold), applies the EXIF orientation, resizes
the shortest side to the model's size with antialiased bicubic (float32, rounded to uint8 like Pillow)
and centre-crops: the geometry of `geotag.io.decode.resize_center_crop`. The two paths differ by about
a grey level (measured in tests/test_gpu_decode.py), not in geometry.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import IO

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

GPU_SOF = frozenset({0xC0, 0xC1})
"""SOF markers nvJPEG decodes here: baseline and extended sequential, Huffman coded."""
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM and RSTn carry no length
MAX_HEADER_SEGMENTS = 256  # more segments before the scan than any camera writes: treat as broken
TAIL_BYTES = 64
DEFAULT_MIN_PIXELS = 4_000_000
"""Smaller JPEGs stay on the CPU: draft mode decodes a 1024x768 photo in about 3 ms a core."""
DEFAULT_SHARE = 0.6
"""Share of the eligible JPEGs sent to the GPU. Issue 7's H100 figures (16 cores at about 25 img/s each
in draft mode, nvJPEG about 650 img/s) balance near 0.6; measure with bench/predict_throughput.py."""
CHUNK = 32  # images per nvJPEG call: GUIDE section 7 measured batches of 16 to 64 as the sweet spot


@dataclass(frozen=True)
class JpegHeader:
    """What the frame header says: enough to decide whether nvJPEG may have the file."""

    sof: int  # the SOFn marker byte (0xC0 baseline, 0xC2 progressive, ...)
    precision: int
    width: int
    height: int
    components: int
    component_ids: tuple[int, ...]
    adobe_transform: int | None  # APP14 "Adobe" colour transform flag, when present


def parse_jpeg_header(fh: object) -> JpegHeader:
    """Walk the marker segments of an open binary file from SOI to SOS; raises ValueError when the
    structure is not a well-formed JPEG header. Reads only segment headers (seeks over payloads)."""
    read, seek = fh.read, fh.seek  # type: ignore[attr-defined]
    if read(2) != b"\xff\xd8":
        raise ValueError("no SOI marker")
    sof: tuple[int, bytes] | None = None
    adobe: int | None = None
    for _ in range(MAX_HEADER_SEGMENTS):
        byte = read(1)
        while byte == b"\xff":  # fill bytes before a marker
            nxt = read(1)
            if nxt != b"\xff":
                byte = nxt
                break
        else:
            raise ValueError("expected a marker")
        if not byte:
            raise ValueError("file ends inside the header")
        marker = byte[0]
        if marker in _STANDALONE:
            continue
        length_bytes = read(2)
        if len(length_bytes) < 2:
            raise ValueError("file ends inside the header")
        length = int.from_bytes(length_bytes, "big")
        if length < 2:
            raise ValueError(f"bad segment length {length}")
        if marker == 0xDA:  # start of scan: the header is complete
            if sof is None:
                raise ValueError("scan before frame header")
            kind, body = sof
            if len(body) < 6:
                raise ValueError("short frame header")
            n = body[5]
            ids = tuple(body[6 + 3 * i] for i in range(n) if 6 + 3 * i < len(body))
            return JpegHeader(
                sof=kind,
                precision=body[0],
                height=int.from_bytes(body[1:3], "big"),
                width=int.from_bytes(body[3:5], "big"),
                components=n,
                component_ids=ids,
                adobe_transform=adobe,
            )
        if marker in _SOF or (marker == 0xEE and length >= 14):
            body = read(length - 2)
            if len(body) < length - 2:
                raise ValueError("file ends inside the header")
            if marker == 0xEE:
                if body[:5] == b"Adobe":
                    adobe = body[11]
                continue
            if sof is not None:
                raise ValueError("two frame headers")
            sof = (marker, body)
            continue
        seek(length - 2, os.SEEK_CUR)
    raise ValueError("too many segments before the scan")


def has_end_marker(tail: bytes) -> bool:
    """True when the data ends with the FFD9 end-of-image marker (trailing zero padding allowed)."""
    return tail.rstrip(b"\x00").endswith(b"\xff\xd9")


def header_reason(header: JpegHeader) -> str | None:
    """Why nvJPEG must not have a file with this header (None: it may)."""
    if header.sof not in GPU_SOF:
        return f"SOF{header.sof - 0xC0} (not baseline)"
    if header.precision != 8:
        return f"{header.precision}-bit samples"
    if header.components not in (1, 3):
        return f"{header.components} components"
    if header.width == 0 or header.height == 0:
        return "size given by a DNL marker"
    if header.components == 3 and (header.adobe_transform == 0 or header.component_ids == (82, 71, 66)):
        return "RGB-coded (not YCbCr)"
    return None


def gpu_decode_reason(path: str | os.PathLike[str] | IO[bytes]) -> str | None:
    """CPU-side checks before a file (or an open binary stream: a shard member's bytes) may go to
    nvJPEG: None when it passes, else why not."""
    try:
        with open(path, "rb") if isinstance(path, str | os.PathLike) else nullcontext(path) as fh:
            header = parse_jpeg_header(fh)
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - TAIL_BYTES))
            tail = fh.read()
    except (OSError, ValueError) as exc:
        return f"header: {exc}"
    if not has_end_marker(tail):
        return "no FFD9 end marker (truncated?)"
    return header_reason(header)


def wants_gpu(image_id: str | None, share: float) -> bool:
    """Deterministic split by content hash: the same photo takes the same path in every run."""
    if share >= 1.0:
        return True
    if share <= 0.0 or not image_id:
        return False
    return int(image_id[:8], 16) / 0x1_0000_0000 < share


def exif_orientation(path: str | os.PathLike[str]) -> int:
    """EXIF orientation as Pillow's `exif_transpose` reads it (1 when absent or unreadable)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            value = im.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - the CPU path reads the same file and reports real problems
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def orient(img: torch.Tensor, orientation: int) -> torch.Tensor:
    """(C, H, W) -> upright, as PIL.ImageOps.exif_transpose does for EXIF orientations 1-8."""
    if orientation == 2:
        return img.flip(-1)
    if orientation == 3:
        return img.flip(-1).flip(-2)
    if orientation == 4:
        return img.flip(-2)
    if orientation == 5:
        return img.transpose(-1, -2)
    if orientation == 6:
        return torch.rot90(img, k=-1, dims=(-2, -1))
    if orientation == 7:
        return img.transpose(-1, -2).flip(-1).flip(-2)
    if orientation == 8:
        return torch.rot90(img, k=1, dims=(-2, -1))
    return img


def draft_factor(width: int, height: int, size: int) -> int:
    """The DCT scale Pillow's JPEG draft() picks for a (size, size) request: 8, 4, 2 or 1."""
    scale = min(width // size, height // size)
    return next(f for f in (8, 4, 2, 1) if scale >= f)


def draft_reduce(img: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (3, H, W) as stored in the file -> the block means draft mode would decode (uint8, sizes
    rounded up as libjpeg does); unchanged when no reduction applies."""
    factor = draft_factor(img.shape[-1], img.shape[-2], size)
    if factor == 1:
        return img
    pooled = F.avg_pool2d(img[None].float(), factor, ceil_mode=True)[0]
    return pooled.round_().clamp_(0, 255).to(torch.uint8)


def resize_center_crop_tensor(img: torch.Tensor, size: int, interpolation: str = "bicubic") -> torch.Tensor:
    """uint8 (3, H, W) -> uint8 (3, size, size): shortest side to `size`, centre crop (the geometry of
    geotag.io.decode.resize_center_crop), antialiased, computed in float32 on the tensor's device."""
    h, w = img.shape[-2:]
    if w <= h:
        new_w, new_h = size, int(size * h / w)
    else:
        new_w, new_h = int(size * w / h), size
    x = img
    if (new_w, new_h) != (w, h):
        mode = {"bicubic": "bicubic", "bilinear": "bilinear", "lanczos": "bicubic"}.get(interpolation)
        if mode is None:  # nearest
            x = F.interpolate(img[None].float(), size=(new_h, new_w), mode="nearest-exact")[0]
        else:
            x = F.interpolate(img[None].float(), size=(new_h, new_w), mode=mode, antialias=True)[0]
        x = x.round_().clamp_(0, 255).to(torch.uint8)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return x[:, top : top + size, left : left + size]


def _decode(datas: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    from torchvision.io import ImageReadMode, decode_jpeg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision 0.29 deprecates its decoders in favour of TorchCodec
        out = decode_jpeg(datas, mode=ImageReadMode.RGB, device=device)
    return list(out) if isinstance(out, list | tuple) else [out]


def decode_jpegs(
    datas: Sequence[torch.Tensor],
    orientations: Sequence[int],
    size: int,
    interpolation: str,
    device: torch.device,
    crop: Callable[[int, int, int], tuple[int, int, int, int] | None] | None = None,
) -> list[torch.Tensor | Exception]:
    """Decode checked JPEG bytes (1-D uint8 CPU tensors) into model-ready (3, size, size) uint8 tensors
    on `device` (nvJPEG on CUDA, libjpeg on the CPU), `CHUNK` files per call. A chunk that fails is
    retried file by file, so one bad file costs only itself: its slot holds the exception instead.
    `crop(k, w, h)`: the box (left, top, right, bottom) cut from file k's upright draft-size image
    before the resize (training's random resized crop), or None for the whole image."""
    results: list[torch.Tensor | Exception] = []
    for start in range(0, len(datas), CHUNK):
        chunk = list(datas[start : start + CHUNK])
        try:
            decoded: list[torch.Tensor | Exception] = list(_decode(chunk, device))
        except RuntimeError:
            decoded = []
            for data in chunk:
                try:
                    decoded.append(_decode([data], device)[0])
                except RuntimeError as exc:
                    decoded.append(exc)
        for img, orientation in zip(decoded, orientations[start : start + CHUNK], strict=True):
            if isinstance(img, Exception):
                results.append(img)
            else:
                upright = orient(draft_reduce(img, size), orientation)
                box = crop(len(results), upright.shape[-1], upright.shape[-2]) if crop else None
                if box is not None:
                    upright = upright[:, box[1] : box[3], box[0] : box[2]]
                results.append(resize_center_crop_tensor(upright, size, interpolation))
    return results


def read_bytes(path: str | os.PathLike[str]) -> torch.Tensor | None:
    """The file as a 1-D uint8 tensor, or None when it no longer ends with FFD9 (changed since the
    worker checked it) or cannot be read."""
    try:
        with open(path, "rb") as fh:
            data = bytearray(os.fstat(fh.fileno()).st_size)  # read straight into a writable buffer
            if fh.readinto(data) != len(data):
                return None
    except OSError:
        return None
    if not data or not has_end_marker(bytes(data[-TAIL_BYTES:])):
        return None
    return torch.frombuffer(data, dtype=torch.uint8)


def available(device: torch.device) -> bool:
    """nvJPEG needs a CUDA device and a torchvision built with its image ops."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    try:
        from torchvision.io import decode_jpeg  # noqa: F401
    except ImportError:
        return False
    return True
