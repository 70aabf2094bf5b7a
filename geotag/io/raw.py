"""Camera RAW files: their EXIF where exifread cannot reach it, their header, and their pixels.

Readers, per container:
- TIFF-based RAW (NEF, NRW, CR2, DNG, ARW, SRF, SR2, ORF, RW2, RWL, PEF, SRW, IIQ, 3FR, ERF, KDC, DCR,
  MOS): exifread reads their EXIF and GPS directly (geotag.io.exif), as for a TIFF.
- CR3 (ISO-BMFF, 'ftyp crx '): exifread 3.5 has no CR3 reader, so a small box walker finds Canon's
  `moov/uuid(85c0b687-...)` box, whose CMT1 (IFD0), CMT2 (EXIF IFD) and CMT4 (GPS IFD) boxes each hold
  a little TIFF; Pillow's `Image.Exif` parses those.
- RAF (Fujifilm): the header points at an embedded JPEG whose EXIF (camera, time, GPS) exifread reads.
- Others (MRW, X3F, CRW): the first JPEG with an EXIF segment in the file's first MiB, if any.
Pixels come from LibRaw (rawpy): the camera's embedded preview (`extract_thumb`, a JPEG or a bitmap),
else a half-size demosaic (`postprocess(half_size=True)`); a file that gives neither is an error with
both reasons.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from typing import IO, Any

from PIL import Image, ImageOps

_CANON_UUID = bytes.fromhex("85c0b687820f11e08111f4ce462b6a48")
_RAF_MAGIC = b"FUJIFILMCCD-RAW"
_SCAN_BYTES = 1 << 20  # how far into an unknown RAW container an embedded EXIF JPEG is looked for
_MAX_BOX_READ = 16 << 20  # no metadata box of a real CR3 is near this; larger is a corrupt size field
# LibRaw's `sizes.flip` for an image that is stored rotated; Pillow transposes that put it upright.
_FLIP = {3: Image.Transpose.ROTATE_180, 5: Image.Transpose.ROTATE_90, 6: Image.Transpose.ROTATE_270}


def is_cr3(head: bytes) -> bool:
    return head[4:12] == b"ftypcrx "


def is_raf(head: bytes) -> bool:
    return head.startswith(_RAF_MAGIC)


def _boxes(fh: IO[bytes], start: int, end: int) -> list[tuple[bytes, int, int]]:
    """(type, payload start, payload end) of the ISO-BMFF boxes in [start, end); a uuid box's type is
    b'uuid' + its 16-byte user type. Stops at the first box whose size does not fit."""
    found = []
    pos = start
    while pos + 8 <= end:
        fh.seek(pos)
        head = fh.read(8)
        if len(head) < 8:
            break
        size, kind = struct.unpack(">I4s", head)
        header = 8
        if size == 1:
            large = fh.read(8)
            if len(large) < 8:
                break
            size, header = struct.unpack(">Q", large)[0], 16
        elif size == 0:
            size = end - pos
        if kind == b"uuid":
            kind += fh.read(16)
            header += 16
        if size < header or pos + size > end:
            break
        found.append((kind, pos + header, pos + size))
        pos += size
    return found


def cr3_metadata(fh: IO[bytes], size: int) -> dict[str, bytes]:
    """The TIFF blocks of a CR3's Canon box: {"CMT1": IFD0, "CMT2": EXIF IFD, "CMT4": GPS IFD}, each
    a little TIFF file of its own (geotag.io.exif turns them into tags)."""
    moov = next((b for b in _boxes(fh, 0, size) if b[0] == b"moov"), None)
    if moov is None:
        return {}
    canon = next((b for b in _boxes(fh, moov[1], moov[2]) if b[0] == b"uuid" + _CANON_UUID), None)
    if canon is None:
        return {}
    blocks = {}
    for kind, start, end in _boxes(fh, canon[1], canon[2]):
        if kind in (b"CMT1", b"CMT2", b"CMT4") and end - start <= _MAX_BOX_READ:
            fh.seek(start)
            blocks[kind.decode()] = fh.read(end - start)
    return blocks


def raf_jpeg(fh: IO[bytes]) -> bytes | None:
    """The JPEG a RAF's header points at (offset and length, big-endian, at byte 84)."""
    fh.seek(84)
    pointer = fh.read(8)
    if len(pointer) < 8:
        return None
    offset, length = struct.unpack(">II", pointer)
    if length == 0 or length > _MAX_BOX_READ:
        return None
    fh.seek(offset)
    data = fh.read(length)
    return data if data[:2] == b"\xff\xd8" else None


