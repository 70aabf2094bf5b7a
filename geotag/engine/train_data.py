"""Training data: where the (photo, coordinate) pairs come from, how they are split, how they are read.

Sources (any mix, concatenated in the order given):
- a manifest, CSV / TSV / Parquet, with a path column (`path`, `file`, `filename`, `img_file`, `image`,
  `img_path`, `image_path`, `img_id`; any case) and `lat`/`latitude`, `lon`/`longitude`/`lng`, optional
  `image_id`, `scene` (indoor / natural / urban, or 0 / 1 / 2) and `country`. Relative paths are taken
  from `image_root`, else from the manifest's folder. MP-16-style lists (IMG_FILE, LAT, LON) read as they
  are. A `geotag scan` / `predict` Parquet file works too: its `gt_lat` / `gt_lon` are the truth;
- a folder of photos: every photo whose EXIF carries GPS is a training example (a photographer's own
  archive: learn from the tagged part, then `geotag predict` the untagged part).

Split: an image is in the validation set when a seeded 64-bit hash of its image_id falls below
`val_fraction`, so the split is stable whatever the order of the rows and whatever else is added. The
image_id is the content hash for folders (as in every geotag file), the manifest's `image_id` column when
it has one, else the path as written in the manifest (hashing millions of files up front would cost
more than the training epoch it protects). With a separate validation manifest, training rows whose
image_id is also in it are dropped (a leak).

Reading is deterministic for exact resume: the order of an epoch is a permutation seeded by (seed,
epoch), and the random crop of an image depends only on (seed, epoch, index), never on which DataLoader
worker reads it.
"""

from __future__ import annotations

import io
import logging
import math
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
import xxhash
from PIL import Image
from torch.utils.data import Dataset, Sampler

from geotag.errors import InputError
from geotag.io import gpu_decode
from geotag.io.decode import load_photo, resize_center_crop, to_uint8_tensor
from geotag.io.samples import PATH_NAMES, TrainSamples, parse_scenes
from geotag.io.shards import is_ref, is_shard_source, read_ref
from geotag.io.tables import find_column, float_column, read_table, require_column, text_convert
from geotag.models.base import Preprocess

log = logging.getLogger(__name__)

LAT_NAMES = ("lat", "latitude", "gt_lat")
LON_NAMES = ("lon", "longitude", "lng", "gt_lon")
CROP_SCALE = (0.35, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)


# ------------------------------------------------------------------------------------------------
# Sources


def load_samples(sources: Sequence[Path], image_root: Path | None = None, workers: int = 1) -> TrainSamples:
    """Training pairs from manifests and / or EXIF-tagged folders (see the module docstring)."""
    parts = []
    for src in sources:
        if is_shard_source(str(src)):  # WebDataset tars (engine/shards.py)
            from geotag.io.shards import samples_from_shards

            parts.append(samples_from_shards(str(src)))
            continue
        src = Path(src)
        if src.is_dir():
            parts.append(samples_from_folder(src, workers))
        elif src.is_file():
            parts.append(read_manifest(src, image_root))
        else:
            raise InputError(f"training data not found: {src}")
    samples = TrainSamples.concat(parts)
    if not len(samples):
        raise InputError("no usable training examples (no rows with a valid lat/lon)")
    return samples


