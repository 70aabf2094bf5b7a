"""`geotag benchmark`: check a test-set folder against its description, then predict and score it.

The check comes first and needs no model: the manifest's size and id-list hash against the pinned
description, the folder's images against the manifest (missing, extra, duplicated ids) and every image's
header (unreadable files). Only a folder that matches, or one the user accepts with `--allow-mismatch`,
goes on to `run_predict` and `evaluate`, the same code as `geotag predict` and `geotag eval`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path

from geotag.config import PredictConfig
from geotag.engine.predict import run_predict
from geotag.engine.scan import default_workers, ordered_map
from geotag.errors import InputError
from geotag.eval.benchmark_result import EXAMPLES, BenchmarkResult, FolderCheck
from geotag.eval.benchmarks import TestSet, get_test_set
from geotag.eval.metrics import evaluate
from geotag.io.decode import read_header
from geotag.io.scan import iter_image_paths, validate_paths
from geotag.io.truth import file_stem, ids_sha256, load_truth
from geotag.models.base import GeoModel


def _header_error(path: Path) -> str | None:
    """Why a file is no readable image, or None (runs in worker processes)."""
    try:
        read_header(path)
    except Exception as exc:  # noqa: BLE001 - any decoder failure makes the file unreadable
        text = str(exc).strip() or type(exc).__name__
        return text.splitlines()[0][:200]
    return None


def find_manifest(test_set: TestSet, folder: Path, truth: Path | None) -> Path:
    """--truth when given, else the set's usual manifest name in the folder or its parent."""
    if truth is not None:
        return Path(truth)
    for place in (folder, folder.parent):
        for name in test_set.manifest_names:
            if (place / name).is_file():
                return place / name
    names = " or ".join(test_set.manifest_names)
    raise InputError(
        f"no manifest for {test_set.name}: pass --truth FILE ({names}, {test_set.manifest_format} format; "
        f"looked in {folder} and {folder.parent})"
    )


def _duplicates(stems: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    dups: dict[str, None] = {}
    for s in stems:
        if s in seen:
            dups[s] = None
        seen.add(s)
    return list(dups)


def check_folder(
    name: str, folder: Path, truth: Path | None = None, *, workers: int | None = None
) -> FolderCheck:
    """Compare a folder (and its manifest) with the description of test set `name`; loads no model."""
    test_set = get_test_set(name)
    (folder,) = validate_paths([folder])
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder")
    manifest = load_truth(find_manifest(test_set, folder, truth))
    manifest_ids = manifest.stems()
    paths = list(iter_image_paths([folder]))
    stems = [file_stem(p.name) for p in paths]
    check = FolderCheck(
        test_set=test_set,
        folder=folder,
        truth=manifest.path,
        manifest_format=manifest.format,
        manifest_rows=len(manifest),
        manifest_sha256=ids_sha256(manifest_ids),
        folder_images=len(paths),
        folder_sha256=ids_sha256(stems),
        notes=list(manifest.notes),
    )
    if len(manifest) != test_set.n_images:
        check.problems.append(
            f"the manifest lists {len(manifest):,} images; {test_set.name} has {test_set.n_images:,} "
            f"({test_set.count_source})"
        )
    if test_set.ids_sha256 and check.manifest_sha256 != test_set.ids_sha256:
        check.problems.append(
            f"the manifest's id list differs from the pinned one (sha256 {check.manifest_sha256[:12]}... "
            f"instead of {test_set.ids_sha256[:12]}...)"
        )
    if manifest.format != test_set.manifest_format:
        check.notes.append(
            f"manifest read as {manifest.format}; {test_set.name} ships {test_set.manifest_format}"
        )
    if test_set.notes:
        check.notes.append(test_set.notes)

    wanted = set(manifest_ids)
    present = set(stems)
    check.missing = sorted(wanted - present)
    check.extra = sorted(
        str(p.relative_to(folder)) for p, s in zip(paths, stems, strict=True) if s not in wanted
    )
    if 0 < len(check.extra) <= check.test_set.known_extra:
        check.notes.append(
            f"{len(check.extra)} file(s) not in the manifest, as standard copies of "
            f"{check.test_set.name} hold; left out: {', '.join(check.extra[:EXAMPLES])}"
        )
    check.duplicates = _duplicates(s for s in stems if s in wanted)
    in_set = [p for p, s in zip(paths, stems, strict=True) if s in wanted]
    errors = ordered_map(_header_error, in_set, workers=workers or default_workers())
    for path, error in zip(in_set, errors, strict=True):
        if error is None:
            check.files.append(path)
        else:
            check.unreadable.append(f"{path.relative_to(folder)} ({error})")
    return check


AUTHOR_COLUMNS = ("author", "owner", "photographer", "user_id", "userid")
"""Manifest columns that name who took a photo (Im2GPS3k and YFCC manifests have AUTHOR)."""


def leave_authors_out(cfg: PredictConfig) -> PredictConfig:
    """knn-loo on a gallery of the test set itself: when the manifest names authors, leave out the
    query's whole author (an author's other photos of the same trip would otherwise place it), unless
    --exclude-same already chose a column."""
    if cfg.model != "knn-loo" or cfg.exclude_same is not None or cfg.truth is None:
        return cfg
    from geotag.io.tables import read_table

    names = read_table(Path(cfg.truth), "manifest").column_names
    column = next((n for n in names if n.lower() in AUTHOR_COLUMNS), None)
    return dataclasses.replace(cfg, exclude_same=column) if column else cfg


REFUSE_FUSE = (
    "benchmark refuses --fuse: the published figures it prints beside ours are single-image, and fused "
    "figures must never stand beside them unlabelled; run predict --fuse and geotag eval --by source"
)
REFUSE_SIBLINGS = (
    "benchmark refuses --siblings: the GPS-tagged photos of a test set are its ground truth, so placing "
    "its photos from them would score the truth against itself"
)


def run_benchmark(check: FolderCheck, cfg: PredictConfig, model: GeoModel | None = None) -> BenchmarkResult:
    """Predict the set's readable images (with the manifest as ground truth) into cfg.out and score them.

    The caller decides whether a check that is not `ok` may run (`--allow-mismatch`); extra files and
    unreadable ones are left out of the run either way, so N counts only the set's own images.
    """
    if not check.files:
        raise InputError(f"{check.folder}: none of the {check.test_set.name} images could be read")
    if cfg.time.siblings or cfg.time.sibling_dirs:
        raise InputError(REFUSE_SIBLINGS)
    if cfg.fuse != "none":
        raise InputError(REFUSE_FUSE)
    cfg = dataclasses.replace(cfg, paths=list(check.files), truth=check.truth)
    cfg = leave_authors_out(cfg)
    summary = run_predict(cfg, model=model)
    evaluation = evaluate([cfg.out])
    return BenchmarkResult(
        check=check,
        predict=summary,
        scores=evaluation.rows[0],
        evaluation=evaluation,
        model=model.name if model is not None else cfg.model,
        out=cfg.out,
        exclude_same=cfg.exclude_same,
    )
