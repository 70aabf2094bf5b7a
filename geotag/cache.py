"""A small on-disk cache for things costly to compute and cheap to key (gallery embeddings, the country
borders' parsed polygons).

Encoding GeoCLIP's 100K-coordinate gallery takes about 14 s on two CPU cores; the result depends only on
the coordinates and the GPS-encoder weights, so it is stored under a hash of both and reused by every
later run. Location: $GEOTAG_CACHE, else $XDG_CACHE_HOME/geotag, else ~/.cache/geotag; GEOTAG_CACHE=off
disables it. Files are written to a temporary name and renamed, so a crash never leaves a bad entry.
torch is imported only by the tensor helpers: light commands (scan) use the folder too.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

import xxhash

from geotag.io.durable import atomic_file

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


def cache_dir() -> Path | None:
    """The cache folder, or None when caching is off."""
    env = os.environ.get("GEOTAG_CACHE")
    if env is not None:
        return None if env.lower() in ("off", "0", "none", "") else Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "geotag"


def tensor_key(*tensors: torch.Tensor) -> str:
    """A content hash of tensors (their bytes, dtypes and shapes)."""
    import torch

    h = xxhash.xxh3_128()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def cached_tensor(kind: str, key: str, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
    """`compute()`, or its earlier result stored as `<cache>/<kind>-<key>.safetensors`."""
    from safetensors.torch import load_file, save

    folder = cache_dir()
    if folder is None:
        return compute()
    path = folder / f"{kind}-{key}.safetensors"
    if path.exists():
        try:
            return load_file(path)["value"]
        except Exception as exc:  # a damaged entry is recomputed, never trusted
            log.debug("ignoring unreadable cache entry %s: %s", path, exc)
    value = compute()
    store(path.name, lambda fh: fh.write(save({"value": value.detach().cpu().contiguous()})))
    return value


def store(name: str, write: Callable[[IO[bytes]], None]) -> None:
    """Write `<cache>/<name>` through `write(fh)`, atomically; quietly nothing when the cache is off or
    cannot be written (a read-only home is no reason to fail a run)."""
    folder = cache_dir()
    if folder is None:
        return
    path = folder / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_file(path, sync=False) as fh:  # a lost entry is recomputed: no fsync
            write(fh)
    except OSError as exc:
        log.debug("could not write cache entry %s: %s", path, exc)
