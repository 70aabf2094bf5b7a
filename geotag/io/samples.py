"""The training pairs as columns, the path-column names a manifest may use, and small manifest reads.

Below the models and the engine: the train tasks (geotag.models.tasks, geodecoder, experts) and the data
readers (geotag.engine.train_data) share these types without the models importing the engine.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from geotag.errors import InputError

SCENES = ("indoor", "natural", "urban")
"""The scene labels of TransLocator's scene head (GeoEstimation's S3: indoor / natural / urban)."""

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
    rows: np.ndarray | None = None  # each pair's row in its source (an embedding cache's feature row)
    unreadable: int = 0  # files of a folder that could not be read (counted in `notes`; not in the pairs)

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
            None if self.rows is None else self.rows[index],
            self.unreadable,
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
            np.concatenate([p.rows for p in parts]) if all(p.rows is not None for p in parts) else None,
            sum(p.unreadable for p in parts),
        )


def manifest_groups(sources: Sequence[Path], image_root: Path | None) -> dict[str, str]:
    """Absolute photo path -> the `group` column of the manifests among `sources` that have one
    (relative paths from `image_root`, else the manifest's folder); folders and group-less files add none."""
    import pyarrow.compute as pc

    from geotag.io.tables import find_column, read_table, require_column, text_convert

    by_path: dict[str, str] = {}
    for src in sources:
        src = Path(src)
        if not src.is_file():
            continue
        table = read_table(src, "manifest", convert=text_convert())
        group_col = find_column(table, ("group",))
        if group_col is None:
            continue
        base = Path(image_root) if image_root is not None else src.parent
        path_col = require_column(table, PATH_NAMES, f"manifest {src}")
        paths = pc.cast(table.column(path_col), "string").to_pylist()
        for p, g in zip(paths, table.column(group_col).to_pylist(), strict=True):
            if p is not None and g is not None:
                by_path[str(p if Path(p).is_absolute() else (base / p).absolute())] = str(g).strip()
    return by_path


def read_beside(sources: Sequence[Path], name: str) -> dict[str, Any] | None:
    """The JSON file `name` beside (or inside, for a folder) the first source that has one, else None;
    one InputError line when it cannot be read."""
    for src in sources:
        path = Path(src)
        candidate = (path if path.is_dir() else path.parent) / name
        if candidate.is_file():
            try:
                return json.loads(candidate.read_text())
            except (OSError, ValueError, RecursionError) as exc:  # RecursionError: nested too deeply
                raise InputError(f"cannot read {candidate}: {exc}") from exc
    return None


def parse_scenes(values: Sequence[Any]) -> np.ndarray:
    """Scene labels as indices into SCENES: names in any case, or 0 / 1 / 2 as numbers or text
    (GeoEstimation's S3_Label); anything else -1."""
    out = np.full(len(values), -1, np.int64)
    for i, v in enumerate(values):
        if isinstance(v, bool) or v is None:
            continue
        text = str(v).strip().lower()
        if text in SCENES:
            out[i] = SCENES.index(text)
            continue
        try:
            number = float(text)
        except ValueError:
            continue
        if number in (0.0, 1.0, 2.0):
            out[i] = int(number)
    return out
