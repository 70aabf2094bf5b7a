"""WebDataset tar shards as img2dataset writes them: members KEY.jpg (or .png / .webp / .heic) and
KEY.json with the coordinates (`latitude` / `longitude`, or lat / lon) beside each other in plain,
uncompressed tars; brace patterns such as 'shards/{00000..00999}.tar'; local paths or fsspec URLs.

Millions of small files are metadata-bound on NFS or Lustre; a few thousand large tars are not. geotag
reads a shard's member table once (tar headers only: `tarfile` seeks over the data) and then reads each
image with one seek and one read, so training keeps its seeded per-epoch permutation, its DDP split and
exact resume, as with loose files. A sample's reference is `SHARD#OFFSET+SIZE`; an image inside a zip
(OSV-5M ships its images as zips) is `ARCHIVE.zip::MEMBER`.
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from geotag.errors import InputError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif", ".tif", ".tiff")
LAT_KEYS = ("latitude", "lat", "LAT", "Latitude")
LON_KEYS = ("longitude", "lon", "lng", "LON", "Longitude")
_REF = re.compile(r"^(?P<shard>.+\.tar)#(?P<offset>\d+)\+(?P<size>\d+)$")
_ZIP_REF = re.compile(r"^(?P<archive>.+\.zip)::(?P<member>.+)$")
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


@dataclass(frozen=True)
class ShardSample:
    ref: str  # SHARD#OFFSET+SIZE of the image member
    key: str
    lat: float | None
    lon: float | None
    meta: dict[str, Any]


def is_shard_source(text: str) -> bool:
    """A tar path, a brace pattern of tars, or a URL of one."""
    return text.endswith(".tar") or ("{" in text and ".tar" in text)


def fix_url(text: str) -> str:
    """pathlib turns 's3://b/x' into 's3:/b/x'; restore the double slash."""
    return re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*):/(?!/)", r"\1://", text)


def expand(pattern: str) -> list[str]:
    """'shards/{00000..00009}.tar' -> the ten shard names (braceexpand, as webdataset does)."""
    from braceexpand import braceexpand

    return list(braceexpand(fix_url(pattern)))


def _open(shard: str) -> IO[bytes]:
    if _URL.match(shard):
        import fsspec

        return fsspec.open(shard, "rb").open()
    return open(shard, "rb")  # noqa: SIM115 - the caller closes it


def index_shard(shard: str) -> list[ShardSample]:
    """The samples of one shard: image members with their JSON metadata (keys without an image are
    skipped; a JSON that does not parse leaves the sample without coordinates)."""
    images: dict[str, tuple[int, int]] = {}
    metas: dict[str, dict[str, Any]] = {}
    try:
        with _open(shard) as fh, tarfile.open(fileobj=fh, mode="r:") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                base = os.path.basename(m.name)
                key, dot, ext = base.partition(".")
                full_key = f"{os.path.dirname(m.name)}/{key}" if os.path.dirname(m.name) else key
                ext = "." + ext.lower() if dot else ""
                if ext in IMAGE_EXTS and full_key not in images:
                    images[full_key] = (m.offset_data, m.size)
                elif ext == ".json":
                    data = tar.extractfile(m)
                    try:
                        metas[full_key] = json.loads(data.read()) if data else {}
                    except ValueError:
                        metas[full_key] = {}
    except (OSError, tarfile.TarError) as exc:
        raise InputError(f"cannot read shard {shard}: {exc}") from None
    out = []
    for key, (offset, size) in images.items():
        meta = metas.get(key, {})
        out.append(
            ShardSample(f"{shard}#{offset}+{size}", key, _coord(meta, LAT_KEYS), _coord(meta, LON_KEYS), meta)
        )
    return out


def _coord(meta: dict[str, Any], keys: tuple[str, ...]) -> float | None:
    for k in keys:
        if k in meta:
            try:
                return float(meta[k])
            except (TypeError, ValueError):
                return None
    return None


def iter_shards(pattern: str) -> Iterator[tuple[str, list[ShardSample]]]:
    for shard in expand(pattern):
        if not _URL.match(shard) and not Path(shard).is_file():
            raise InputError(f"shard not found: {shard}")
        yield shard, index_shard(shard)


def is_ref(path: str) -> bool:
    return _REF.match(path) is not None or _ZIP_REF.match(path) is not None


def open_ref(path: str) -> str | IO[bytes]:
    """What image decoders open: the path itself, or the bytes of a shard member for a reference."""
    z = _ZIP_REF.match(path)
    if z is not None:
        return io.BytesIO(_zip_handle(z["archive"], os.getpid()).read(z["member"]))
    m = _REF.match(path)
    if m is None:
        return path
    fh = _handle(m["shard"], os.getpid())
    fh.seek(int(m["offset"]))
    return io.BytesIO(fh.read(int(m["size"])))


@functools.lru_cache(maxsize=64)
def _zip_handle(archive: str, pid: int) -> zipfile.ZipFile:
    """An open zip per process (OSV-5M's image archives): its central directory is read once."""
    return zipfile.ZipFile(_open(archive))


def zip_ref(archive: str, member: str) -> str:
    return f"{archive}::{member}"


@functools.lru_cache(maxsize=64)
def _handle(shard: str, pid: int) -> IO[bytes]:
    """An open shard per process (keyed by pid: a forked DataLoader worker never shares its offset)."""
    return _open(shard)


# ------------------------------------------------------------------------------------------------
# Writing (`geotag shards`)


def write_shards(
    items: Iterable[tuple[str | IO[bytes], str, dict[str, Any]]], out: Path, shard_size: int
) -> list[Path]:
    """Pack (image source, extension, metadata) items into out/NNNNN.tar, `shard_size` samples each,
    keys NNNNNNNNN (shard number and index within it, as img2dataset names them). Each shard is written
    to a temporary file in `out`, fsynced and renamed into place when whole; existing shards are never
    overwritten."""
    if not 1 <= shard_size <= 10_000:
        raise InputError("--shard-size must be between 1 and 10000 (img2dataset's key has 4 digits)")
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    batch: list[tuple[str | IO[bytes], str, dict[str, Any]]] = []
    for item in items:
        batch.append(item)
        if len(batch) == shard_size:
            written.append(_write_one(batch, out, len(written)))
            batch = []
    if batch:
        written.append(_write_one(batch, out, len(written)))
    return written


def _write_one(batch: list[tuple[str | IO[bytes], str, dict[str, Any]]], out: Path, number: int) -> Path:
    target = out / f"{number:05d}.tar"
    if target.exists():
        raise InputError(f"{target} already exists: choose an empty --out")
    fd, tmp = tempfile.mkstemp(prefix=".shard-", suffix=".tar.tmp", dir=out)
    try:
        with os.fdopen(fd, "wb") as fh:
            with tarfile.open(fileobj=fh, mode="w", format=tarfile.USTAR_FORMAT) as tar:
                for i, (source, ext, meta) in enumerate(batch):
                    key = f"{number:05d}{i:04d}"
                    body = json.dumps({**meta, "key": key}, ensure_ascii=False).encode()
                    _add(tar, f"{key}{ext}", _read(source))
                    _add(tar, f"{key}.json", body)
            fh.flush()
            os.fsync(fh.fileno())
        if target.exists():
            raise InputError(f"{target} already exists: choose an empty --out")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _read(source: str | IO[bytes]) -> bytes:
    opened = open_ref(source) if isinstance(source, str) else source
    if isinstance(opened, str):
        with open(opened, "rb") as fh:
            return fh.read()
    return opened.read()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))
