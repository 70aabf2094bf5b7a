"""`geotag predict --engine ray`: the local engine's pieces spread over a Ray cluster (docs/scale.md).

The pipeline is one streaming Ray Data dataset:

1. list (CPU tasks): the driver splits the inputs into listing units (a folder's own photos, a
   sub-folder walked recursively, a few levels down, or one tar shard) and every unit is walked on the
   cluster, local folders with the local engine's walk, fsspec URLs (s3://, gs://, file://) with
   `fs.find`, shards with the local engine's index (a row per sample, `SHARD.tar#KEY`); --include /
   --exclude / --ext narrow it through the local engine's PathFilter, matched below the input folder
   the unit lies in, so both engines take the same files. Files an
   earlier run already wrote (same path, size and mtime) are dropped; the rest are cut into input
   blocks of `checkpoint_rows` files.
2. read (CPU tasks): hash, EXIF and decode each file with the local engine's `read_item`; a URL is
   first copied to a node-local temporary file. A broken file becomes an error row. Resume is keyed
   by the file on disk, never by content: identical photos each keep their own row.
3. predict (a pool of actors, one GPU each, or CPU actors on a CPU cluster): every actor builds the
   model once from the registry spec (name and weight paths in PredictConfig; a model object is never
   pickled across the cluster) and adopts the gallery embeddings computed once by a single task and
   shared through the object store; `complete_rows` fills each block's rows exactly as the local
   engine does, and the block is written as one part file of the predictions schema.

The output is a folder of `part-<hash>.parquet` files (each with the GeoParquet metadata), read as
one table by `geotag eval FOLDER`, DuckDB (`read_parquet('FOLDER/*.parquet')`) and geopandas.

No duplicates, however Ray retries:
- a part's name is the xxh3-128 of its block's files (path, size, mtime): a retried block (a lost
  node, a restarted actor) rewrites the same name, never a second file;
- a part is written under a unique hidden temporary name and renamed into place, so a killed attempt
  leaves no half part, and a reader's `*.parquet` glob never sees a temporary file;
- the last step keeps one row per file, as the local engine's finalisation does (the same
  geotag.io.parts.rows_to_keep): a path in two parts (an edited file predicted again on --resume, or
  a listing task re-run after the folder changed) keeps its newest row, and rows of earlier runs for
  local files that are gone drop out. Only parts that lose rows are rewritten (each atomically), so
  a crash there leaves a folder the next --resume finishes the same way.
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import pickle
import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import xxhash

from geotag.config import PredictConfig
from geotag.engine.predict import (
    PredictSummary,
    auto_batch_size,
    complete_rows,
    load_model,
    read_item,
    resolve_device,
)
from geotag.errors import GeotagError, InputError, OutputError
from geotag.io.parquet import PART_GLOB, PredictionWriter
from geotag.io.parts import DoneSet, record_key, rows_to_keep, still_there
from geotag.io.scan import IMAGE_EXTENSIONS, ImageRecord, PathFilter, is_image_name, iter_records
from geotag.io.shards import expand, is_shard_source
from geotag.io.truth import Truth, load_truth
from geotag.models.base import Preprocess
from geotag.progress import progress_bar

log = logging.getLogger(__name__)

LIST_TARGET_UNITS = 64  # split folders until there are about this many listing units ...
LIST_MAX_DEPTH = 2  # ... but look at most this many levels below each input folder
DONE_MARKER = "_SUCCESS.json"  # a completed run's summary (readers' *.parquet globs skip it)
CRASH_ENV = "GEOTAG_TEST_CRASH_AFTER_WRITE"  # tests: a marker file; while absent, an actor dies once
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_EPOCH = datetime.fromtimestamp(0, UTC)

BLOCK_SCHEMA = pa.schema(
    [
        ("part", pa.string()),
        ("paths", pa.list_(pa.string())),
        ("sizes", pa.list_(pa.int64())),
        ("mtimes", pa.list_(pa.timestamp("us", tz="UTC"))),
        ("skipped", pa.int64()),  # files of the unit an earlier run already did (counted, not listed)
    ]
)
DECODED_SCHEMA = pa.schema([("part", pa.string()), ("payload", pa.large_binary())])
DONE_SCHEMA = pa.schema(
    [
        ("part", pa.string()),
        ("rows", pa.int64()),
        ("errors", pa.int64()),
        ("skipped", pa.int64()),
        ("truth", pa.large_binary()),
    ]
)


# -- paths: local folders and fsspec URLs ------------------------------------------------------------


def is_url(path: str | os.PathLike[str]) -> bool:
    return bool(_URL.match(str(path)))


def _fs(url: str) -> tuple[Any, str]:
    """(fsspec filesystem, path inside it); a missing backend (s3fs, gcsfs) is an input error."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise InputError(f"{url}: cannot open this URL ({exc}); install its fsspec backend") from exc


