"""What a benchmark run found: the folder check and the finished result.

Defined in eval so that rendering (eval/benchmark_report.py) needs nothing from the engine, which
produces these (geotag.engine.benchmark).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from geotag.eval.benchmarks import TestSet
from geotag.eval.metrics import EvalResult

EXAMPLES = 5  # names shown per problem in the report


class PredictCounts(Protocol):
    """The counts of a predict run that a benchmark reports (the engine's PredictSummary has them)."""

    total: int
    new: int
    skipped: int
    failed: int


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


@dataclass
class BenchmarkResult:
    """A finished benchmark run: the check, the predict summary and this run's scores."""

    check: FolderCheck
    predict: PredictCounts  # geotag.engine.predict.PredictSummary
    scores: dict[str, object]  # the single row of `evaluate` (fractions and km)
    evaluation: EvalResult
    model: str
    out: Path
    exclude_same: str | None = None  # knn-loo: the manifest column whose groups were left out (author)
