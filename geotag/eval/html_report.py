"""`geotag report`: one self-contained folder (index.html, figures/*.png, thumbs/*.jpg) a person can open.

Why a folder of plain files: it opens from a disk, a share or an e-mailed zip with no network and no
server (no CDN scripts, no fonts, no JavaScript), and the PNGs can go straight into a slide. Every value
that reaches the page is HTML-escaped, since paths, model names and error messages come from the data.

The numbers come from the same SQL as `geotag eval` (geotag.eval.metrics.evaluate_file, on one DuckDB
connection), the rest from geotag.eval.report_data, so a million-row file is aggregated in DuckDB and
only small arrays reach matplotlib (geotag.eval.plots).
"""

from __future__ import annotations

import hashlib
import html
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from string import Template
from typing import Any

import duckdb

from geotag import __version__
from geotag.errors import InputError, OutputError
from geotag.eval import foreign, map_page, plots, report_data, truth_join
from geotag.eval.basemap import Tiles
from geotag.eval.metrics import (
    connect,
    evaluate_file,
    has_untrained_rows,
    measured_note,
    measured_rows,
    normalise_thresholds,
    self_match_notes,
    threshold_key,
)
from geotag.eval.report import CAPTION, km, pct, score, threshold_title
from geotag.eval.report_data import resolve_photo
from geotag.geo.distance import DEFAULT_THRESHOLDS_KM
from geotag.io.durable import atomic_file, real_dir
from geotag.io.parquet import check_output_path

log = logging.getLogger(__name__)

THUMB_SIDE = 160  # px, the longer side of a worst-error thumbnail
TOP_COUNTRIES = 20
CALIBRATION_KM = 25.0
BAR_KM = (25.0, 750.0)  # city and country scale: the two accuracies the breakdown charts show


@dataclass
class Figure:
    """An image on the page: its file (relative to the report folder), pixel size and caption."""

    src: str
    width: int
    height: int
    alt: str


@dataclass
class ReportSummary:
    """What `build_report` wrote; `seconds` is the wall time of the whole report."""

    index: Path
    figures: list[Path]
    thumbnails: int
    missing_photos: int
    rows: int
    seconds: float
    notes: list[str] = field(default_factory=list)


def e(value: object) -> str:
    """HTML-escape anything (quotes included, so it is safe inside attributes too)."""
    return html.escape("" if value is None else str(value), quote=True)