def embedded_exif_jpeg(fh: IO[bytes]) -> bytes | None:
    """From the first MiB of a RAW container no reader knows: the bytes from the first JPEG start
    marker followed by an EXIF segment, for exifread to read as a JPEG."""
    fh.seek(0)
    data = fh.read(_SCAN_BYTES)
    at = data.find(b"\xff\xd8\xff\xe1")
    while at >= 0:
        if data[at + 6 : at + 12] == b"Exif\x00\x00":
            return data[at:]
        at = data.find(b"\xff\xd8\xff\xe1", at + 1)
    return None


def _open(path: str | os.PathLike[str]) -> Any:
    """rawpy.imread without its warning about forked processes: it fears OpenMP state inherited over
    fork(), but geotag loads rawpy (and its own bundled libgomp) only inside the worker that decodes,
    never in a parent that forks afterwards, so no OpenMP thread pool is ever inherited."""
    import rawpy

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "rawpy is being used in a process created by", RuntimeWarning)
        return rawpy.imread(os.fspath(path))


def _libraw_error(exc: BaseException) -> str:
    text = exc.args[0] if exc.args else ""
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    return (str(text).strip() or type(exc).__name__).rstrip(".")


def read_raw_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Format (the extension's name, e.g. "NEF") and the developed image's size, from LibRaw's parse of
    the file (no decode); raises ValueError with LibRaw's reason when it cannot parse it."""
    import rawpy

    fmt = os.path.splitext(os.fspath(path))[1].lstrip(".").upper()
    try:
        with _open(path) as raw:
            sizes = raw.sizes
            width, height = sizes.width, sizes.height
            if sizes.flip in (5, 6):
                width, height = height, width
    except rawpy.LibRawError as exc:
        raise ValueError(f"LibRaw cannot read this {fmt} file: {_libraw_error(exc)}") from None
    return {"format": fmt, "width": width, "height": height}


def load_raw_rgb(path: str | os.PathLike[str], min_side: int | None = None) -> Image.Image:
    """An upright RGB image of a RAW file: the embedded preview when it decodes and has at least
    `min_side` pixels on its shorter side, else a half-size demosaic of the sensor data, else the
    smaller preview. Raises ValueError naming both failures when there is none."""
    import rawpy

    fmt = os.path.splitext(os.fspath(path))[1].lstrip(".").upper()
    preview: Image.Image | None = None
    try:
        raw = _open(path)
    except rawpy.LibRawError as exc:
        raise ValueError(f"LibRaw cannot read this {fmt} file: {_libraw_error(exc)}") from None
    with raw:
        try:
            preview = _preview(raw, min_side)
            why_preview = None
        except (rawpy.LibRawError, OSError, ValueError) as exc:
            why_preview = _libraw_error(exc) if isinstance(exc, rawpy.LibRawError) else str(exc)
        if preview is not None and (not min_side or min(preview.size) >= min_side):
            return preview
        try:
            return Image.fromarray(raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8))
        except rawpy.LibRawError as exc:
            if preview is not None:
                return preview
            why_full = _libraw_error(exc)
    raise ValueError(
        f"no decodable image in this {fmt} file (embedded preview: {why_preview}; sensor data: {why_full})"
    )


def _preview(raw: Any, min_side: int | None) -> Image.Image:
    """The embedded preview, upright: its own EXIF orientation if it has one, else the RAW's."""
    import rawpy

    thumb = raw.extract_thumb()
    if thumb.format == rawpy.ThumbFormat.JPEG:
        with Image.open(io.BytesIO(thumb.data), formats=["JPEG"]) as im:
            if min_side:
                im.draft("RGB", (min_side, min_side))
            im.load()
            oriented = im.getexif().get(0x0112, 1) not in (None, 1)
            img = ImageOps.exif_transpose(im).convert("RGB")
    else:
        img = Image.fromarray(thumb.data).convert("RGB")
        oriented = False
    flip = _FLIP.get(raw.sizes.flip)
    return img.transpose(flip) if flip is not None and not oriented else img