def _info_mtime(info: Mapping[str, Any]) -> datetime:
    """A file's modification time from an fsspec info dict; each backend names and types it its way."""
    for key in ("mtime", "LastModified", "last_modified", "updated", "modified", "created"):
        value = info.get(key)
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        if isinstance(value, int | float):
            return datetime.fromtimestamp(value, UTC)
        if isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return _EPOCH


def _below(root: str, path: str) -> str:
    """`path` relative to the input folder `root`, "/"-separated (what PathFilter globs match)."""
    rel = path[len(root) :] if path.startswith(root) else path
    return rel.replace(os.sep, "/").strip("/")


def _hidden_below(root: str, path: str) -> bool:
    return any(part.startswith(".") for part in _below(root, path).split("/") if part)


@dataclass(frozen=True)
class Unit:
    """What one listing task walks: `file` (named by the user, taken whatever its extension),
    `files` (the photos directly in a folder), `tree` (a folder, recursively) or `shard` (one tar);
    `root` is the input folder it lies in (--include / --exclude match the path below it)."""

    path: str
    kind: str
    root: str = ""


def validate_inputs(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """The inputs as strings (URLs kept as given); a missing one is an input error, before any work."""
    if not paths:
        raise InputError("no paths given")
    checked = []
    for p in paths:
        text = str(p)
        if is_shard_source(text) and is_url(text):
            raise InputError(f"{text}: tar shards are read from local (or mounted) paths only")
        if is_shard_source(text) and "{" in text:  # a brace pattern: every shard it names must exist
            for shard in expand(text):
                if not Path(shard).is_file():
                    raise InputError(f"shard not found: {shard}")
            text = str(Path(text).absolute())
        elif is_url(text):
            fs, inner = _fs(text)
            if not fs.exists(inner):
                raise InputError(f"{text}: no such file or folder")
        elif not Path(text).exists():
            raise InputError(f"{text}: no such file or folder")
        else:
            text = str(Path(text).absolute())
        if text not in checked:  # a root given twice is walked once, as the local engine does
            checked.append(text)
    return checked


def _is_dir(path: str) -> bool:
    if is_url(path):
        fs, inner = _fs(path)
        return bool(fs.isdir(inner))
    return Path(path).is_dir()


def _subfolders(path: str) -> list[str]:
    """Non-hidden sub-folders, sorted by name (URLs stay URLs)."""
    if is_url(path):
        fs, inner = _fs(path)
        entries = fs.ls(inner, detail=True)
        names = sorted(e["name"] for e in entries if e.get("type") == "directory")
        return [fs.unstrip_protocol(n) for n in names if not n.rstrip("/").rsplit("/", 1)[-1].startswith(".")]
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except OSError:
        return []
    found = []
    for e in entries:
        try:
            if not e.name.startswith(".") and e.is_dir(follow_symlinks=True):
                found.append(e.path)
        except OSError:
            continue
    return found


def plan_units(
    roots: Sequence[str], target: int = LIST_TARGET_UNITS, depth: int = LIST_MAX_DEPTH
) -> list[Unit]:
    """Listing units for the cluster: folders are split level by level (a folder's own photos, then
    each sub-folder) until there are `target` units or `depth` levels were split. Deterministic."""
    units = []
    for r in roots:
        if is_shard_source(r):  # one unit per shard of a brace pattern
            units.extend(Unit(shard, "shard", r) for shard in expand(r))
        else:
            units.append(Unit(r, "tree" if _is_dir(r) else "file", r))
    for _ in range(depth):
        if len(units) >= target or not any(u.kind == "tree" for u in units):
            break
        split: list[Unit] = []
        for u in units:
            if u.kind == "tree":
                split.append(Unit(u.path, "files", u.root))
                split.extend(Unit(sub, "tree", u.root) for sub in _subfolders(u.path))
            else:
                split.append(u)
        units = split
    return units


def list_unit(unit: Unit, only: PathFilter | None = None) -> Iterator[tuple[str, int, datetime]]:
    """(path or URL, size, mtime) of the photos of one unit, in a stable order; local folders follow
    the local engine's walk (hidden folders skipped, symlink loops cut, known extensions), narrowed
    by `only` as the local engine narrows it; a shard gives its samples (`SHARD.tar#KEY`)."""
    if unit.kind in ("file", "shard"):  # named by the user: always taken, every sample of a shard
        only = None
        local = not is_url(unit.path)
        found: Iterator[tuple[str, int, datetime]] = (
            _list_tree(unit.path, None) if local else _list_url(unit, IMAGE_EXTENSIONS)
        )
    else:
        exts = only.extensions if only else IMAGE_EXTENSIONS
        if is_url(unit.path):
            found = _list_url(unit, exts)
        elif unit.kind == "files":
            found = _list_own_files(unit.path, exts)
        else:  # extensions here, the globs below: they match the path below the input folder
            found = _list_tree(unit.path, PathFilter(extensions=exts) if only else None)
    for rec in found:
        if only is None or only.wants(_below(unit.root, rec[0])):
            yield rec


def _list_tree(path: str, only: PathFilter | None) -> Iterator[tuple[str, int, datetime]]:
    for rec in iter_records([path], only):
        yield str(rec.path), rec.size, rec.mtime


def _list_own_files(
    folder: str, extensions: frozenset[str] = IMAGE_EXTENSIONS
) -> Iterator[tuple[str, int, datetime]]:
    """The photos directly in a local folder, as the local engine's walk yields them: names sorted,
    hidden ones skipped, a file twice (hard link) once, a dangling link kept (its read reports it)."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return
    seen: set[tuple[int, int]] = set()
    for entry in entries:
        try:
            if (
                entry.name.startswith(".")
                or entry.is_dir(follow_symlinks=True)
                or not is_image_name(entry.name, extensions)
            ):
                continue
        except OSError:
            continue
        path = Path(entry.path).absolute()
        try:
            st = path.stat()
        except OSError:
            yield str(path), -1, _EPOCH  # as iter_records does: an error row, not a silent gap
            continue
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        yield str(path), st.st_size, datetime.fromtimestamp(st.st_mtime, UTC)


def _list_url(unit: Unit, extensions: frozenset[str]) -> Iterator[tuple[str, int, datetime]]:
    fs, inner = _fs(unit.path)
    if unit.kind == "file":
        info = fs.info(inner)
        yield fs.unstrip_protocol(info["name"]), int(info.get("size") or 0), _info_mtime(info)
        return
    root = inner.rstrip("/") + "/"
    if unit.kind == "files":
        found = {e["name"]: e for e in fs.ls(inner, detail=True) if e.get("type") == "file"}
    else:
        found = fs.find(inner, detail=True)
    for name in sorted(found):
        info = found[name]
        if _hidden_below(root, name) or not is_image_name(name, extensions):
            continue
        yield fs.unstrip_protocol(name), int(info.get("size") or 0), _info_mtime(info)


# -- resume: what the output folder already holds ---------------------------------------------------


def _digest(text: str) -> bytes:
    return xxhash.xxh3_128_digest(text.encode("utf-8", "surrogatepass"))


def _key_text(path: str, size: int, mtime: datetime | None) -> str:
    p, s, m = record_key(path, size, mtime)
    return f"{p}\0{s}\0{m}"


class DoneIndex:
    """The file keys (path, size, mtime) an output folder already holds, as sorted 16-byte digests:
    a numpy array every worker reads from the object store without copying or rebuilding a set."""

    def __init__(self, done: DoneSet) -> None:
        self.keys = np.array(sorted(_digest(f"{p}\0{s}\0{m}") for p, s, m in done.keys), dtype="S16")

    def has_file(self, path: str, size: int, mtime: datetime | None) -> bool:
        value = _digest(_key_text(path, size, mtime))
        i = int(np.searchsorted(self.keys, value))
        return i < len(self.keys) and bytes(self.keys[i]).ljust(16, b"\0") == value  # numpy drops NULs


# -- the three stages (plain functions and a class: Ray Data runs them on the cluster) ---------------


def part_name(paths: Sequence[str], sizes: Sequence[int], mtimes: Sequence[datetime | None]) -> str:
    """The idempotent name of a block's part file: a hash of its files' identities."""
    h = xxhash.xxh3_128()
    for p, s, m in zip(paths, sizes, mtimes, strict=True):
        h.update(_key_text(p, s, m).encode("utf-8", "surrogatepass") + b"\n")
    return f"part-{h.hexdigest()}"


def list_blocks(
    batch: pa.Table, block_rows: int, done: list[Any], only: PathFilter | None = None
) -> pa.Table:
    """Stage 1: walk the batch's units into blocks of at most `block_rows` files not yet done."""
    index: DoneIndex = _resolve(done[0])
    out: dict[str, list[Any]] = {name: [] for name in BLOCK_SCHEMA.names}

    def emit(block: list[tuple[str, int, datetime]], skipped: int) -> None:
        paths, sizes, mtimes = (list(col) for col in zip(*block, strict=True)) if block else ([], [], [])
        out["part"].append(part_name(paths, sizes, mtimes))
        out["paths"].append(paths)
        out["sizes"].append(sizes)
        out["mtimes"].append(mtimes)
        out["skipped"].append(skipped)

    for unit in (Unit(**u) for u in batch.to_pylist()):
        block: list[tuple[str, int, datetime]] = []
        skipped = 0
        for rec in list_unit(unit, only):
            if index.has_file(*rec):
                skipped += 1
                continue
            block.append(rec)
            if len(block) >= block_rows:
                emit(block, 0)
                block = []
        if block or skipped:  # the unit's skip count rides on its last block (maybe an empty one)
            emit(block, skipped)
    return pa.table(out, schema=BLOCK_SCHEMA)


@contextmanager
def local_file(path: str) -> Iterator[Path]:
    """A local path for a file: itself, or for a URL a node-local temporary copy removed afterwards."""
    if not is_url(path):
        yield Path(path)
        return
    fs, inner = _fs(path)
    fd, tmp = tempfile.mkstemp(prefix="geotag-", suffix=Path(inner).suffix)
    try:
        with os.fdopen(fd, "wb") as dst, fs.open(inner, "rb") as src:
            shutil.copyfileobj(src, dst, 1 << 20)
        yield Path(tmp)
    finally:
        os.unlink(tmp)


def read_block(batch: pa.Table, pre: Preprocess, draft: bool) -> pa.Table:
    """Stage 2: the local engine's `read_item` for every file of each block; pixels stacked per block."""
    parts, payloads = [], []
    for block in batch.to_pylist():
        rows, pixels, skipped = [], [], 0
        for path, size, mtime in zip(block["paths"], block["sizes"], block["mtimes"], strict=True):
            try:
                with local_file(path) as local:
                    item = read_item(ImageRecord(local, size, mtime), pre, draft, ())
                    row = item["row"]
                    row["path"] = path  # the URL, not the temporary copy, also in the error text
                    if row.get("error") and str(local) != path:
                        row["error"] = row["error"].replace(str(local), path)
            except OSError as exc:  # a URL that cannot be fetched: an error row, like an unreadable file
                item = {"row": _fetch_error(path, size, mtime, exc), "pixels": None, "skip": False}
            if item["skip"]:
                skipped += 1
                continue
            if item["pixels"] is not None:
                pixels.append((len(rows), item["pixels"].numpy()))
            rows.append(item["row"])
        payload = {
            "rows": rows,
            "index": [i for i, _ in pixels],
            "pixels": np.stack([p for _, p in pixels]) if pixels else None,
            "skipped": skipped + block["skipped"],
        }
        parts.append(block["part"])
        payloads.append(pickle.dumps(payload, protocol=5))
    return pa.table({"part": parts, "payload": pa.array(payloads, pa.large_binary())}, schema=DECODED_SCHEMA)


def _fetch_error(path: str, size: int, mtime: datetime, exc: OSError) -> dict[str, Any]:
    from geotag import __version__

    text = (str(exc).strip() or type(exc).__name__).splitlines()[0][:300]
    return {
        "path": path,
        "size": size,
        "mtime": mtime,
        "status": "error",
        "error": f"cannot read file: {text}",
        "geotag_version": __version__,
        "created_at": datetime.now(UTC),
    }


class Predictor:
    """Stage 3, one per actor: the model built once from the registry spec, then each block predicted,
    completed and written as its part file."""

    def __init__(
        self, cfg: PredictConfig, shared: list[Any], gpu: bool, threads: int, metadata: Mapping[str, Any]
    ) -> None:
        torch.set_num_threads(max(1, threads))  # the CPUs Ray gave it, not every core of the node
        self.cfg = cfg
        self.device = resolve_device("cuda" if gpu else "cpu")
        self.model = load_model(cfg, self.device, shared=_resolve(shared[0]))
        self.batch_size = cfg.batch_size or auto_batch_size(self.device)
        self.truth = load_truth(cfg.truth) if cfg.truth is not None else None
        self.common = {"model": self.model.name, "weights": self.model.weights_label}
        self.metadata = dict(metadata)
        self.folder = Path(cfg.out)

    def __call__(self, batch: pa.Table) -> pa.Table:
        results = [
            self.process(part, pickle.loads(payload))
            for part, payload in zip(batch["part"].to_pylist(), batch["payload"].to_pylist(), strict=True)
        ]
        return pa.Table.from_pylist(results, schema=DONE_SCHEMA)

    def process(self, part: str, block: dict[str, Any]) -> dict[str, Any]:
        rows, index, pixels = block["rows"], block["index"], block["pixels"]
        for start in range(0, len(rows), self.batch_size):
            end = start + self.batch_size
            lo, hi = bisect.bisect_left(index, start), bisect.bisect_left(index, end)
            sub_pixels = torch.from_numpy(pixels[lo:hi]) if hi > lo else None
            sub_index = [i - start for i in index[lo:hi]]
            complete_rows(
                rows[start:end],
                sub_pixels,
                sub_index,
                self.model,
                self.device,
                self.cfg,
                self.truth,
                self.common,
            )
        if rows:
            write_part(self.folder, part, rows, self.metadata)
            _maybe_crash()
        return {
            "part": part,
            "rows": len(rows),
            "errors": sum(r.get("status") == "error" for r in rows),
            "skipped": block["skipped"],
            "truth": _take_truth_counts(self.truth),
        }


def write_part(folder: Path, part: str, rows: list[dict[str, Any]], metadata: Mapping[str, Any]) -> Path:
    """Write a block's rows as `<part>.parquet`, atomically: a unique hidden temporary file, renamed."""
    final = folder / f"{part}.parquet"
    with PredictionWriter(final, metadata=metadata) as writer:  # exclusive hidden temp, checked rename
        writer.write_rows(rows)
    return final


def _maybe_crash() -> None:
    """Fault injection for the tests: die (as a lost node would) after writing, before reporting."""
    marker = os.environ.get(CRASH_ENV)
    if marker and not Path(marker).exists():
        Path(marker).touch()
        os._exit(1)


_TRUTH_COUNTS = ("matched", "not_in_manifest", "ambiguous", "disagree")


def _take_truth_counts(truth: Truth | None) -> bytes | None:
    """This block's manifest counts and matched manifest rows; reset, so each block reports its own."""
    if truth is None:
        return None
    counts = {k: getattr(truth.report, k) for k in _TRUTH_COUNTS}
    seen = np.flatnonzero(truth.seen)
    for k in _TRUTH_COUNTS:
        setattr(truth.report, k, 0)
    truth.seen[:] = False
    return pickle.dumps((counts, seen), protocol=5)


def _add_truth_counts(truth: Truth, blob: bytes | None) -> None:
    if blob is None:
        return
    counts, seen = pickle.loads(blob)
    for k, v in counts.items():
        setattr(truth.report, k, getattr(truth.report, k) + v)
    truth.seen[seen] = True


def _smallest_node_memory() -> int:
    """The `memory` resource of the cluster's smallest live node: no decode task may ask for more."""
    import ray

    sizes = [n["Resources"].get("memory", 0) for n in ray.nodes() if n.get("Alive")]
    return int(min((s for s in sizes if s > 0), default=2**40))


def decode_memory(block_rows: int, input_size: int) -> int:
    """Bytes a decode task reserves: a block's pixels twice (array and pickled copy) on top of a worker
    with torch loaded and one full-size photo (measured: about 500 MiB); Ray then runs no more
    decoders on a node than its memory holds."""
    return 2 * block_rows * 3 * input_size * input_size + 640 * 2**20


def _resolve(value: Any) -> Any:
    """An object-store reference (wrapped in a list so Ray hands it over unresolved) or a plain value."""
    import ray

    return ray.get(value) if isinstance(value, ray.ObjectRef) else value


def _shared_state(cfg: PredictConfig, gpu: bool) -> tuple[dict[str, torch.Tensor], str, str, Preprocess]:
    """Run once per job (a Ray task): the model's shared state (GeoCLIP: the gallery embeddings), its
    name and weights label, and its preprocessing. Building it here also fails fast on bad weights."""
    model = load_model(cfg, resolve_device("cuda" if gpu else "cpu"))
    return model.shared_state(), model.name, model.weights_label, model.preprocess()


# -- the output folder -------------------------------------------------------------------------------


def check_out_folder(out: Path) -> Path:
    out = Path(out)
    if is_url(str(out)):
        raise OutputError(f"--out {out}: the Ray engine writes to a folder every node can reach (NFS etc.)")
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file; --engine ray writes a folder of part files")
    if not out.parent.exists():
        raise OutputError(f"output folder {out.parent} does not exist")
    out.mkdir(exist_ok=True)
    if not os.access(out, os.W_OK):
        raise OutputError(f"output folder {out} is not writable")
    return out


def part_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(PART_GLOB))