def read_manifest(path: Path, image_root: Path | None = None) -> TrainSamples:
    """A CSV / TSV / Parquet manifest; rows without a valid coordinate or path are dropped (noted)."""
    table = read_table(path, "manifest", convert=text_convert())  # "NA" in a country column is Namibia
    where = f"manifest {path}"
    if find_column(table, PATH_NAMES) is None and (osv_id := find_column(table, ("id",))) is not None:
        from geotag.io.shards import with_osv5m_paths  # OSV-5M: images named by id

        table = with_osv5m_paths(table, osv_id, Path(image_root) if image_root is not None else path.parent)
    path_col = require_column(table, PATH_NAMES, where)
    lat_col, lon_col = require_column(table, LAT_NAMES, where), require_column(table, LON_NAMES, where)
    names = [c.lower() for c in table.column_names]
    notes = []
    if "img_id" in names and names.index(lat_col.lower()) > names.index(lon_col.lower()):
        lat_col, lon_col = lon_col, lat_col  # the 2018 GeoEstimation CSVs: see geotag.io.truth
        notes.append(f"{path.name}: header says LON before LAT (GeoEstimation 2018); read by position")
    lat, lon = float_column(table, lat_col, where), float_column(table, lon_col, where)
    raw_paths = pc.cast(table.column(path_col), pa.string()).combine_chunks()
    ok = np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180)
    ok &= ~np.asarray(raw_paths.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    if "status" in table.column_names:  # a geotag predictions / scan file: only readable rows
        status = table.column("status").to_pylist()
        ok &= np.array([s == "ok" for s in status], dtype=bool)
    keep = np.flatnonzero(ok)
    if len(keep) < len(ok):
        notes.append(f"{path.name}: {len(ok) - len(keep)} row(s) without a valid path and lat/lon")
    base = Path(image_root) if image_root is not None else path.parent
    text = raw_paths.take(pa.array(keep)).to_pylist()
    paths = pa.array([str(p) if Path(p).is_absolute() else str((base / p).absolute()) for p in text])
    id_col = find_column(table, ("image_id",))
    ids = pa.array(text) if id_col is None else table.column(id_col).combine_chunks().take(pa.array(keep))
    ids = pc.if_else(pc.is_null(ids), pa.array(text), pc.cast(ids, pa.string()))
    scene_col = find_column(table, ("scene", "s3_label"))
    scene = (
        parse_scenes(table.column(scene_col).to_pylist())[keep]
        if scene_col
        else np.full(len(keep), -1, np.int64)
    )
    country_col = find_column(table, ("country",))
    country = pa.nulls(len(keep), pa.string())
    if country_col:
        text = pc.utf8_trim_whitespace(pc.cast(table.column(country_col).combine_chunks(), pa.string()))
        country = pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text).take(pa.array(keep))
    return TrainSamples(paths, ids, lat[keep], lon[keep], scene, country, notes)


def samples_from_folder(folder: Path, workers: int = 1) -> TrainSamples:
    """Every photo under `folder` whose EXIF has GPS; the untagged and unreadable ones are counted."""
    from geotag.engine.scan import ordered_map, scan_file
    from geotag.io.scan import iter_records

    paths, ids, lat, lon = [], [], [], []
    untagged = failed = 0
    for row in ordered_map(scan_file, iter_records([folder]), workers=workers):
        if row["status"] != "ok":
            failed += 1
        elif row.get("gt_lat") is None or row.get("gt_lon") is None:
            untagged += 1
        else:
            paths.append(row["path"])
            ids.append(row["image_id"])
            lat.append(row["gt_lat"])
            lon.append(row["gt_lon"])
    notes = [f"{folder}: {untagged} photo(s) without GPS, {failed} unreadable"] if untagged or failed else []
    n = len(paths)
    return TrainSamples(
        pa.array(paths, pa.string()),
        pa.array(ids, pa.string()),
        np.array(lat, dtype=np.float64),
        np.array(lon, dtype=np.float64),
        np.full(n, -1, np.int64),
        pa.nulls(n, pa.string()),
        notes,
        unreadable=failed,
    )


# ------------------------------------------------------------------------------------------------
# Split


def hash_unit(image_ids: Sequence[str] | pa.Array, seed: int) -> np.ndarray:
    """A number in [0, 1) per id from xxh64 of "seed:id": stable across runs, machines and row order."""
    ids = image_ids.to_pylist() if isinstance(image_ids, pa.Array) else list(image_ids)
    prefix = f"{seed}:"
    return (
        np.array([xxhash.xxh64_intdigest((prefix + str(i)).encode()) for i in ids], dtype=np.float64)
        / 2.0**64
    )


