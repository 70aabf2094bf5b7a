"""WebDataset tar shards as img2dataset writes them: members KEY.jpg (or .png / .webp / .heic) and
KEY.json with the coordinates (`latitude` / `longitude`, or lat / lon) beside each other in plain,
uncompressed tars; brace patterns such as 'shards/{00000..00999}.tar'; local paths or fsspec URLs.

Millions of small files are metadata-bound on NFS or Lustre; a few thousand large tars are not. geotag
reads a shard's member table once (tar headers only: `tarfile` seeks over the data) and then reads each
image with one seek and one read, so training keeps its seeded per-epoch permutation, its DDP split and
exact resume, as with loose files. A training sample's reference is `SHARD#OFFSET+SIZE`; the rows of
`predict`, `scan` and `gallery build` name a sample `SHARD#KEY` (stable whatever the tar's layout; each
process indexes a shard once to find the key); an image inside a zip (OSV-5M ships its images as zips)
is `ARCHIVE.zip::MEMBER`.
"""

from __future__ import annotations

import functools
import io
import json
import math
import os
import random
import re
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import numpy as np
import pyarrow as pa
import xxhash

from geotag.errors import InputError
from geotag.io.bounded import NotAPhotoFile, check_size, open_regular, read_zip_member
from geotag.io.durable import real_dir
from geotag.io.samples import TrainSamples, parse_scenes

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif", ".tif", ".tiff")
LAT_KEYS = ("latitude", "lat", "LAT", "Latitude")
LON_KEYS = ("longitude", "lon", "lng", "LON", "Longitude")
_REF = re.compile(r"^(?P<shard>.+\.tar)#(?P<offset>\d+)\+(?P<size>\d+)$")
_KEY_REF = re.compile(r"^(?P<shard>.+\.tar)#(?P<key>.+)$")  # a key may hold '#': see split_key_ref
_ZIP_REF = re.compile(r"^(?P<archive>.+\.zip)::(?P<member>.+)$")
MAX_JSON_BYTES = 1024 * 1024  # a sample's metadata JSON read at most (img2dataset's are a few hundred bytes)
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
T = TypeVar("T")


@dataclass(frozen=True)
class ShardSample:
    ref: str  # SHARD#OFFSET+SIZE of the image member
    key: str
    lat: float | None
    lon: float | None
    meta: dict[str, Any]
    error: str | None = None  # why its JSON was unusable (scan makes the sample an error row)

    @property
    def size(self) -> int:
        return int(self.ref.rsplit("+", 1)[1])


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
    return open_regular(shard, limit=2**62)  # a FIFO or device named as an archive never blocks


def index_shard(shard: str) -> list[ShardSample]:
    """The samples of one shard: image members with their JSON metadata (keys without an image are
    skipped; a JSON that does not parse leaves the sample without coordinates)."""
    images: dict[str, tuple[int, int]] = {}
    metas: dict[str, dict[str, Any]] = {}
    bad: dict[str, str] = {}
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
                    data = tar.extractfile(m) if m.size <= MAX_JSON_BYTES else None  # larger: no coordinates
                    try:
                        meta = json.loads(data.read()) if data else {}
                    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply
                        meta = None
                        bad[full_key] = f"its {base} is not valid JSON ({str(exc)[:100] or 'too deep'})"
                    if isinstance(meta, dict):
                        metas[full_key] = meta
                    elif full_key not in bad:
                        bad[full_key] = f"its {base} is not a JSON object"
    except (OSError, tarfile.TarError) as exc:
        raise InputError(f"cannot read shard {shard}: {exc}") from None
    out = []
    for key, (offset, size) in images.items():
        meta = metas.get(key, {})
        lat, lon = _coord(meta, LAT_KEYS), _coord(meta, LON_KEYS)
        out.append(ShardSample(f"{shard}#{offset}+{size}", key, lat, lon, meta, bad.get(key)))
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
    """A shard or zip member (`SHARD#OFFSET+SIZE`, `SHARD#KEY`, `ARCHIVE.zip::MEMBER`), not a file."""
    if _REF.match(path) is not None or _ZIP_REF.match(path) is not None:
        return True
    return _KEY_REF.match(path) is not None and not os.path.exists(path)


def ref_archive(path: str) -> str | None:
    """The shard or zip a member reference lies in; None for anything else."""
    for pattern, group in ((_ZIP_REF, "archive"), (_REF, "shard")):
        if (m := pattern.match(path)) is not None:
            return m[group]
    split = split_key_ref(path)
    return None if split is None else split[0]