def remove_temporaries(folder: Path) -> None:
    for tmp in folder.glob(".part-*"):
        tmp.unlink(missing_ok=True)


def one_row_per_file(folder: Path, earlier: set[str]) -> tuple[int, int]:
    """Keep one row per file in the folder (geotag.io.parts.rows_to_keep): a path's newest row, and
    of the parts in `earlier` (names an earlier run left) only rows whose file is still there (a URL
    is taken as there). Returns (rows dropped from this run's parts, rows dropped from earlier ones)."""
    files = part_files(folder)
    fresh = {i for i, f in enumerate(files) if f.name not in earlier}
    keep = rows_to_keep(files, lambda s, p: s in fresh or is_url(p) or still_there(p))
    dropped = [0, 0]
    for s, name in enumerate(files):
        with pq.ParquetFile(name) as pf:
            rows = pf.metadata.num_rows
            mask = [(s, r) in keep for r in range(rows)]
            if all(mask):
                continue
            meta = pf.schema_arrow.metadata or {}
            table = pf.read().filter(pa.array(mask, pa.bool_()))
        dropped[s not in fresh] += rows - table.num_rows
        log.info(
            "%s: dropped %d row(s) (a newer row for the file, or the file is gone)",
            name.name,
            rows - table.num_rows,
        )
        if table.num_rows == 0:
            name.unlink()
            continue
        info = _json(meta.get(b"geotag"))
        info = {k: v for k, v in info.items() if k not in ("schema_version", "geotag_version")}
        with PredictionWriter(name, metadata=info) as writer:
            writer.write_table(table)
    return dropped[0], dropped[1]


