"""Walk files and folders for photos: deterministic order, hidden folders skipped, symlink loops safe.

The one walker of every command that takes photo folders; `PathFilter` (--include / --exclude / --ext)
narrows it, here, once.

`image_id` is a content hash (xxh3-128 of the bytes), so a renamed or moved file keeps its identity and
resume works across folder reorganisations.
"""

from __future__ import annotations

import logging
import os
import stat
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from pathlib import Path

import xxhash

from geotag.errors import InputError
from geotag.io.shards import is_shard_source, iter_shards, key_ref

log = logging.getLogger(__name__)

RAW_EXTENSIONS = frozenset(
    {".nef", ".nrw", ".cr2", ".cr3", ".crw", ".arw", ".srf", ".sr2", ".rw2", ".orf", ".raf", ".dng"}
    | {".pef", ".srw", ".x3f", ".iiq", ".3fr", ".mrw", ".erf", ".kdc", ".dcr", ".mos", ".rwl"}
)
"""Camera RAW files (the formats exiftool and LibRaw read): walked like photos; geotag.io.raw reads them."""
IMAGE_EXTENSIONS = (
    frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".heic", ".heif"}) | RAW_EXTENSIONS
)
HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class ImageRecord:
    """A photo found by the walk: where it is and what the file system says about it."""

    path: Path
    size: int
    mtime: datetime


def is_image_name(name: str, extensions: frozenset[str] = IMAGE_EXTENSIONS) -> bool:
    return Path(name).suffix.lower() in extensions


def is_raw_name(name: str | os.PathLike[str]) -> bool:
    return Path(name).suffix.lower() in RAW_EXTENSIONS


def extension_label(name: str) -> str:
    """How a skipped file is counted: its extension in lower case, or "(none)"."""
    return Path(name).suffix.lower() or "(none)"


def describe_skipped(skipped: Counter[str] | None) -> str | None:
    """ "skipped 5 files: .mov 3, .xyz 2" (most first), or None when nothing was left out."""
    if not skipped:
        return None
    total = sum(skipped.values())
    parts = ", ".join(f"{ext} {n}" for ext, n in sorted(skipped.items(), key=lambda kv: (-kv[1], kv[0])))
    return f"skipped {total} file{'s' if total != 1 else ''} geotag does not read: {parts}"


def _glob_match(relative: str, pattern: str) -> bool:
    """A pattern without "/" matches the file name, one with "/" the path below the walked folder;
    `*` matches any characters, "/" included (fnmatch), and `**/` also matches no folder at all."""
    target = relative if "/" in pattern else relative.rsplit("/", 1)[-1]
    return fnmatchcase(target, pattern) or (
        "**/" in pattern and fnmatchcase(target, pattern.replace("**/", ""))
    )


@dataclass(frozen=True)
class PathFilter:
    """Which files of a walked folder are taken: `extensions` (--ext), then at least one `include`
    glob if any is given, and no `exclude` glob. Files named explicitly are always taken."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    extensions: frozenset[str] = IMAGE_EXTENSIONS

    @classmethod
    def from_options(
        cls, include: Iterable[str] | None, exclude: Iterable[str] | None, ext: str | None
    ) -> PathFilter | None:
        """From the CLI's --include / --exclude (repeatable) and --ext jpg,png; None when all are unset."""
        include, exclude = tuple(include or ()), tuple(exclude or ())
        if not include and not exclude and ext is None:
            return None
        extensions = IMAGE_EXTENSIONS
        if ext is not None:
            extensions = frozenset(
                "." + e.strip().lower().lstrip(".") for e in ext.split(",") if e.strip(" .")
            )
            if not extensions:
                raise InputError(f"--ext {ext!r}: give extensions such as jpg,png")
        return cls(include, exclude, extensions)

    def wants(self, relative: str) -> bool:
        """`relative`: the file's path below the walked folder, "/"-separated."""
        if self.include and not any(_glob_match(relative, g) for g in self.include):
            return False
        return not any(_glob_match(relative, g) for g in self.exclude)


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _record(path: Path, st: os.stat_result) -> ImageRecord:
    return ImageRecord(path=path, size=st.st_size, mtime=datetime.fromtimestamp(st.st_mtime, UTC))


@dataclass
class WalkReport:
    """What a walk could not take, for the command's summary: folders it could not list (each also
    logged as a warning, unless `quiet`: a second walk over the same folders, such as a progress count),
    and the files it left out for their extension (hidden ones are not counted), by extension."""

    unreadable: list[str] = field(default_factory=list)
    not_read: Counter[str] = field(default_factory=Counter)  # walked files of other types, by extension
    quiet: bool = False

    def folder_failed(self, folder: Path, exc: OSError) -> None:
        self.unreadable.append(str(folder))
        if not self.quiet:
            log.warning("cannot read folder %s (%s): its photos are left out", folder, exc.strerror or exc)