def split_key_ref(path: str) -> tuple[str, str] | None:
    """(shard, key) of a `SHARD#KEY` reference. A tar member may be named `a#b.jpg` (key `a#b`), so
    the split is at the first `.tar#` whose left side is an existing shard (or a URL); with none, at
    the last one."""
    if _KEY_REF.match(path) is None:
        return None
    at = path.find(".tar#")
    while at != -1:
        shard = path[: at + 4]
        if _URL.match(shard) or os.path.isfile(shard):
            return shard, path[at + 5 :]
        at = path.find(".tar#", at + 1)
    m = _KEY_REF.match(path)
    assert m is not None
    return m["shard"], m["key"]


def key_ref(shard: str, key: str) -> str:
    return f"{shard}#{key}"


def shard_member(path: str) -> ShardSample | None:
    """The sample a `SHARD#KEY` reference names (None for anything else); OSError when the shard has
    no such key."""
    split = split_key_ref(path)
    if split is None or _REF.match(path) is not None or os.path.exists(path):
        return None
    shard, key = split
    try:
        found = _members(shard, os.getpid()).get(key)
    except InputError as exc:
        raise OSError(str(exc)) from None
    if found is None:
        raise OSError(f"no sample {key} in {shard}")
    return found


@functools.lru_cache(maxsize=16)
def _members(shard: str, pid: int) -> dict[str, ShardSample]:
    """A shard's samples by key, indexed once per process (work lists go shard by shard)."""
    return {s.key: s for s in index_shard(shard)}


def read_ref(path: str) -> bytes:
    """The bytes of a photo: a shard or zip member, or a regular file of at most MAX_PHOTO_BYTES
    (NotAPhotoFile, an OSError, for a FIFO, device, folder or a file too large)."""
    with open_ref(path) as fh:
        return fh.read()


def open_ref(path: str) -> IO[bytes]:
    """What image decoders read (the caller closes it): a regular file opened with bounds
    (geotag.io.bounded), or the bytes of a shard or zip member for a reference; OSError otherwise."""
    z = _ZIP_REF.match(path)
    if z is not None and not os.path.exists(path):
        try:
            archive = _zip_handle(z["archive"], os.getpid())
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError) as exc:
            raise NotAPhotoFile(f"cannot read {z['archive']}: {exc}", "unreadable") from None
        return io.BytesIO(read_zip_member(archive, z["member"]))
    if (member := shard_member(path)) is not None:
        path = member.ref
    m = _REF.match(path)
    if m is None or os.path.exists(path):
        return open_regular(path)
    size = int(m["size"])
    check_size(size, f"shard member {path}")
    fh = _handle(m["shard"], os.getpid())
    fh.seek(int(m["offset"]))
    return io.BytesIO(fh.read(size))


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
    real_dir(out, parents=True)  # a link at the folder's name is refused, never written into
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
    return read_ref(source) if isinstance(source, str) else source.read()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


# ---------------------------------------------------------------------------------------------------
# Shards and OSV-5M folders as training samples


def samples_from_shards(pattern: str) -> TrainSamples:
    """The samples of every shard the pattern names; those without valid coordinates are counted out.
    `image_id` is the JSON's image_id (what `geotag shards` keeps), else the shard name and key."""
    refs: list[str] = []
    ids: list[str] = []
    lat: list[float] = []
    lon: list[float] = []
    scenes: list[Any] = []
    countries: list[str | None] = []
    dropped = n_shards = 0
    for shard, samples in iter_shards(pattern):
        n_shards += 1
        stem = Path(shard).stem
        for s in samples:
            if s.lat is None or s.lon is None or not (abs(s.lat) <= 90 and abs(s.lon) <= 180):
                dropped += 1
                continue
            if not (math.isfinite(s.lat) and math.isfinite(s.lon)):
                dropped += 1
                continue
            refs.append(s.ref)
            ids.append(str(s.meta.get("image_id") or f"{stem}/{s.key}"))
            lat.append(s.lat)
            lon.append(s.lon)
            scenes.append(s.meta.get("scene"))
            country = s.meta.get("country")
            countries.append(None if country is None else str(country))
    notes = [f"{pattern}: {dropped} sample(s) without valid coordinates"] if dropped else []
    if not n_shards:
        notes.append(f"{pattern}: no shards")
    return TrainSamples(
        pa.array(refs, pa.string()),
        pa.array(ids, pa.string()),
        np.array(lat, dtype=np.float64),
        np.array(lon, dtype=np.float64),
        parse_scenes(scenes) if scenes else np.zeros(0, np.int64),
        pa.array(countries, pa.string()),
        notes,
    )