def prepare_folder(out_dir: Path) -> Path:
    """Create the report folder (and figures/, thumbs/) or fail with one line."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"--out {out_dir} is a file; give a folder for the report")
    real_dir(out_dir, parents=True)  # a symlink at any of these names is refused, never written into
    for sub in ("figures", "thumbs"):
        real_dir(out_dir / sub)
    if not os.access(out_dir, os.W_OK):
        raise OutputError(f"report folder {out_dir} is not writable")
    return out_dir


# --- thumbnails ---------------------------------------------------------------------------------------


def make_thumbnail(photo: Path, out: Path, side: int = THUMB_SIDE) -> tuple[int, int] | None:
    """A small upright JPEG of `photo` (JPEG draft decoding: a 12 MP photo costs a 1/8-scale decode);
    None when the photo cannot be read, so the page shows a placeholder instead."""
    try:
        import pillow_heif
        from PIL import Image, ImageOps

        from geotag.io.decode import fit_decode

        pillow_heif.register_heif_opener()
        with Image.open(photo) as im:
            fit_decode(im, side * 2)  # JPEG draft; a decompression bomb is refused, not decoded
            im.load()
            img = ImageOps.exif_transpose(im).convert("RGB")
        img.thumbnail((side, side), Image.Resampling.LANCZOS)
    except Exception:  # noqa: BLE001 - any unreadable photo (missing, truncated, odd format) -> placeholder
        return None
    try:
        with atomic_file(out) as fh:  # a temp and a rename: a link planted at the name is replaced
            img.save(fh, "JPEG", quality=82, optimize=True)
    except OSError as exc:
        raise OutputError(f"cannot write {out}: {exc.strerror or exc}") from exc
    return img.size


# --- collecting -----------------------------------------------------------------------------------------


@dataclass
class FileSection:
    """Everything the page shows about one predictions file."""

    src: report_data.Source
    overall: dict[str, Any]
    facts: report_data.FileFacts
    cdf: report_data.ErrorCdf
    cal: report_data.Calibration
    suggestions: list[report_data.Suggestion]
    worst: list[dict[str, Any]]
    by_country: list[dict[str, Any]]
    by_scene: list[dict[str, Any]]
    by_source: list[dict[str, Any]] = field(default_factory=list)
    map_fig: Figure | None = None
    map_page: str | None = None  # the interactive map's file name, beside index.html
    thumbs: list[str | None] = field(default_factory=list)  # per worst row: src, or None (placeholder)


def collect(
    con: duckdb.DuckDBPyConnection,
    src: report_data.Source,
    thresholds: Sequence[float],
    worst_n: int,
    calibration_km: float,
) -> FileSection:
    def breakdown(column: str) -> list[dict[str, Any]]:
        if column not in src.columns:
            return []
        return evaluate_file(
            con,
            src.path,
            src.label,
            src.columns,
            thresholds,
            [column],
            src.sql,
            include_self=src.include_self,
        )

    overall = evaluate_file(
        con, src.path, src.label, src.columns, thresholds, [], src.sql, include_self=src.include_self
    )[0]
    cal = report_data.calibration(con, src, calibration_km)
    return FileSection(
        src=src,
        overall=overall,
        facts=report_data.file_facts(con, src),
        cdf=report_data.error_cdf(con, src),
        cal=cal,
        suggestions=report_data.suggest_min_confidence(cal),
        worst=report_data.worst_rows(con, src, worst_n),
        by_country=breakdown("gt_country"),
        by_scene=breakdown("scene"),
        by_source=breakdown("source"),
    )


def top_groups(sections: Sequence[FileSection], attr: str, key: str, limit: int) -> list[Any]:
    """Group values (None excluded) ordered by scored rows summed over the files, the first `limit`."""
    totals: dict[Any, int] = {}
    for section in sections:
        for row in getattr(section, attr):
            if row.get(key) is not None and row["n_scored"]:
                totals[row[key]] = totals.get(row[key], 0) + int(row["n_scored"])
    return sorted(totals, key=lambda g: (-totals[g], str(g)))[:limit]


def country_names() -> dict[str, str]:
    """ISO alpha-2 -> English name from the Natural Earth table (empty where it is not installed)."""
    import shapely

    from geotag.geo.places import country_index

    index = country_index()
    if index is None:
        return {}
    names: dict[str, str] = {}
    best: dict[str, float] = {}
    for code, name, area in zip(index.codes, index.names, shapely.area(index.geoms), strict=True):
        if code and name and area > best.get(code, -1.0):  # a code's largest polygon: FR is France,
            names[code], best[code] = name, float(area)  # not Clipperton Island
    return names


def group_labels(
    sections: Sequence[FileSection], attr: str, key: str, groups: Sequence[Any], names: dict[str, str]
) -> list[str]:
    """Chart labels: the name (and code) of each group and its scored rows, per file when they differ."""
    labels = []
    for g in groups:
        counts = []
        for section in sections:
            row = next((r for r in getattr(section, attr) if r.get(key) == g), None)
            counts.append(int(row["n_scored"]) if row else 0)
        n = f"{counts[0]:,}" if len(set(counts)) == 1 else "/".join(f"{c:,}" for c in counts)
        name = f"{names[g]} ({g})" if g in names else str(g)
        labels.append(f"{name}  n={n}")
    return labels


def bar_panels(
    sections: Sequence[FileSection], attr: str, key: str, groups: Sequence[Any], thresholds: Sequence[float]
) -> list[tuple[str, list[list[float | None]]]]:
    """Panels for plots.breakdown: accuracy at the city / country thresholds, and the right country."""
    chosen = [t for t in BAR_KM if t in thresholds] or list(thresholds[:2])
    metrics = [(f"within {plots.km_text(t)}", threshold_key(t)) for t in chosen]
    if any(row.get("country_acc") is not None for s in sections for row in getattr(s, attr)):
        metrics.append(("predicted country = true country", "country_acc"))
    panels = []
    for name, metric in metrics:
        values = []
        for section in sections:
            rows = {row.get(key): row for row in getattr(section, attr)}
            values.append([rows[g].get(metric) if g in rows else None for g in groups])
        panels.append((name, values))
    return panels


# --- the page ---------------------------------------------------------------------------------------


PAGE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="geotag $version">
<title>$title</title>
<style>
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222;
       max-width: 1240px; margin: 0 auto; padding: 16px 24px 48px; }
h1 { font-size: 24px; margin: 8px 0 4px; } h2 { font-size: 19px; margin: 32px 0 8px;
     border-bottom: 1px solid #ddd; padding-bottom: 4px; } h3 { font-size: 15px; margin: 20px 0 6px; }
.meta { color: #555; font-size: 13px; } .small { font-size: 12px; color: #666; }
.warn { background: #fff4e0; border-left: 4px solid #f0a020; padding: 8px 12px; margin: 10px 0; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { padding: 4px 8px; border-bottom: 1px solid #e6e6e6; text-align: left; vertical-align: top; }
th { background: #f5f5f5; font-weight: 600; } td.num, th.num { text-align: right;
     font-variant-numeric: tabular-nums; white-space: nowrap; }
img.fig { max-width: 100%; height: auto; display: block; margin: 8px 0; border: 1px solid #eee; }
img.thumb { display: block; border-radius: 3px; }
.ph { width: ${thumb}px; height: ${thumb_h}px; background: #f0f0f0; color: #888; border: 1px dashed #bbb;
      display: flex; align-items: center; justify-content: center; font-size: 12px; text-align: center; }
.path { overflow-wrap: anywhere; max-width: 420px; } .path b { color: #111; }
code { background: #f3f3f3; padding: 1px 4px; border-radius: 3px; }
</style>
</head>
<body>
$body
</body>
</html>
""")