def _json(raw: bytes | None) -> dict[str, Any]:
    return json.loads(raw) if raw else {}


def merge_parts(folder: str | os.PathLike[str], out: str | os.PathLike[str]) -> int:
    """One predictions file from a Ray output folder (for commands that read one file: report, export,
    write-exif), streamed part by part, sorted by nothing; returns the rows written."""
    parts = part_files(Path(folder))
    if not parts:
        raise InputError(f"{folder}: no part files")
    info = _json((pq.read_schema(parts[0]).metadata or {}).get(b"geotag"))
    info = {k: v for k, v in info.items() if k not in ("schema_version", "geotag_version")}
    with PredictionWriter(Path(out), metadata=info) as writer:
        for part in parts:
            for batch in pq.ParquetFile(part).iter_batches():
                writer.write_table(pa.Table.from_batches([batch]))
    return writer.rows_written


def count_rows(folder: Path) -> tuple[int, int]:
    """(rows, error rows) of every part in the folder."""
    rows = errors = 0
    for f in part_files(folder):
        status = pq.read_table(f, columns=["status"]).column(0)
        rows += len(status)
        errors += pa.compute.sum(pa.compute.equal(status, "error")).as_py() or 0
    return rows, errors


# -- the driver --------------------------------------------------------------------------------------