def _walk_folder(
    root: Path,
    seen_dirs: set[tuple[int, int]],
    only: PathFilter | None = None,
    report: WalkReport | None = None,
) -> Iterator[Path]:
    """Depth-first, names sorted, following symlinked folders once each (loops are cut by inode).
    Iterative (a stack of listings), so a folder thousands of levels deep is walked like any other.
    Files of the taken extensions are yielded (the caller applies --include / --exclude); a file is
    counted in `report.not_read` only when geotag cannot read its type and the user's --include /
    --exclude did not leave it out already: what the user excluded is their choice, not geotag's."""
    report = report if report is not None else WalkReport()
    extensions = only.extensions if only else IMAGE_EXTENSIONS

    def listing(folder: Path) -> Iterator[os.DirEntry[str]] | None:
        try:
            st = folder.stat()
        except OSError:
            return None
        key = (st.st_dev, st.st_ino)
        if key in seen_dirs:
            return None
        seen_dirs.add(key)
        try:
            with os.scandir(folder) as it:
                return iter(sorted(it, key=lambda e: e.name))
        except OSError as exc:
            report.folder_failed(folder, exc)
            return None

    first = listing(root)
    stack = [first] if first is not None else []
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        if _is_hidden(entry.name):
            continue
        try:
            is_dir = entry.is_dir(follow_symlinks=True)
        except OSError:
            continue
        if is_dir:
            if (sub := listing(Path(entry.path))) is not None:
                stack.append(sub)
        elif is_image_name(entry.name, extensions):
            yield Path(entry.path)
        elif not is_image_name(entry.name) and (
            only is None or only.wants(Path(entry.path).relative_to(root).as_posix())
        ):
            report.not_read[extension_label(entry.name)] += 1


def validate_paths(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The paths as Path objects; a missing one, or a FIFO, socket or device (reading one blocks or
    never ends; it is never opened), is an input error (one line, exit 2)."""
    checked = [Path(p) for p in paths]
    if not checked:
        raise InputError("no paths given")
    for p in checked:
        try:
            mode = p.stat().st_mode
        except OSError:
            if "{" in str(p) and is_shard_source(str(p)):  # brace patterns: per shard
                continue
            raise InputError(f"{p}: no such file or folder") from None
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise InputError(f"{p}: {_kind(mode)}, not a photo or folder; give regular files or folders")
    return checked


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device")):
        if test(mode):
            return name
    return "a device" if stat.S_ISBLK(mode) else "not a regular file"


def iter_image_paths(
    paths: Iterable[str | os.PathLike[str]], only: PathFilter | None = None, report: WalkReport | None = None
) -> Iterator[Path]:
    """Photo paths under `paths`, in a stable order, each file once.

    Folders are walked recursively for the known extensions (any letter case), narrowed by `only`. A
    file named explicitly is taken whatever its extension: the user asked for it, and if it is no photo
    it becomes an error row rather than vanishing. A missing path is an input error. A WebDataset tar
    (or a brace pattern of them: 'shards/{00000..00009}.tar') gives one `SHARD#KEY` per sample.
    `report`: the folders it could not read and the files it left out for their extension (summary).
    """
    for item in _walk(paths, only, report):
        yield item.path if isinstance(item, ImageRecord) else item


def _walk(
    paths: Iterable[str | os.PathLike[str]], only: PathFilter | None = None, report: WalkReport | None = None
) -> Iterator[Path | ImageRecord]:
    """iter_image_paths' walk; shard samples come as records (their size and mtime are the index's)."""
    paths = validate_paths(paths)
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[tuple[int, int]] = set()
    for p in paths:
        if is_shard_source(str(p)):
            yield from _shard_records(str(p))
            continue
        if p.is_dir():
            found = _walk_folder(p, seen_dirs, only, report)
            candidates = (f for f in found if only is None or only.wants(f.relative_to(p).as_posix()))
        else:
            candidates = iter([p])
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


def iter_records(
    paths: Iterable[str | os.PathLike[str]], only: PathFilter | None = None, report: WalkReport | None = None
) -> Iterator[ImageRecord]:
    """Like `iter_image_paths`, with size and mtime; files that vanish mid-walk get size -1. `report`
    collects the folders that could not be read (each is also a warning line)."""
    for path in _walk(paths, only, report):
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