def table_html(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[bool]) -> str:
    """A table whose cells are already-escaped HTML."""
    head = "".join(f"<th{' class=num' if n else ''}>{h}</th>" for h, n in zip(headers, numeric, strict=True))
    body = "".join(
        "<tr>"
        + "".join(f"<td{' class=num' if n else ''}>{c}</td>" for c, n in zip(r, numeric, strict=True))
        + "</tr>\n"
        for r in rows
    )
    return f"<table>\n<tr>{head}</tr>\n{body}</table>"


def img_html(fig: Figure) -> str:
    return (
        f'<img class="fig" src="{e(fig.src)}" width="{fig.width}" height="{fig.height}" alt="{e(fig.alt)}">'
    )


def summary_table(sections: Sequence[FileSection], thresholds: Sequence[float]) -> str:
    counts = ["n_rows", "n_scored", "n_error", "n_no_gt", "n_no_pred"]
    headers = ["file", "N", "scored", "error", "no GT", "no pred"]
    if any(s.overall.get("n_self_match") for s in sections):
        counts.append("n_self_match")
        headers.append("self-match")
    headers += [threshold_title(t) for t in thresholds] + ["median km", "mean km", "GeoScore", "country"]
    rows = []
    for s in sections:
        o = s.overall
        cells = [e(s.src.label)] + [f"{int(o.get(k) or 0):,}" for k in counts]
        cells += [pct(o.get(threshold_key(t))) for t in thresholds]
        cells += [
            km(o.get("median_km")),
            km(o.get("mean_km")),
            score(o.get("geoscore")),
            pct(o.get("country_acc")),
        ]
        rows.append([e(c) if i else c for i, c in enumerate(cells)])
    return table_html([e(h) for h in headers], rows, [False] + [True] * (len(headers) - 1))


def group_table(
    sections: Sequence[FileSection],
    attr: str,
    key: str,
    groups: Sequence[Any],
    thresholds: Sequence[float],
    names: dict[str, str] | None = None,
) -> str:
    """Per (group, file): N scored, accuracy at each threshold, median, country accuracy."""
    multi = len(sections) > 1
    headers = [key] + (["file"] if multi else []) + ["scored"] + [threshold_title(t) for t in thresholds]
    headers += ["median km", "country"]
    rows = []
    for g in groups:
        for s in sections:
            row = next((r for r in getattr(s, attr) if r.get(key) == g), None)
            if row is None:
                continue
            label = f"{g} {names[g]}" if names and g in names else str(g)
            cells = [e(label)] + ([e(s.src.label)] if multi else []) + [f"{int(row['n_scored']):,}"]
            cells += [pct(row.get(threshold_key(t))) for t in thresholds]
            cells += [km(row.get("median_km")), pct(row.get("country_acc"))]
            rows.append(cells)
    numeric = [False] * (2 if multi else 1) + [True] * (len(headers) - (2 if multi else 1))
    return table_html([e(h) for h in headers], rows, numeric)