@dataclass
class RayPlan:
    """How the cluster will be used (decided on the driver, reported in the summary)."""

    gpu: bool
    actors: int
    cpus_per_actor: float
    cpus_per_decoder: float

    def describe(self) -> str:
        kind = "GPU" if self.gpu else "CPU"
        return f"ray ({self.actors} {kind} model actor{'s' if self.actors != 1 else ''})"


def plan_resources(cfg: PredictConfig, resources: Mapping[str, float]) -> RayPlan:
    """GPU actors (one GPU and one CPU each) when --gpus N is given or the cluster has GPUs (and --gpus
    is not 0); else CPU actors. Whatever is asked, the decoders keep room to run: a pool of actors
    holding every CPU would starve the stage that feeds it."""
    gpus = int(resources.get("GPU", 0))
    cpus = float(resources.get("CPU", 1))
    if cfg.cpus_per_decoder <= 0:
        raise InputError("--cpus-per-decoder must be positive")
    if cfg.ray_gpus:
        if cfg.ray_gpus > gpus:  # an autoscaling cluster adds GPU nodes when the actors ask for them
            log.warning("--gpus %d: the cluster has %d GPU(s) now; waiting for more", cfg.ray_gpus, gpus)
        actors, gpu = cfg.ray_gpus, True
    elif cfg.ray_gpus is None and gpus > 0:
        actors, gpu = gpus, True
    else:
        actors, gpu = cfg.ray_actors or 1, False
    per_actor = 1.0 if gpu else min(1.0, cpus / (actors + 1))
    spare = cpus - actors * per_actor
    per_decoder = min(cfg.cpus_per_decoder, spare) if spare > 0 else cfg.cpus_per_decoder
    return RayPlan(gpu, actors, per_actor, per_decoder)


