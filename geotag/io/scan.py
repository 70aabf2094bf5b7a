"""Walk files and folders for photos: deterministic order, hidden folders skipped, symlink loops safe.

`image_id` is a content hash (xxh3-128 of the bytes), so a renamed or moved file keeps its identity and
resume works across folder reorganisations.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import xxhash

from geotag.errors import InputError
from geotag.io.shards import is_shard_source, iter_shards, key_ref

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".heic", ".heif"})
HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class ImageRecord:
    """A photo found by the walk: where it is and what the file system says about it."""

    path: Path
    size: int
    mtime: datetime


def is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _record(path: Path, st: os.stat_result) -> ImageRecord:
    return ImageRecord(path=path, size=st.st_size, mtime=datetime.fromtimestamp(st.st_mtime, UTC))


def _walk_folder(root: Path, seen_dirs: set[tuple[int, int]]) -> Iterator[Path]:
    """Depth-first, names sorted, following symlinked folders once each (loops are cut by inode)."""
    try:
        st = root.stat()
    except OSError:
        return
    key = (st.st_dev, st.st_ino)
    if key in seen_dirs:
        return
    seen_dirs.add(key)
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        if _is_hidden(entry.name):
            continue
        try:
            is_dir = entry.is_dir(follow_symlinks=True)
        except OSError:
            continue
        if is_dir:
            yield from _walk_folder(Path(entry.path), seen_dirs)
        elif is_image_name(entry.name):
            yield Path(entry.path)


def validate_paths(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The paths as Path objects; a missing one is an input error (one line, exit 2)."""
    checked = [Path(p) for p in paths]
    if not checked:
        raise InputError("no paths given")
    for p in checked:
        if not p.exists() and not ("{" in str(p) and is_shard_source(str(p))):  # brace patterns: per shard
            raise InputError(f"{p}: no such file or folder")
    return checked


def iter_image_paths(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """Photo paths under `paths`, in a stable order, each file once.

    Folders are walked recursively for the known extensions (any letter case). A file named
    explicitly is taken whatever its extension: the user asked for it, and if it is no photo it
    becomes an error row rather than vanishing. A missing path is an input error. A WebDataset tar
    (or a brace pattern of them: 'shards/{00000..00009}.tar') gives one `SHARD#KEY` per sample.
    """
    for item in _walk(paths):
        yield item.path if isinstance(item, ImageRecord) else item


def _walk(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path | ImageRecord]:
    """iter_image_paths' walk; shard samples come as records (their size and mtime are the index's)."""
    paths = validate_paths(paths)
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[tuple[int, int]] = set()
    for p in paths:
        if is_shard_source(str(p)):
            yield from _shard_records(str(p))
            continue
        candidates = _walk_folder(p, seen_dirs) if p.is_dir() else iter([p])
        for path in candidates:
            try:
                st = path.stat()
            except OSError:
                yield path  # dangling link or vanished file: let the reader report it as an error row
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen_files:
                continue
            seen_files.add(key)
            yield path


def _shard_records(pattern: str) -> Iterator[ImageRecord]:
    for shard, samples in iter_shards(pattern):
        shard = os.path.abspath(shard)
        mtime = datetime.fromtimestamp(os.stat(shard).st_mtime, UTC)
        for s in samples:
            yield ImageRecord(path=Path(key_ref(shard, s.key)), size=s.size, mtime=mtime)


def iter_records(paths: Iterable[str | os.PathLike[str]]) -> Iterator[ImageRecord]:
    """Like `iter_image_paths`, with size and mtime; files that vanish mid-walk get size -1."""
    for path in _walk(paths):
        if isinstance(path, ImageRecord):
            yield path
            continue
        try:
            yield _record(path.absolute(), path.stat())
        except OSError:
            yield ImageRecord(path=path.absolute(), size=-1, mtime=datetime.fromtimestamp(0, UTC))


def image_id(path: str | os.PathLike[str]) -> str:
    """xxh3-128 hex digest of the file's bytes: fast (GB/s) and stable across renames."""
    h = xxhash.xxh3_128()
    with open(path, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def image_id_of_bytes(data: bytes) -> str:
    return xxhash.xxh3_128(data).hexdigest()