def split_samples(
    samples: TrainSamples, *, seed: int, val_fraction: float, val: TrainSamples | None = None
) -> tuple[TrainSamples, TrainSamples]:
    """(train, val): by the seeded id hash, or `val` as given (its ids removed from training)."""
    if val is not None:
        val_ids = set(val.image_ids.to_pylist())
        keep = np.array([i not in val_ids for i in samples.image_ids.to_pylist()], dtype=bool)
        train = samples.take(np.flatnonzero(keep))
        if (~keep).any():
            train.notes.append(
                f"{int((~keep).sum())} training row(s) also in the validation set were dropped"
            )
        return train, val
    if not 0.0 <= val_fraction < 1.0:
        raise InputError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    in_val = hash_unit(samples.image_ids, seed) < val_fraction
    return samples.take(np.flatnonzero(~in_val)), samples.take(np.flatnonzero(in_val))


def subset_samples(samples: TrainSamples, fraction: float, *, seed: int) -> TrainSamples:
    """A seeded `fraction` of the rows (at least one): the lowest xxh64 of "subset:seed:id", so the
    choice is exact in count, the same on every machine and independent of row order; kept in order."""
    n = len(samples)
    k = max(1, round(fraction * n))
    if k >= n:
        return samples
    ids = samples.image_ids.to_pylist()
    key = np.array([xxhash.xxh64_intdigest(f"subset:{seed}:{i}".encode()) for i in ids], dtype=np.uint64)
    chosen = np.sort(np.argsort(key, kind="stable")[:k])
    subset = samples.take(chosen)
    subset.notes.append(f"--train-fraction {fraction}: {k} of {n} training rows (seed {seed})")
    return subset


# ------------------------------------------------------------------------------------------------
# Reading


def item_seed(seed: int, epoch: int, index: int) -> int:
    return xxhash.xxh64_intdigest(f"{seed}:{epoch}:{index}".encode())


def random_resized_crop(img: Image.Image, size: int, rng: random.Random, interpolation: str) -> Image.Image:
    """torchvision's RandomResizedCrop geometry (area scale CROP_SCALE, log-uniform aspect CROP_RATIO)
    drawn from `rng`. No flips: a mirror swaps the side of the road and reverses writing, both of which
    are location cues."""
    box = random_crop_box(*img.size, rng)
    return resize_center_crop(img.crop(box) if box else img, size, interpolation)


def random_crop_box(w: int, h: int, rng: random.Random) -> tuple[int, int, int, int] | None:
    """The box (left, top, right, bottom) random_resized_crop cuts from a w x h image; None: the whole
    image (no draw fitted). A precomputed segmentation map gets the very same box."""
    area = w * h
    for _ in range(10):
        target = area * rng.uniform(*CROP_SCALE)
        ratio = math.exp(rng.uniform(math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])))
        cw, ch = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < cw <= w and 0 < ch <= h:
            left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
            return left, top, left + cw, top + ch
    return None


class TrainDataset(Dataset[dict[str, Any]]):
    """Item i: model-ready uint8 pixels (or None when the file cannot be read) and its labels."""

    def __init__(
        self,
        samples: TrainSamples,
        pre: Preprocess,
        *,
        augment: bool,
        seed: int,
        draft: bool = True,
        seg_dir: Path | None = None,
        gpu_decode: bool = False,
    ) -> None:
        self.samples = samples
        self.gpu_decode = gpu_decode and seg_dir is None  # JPEGs left to decode_pending (nvJPEG)
        self.seg_dir = seg_dir  # precomputed segmentation maps: item "seg", cropped like the image
        self.pre = pre
        self.augment = augment
        self.seed = seed
        self.draft = draft
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        s = self.samples
        path = s.paths[i].as_py()
        size = self.pre.input_size
        seg, error = None, None
        labels = {"index": i, "lat": s.lat[i], "lon": s.lon[i], "scene": int(s.scene[i])}
        if self.gpu_decode and (jpeg := _checked_jpeg(path)) is not None:
            return {"pixels": None, **labels, "jpeg": jpeg[0], "orientation": jpeg[1], "error": None}
        try:
            # bounded: a FIFO, device or huge file is an error, never a hang
            img = load_photo(path, min_side=size if self.draft else None)
            w, h = img.size
            box = None
            if self.augment:
                rng = random.Random(item_seed(self.seed, self.epoch, i))
                box = random_crop_box(*img.size, rng)  # random_resized_crop's draw, kept for the map
                img = img.crop(box) if box else img
                img = resize_center_crop(img, size, self.pre.interpolation)
            else:
                img = resize_center_crop(img, size, self.pre.interpolation)
            pixels: torch.Tensor | None = to_uint8_tensor(img)
            if self.seg_dir is not None:
                frac = (box[0] / w, box[1] / h, box[2] / w, box[3] / h) if box else None
                seg = self._seg_map(i, path, frac)
        except Exception as exc:  # noqa: BLE001 - a broken photo is skipped (and counted), not fatal
            log.debug("skipping %s: %s", path, exc)
            pixels, error = None, f"cannot decode image: {str(exc).strip()[:200]}"
        item = {"pixels": pixels, **labels, "error": error}  # error: why pixels is None (for geotag embed)
        return item if seg is None else {**item, "seg": seg}

    def _seg_map(self, i: int, path: str, box: tuple[float, float, float, float] | None) -> torch.Tensor:
        """The image's precomputed map (found by image id, then file stem), cut with the image's crop box
        (as fractions, so a map of another resolution fits) and resized nearest-neighbour: uint8 colours."""
        from geotag.models.segmentation import DiskSegmentation, load_map

        assert self.seg_dir is not None
        found = DiskSegmentation(self.seg_dir).find(self.samples.image_ids[i].as_py(), path)
        return (load_map(found, self.pre.input_size, box) * 255).round().to(torch.uint8)