def source_table(sections: Sequence[FileSection], thresholds: Sequence[float]) -> str:
    """Per (source, file): rows, rows placed, scored, accuracy, median (`geotag eval --by source`)."""
    multi = len(sections) > 1
    headers = ["source"] + (["file"] if multi else []) + ["rows", "no prediction", "scored"]
    headers += [threshold_title(t) for t in thresholds] + ["median km"]
    rows = []
    for s in sections:
        for row in s.by_source:
            cells = [e(row.get("source") or "(none)")] + ([e(s.src.label)] if multi else [])
            cells += [f"{int(row[k]):,}" for k in ("n_rows", "n_no_pred", "n_scored")]
            cells += [pct(row.get(threshold_key(t))) for t in thresholds] + [km(row.get("median_km"))]
            rows.append(cells)
    numeric = [False] * (2 if multi else 1) + [True] * (len(headers) - (2 if multi else 1))
    return table_html([e(h) for h in headers], rows, numeric)


def coords(lat: object, lon: object) -> str:
    if lat is None or lon is None:
        return "-"
    return f"{float(lat):.4f}, {float(lon):.4f}"  # type: ignore[arg-type]


def worst_table(s: FileSection) -> str:
    headers = ["#", "photo", "file", "truth", "prediction", "error km", "confidence", "scene"]
    rows = []
    for i, (row, thumb) in enumerate(zip(s.worst, s.thumbs, strict=True), start=1):
        if thumb:
            photo = f'<img class="thumb" src="{e(thumb)}" alt="{e(Path(row["path"] or "").name)}">'
        else:
            photo = '<div class="ph">photo not found</div>'
        path = Path(row["path"] or "")
        where = (
            f'<div class="path"><b>{e(path.name)}</b><br><span class="small">{e(path.parent)}</span></div>'
        )
        truth = f"{e(coords(row['gt_lat'], row['gt_lon']))}<br>{e(row.get('gt_country') or '')}"
        pred = f"{e(coords(row['pred_lat'], row['pred_lon']))}<br>{e(row.get('country') or '')}"
        conf = "-" if row.get("confidence") is None else f"{float(row['confidence']):.2f}"
        rows.append([str(i), photo, where, truth, pred, km(row["d"]), conf, e(row.get("scene") or "")])
    numeric = [True, False, False, False, False, True, True, False]
    return table_html([e(h) for h in headers], rows, numeric)


def suggestions_html(sections: Sequence[FileSection], calibration_km: float) -> str:
    headers = [
        "file",
        "wanted share within " + plots.km_text(calibration_km),
        "--min-confidence",
        "written",
        "accuracy",
    ]
    rows = []
    for s in sections:
        if s.cal.total == 0:
            rows.append([e(s.src.label), "-", "no confidence values", "-", "-"])
            continue
        for sug in s.suggestions:
            if sug.min_confidence is None:
                rows.append([e(s.src.label), pct(sug.target), "not reached", "-", "-"])
                continue
            written = f"{sug.rows_kept:,} ({pct(sug.share_kept)})"
            rows.append(
                [
                    e(s.src.label),
                    pct(sug.target),
                    f"<code>{sug.min_confidence:.2f}</code>",
                    written,
                    pct(sug.accuracy),
                ]
            )
    return table_html([e(h) for h in headers], rows, [False, True, True, True, True])


