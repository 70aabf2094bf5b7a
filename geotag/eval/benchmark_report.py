"""Render a benchmark run beside the published results of the seed systems (table, markdown or JSON).

One row for this run, one per published system, and a last row with this run's gap to the best
published figure at each threshold, so a user sees at once how far a run is from the papers. Sources
are numbered under the table rather than squeezed into it.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
from rich.table import Table

from geotag.eval.benchmarks import THRESHOLDS_KM, Published
from geotag.eval.metrics import json_safe, threshold_key
from geotag.eval.report import pick_format, write_raw

if TYPE_CHECKING:  # annotations only
    from geotag.eval.benchmark_result import BenchmarkResult

FORMATS = ("table", "markdown", "json")
HEADERS = ["system", *(f"≤{t:g} km" for t in THRESHOLDS_KM), "median km", "GeoScore", "N", "source"]


def run_percentages(result: BenchmarkResult) -> list[float | None]:
    """This run's accuracy at the standard thresholds, in percent like the papers."""
    values = [result.scores.get(threshold_key(t)) for t in THRESHOLDS_KM]
    return [None if v is None else 100.0 * float(v) for v in values]  # type: ignore[arg-type]


def best_published(published: Sequence[Published]) -> list[float | None]:
    """The best published figure at each threshold (None where nobody reports one)."""
    best: list[float | None] = []
    for i in range(len(THRESHOLDS_KM)):
        values = [p.acc[i] for p in published if p.acc[i] is not None]
        best.append(max(values) if values else None)  # type: ignore[type-var]
    return best


SELF_GALLERY_MODELS = {"knn-loo"}  # models whose gallery is the test set itself
SELF_GALLERY_CAVEAT = (
    "caveat: {model}'s gallery is the test set itself; {what}: not comparable with the published rows, "
    "so no gap is shown"
)


def self_gallery_caveat(result: BenchmarkResult) -> str:
    """The caveat line, saying exactly what ran: leave-one-out, or leave-one-<column>-out."""
    column = result.exclude_same
    if column:
        what = (
            f"this run was leave-one-{column}-out (each photo placed by the others, with every photo of "
            f"its {column} left out)"
        )
    else:
        what = (
            "this run was leave-one-out (each photo placed by the others, its photographer's other photos "
            "included: the manifest names no author; --exclude-same COLUMN leaves a group out)"
        )
    return SELF_GALLERY_CAVEAT.format(model=result.model, what=what)


def overlaps_test_set(result: BenchmarkResult) -> bool:
    """True when the run's gallery holds the test set, so its scores are no fair comparison."""
    return result.model in SELF_GALLERY_MODELS


def gaps(result: BenchmarkResult) -> list[float | None]:
    """This run minus the best published figure, in percentage points."""
    run = run_percentages(result)
    best = best_published(result.check.test_set.published)
    return [None if r is None or b is None else r - b for r, b in zip(run, best, strict=True)]


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def _num(v: object, fmt: str) -> str:
    return "-" if v is None else format(float(v), fmt)  # type: ignore[arg-type]


def body(result: BenchmarkResult) -> tuple[list[list[str]], list[str]]:
    """Table cells and the numbered source lines under it."""
    ts = result.check.test_set
    run = result.scores
    rows = [
        [
            f"this run: {result.model}",
            *(_pct(v) for v in run_percentages(result)),
            _num(run.get("median_km"), ",.1f"),
            _num(run.get("geoscore"), ",.0f"),
            f"{run.get('n_scored', 0):,}",
            str(result.out.name),
        ]
    ]
    sources: list[str] = []
    for p in ts.published:
        sources.append(f"[{len(sources) + 1}] {p.system}: {p.source}; checked against {p.checked}")
        if p.note:
            sources[-1] += f" ({p.note})"
        rows.append(
            [
                p.system,
                *(_pct(v) for v in p.acc),
                _num(p.median_km, ",.1f"),
                _num(p.geoscore, ",.0f"),
                "",
                f"[{len(sources)}]",
            ]
        )
    if ts.published and not overlaps_test_set(result):
        signed = ["-" if g is None else f"{g:+.1f}" for g in gaps(result)]
        rows.append(["this run − best published", *signed, "", "", "", "pts"])
    return rows, sources


