"""The training pairs as columns, and the path-column names a manifest may use.

Below the models and the engine: the train tasks (geotag.models.tasks, geodecoder, experts) and the data
readers (geotag.engine.train_data) share these types without the models importing the engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from geotag.errors import InputError

PATH_NAMES = ("path", "file", "filename", "img_file", "image", "img_path", "image_path", "img_id")


@dataclass
class TrainSamples:
    """Columns of the training pairs (pyarrow strings stay compact and fork-friendly for millions)."""

    paths: pa.Array  # absolute paths (string)
    image_ids: pa.Array  # string
    lat: np.ndarray  # float64 degrees
    lon: np.ndarray
    scene: np.ndarray  # int64 index into SCENES, -1 unknown
    country: pa.Array  # string or null
    notes: list[str] = field(default_factory=list)  # what was left out and why

    def __len__(self) -> int:
        return len(self.lat)

    def take(self, index: np.ndarray) -> TrainSamples:
        idx = pa.array(np.asarray(index, dtype=np.int64))
        return TrainSamples(
            self.paths.take(idx),
            self.image_ids.take(idx),
            self.lat[index],
            self.lon[index],
            self.scene[index],
            self.country.take(idx),
            list(self.notes),
        )

    @property
    def has_scene(self) -> bool:
        return bool((self.scene >= 0).any())

    @staticmethod
    def concat(parts: Sequence[TrainSamples]) -> TrainSamples:
        if not parts:
            raise InputError("no training data given")
        return TrainSamples(
            pa.concat_arrays([p.paths for p in parts]),
            pa.concat_arrays([p.image_ids for p in parts]),
            np.concatenate([p.lat for p in parts]),
            np.concatenate([p.lon for p in parts]),
            np.concatenate([p.scene for p in parts]),
            pa.concat_arrays([p.country for p in parts]),
            [n for p in parts for n in p.notes],
        )