def osv5m_index(root: Path) -> dict[str, str]:
    """id -> image of OSV-5M's layout under `root` (its images/train or images/test folder): <id>.jpg in
    `root`, in its sub-folders (the unzipped 00/, 01/, ...) or inside its *.zip archives. One listing."""
    found: dict[str, str] = {}

    def add(name: str, where: str) -> None:
        stem, ext = os.path.splitext(os.path.basename(name))
        if ext.lower() in IMAGE_EXTS:
            found.setdefault(stem, where)

    if not root.is_dir():
        raise InputError(f"OSV-5M images: {root} is not a folder (pass --image-root images/train)")
    for entry in os.scandir(root):
        if entry.is_dir():
            for sub in os.scandir(entry.path):
                if sub.is_file():
                    add(sub.name, os.path.abspath(sub.path))
        elif entry.name.lower().endswith(".zip"):
            archive = os.path.abspath(entry.path)
            try:
                with zipfile.ZipFile(archive) as z:
                    for name in z.namelist():
                        add(name, zip_ref(archive, name))
            except (OSError, zipfile.BadZipFile) as exc:
                raise InputError(f"cannot read {archive}: {exc}") from None
        elif entry.is_file():
            add(entry.name, os.path.abspath(entry.path))
    return found


def with_osv5m_paths(table: pa.Table, id_col: str, root: Path) -> pa.Table:
    """OSV-5M's train.csv / test.csv name images by `id` only: add `path` (null where no image has that
    id, so the row is counted out) and `image_id` (the id)."""
    index = osv5m_index(root)
    ids = [None if v is None else str(v) for v in table.column(id_col).to_pylist()]
    paths = pa.array([index.get(i) if i is not None else None for i in ids], pa.string())
    table = table.append_column("path", paths)
    if "image_id" not in [c.lower() for c in table.column_names]:
        table = table.append_column("image_id", pa.array(ids, pa.string()))
    return table


# ---------------------------------------------------------------------------------------------------
# Streaming order (train --stream): webdataset's recipe over the shard index


def stream_order(
    shards: Sequence[Sequence[int]],
    *,
    seed: int,
    epoch: int,
    stream: int,
    streams: int,
    buffer: int,
) -> Iterator[int]:
    """The sample order of one stream (a rank's DataLoader worker; stream = rank * workers + worker of
    streams = world * workers) in one epoch, as webdataset reads: the shard list shuffled by (seed,
    epoch), every `streams`-th shard this stream's own, each read front to back, the samples mixed by a
    shuffle buffer of `buffer` (webdataset's `.shuffle(n)`: 0 or 1 keep the read order). `shards[s]`
    lists shard s's sample numbers in tar order. Deterministic per (seed, epoch, stream); the streams
    together give every sample exactly once."""
    if len(shards) < streams:
        raise InputError(
            f"--stream: {len(shards)} shard(s) for {streams} reader(s) (processes x --workers): every "
            "reader needs its own shards; pack smaller shards or use fewer workers"
        )
    order = list(range(len(shards)))
    random.Random(xxhash.xxh64_intdigest(f"shards:{seed}:{epoch}".encode())).shuffle(order)
    mine = (i for s in order[stream::streams] for i in shards[s])
    rng = random.Random(xxhash.xxh64_intdigest(f"buffer:{seed}:{epoch}:{stream}".encode()))
    yield from shuffle_buffer(mine, buffer, rng)


def shuffle_buffer(items: Iterable[T], size: int, rng: random.Random) -> Iterator[T]:
    """Fill a buffer of `size` items, then yield a random one for each new item; drain shuffled."""
    if size <= 1:
        yield from items
        return
    held: list[T] = []
    for item in items:
        if len(held) < size:
            held.append(item)
            continue
        k = rng.randrange(size)
        held[k], item = item, held[k]
        yield item
    rng.shuffle(held)
    yield from held


def shard_groups(refs: Sequence[str]) -> list[list[int]]:
    """Sample numbers grouped by the shard of their `SHARD#OFFSET+SIZE` reference, in offset order;
    InputError when a sample is not in a shard."""
    groups: dict[str, list[tuple[int, int]]] = {}
    for i, ref in enumerate(refs):
        m = _REF.match(ref)
        if m is None:
            raise InputError(f"--stream reads shards only; {ref} is a file (pack it with `geotag shards`)")
        groups.setdefault(m["shard"], []).append((int(m["offset"]), i))
    return [[i for _, i in sorted(members)] for _, members in sorted(groups.items())]
