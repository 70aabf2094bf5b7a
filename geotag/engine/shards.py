"""Shards in training: `geotag shards` packs a manifest or folder into WebDataset tars, and shard
patterns become TrainSamples (each image a `SHARD#OFFSET+SIZE` reference; see geotag/io/shards.py)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from geotag.engine.train_data import SCENES, TrainSamples, load_samples, parse_scenes
from geotag.io.shards import IMAGE_EXTS, is_ref, iter_shards, write_shards


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