def first_readable(samples: TrainSamples) -> tuple[int, list[tuple[int, str]]]:
    """(index of the first training row whose image decodes, the (index, why) of the unreadable rows
    before it); -1 when none does. A local path that is not a regular file (a device, a FIFO, a folder)
    is never opened here. Costs one decode on usable data; a run on data that is all unreadable is
    refused with it before any model is built, any step made or any checkpoint written."""
    import os
    import stat

    failed: list[tuple[int, str]] = []
    for i in range(len(samples)):
        path = samples.paths[i].as_py()
        try:
            if not is_ref(path) and not stat.S_ISREG(os.stat(path).st_mode):
                failed.append((i, "not a regular file"))
                continue
            load_photo(path, min_side=32)
        except Exception as exc:  # noqa: BLE001 - any unreadable row is counted, as TrainDataset does
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).strip()
            failed.append((i, f"cannot read image: {why[:200]}"))
            continue
        return i, failed
    return -1, failed


def _checked_jpeg(path: str) -> tuple[torch.Tensor, int] | None:
    """(bytes, EXIF orientation) of a JPEG that passes nvJPEG's CPU-side checks; None: decode on the CPU."""
    try:
        data = read_ref(path)
    except OSError:
        return None
    if gpu_decode.gpu_decode_reason(io.BytesIO(data)) is not None:
        return None
    orientation = gpu_decode.exif_orientation(io.BytesIO(data))
    return torch.frombuffer(bytearray(data), dtype=torch.uint8), orientation


