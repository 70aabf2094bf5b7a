"""Shards in training: `geotag shards` packs a manifest or folder into WebDataset tars, and shard
patterns become TrainSamples (each image a `SHARD#OFFSET+SIZE` reference; see geotag/io/shards.py).

Packing copies other people's files into a tar that may be shared: each input must be a regular file
(or an archive member) of at most MAX_PHOTO_BYTES whose header Pillow reads as an image. Anything else
(a FIFO, a device, a folder, a private text file, a zip bomb) is skipped and counted, never packed.
"""

from __future__ import annotations

import io
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from geotag.engine.train_data import load_samples
from geotag.errors import InputError
from geotag.io.bounded import NotAPhotoFile
from geotag.io.samples import SCENES
from geotag.io.shards import (  # noqa: F401  (re-exported: the shard readers live in io/shards.py)
    IMAGE_EXTS,
    is_ref,
    osv5m_index,
    read_ref,
    samples_from_shards,
    with_osv5m_paths,
    write_shards,
)

log = logging.getLogger(__name__)


@dataclass
class PackSummary:
    shards: list[Path]
    packed: int = 0
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> rows left out


def checked_image(path: str) -> tuple[IO[bytes] | None, str]:
    """(the photo's bytes, "") when `path` is a bounded regular file or member that Pillow reads as an
    image; (None, why) otherwise."""
    from PIL import Image

    import geotag.io.decode  # noqa: F401 - registers the HEIF opener and the pixel limit

    try:
        data = read_ref(path)
    except NotAPhotoFile as exc:
        return None, exc.reason
    except OSError:
        return None, "unreadable"
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.size  # noqa: B018 - the header parsed
    except Exception:  # noqa: BLE001 - anything Pillow cannot open is no photo to pack
        return None, "not an image"
    return io.BytesIO(data), ""


def pack(sources: Sequence[Path], out: Path, shard_size: int, image_root: Path | None = None) -> PackSummary:
    """`geotag shards`: the training samples of manifests / folders as img2dataset-style shards."""
    samples = load_samples(sources, image_root)
    summary = PackSummary(shards=[])

    def items() -> Iterator[tuple[IO[bytes], str, dict[str, Any]]]:
        for i in range(len(samples)):
            path = samples.paths[i].as_py()
            data, why = checked_image(path)
            if data is None:
                log.info("not packed: %s (%s)", path, why)
                summary.skipped[why] += 1
                continue
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
            summary.packed += 1
            yield data, ext if ext in IMAGE_EXTS else ".jpg", meta

    summary.shards = write_shards(items(), out, shard_size)
    if not summary.packed:
        reasons = ", ".join(f"{n} {why}" for why, n in sorted(summary.skipped.items()))
        raise InputError(f"no photo could be packed ({reasons}): inputs must be regular image files")
    return summary