def page_body(
    sections: Sequence[FileSection],
    figs: dict[str, Figure],
    thresholds: Sequence[float],
    notes: Sequence[str],
    calibration_km: float,
    names: dict[str, str],
    elapsed_note: str,
) -> str:
    parts: list[str] = ["<h1>geotag report</h1>"]
    made = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts.append(f'<p class="meta">made {e(made)} by geotag {e(__version__)}{e(elapsed_note)}</p>')
    file_rows = []
    for s in sections:
        models = "; ".join(
            f"{m or '(none)'}" + (f" [{w}]" if w else "") + f" ({n:,})" for m, w, n in s.facts.models
        )
        file_rows.append(
            [e(s.src.label), f'<span class="path">{e(s.src.path.resolve())}</span>', e(models or "-")]
        )
    parts.append(table_html(["file", "path", "model [weights] (rows)"], file_rows, [False, False, False]))
    parts += [f'<div class="warn">{e(note)}</div>' for note in notes]

    parts.append("<h2>Accuracy</h2>")
    parts.append(summary_table(sections, thresholds))
    parts.append(f'<p class="small">{e(CAPTION)}</p>')
    if "error_curve" in figs:
        parts.append(img_html(figs["error_curve"]))

    parts.append("<h2>Where the photos are</h2>")
    for s in sections:
        if s.map_fig is not None:
            parts.append(f"<h3>{e(s.src.label)}</h3>" + img_html(s.map_fig))
        if s.map_page is not None:
            parts.append(
                f'<p><a class="map-link" href="{e(s.map_page)}">Interactive map of {e(s.src.label)}</a> '
                "(pan, zoom, hover for the photo; works offline)</p>"
            )

    if any(row.get("source") for s in sections for row in s.by_source):
        parts.append("<h2>Where the positions came from</h2>")
        parts.append(
            "<p>By <code>source</code>: <code>track</code> (a GPS track, by time), <code>sibling</code> "
            "(GPS-tagged photos taken around it), <code>model</code> (a visual model), <code>exif</code> "
            "(the photo's own GPS), <code>fused</code>; the map colours and filters its points by it.</p>"
        )
        parts.append(source_table(sections, thresholds))

    parts.append("<h2>Confidence: which <code>--min-confidence</code> to pass to write-exif</h2>")
    if "calibration" in figs:
        parts.append(
            "<p>Each row: the lowest <code>geotag write-exif --min-confidence</code> at which at least "
            "the wanted share of the photos written lands within "
            f"{e(plots.km_text(calibration_km))} of the truth (decided on at least 10 photos), "
            "and how many photos that writes. Rows whose answer came from the photo's own entry in "
            "the gallery (self-matches) never count here.</p>"
        )
        parts.append(suggestions_html(sections, calibration_km))
        parts.append(img_html(figs["calibration"]))
    else:
        parts.append("<p>No scored row has a confidence value.</p>")

    parts.append("<h2>Accuracy by country (of the ground truth)</h2>")
    if "countries" in figs:
        groups = top_groups(sections, "by_country", "gt_country", TOP_COUNTRIES)
        parts.append(img_html(figs["countries"]))
        parts.append(group_table(sections, "by_country", "gt_country", groups, thresholds, names))
    else:
        parts.append("<p>No scored row has a ground-truth country (gt_country).</p>")
    parts.append("<h2>Accuracy by scene</h2>")
    if "scenes" in figs:
        groups = top_groups(sections, "by_scene", "scene", 50)
        parts.append(img_html(figs["scenes"]))
        parts.append(group_table(sections, "by_scene", "scene", groups, thresholds))
    else:
        parts.append("<p>No scored row has a scene.</p>")

    parts.append("<h2>Worst errors</h2>")
    for s in sections:
        parts.append(f"<h3>{e(s.src.label)}</h3>")
        parts.append(worst_table(s) if s.worst else "<p>No scored rows.</p>")

    parts.append("<h2>Files that could not be read</h2>")
    for s in sections:
        if not s.facts.n_error:
            parts.append(f"<p>{e(s.src.label)}: none.</p>")
            continue
        shown = len(s.facts.error_rows)
        more = f" (the first {shown} by path)" if shown < s.facts.n_error else ""
        parts.append(f"<h3>{e(s.src.label)}: {s.facts.n_error:,} file(s){e(more)}</h3>")
        rows = [[f'<span class="path">{e(p)}</span>', e(r)] for p, r in s.facts.error_rows]
        parts.append(table_html(["file", "reason"], rows, [False, False]))
    return "\n".join(parts)


# --- the whole report -----------------------------------------------------------------------------------


def build_report(
    files: Sequence[Path],
    out_dir: Path,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS_KM,
    truth: Path | None = None,
    worst: int = 12,
    calibration_km: float = CALIBRATION_KM,
    include_self: bool = False,
    columns: str | None = None,
    tiles: Tiles | None = None,
) -> ReportSummary:
    """Score, aggregate and draw every file, then write index.html beside figures/ and thumbs/.
    Self-matches (column self_match) are left out of the scores unless `include_self`, and out of the
    --min-confidence advice always. Someone else's predictions file is read through geotag.eval.foreign
    (`columns`: its role=column mapping). `tiles`: a tile server for the map's basemap (else offline)."""
    with tempfile.TemporaryDirectory(prefix="geotag-report-") as tmp:
        prepared = foreign.prepare(files, columns, truth, Path(tmp))
        return _build_report(
            prepared.files,
            out_dir,
            thresholds,
            truth,
            worst,
            calibration_km,
            include_self,
            prepared.notes,
            tiles,
        )