def collate_train(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the readable items; `failed` counts the rest (dropped from this batch). Items left for
    the GPU decoder stay bytes (`pending`); decode_pending turns the batch into pixels."""
    good = [it for it in items if it["pixels"] is not None or "jpeg" in it]
    # the unreadable items (index, why): the trainer counts them
    bad = [
        (int(it["index"]), it.get("error") or "cannot decode image")
        for it in items
        if it["pixels"] is None and "jpeg" not in it
    ]
    if not good:
        return {"pixels": None, "failed": len(items), "failed_items": bad}
    pending = [k for k, it in enumerate(good) if "jpeg" in it]
    cpu = [it["pixels"] for it in good if it["pixels"] is not None]
    return {
        "pixels": torch.stack(cpu) if cpu else None,
        **({"pending": [(k, good[k]["jpeg"], good[k]["orientation"]) for k in pending]} if pending else {}),
        "latlon": torch.tensor([[it["lat"], it["lon"]] for it in good], dtype=torch.float64),
        "scene": torch.tensor([it["scene"] for it in good], dtype=torch.int64),
        "index": torch.tensor([it["index"] for it in good], dtype=torch.int64),
        "failed": len(items) - len(good),
        "failed_items": bad,
        **({"seg_maps": torch.stack([it["seg"] for it in good])} if good and "seg" in good[0] else {}),
    }


def decode_pending(
    batch: dict[str, Any], pre: Preprocess, device: torch.device, *, seed: int, epoch: int, augment: bool
) -> dict[str, Any]:
    """`train --gpu-decode`: decode a batch's pending JPEGs on `device` (nvJPEG on CUDA) with the CPU
    path's geometry (draft-size block means, EXIF orientation, the same seeded crop box, resize, centre
    crop), merged with the CPU-decoded items in batch order. A JPEG the decoder rejects is dropped and
    counted as failed, like an unreadable file on the CPU path."""
    pending = batch.pop("pending", None)
    if not pending:
        return batch
    n = len(batch["index"])
    index = batch["index"].tolist()
    positions = [k for k, _, _ in pending]

    def crop(j: int, w: int, h: int) -> tuple[int, int, int, int] | None:
        return (
            random_crop_box(w, h, random.Random(item_seed(seed, epoch, index[positions[j]])))
            if augment
            else None
        )

    decoded = gpu_decode.decode_jpegs(
        [d for _, d, _ in pending],
        [o for _, _, o in pending],
        pre.input_size,
        pre.interpolation,
        device,
        crop,
    )
    pixels = torch.empty((n, 3, pre.input_size, pre.input_size), dtype=torch.uint8, device=device)
    on_gpu = set(positions)
    cpu = [k for k in range(n) if k not in on_gpu]
    if cpu:
        pixels[cpu] = batch["pixels"].to(device, non_blocking=True)
    keep = [True] * n
    for k, img in zip(positions, decoded, strict=True):
        if isinstance(img, Exception):
            log.debug("GPU decoder rejected item %d: %s", index[k], img)
            keep[k] = False
            batch.setdefault("failed_items", []).append((index[k], f"cannot decode image: {img}"[:200]))
        else:
            pixels[k] = img
    ok = [k for k in range(n) if keep[k]]
    batch["failed"] += n - len(ok)
    if not ok:
        return {"pixels": None, "failed": batch["failed"], "failed_items": batch.get("failed_items", [])}
    sel = torch.tensor(ok)
    batch.update(pixels=pixels[sel.to(device)], latlon=batch["latlon"][sel], scene=batch["scene"][sel])
    batch["index"] = batch["index"][sel]
    return batch


class FeatureDataset(Dataset[dict[str, Any]]):
    """Cached backbone features (io/embed_cache.py) in place of photos. The DataLoader fetches a whole
    batch through `__getitems__` (one numpy gather, not one Python call per sample), already collated:
    use it with `collate_features`."""

    def __init__(self, samples: TrainSamples, features: np.ndarray) -> None:
        if samples.rows is None:
            raise ValueError("FeatureDataset needs samples read from an embedding cache (with rows)")
        self.samples = samples
        self.features = features

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.__getitems__([i])

    def __getitems__(self, index: list[int]) -> dict[str, Any]:
        s, idx = self.samples, np.asarray(index, dtype=np.int64)
        assert s.rows is not None
        return {
            "features": torch.from_numpy(self.features[s.rows[idx]].astype(np.float32)),
            "latlon": torch.from_numpy(np.stack([s.lat[idx], s.lon[idx]], axis=1)),
            "scene": torch.from_numpy(s.scene[idx]),
            "index": torch.from_numpy(idx),
            "failed": 0,
        }


def collate_features(batch: dict[str, Any]) -> dict[str, Any]:
    """FeatureDataset batches come collated."""
    return batch


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of an epoch: a function of (n, seed, epoch) only."""
    gen = torch.Generator().manual_seed(
        xxhash.xxh64_intdigest(f"order:{seed}:{epoch}".encode()) & (2**63 - 1)
    )
    return torch.randperm(n, generator=gen)


class EpochSampler(Sampler[int]):
    """Indices `start:stop` of an epoch's permutation (a resumed epoch starts where it was cut)."""

    def __init__(self, n: int, seed: int, epoch: int, start: int, stop: int) -> None:
        self.order = epoch_order(n, seed, epoch)[start:stop]

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order.tolist())
