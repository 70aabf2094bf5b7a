"""`geotag benchmark`: check a test-set folder against its description, then predict and score it.

The check comes first and needs no model: the manifest's size and id-list hash against the pinned
description, the folder's images against the manifest (missing, extra, duplicated ids) and every image's
header (unreadable files). Only a folder that matches, or one the user accepts with `--allow-mismatch`,
goes on to `run_predict` and `evaluate`, the same code as `geotag predict` and `geotag eval`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from geotag.config import PredictConfig
from geotag.engine.predict import PredictSummary, run_predict
from geotag.engine.scan import default_workers, ordered_map
from geotag.errors import InputError
from geotag.eval.benchmarks import TestSet, get_test_set
from geotag.eval.metrics import EvalResult, evaluate
from geotag.io.decode import read_header
from geotag.io.scan import iter_image_paths, validate_paths
from geotag.io.truth import file_stem, ids_sha256, load_truth
from geotag.models.base import GeoModel

EXAMPLES = 5  # names shown per problem in the report


def _header_error(path: Path) -> str | None:
    """Why a file is no readable image, or None (runs in worker processes)."""
    try:
        read_header(path)
    except Exception as exc:  # noqa: BLE001 - any decoder failure makes the file unreadable
        text = str(exc).strip() or type(exc).__name__
        return text.splitlines()[0][:200]
    return None


def _listing(label: str, names: list[str], total: int | None = None) -> str:
    total = len(names) if total is None else total
    shown = ", ".join(names[:EXAMPLES]) + (", ..." if total > EXAMPLES else "")
    return f"{label} {total:,}: {shown}"


@dataclass
class FolderCheck:
    """How a folder and its manifest compare with a test set's description."""

    test_set: TestSet
    folder: Path
    truth: Path
    manifest_format: str
    manifest_rows: int
    manifest_sha256: str
    folder_images: int
    folder_sha256: str
    missing: list[str] = field(default_factory=list)  # ids of the manifest with no file
    extra: list[str] = field(default_factory=list)  # files whose id the manifest lacks
    duplicates: list[str] = field(default_factory=list)  # ids with more than one file
    unreadable: list[str] = field(default_factory=list)  # "file: reason"
    problems: list[str] = field(default_factory=list)  # the manifest against the description
    notes: list[str] = field(default_factory=list)  # worth knowing, not blocking
    files: list[Path] = field(default_factory=list)  # readable files of the set, in walk order

    @property
    def ok(self) -> bool:
        too_many_extra = len(self.extra) > self.test_set.known_extra
        return not (self.problems or self.missing or too_many_extra or self.duplicates or self.unreadable)

    def report_lines(self) -> list[str]:
        """Plain lines for stderr: what was compared, then each problem with its first few names."""
        ts = self.test_set
        pinned = "pinned" if ts.ids_sha256 else "not pinned"
        lines = [
            f"{ts.name}: expected {ts.n_images:,} images (id list {pinned}); "
            f"manifest {self.truth.name} ({self.manifest_format}) lists {self.manifest_rows:,}; "
            f"folder {self.folder} holds {self.folder_images:,}"
        ]
        lines += self.problems
        if self.missing:
            lines.append(_listing("missing (in the manifest, no file)", self.missing))
        if self.extra:
            lines.append(_listing("extra (file not in the manifest)", self.extra))
        if self.duplicates:
            lines.append(_listing("duplicated ids (several files)", self.duplicates))
        if self.unreadable:
            lines.append(_listing("unreadable", self.unreadable))
        lines += [f"note: {n}" for n in self.notes]
        return lines

    def summary(self) -> str:
        """One line for the error message."""
        parts = [f"{len(self.problems)} manifest problem(s)"] if self.problems else []
        for label, items in (
            ("missing", self.missing),
            ("extra", self.extra),
            ("duplicated", self.duplicates),
            ("unreadable", self.unreadable),
        ):
            if items:
                parts.append(f"{len(items):,} {label}")
        return f"{self.folder} does not match the {self.test_set.name} description: " + ", ".join(parts)


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
            f"warning: {len(check.extra)} file(s) not in the manifest, as standard copies of "
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


@dataclass
class BenchmarkResult:
    """A finished benchmark run: the check, the predict summary and this run's scores."""

    check: FolderCheck
    predict: PredictSummary
    scores: dict[str, object]  # the single row of `evaluate` (fractions and km)
    evaluation: EvalResult
    model: str
    out: Path


def run_benchmark(check: FolderCheck, cfg: PredictConfig, model: GeoModel | None = None) -> BenchmarkResult:
    """Predict the set's readable images (with the manifest as ground truth) into cfg.out and score them.

    The caller decides whether a check that is not `ok` may run (`--allow-mismatch`); extra files and
    unreadable ones are left out of the run either way, so N counts only the set's own images.
    """
    if not check.files:
        raise InputError(f"{check.folder}: none of the {check.test_set.name} images could be read")
    cfg = dataclasses.replace(cfg, paths=list(check.files), truth=check.truth)
    summary = run_predict(cfg, model=model)
    evaluation = evaluate([cfg.out])
    return BenchmarkResult(
        check=check,
        predict=summary,
        scores=evaluation.rows[0],
        evaluation=evaluation,
        model=model.name if model is not None else cfg.model,
        out=cfg.out,
    )