def _build_report(
    files: Sequence[Path],
    out_dir: Path,
    thresholds: Sequence[float],
    truth: Path | None,
    worst: int,
    calibration_km: float,
    include_self: bool,
    foreign_notes: list[str],
    tiles: Tiles | None = None,
) -> ReportSummary:
    start = time.perf_counter()
    thresholds = normalise_thresholds(list(thresholds))
    con = connect()
    try:
        sources, notes = report_data.open_sources(con, files, truth, include_self)
        notes[:0] = foreign_notes
        out_dir = prepare_folder(out_dir)
        sections = [collect(con, src, thresholds, worst, calibration_km) for src in sources]
        maps = [report_data.map_data(con, src) for src in sources]
        map_rows = [map_page.map_rows(con, src, out_dir) for src in sources]
        for src in sources:
            if truth:
                notes.append(truth_join.match_note(con, src.path, src.label, list(src.raw_columns)))
            notes += self_match_notes(con, src.path, src.label, src.columns, src.sql, include_self)
            if note := measured_note(src.label, measured_rows(con, src.path, src.columns)):
                notes.append(note)
            if has_untrained_rows(con, src.path, src.columns):
                notes.append(
                    f"{src.label}: predictions made with UNTRAINED weights; "
                    "these figures show the pipeline, not a model's accuracy"
                )
    finally:
        con.close()
    names = country_names() if any(s.by_country for s in sections) else {}
    figs, written = draw_figures(sections, maps, out_dir, thresholds, calibration_km, names)
    n_thumbs, n_missing = write_thumbnails(sections, out_dir)
    written += write_map_pages(sections, map_rows, out_dir, tiles)
    seconds = time.perf_counter() - start
    body = page_body(sections, figs, thresholds, notes, calibration_km, names, f" in {seconds:.1f} s")
    index = out_dir / "index.html"
    text = PAGE.substitute(
        version=e(__version__),
        title=e("geotag report: " + ", ".join(s.src.label for s in sections)),
        body=body,
        thumb=THUMB_SIDE,
        thumb_h=THUMB_SIDE * 9 // 16,
    )
    try:
        with atomic_file(index) as fh:  # a reader never sees half a page
            fh.write(text.encode("utf-8"))
    except OSError as exc:
        raise OutputError(f"cannot write {index}: {exc.strerror or exc}") from exc
    rows = sum(int(s.overall["n_rows"]) for s in sections)
    return ReportSummary(index, written, n_thumbs, n_missing, rows, time.perf_counter() - start, notes)


def draw_figures(
    sections: Sequence[FileSection],
    maps: Sequence[report_data.MapData],
    out_dir: Path,
    thresholds: Sequence[float],
    calibration_km: float,
    names: dict[str, str],
) -> tuple[dict[str, Figure], list[Path]]:
    figs: dict[str, Figure] = {}
    written: list[Path] = []

    def add(key: str, name: str, alt: str, size: tuple[int, int]) -> Figure:
        fig = Figure(f"figures/{name}", size[0], size[1], alt)
        figs[key] = fig
        written.append(out_dir / "figures" / name)
        return fig

    fig_dir = out_dir / "figures"
    marks = [{float(t): s.overall.get(threshold_key(t)) for t in thresholds} for s in sections]
    curves = [(s.src.label, s.cdf) for s in sections]
    size = plots.error_curve(curves, marks, thresholds, fig_dir / "error_curve.png")
    add("error_curve", "error_curve.png", "cumulative error curve", size)
    for i, (s, m) in enumerate(zip(sections, maps, strict=True)):
        name = f"map-{i + 1}.png"
        title = f"{s.src.label}: predictions and ground truth"
        size = plots.world_map(m, title, fig_dir / name)
        s.map_fig = add(f"map-{i}", name, f"world map of {s.src.label}", size)
    if any(s.cal.total for s in sections):
        size = plots.calibration_plot([(s.src.label, s.cal) for s in sections], fig_dir / "calibration.png")
        add("calibration", "calibration.png", "confidence calibration", size)
    labels = [s.src.label for s in sections]
    countries = top_groups(sections, "by_country", "gt_country", TOP_COUNTRIES)
    if countries:
        panels = bar_panels(sections, "by_country", "gt_country", countries, thresholds)
        size = plots.breakdown(
            group_labels(sections, "by_country", "gt_country", countries, names),
            labels,
            panels,
            f"Accuracy by true country ({len(countries)} with most photos)",
            fig_dir / "countries.png",
        )
        add("countries", "countries.png", "accuracy by country", size)
    scenes = top_groups(sections, "by_scene", "scene", 50)
    if scenes:
        panels = bar_panels(sections, "by_scene", "scene", scenes, thresholds)
        scene_labels = group_labels(sections, "by_scene", "scene", scenes, {})
        size = plots.breakdown(scene_labels, labels, panels, "Accuracy by scene", fig_dir / "scenes.png")
        add("scenes", "scenes.png", "accuracy by scene", size)
    return figs, written


