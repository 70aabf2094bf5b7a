"""Helpers shared by the write-exif tests: predictions files, exiftool dumps, image-data extraction."""

from __future__ import annotations

import json
import shutil
import stat
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from geotag.io.exif_write import ExiftoolProcess, find_exiftool, jpeg_scan_start, webp_image_chunks
from geotag.io.parquet import PredictionWriter
from geotag.io.scan import image_id

EXIFTOOL = find_exiftool()

WRITTEN_TAGS = {
    "GPSVersionID",
    "GPSLatitude",
    "GPSLatitudeRef",
    "GPSLongitude",
    "GPSLongitudeRef",
    "GPSProcessingMethod",
    "GPSHPositioningError",
}
# Where a block of data sits moves when the EXIF block grows; what it holds is compared separately
# (with -b, exiftool dumps the thumbnail and preview bytes themselves).
STRUCTURAL_TAGS = {
    "StripOffsets",
    "TileOffsets",
    "ThumbnailOffset",
    "PreviewImageStart",
    "JpgFromRawStart",
    "OtherImageStart",
    "MediaDataSize",
    "MediaDataOffset",
}
FILE_SYSTEM_TAGS = {"FileSize", "FileAccessDate", "FileInodeChangeDate"}


def copy_tree(src: Path, dst: Path, suffixes: set[str] | None = None) -> list[Path]:
    """Copy the photos under `src` (fixtures are read-only) and make the copies writable."""
    out = []
    for path in sorted(src.rglob("*")):
        if not path.is_file() or path.name.startswith(".") or path.suffix.lower() in {"", ".md", ".rst"}:
            continue
        if suffixes is not None and path.suffix.lower() not in suffixes:
            continue
        target = dst / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
        target.chmod(target.stat().st_mode | stat.S_IWUSR)
        out.append(target)
    return out


def write_predictions(path: Path, rows: Iterable[dict[str, Any]]) -> Path:
    """A predictions file with sensible defaults: status ok, the file's real image_id, geoclip."""
    with PredictionWriter(path, metadata={"command": "test"}) as writer:
        for row in rows:
            full = {"status": "ok", "model": "geoclip", "confidence": 0.5, "error_km": 25.0, **row}
            if "image_id" not in row:
                full["image_id"] = image_id(full["path"])
            full["path"] = str(full["path"])
            writer.write(full)
    return path


def exiftool_dump(files: list[Path], process: ExiftoolProcess | None = None) -> dict[str, dict[str, Any]]:
    """`exiftool -j -G1 -a -b` of many files in one command: every tag, binary values included."""
    assert EXIFTOOL is not None
    own = process is None
    proc = process or ExiftoolProcess(EXIFTOOL)
    try:
        out, _ = proc.execute(["-j", "-G1", "-a", "-b", *map(str, files)])
    finally:
        if own:
            proc.close()
    return {d["SourceFile"]: d for d in json.loads(out)}


def tag_differences(before: dict[str, Any], after: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Tags that differ, leaving out the ones write-exif writes, derived (Composite) GPS tags,
    file-system facts and offsets of blocks that moved."""
    diffs = {}
    for key in set(before) | set(after):
        group, _, name = key.partition(":")
        if name in WRITTEN_TAGS and group in ("GPS", "XMP-exif"):
            continue
        if group == "Composite" and name.startswith("GPS"):
            continue
        if name in FILE_SYSTEM_TAGS or name in STRUCTURAL_TAGS:
            continue
        if before.get(key) != after.get(key):
            diffs[key] = (before.get(key), after.get(key))
    return diffs


def jpeg_segments(data: bytes) -> list[bytes]:
    """The header segments of a JPEG (SOI to SOS), each with its marker, in order."""
    out, pos = [], 2
    while pos + 4 <= len(data) and data[pos] == 0xFF and data[pos + 1] not in (0xDA, 0xD9):
        if data[pos + 1] == 0xFF:
            pos += 1
            continue
        end = pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        out.append(data[pos:end])
        pos = end
    return out


def is_exif_segment(segment: bytes) -> bool:
    return segment[:2] == b"\xff\xe1" and segment[4:9] == b"Exif\x00"


def _png_idat(data: bytes) -> bytes:
    pos, out = 8, []
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"IDAT":
            out.append(data[pos + 8 : pos + 8 + length])
        pos += 12 + length
    return b"".join(out)


def _tiff_strips(path: Path) -> bytes:
    from PIL import Image

    with Image.open(path) as im:
        tags = im.tag_v2
        offsets = tags.get(273) or tags.get(324)
        counts = tags.get(279) or tags.get(325)
    data = path.read_bytes()
    return b"".join(data[o : o + n] for o, n in zip(offsets, counts, strict=True))


def _decoded(path: Path) -> bytes:
    import pillow_heif
    from PIL import Image

    pillow_heif.register_heif_opener()
    with Image.open(path) as im:
        return im.tobytes()


def image_data(path: Path) -> bytes:
    """The compressed image bytes where the format makes that easy (JPEG, PNG, WebP, TIFF strips),
    else the decoded pixels (HEIC): what write-exif must never change."""
    data = path.read_bytes()
    if data[:2] == b"\xff\xd8":
        start = jpeg_scan_start(data)
        assert start is not None, f"{path}: no JPEG scan found"
        return data[start:]
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return _png_idat(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        chunks = webp_image_chunks(data)
        assert chunks is not None, f"{path}: broken RIFF structure"
        return chunks
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff_strips(path)
    return _decoded(path)
