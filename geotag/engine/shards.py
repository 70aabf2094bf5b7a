"""Shards in training: `geotag shards` packs a manifest or folder into WebDataset tars, and shard
patterns become TrainSamples (each image a `SHARD#OFFSET+SIZE` reference; see geotag/io/shards.py)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from geotag.engine.train_data import load_samples
from geotag.io.samples import SCENES
from geotag.io.shards import (  # noqa: F401  (re-exported: the shard readers live in io/shards.py)
    IMAGE_EXTS,
    is_ref,
    osv5m_index,
    samples_from_shards,
    with_osv5m_paths,
    write_shards,
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