def _absolute_paths(cfg: PredictConfig) -> dict[str, Any]:
    """The weight, gallery, manifest and map paths made absolute: actors do not share the driver's cwd."""
    names = ("backbone_weights", "weights", "gallery", "truth", "seg_dir")
    found: dict[str, Any] = {n: Path(v).absolute() for n in names if (v := getattr(cfg, n)) is not None}
    if cfg.segmenter is not None and Path(cfg.segmenter).exists():  # a local folder, not a hub id
        found["segmenter"] = str(Path(cfg.segmenter).absolute())
    return found


def connect(address: str | None) -> bool:
    """Join a running cluster (`address`) or start a local one; True when this call started Ray."""
    import ray

    if ray.is_initialized():
        return False
    ray.init(address=address, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=True)
    return True


def run_ray_predict(cfg: PredictConfig) -> PredictSummary:
    """Predict every photo under cfg.paths into the folder cfg.out on a Ray cluster (module docstring)."""
    if cfg.time.active or cfg.model == "none":
        raise InputError(
            "time evidence (--track, --siblings, --tz, --clock-offset, --sync, --model none) "
            "needs --engine local"
        )
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise InputError("--engine ray needs Ray: pip install 'geotag-photos[ray]'") from exc
    if cfg.top_k < 1:
        raise InputError("--top-k must be at least 1")
    only = PathFilter.from_options(cfg.include, cfg.exclude, cfg.ext)  # a bad --ext: before any work
    roots = validate_inputs(cfg.paths)
    out = check_out_folder(Path(cfg.out))
    manifest = load_truth(cfg.truth) if cfg.truth is not None else None
    cfg = replace(cfg, out=out.absolute(), **_absolute_paths(cfg))  # actors run elsewhere
    summary = PredictSummary(resumed=cfg.resume)  # changed / deleted files are not counted here
    remove_temporaries(out)
    finished = (out / DONE_MARKER).exists()
    (out / DONE_MARKER).unlink(missing_ok=True)  # written again only when this run completes
    if not cfg.resume:
        old = part_files(out)
        for f in old:
            f.unlink()
        summary.restarted = bool(old) and not finished
    done = DoneSet()
    for f in part_files(out):
        done.add_file(f)
    earlier = {f.name for f in part_files(out)}

    started = connect(cfg.ray_address)
    try:
        return _run(cfg, out, roots, only, done, earlier, manifest, summary)
    except ray.exceptions.RayTaskError as exc:  # a library error inside a task: one line, its exit code
        cause = getattr(exc, "cause", None)
        if isinstance(cause, GeotagError):
            raise cause from None
        raise
    finally:
        if started:
            ray.shutdown()