def footer(result: BenchmarkResult) -> list[str]:
    """Caption lines: what N counts, missing images, notes, and the conventions."""
    check, run = result.check, result.scores
    lines = [
        f"N = scored images of this run; {run.get('n_error', 0):,} failed, "
        f"{run.get('n_no_gt', 0):,} without ground truth, {run.get('n_self_match', 0):,} self-matches "
        f"left out; {len(check.missing):,} of the set's "
        f"{check.test_set.n_images:,} images missing from the folder, {len(check.unreadable):,} unreadable",
        "accuracy in % at d <= t, haversine R = 6,371.0088 km; "
        "published figures keep their papers' conventions",
    ]
    if not check.test_set.published:
        lines.append(f"no published results are recorded for {check.test_set.name}")
    if overlaps_test_set(result):
        lines.insert(0, self_gallery_caveat(result))
    lines += result.evaluation.notes
    return lines


def render_benchmark(result: BenchmarkResult, fmt: str, console: Console) -> None:
    """Write the comparison to `console` as a table, markdown or JSON; unknown formats are input errors."""
    renderers: dict[str, Callable[[BenchmarkResult, Console], None]] = {
        "table": _table,
        "markdown": _markdown,
        "json": _json,
    }
    pick_format(renderers, fmt)(result, console)


def _table(result: BenchmarkResult, console: Console) -> None:
    rows, sources = body(result)
    ts = result.check.test_set
    table = Table(title=f"geotag benchmark {ts.name}: {ts.title}", box=box.SIMPLE_HEAD, pad_edge=False)
    for i, header in enumerate(HEADERS):
        table.add_column(header, justify="left" if i in (0, len(HEADERS) - 1) else "right", no_wrap=i > 0)
    for cells in rows:
        table.add_row(*cells)
    buf = Console(file=io.StringIO(), width=max(console.width, 160), color_system=None)
    buf.print(table)
    text = buf.file.getvalue().rstrip("\n")  # type: ignore[attr-defined]
    write_raw(console, "\n".join([text, *footer(result), *sources]))


def _markdown(result: BenchmarkResult, console: Console) -> None:
    rows, sources = body(result)
    lines = ["| " + " | ".join(HEADERS) + " |", "|:---|" + "---:|" * (len(HEADERS) - 2) + ":---|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in rows]
    lines += ["", *(f"_{line}_" for line in footer(result)), "", *sources]
    write_raw(console, "\n".join(lines))


def _json(result: BenchmarkResult, console: Console) -> None:
    check, ts = result.check, result.check.test_set
    doc = {
        "test_set": ts.name,
        "title": ts.title,
        "thresholds_km": list(THRESHOLDS_KM),
        "accuracy_unit": "percent",
        "check": {
            "ok": check.ok,
            "expected_images": ts.n_images,
            "folder_images": check.folder_images,
            "manifest_rows": check.manifest_rows,
            "ids_sha256_expected": ts.ids_sha256,
            "ids_sha256_folder": check.folder_sha256,
            "missing": check.missing,
            "extra": check.extra,
            "duplicates": check.duplicates,
            "unreadable": check.unreadable,
            "problems": check.problems,
        },
        "run": {
            "model": result.model,
            "file": str(result.out),
            "accuracy": run_percentages(result),
            "median_km": result.scores.get("median_km"),
            "geoscore": result.scores.get("geoscore"),
            "n": result.scores.get("n_scored"),
            "notes": result.evaluation.notes,
        },
        "published": [
            {
                "system": p.system,
                "accuracy": list(p.acc),
                "median_km": p.median_km,
                "geoscore": p.geoscore,
                "source": p.source,
                "checked": p.checked,
                "note": p.note,
            }
            for p in ts.published
        ],
        "gap_to_best_published": gaps(result) if ts.published and not overlaps_test_set(result) else None,
    }
    write_raw(console, json.dumps(json_safe(doc), indent=2, allow_nan=False, ensure_ascii=False))
