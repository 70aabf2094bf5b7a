"""Read GeoEstimation's published partitions (cells_50_5000.csv, cells_50_2000.csv, cells_50_1000.csv).

Those files are what TransLocator and GeoDecoder trained on (3,298 / 7,202 / 12,893 cells on MP-16), so a
model trained over them predicts the same classes as the papers' models. Their layout: two header lines
(`num_images: N`, `min_concept_probability: ...`), then `class_label, hex_id, imgs_per_cell,
latitude_mean, longitude_mean`. The class order is the file's (not S2-id order) and is kept: class k of
the imported partition is the row with class_label k. Thresholds come from the file name
(`cells_{tau_min}_{tau_max}[...].csv`). Centroids are the file's arithmetic means.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from geotag.errors import InputError, SchemaError
from geotag.geo.cells import Geocells, Partition, PartitionSpec, from_tokens, validate_specs

COLUMNS = ("class_label", "hex_id", "imgs_per_cell", "latitude_mean", "longitude_mean")
DEFAULT_NAMES = ("coarse", "middle", "fine")
_NAME_RE = re.compile(r"cells_(\d+)_(\d+)")


MAX_IMAGES = 10**12
"""The most images a cell may count (beyond any data set; a larger count is a broken file)."""


def _count(text: str, where: str) -> int:
    """imgs_per_cell as a whole number in 0..MAX_IMAGES, or one SchemaError line naming the row."""
    n = int(text.strip())
    if not 0 <= n <= MAX_IMAGES:
        raise SchemaError(f"{where}: imgs_per_cell {text.strip()[:40]} is not a count of images (0 to 10^12)")
    return n


def read_partition_csv(path: str | os.PathLike[str], name: str) -> tuple[Partition, int]:
    """One published partition file -> (partition in class order, num_images of its header or 0)."""
    path = Path(path)
    match = _NAME_RE.search(path.name)
    if not match:
        raise InputError(f"{path.name}: expected a GeoEstimation file name such as cells_50_5000.csv")
    tau_min, tau_max = int(match.group(1)), int(match.group(2))
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise SchemaError(f"{path} is not a text CSV file") from exc
    num_images = 0
    header_at = None
    for k, line in enumerate(lines[:10]):
        if line.startswith("num_images:"):
            try:
                num_images = int(line.split(":", 1)[1].strip())
            except ValueError:
                num_images = 0
        if line.replace(" ", "").startswith("class_label,"):
            header_at = k
            break
    if header_at is None:
        raise SchemaError(f"{path}: no header line with {', '.join(COLUMNS)}")
    reader = csv.reader(lines[header_at:])
    header = [h.strip() for h in next(reader)]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise SchemaError(f"{path}: missing column(s) {', '.join(missing)}")
    col = {c: header.index(c) for c in COLUMNS}
    rows = [r for r in reader if r]
    if not rows:
        raise SchemaError(f"{path}: no cells")
    labels, counts, lat, lon = (np.empty(len(rows), t) for t in (np.int64, np.int64, np.float64, np.float64))
    for k, r in enumerate(rows):
        where = f"{path}: cell row {k + 1}"
        try:
            labels[k] = int(r[col["class_label"]])
            counts[k] = _count(r[col["imgs_per_cell"]], where)
            lat[k], lon[k] = float(r[col["latitude_mean"]]), float(r[col["longitude_mean"]])
        except (ValueError, IndexError, OverflowError) as exc:
            raise SchemaError(f"{where}: not numeric where it must be ({exc})") from exc
        if not (math.isfinite(lat[k]) and math.isfinite(lon[k]) and abs(lat[k]) <= 90 and abs(lon[k]) <= 180):
            raise SchemaError(f"{where}: centroid ({lat[k]}, {lon[k]}) is not a valid coordinate")
    if sorted(labels.tolist()) != list(range(len(rows))):
        raise SchemaError(f"{path}: class_label must be 0..{len(rows) - 1}, each once")
    order = np.argsort(labels)
    ids = from_tokens([rows[k][col["hex_id"]].strip() for k in order])
    if len(np.unique(ids)) != len(ids):
        raise SchemaError(f"{path}: a cell is listed twice")
    part = Partition(
        spec=PartitionSpec(name, tau_min, tau_max),
        ids=ids,
        lat=lat[order],
        lon=lon[order],
        n_images=counts[order],
        parent=np.full(len(ids), -1, dtype=np.int64),
    )
    return part, num_images


def import_geoestimation(
    paths: Sequence[str | os.PathLike[str]], names: Sequence[str] | None = None
) -> Geocells:
    """Published partition files (any order) -> Geocells ordered coarse to fine by tau_max, with parent
    links; refuses partitions that do not nest."""
    if not paths:
        raise InputError("give at least one cells_*.csv file")
    loaded = [read_partition_csv(p, "") for p in paths]
    loaded.sort(key=lambda pn: (-pn[0].spec.tau_max, pn[0].spec.tau_min))
    if names is None:
        names = DEFAULT_NAMES if len(loaded) == 3 else [f"p{k}" for k in range(len(loaded))]
    if len(names) != len(loaded):
        raise InputError(f"got {len(names)} names for {len(loaded)} partition files")
    partitions: list[Partition] = []
    for (part, _), name in zip(loaded, names, strict=True):
        part.spec = PartitionSpec(name, part.spec.tau_min, part.spec.tau_max)
        if partitions:
            prev = partitions[-1]
            part.parent = prev.lookup(part.ids)
            if (part.parent < 0).any():
                bad = int((part.parent < 0).sum())
                raise SchemaError(
                    f"{bad} {name!r} cell(s) lie in no {prev.name!r} cell: these partitions do not nest"
                )
        partitions.append(part)
    validate_specs([p.spec for p in partitions])
    return Geocells(partitions, n_input=max(n for _, n in loaded))