def _run(
    cfg: PredictConfig,
    out: Path,
    roots: list[str],
    only: PathFilter | None,
    done: DoneSet,
    earlier: set[str],
    manifest: Truth | None,
    summary: PredictSummary,
) -> PredictSummary:
    import ray
    import ray.data

    plan = plan_resources(cfg, ray.cluster_resources())
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = cfg.progress and sys.stderr.isatty()  # else ours: plain lines
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # stderr is for progress and problems ...
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # ... not "bars are off"
    gpu_args = {"num_gpus": 1} if plan.gpu else {"num_cpus": plan.cpus_per_actor}
    state, name, weights, pre = ray.get(ray.remote(**gpu_args)(_shared_state).remote(cfg, plan.gpu))
    summary.device, summary.weights = plan.describe(), weights
    shared_ref = ray.put(state)
    done_ref = ray.put(DoneIndex(done))
    metadata = {
        "command": "predict",
        "model": name,
        "weights": weights,
        "engine": "ray",
        **cfg.extra_metadata,
    }

    # Ray Data fuses consecutive maps whose remote args are equal into one task (or into the actor);
    # the decode stage reserves memory and its neighbours don't, which also keeps them apart: a unit's
    # blocks fan out to many decode tasks, and decoding never runs inside a model actor.
    units = plan_units(roots)
    ds = ray.data.from_items(
        [{"path": u.path, "kind": u.kind, "root": u.root} for u in units], override_num_blocks=len(units)
    )
    ds = ds.map_batches(
        list_blocks,
        batch_size=1,
        batch_format="pyarrow",
        fn_kwargs={"block_rows": cfg.checkpoint_rows, "done": [done_ref], "only": only},
        num_cpus=plan.cpus_per_decoder,
    )
    ds = ds.map_batches(
        read_block,
        batch_size=1,
        batch_format="pyarrow",
        fn_kwargs={"pre": pre, "draft": cfg.draft},
        num_cpus=plan.cpus_per_decoder,
        memory=min(decode_memory(cfg.checkpoint_rows, pre.input_size), _smallest_node_memory() // 2),
    )
    ds = ds.map_batches(
        Predictor,
        batch_size=1,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=plan.actors),
        fn_constructor_kwargs={
            "cfg": cfg,
            "shared": [shared_ref],
            "gpu": plan.gpu,
            "threads": max(1, int(plan.cpus_per_actor)),
            "metadata": metadata,
        },
        **gpu_args,
    )
    with progress_bar(None, "predict", enabled=cfg.progress) as bar:
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            for rec in batch.to_pylist():
                summary.new += rec["rows"]
                summary.skipped += rec["skipped"]
                if manifest is not None:
                    _add_truth_counts(manifest, rec["truth"])
                bar.update(rec["rows"] + rec["skipped"])
    log.debug("ray data stats:\n%s", ds.stats())

    remove_temporaries(out)
    dropped, _ = one_row_per_file(out, earlier)
    summary.new -= dropped
    summary.total, summary.failed = count_rows(out)
    summary.truth = manifest.finish() if manifest is not None else None
    marker = {"rows": summary.total, "failed": summary.failed, "model": name, "weights": weights}
    (out / DONE_MARKER).write_text(json.dumps({**marker, "finished_at": datetime.now(UTC).isoformat()}))
    return summary
