"""Shards in training: `geotag shards` packs a manifest or folder into WebDataset tars, and shard
patterns become TrainSamples (each image a `SHARD#OFFSET+SIZE` reference; see geotag/io/shards.py)."""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from geotag.engine.train_data import SCENES, TrainSamples, load_samples, parse_scenes
from geotag.errors import InputError
from geotag.io.shards import IMAGE_EXTS, is_ref, iter_shards, write_shards, zip_ref


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


def pack(sources: Sequence[Path], out: Path, shard_size: int, image_root: Path | None = None) -> list[Path]:
    """`geotag shards`: the training samples of manifests / folders as img2dataset-style shards."""
    samples = load_samples(sources, image_root)

    def items() -> Iterator[tuple[str, str, dict[str, Any]]]:
        for i in range(len(samples)):
            path = samples.paths[i].as_py()
            ext = ".jpg" if is_ref(path) else Path(path).suffix.lower()
            meta: dict[str, Any] = {
                "latitude": float(samples.lat[i]),
                "longitude": float(samples.lon[i]),
                "image_id": samples.image_ids[i].as_py(),
            }
            if samples.scene[i] >= 0:
                meta["scene"] = SCENES[int(samples.scene[i])]
            if (country := samples.country[i].as_py()) is not None:
                meta["country"] = country
            yield path, ext if ext in IMAGE_EXTS else ".jpg", meta

    return write_shards(items(), out, shard_size)


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
