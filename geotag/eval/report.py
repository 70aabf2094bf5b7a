"""Render an EvalResult as a rich table, JSON, CSV or a Markdown pipe table.

Machine formats (json, csv) keep accuracy as fractions in 0..1 and distances in km at full precision;
the human formats (table, markdown) show accuracy as percentages with one decimal and km with one
decimal. Missing metrics (no scored rows) are null in JSON, empty in CSV and "-" for humans.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from typing import TypeVar

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from geotag.errors import InputError
from geotag.eval.metrics import COUNT_KEYS, EvalResult, threshold_key
from geotag.geo.distance import EARTH_RADIUS_KM
from geotag.io.pathtext import shown

FORMATS = ("table", "json", "csv", "markdown")
T = TypeVar("T")
T = TypeVar("T")

CAPTION = (
    f"distance d: haversine, R = {EARTH_RADIUS_KM} km; accuracy = share of scored rows with d <= t; "
    "skipped = error / no ground truth / no prediction / self-match (a kNN answer from the photo's own "
    "gallery entry); country = share of the scored rows with a known true country whose predicted "
    "country matches (- where none is known)"
)


def render(result: EvalResult, fmt: str, console: Console) -> None:
    """Write `result` to `console` in one of FORMATS; an unknown format raises InputError."""
    renderers: dict[str, Callable[[EvalResult, Console], None]] = {
        "table": render_table,
        "json": render_json,
        "csv": render_csv,
        "markdown": render_markdown,
    }
    pick_format(renderers, fmt)(result, console)


def pick_format(renderers: dict[str, T], fmt: str) -> T:
    """The renderer `--format` names (any case; md means markdown); one InputError line otherwise."""
    key = fmt.strip().lower()
    key = "markdown" if key == "md" else key
    if key not in renderers:
        raise InputError(f"--format {fmt}: unknown format; choose one of {', '.join(renderers)}")
    return renderers[key]


def write_raw(console: Console, text: str) -> None:
    """Write text as is: no markup, highlighting or wrapping (machine output stays parseable)."""
    console.file.write(text if text.endswith("\n") else text + "\n")
    console.file.flush()


def pct(value: object) -> str:
    return "-" if value is None else f"{100.0 * float(value):.1f}%"


def km(value: object) -> str:
    return "-" if value is None else f"{float(value):,.1f}"


def score(value: object) -> str:
    return "-" if value is None else f"{float(value):,.0f}"


def label(value: object) -> str:
    return "(none)" if value is None else str(value)


def threshold_title(t: float) -> str:
    return "≤" + threshold_key(t).removeprefix("acc_").removesuffix("km") + " km"


def show_file_column(result: EvalResult) -> bool:
    return len({row.get("file") for row in result.rows}) > 1


def human_rows(result: EvalResult) -> tuple[list[str], list[list[str]], list[bool]]:
    """Headers, cell texts and right-alignment flags shared by the table and markdown formats."""
    headers: list[str] = []
    right: list[bool] = []
    keys_file = ["file"] if show_file_column(result) else []
    for key in [*keys_file, *result.by]:
        headers.append(key)
        right.append(False)
    counts = ["n_rows", "n_scored", "n_error", "n_no_gt", "n_no_pred"]
    headers += ["N", "scored", "error", "no GT", "no pred"]
    if any(row.get("n_self_match") for row in result.rows):
        counts.append("n_self_match")
        headers.append("self-match")
    headers += [threshold_title(t) for t in result.thresholds]
    headers += ["median km", "mean km", "GeoScore", "country"]
    right += [True] * (len(headers) - len(right))
    body = []
    for row in result.rows:
        cells = [label(row.get(k)) for k in [*keys_file, *result.by]]
        cells += [f"{row.get(k) or 0:,}" for k in counts]
        cells += [pct(row.get(k)) for k in result.accuracy_keys]
        cells += [km(row.get("median_km")), km(row.get("mean_km")), score(row.get("geoscore"))]
        cells.append(pct(row.get("country_acc")))  # share of scored rows whose predicted country is right
        body.append(cells)
    return headers, body, right


def render_table(result: EvalResult, console: Console) -> None:
    """A compact rich table. Off a terminal (pipe, log file) it is never squeezed to 80 columns."""
    headers, body, right = human_rows(result)
    table = Table(
        title="geotag eval",
        caption=CAPTION,
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
        pad_edge=False,
        collapse_padding=True,
        show_edge=False,
    )
    for header, is_right in zip(headers, right, strict=True):
        table.add_column(Text(shown(header)), justify="right" if is_right else "left", no_wrap=is_right)
    for cells in body:
        table.add_row(*(Text(shown(c)) for c in cells))  # file names and data: text, never markup
    if console.is_terminal:
        console.print(table)
        return
    needed = Measurement.get(console, console.options.update(width=10_000), table).maximum
    wide = Console(file=io.StringIO(), width=max(console.width, needed), color_system=None)
    wide.print(table)
    write_raw(console, wide.file.getvalue())


def md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(result: EvalResult, console: Console) -> None:
    headers, body, right = human_rows(result)
    lines = ["| " + " | ".join(md_cell(h) for h in headers) + " |"]
    lines.append("|" + "|".join("---:" if r else ":---" for r in right) + "|")
    lines += ["| " + " | ".join(md_cell(c) for c in cells) + " |" for cells in body]
    lines += ["", f"_{md_cell(CAPTION)}_"]
    write_raw(console, "\n".join(lines))


def render_json(result: EvalResult, console: Console) -> None:
    """A JSON object: conventions, thresholds, by, and one record per (file, group)."""
    doc = {
        "earth_radius_km": EARTH_RADIUS_KM,
        "distance": "haversine",
        "hit": "d <= t",
        "accuracy_unit": "fraction",
        "thresholds_km": result.thresholds,
        "by": result.by,
        "notes": result.notes,
        "rows": result.to_records(),
    }
    write_raw(console, json.dumps(doc, indent=2, allow_nan=False, ensure_ascii=False))


def render_csv(result: EvalResult, console: Console) -> None:
    """Header plus one line per record; empty cells for nulls; accuracy as fractions."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=result.columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for record in result.to_records():
        writer.writerow({k: "" if v is None else csv_value(k, v) for k, v in record.items()})
    write_raw(console, buf.getvalue())


def csv_value(key: str, value: object) -> object:
    if key in COUNT_KEYS or not isinstance(value, list | dict):
        return value
    return json.dumps(value)