def write_map_pages(
    sections: Sequence[FileSection], rows: Sequence[dict[str, Any]], out_dir: Path, tiles: Tiles | None = None
) -> list[Path]:
    """One interactive map page per file (skipped with a note in the log when folium-offline is missing)."""
    out = []
    for i, (s, data) in enumerate(zip(sections, rows, strict=True)):
        path = out_dir / f"map-{i + 1}.html"
        try:
            text = map_page.page_html(f"geotag map: {s.src.label}", data, tiles)
        except InputError as exc:  # folium-offline not installed: the static maps remain
            log.warning("no interactive map: %s", exc)
            return out
        try:
            with atomic_file(path) as fh:
                fh.write(text.encode("utf-8"))
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
        s.map_page = path.name
        out.append(path)
    return out


def write_thumbnails(sections: Sequence[FileSection], out_dir: Path) -> tuple[int, int]:
    """Thumbnails of the worst rows' photos (one file per photo path); returns (made, missing)."""
    made: dict[str, str | None] = {}
    missing = 0
    for s in sections:
        s.thumbs = []
        for row in s.worst:
            key = str(row.get("path") or "")
            if key not in made:
                photo = resolve_photo(key, s.src.path.parent)
                name = f"thumbs/{hashlib.sha1(key.encode('utf-8', 'replace')).hexdigest()[:16]}.jpg"
                ok = photo is not None and make_thumbnail(photo, out_dir / name) is not None
                made[key] = name if ok else None
                missing += 0 if ok else 1
            s.thumbs.append(made[key])
    return sum(1 for v in made.values() if v), missing


# --- `geotag eval --plot` -------------------------------------------------------------------------------

FIGURE_SUFFIXES = (".png", ".svg", ".pdf")


def check_figure_path(path: Path) -> Path:
    """Fail before any work when the figure cannot be written (bad suffix, missing folder)."""
    path = check_output_path(Path(path))
    if path.suffix.lower() not in FIGURE_SUFFIXES:
        raise InputError(f"--plot {path}: give a file name ending in {', '.join(FIGURE_SUFFIXES)}")
    return path


def plot_error_curve(
    files: Sequence[Path],
    out: Path,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS_KM,
    truth: Path | None = None,
    include_self: bool = False,
    columns: str | None = None,
) -> tuple[int, int]:
    """The cumulative error curve of each file, alone, into `out`; returns its size in pixels."""
    out = check_figure_path(out)
    thresholds = normalise_thresholds(list(thresholds))
    con = connect()
    tmp = tempfile.TemporaryDirectory(prefix="geotag-plot-")
    try:
        files = foreign.prepare(files, columns, truth, Path(tmp.name)).files
        sources, _ = report_data.open_sources(con, files, truth, include_self)
        curves, marks = [], []
        for src in sources:
            overall = evaluate_file(
                con, src.path, src.label, src.columns, thresholds, [], src.sql, include_self=src.include_self
            )[0]
            marks.append({float(t): overall.get(threshold_key(t)) for t in thresholds})
            curves.append((src.label, report_data.error_cdf(con, src)))
    finally:
        con.close()
        tmp.cleanup()
    return plots.error_curve(curves, marks, thresholds, out)
