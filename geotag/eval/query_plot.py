"""The heat map of `geotag query --heatmap`: each text's probability over the gallery (or grid) points
on an Equal Earth world map with Natural Earth borders (where installed), one panel per query."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from geotag.errors import OutputError
from geotag.eval.plots import DPI, _draw_base, new_figure, project
from geotag.io.durable import atomic_path

MAX_PANELS = 6
MAX_POINTS = 200_000  # points drawn per panel (the most probable ones): a fine grid stays a light figure


def text_heatmap(texts: list[str], points: np.ndarray, probs: np.ndarray, out: Path) -> int:
    """Write a PNG with one panel per query (the first MAX_PANELS); returns the number of panels.
    `points` (N, 2) degrees, `probs` (T, N). Colour is log10 probability; the star is the best point."""
    from matplotlib.colors import LogNorm

    n = min(len(texts), MAX_PANELS)
    cols = 1 if n == 1 else 2
    rows = (n + cols - 1) // cols
    fig = new_figure(900 * cols, 500 * rows, constrained=True)
    x, y = project(points[:, 0], points[:, 1])
    for q in range(n):
        ax = fig.add_subplot(rows, cols, q + 1)
        _draw_base(ax)
        p = probs[q]
        order = np.argsort(p)[-MAX_POINTS:]  # most probable drawn last, on top; the least left blank
        floor = max(float(p.max()) * 1e-4, 1e-12)
        sc = ax.scatter(
            x[order], y[order], c=np.clip(p[order], floor, None), s=3, cmap="inferno_r",
            norm=LogNorm(vmin=floor, vmax=max(float(p.max()), floor * 10)), linewidths=0, zorder=3,
        )  # fmt: skip
        best = int(p.argmax())
        ax.scatter([x[best]], [y[best]], marker="*", s=120, color="#1f77b4", edgecolor="white", zorder=6)
        ax.set_title(f'"{texts[q]}"  (best {points[best, 0]:.2f}, {points[best, 1]:.2f})', fontsize=10)
        fig.colorbar(sc, ax=ax, shrink=0.6, label="probability")
    try:
        with atomic_path(Path(out)) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI, facecolor="white")
    except OSError as exc:
        raise OutputError(f"cannot write {out}: {exc.strerror or exc}") from exc
    return n


def text_map(table: object, out: Path, title: str = "geotag query") -> int:
    """The top places of `geotag query` (a `top_places` table) on the report's offline interactive map
    (eval/map_page.py): one point per place, coloured by its probability relative to its query's best,
    the query and rank in the tooltip. Returns the number of points."""
    from geotag.eval import map_page
    from geotag.io.durable import atomic_file

    rows = table.to_pylist()  # type: ignore[attr-defined]
    best: dict[str, float] = {}
    for r in rows:
        best[r["query"]] = max(best.get(r["query"], 0.0), float(r["probability"]))
    none = [None] * len(rows)
    data = {
        "lat": [round(float(r["lat"]), 5) for r in rows],
        "lon": [round(float(r["lon"]), 5) for r in rows],
        "glat": none,
        "glon": none,
        "d": none,
        "c": [round(float(r["probability"]) / (best[r["query"]] or 1.0), 4) for r in rows],
        "r": none,
        "p": [f"{r['query']} #{r['rank']} (p = {float(r['probability']):.3g})" for r in rows],
        "img": [""] * len(rows),
        "k": [[] for _ in rows],
        "total": [len(rows)],
    }
    try:
        text = map_page.page_html(title, data)
        with atomic_file(Path(out)) as fh:
            fh.write(text.encode("utf-8"))
    except OSError as exc:
        raise OutputError(f"cannot write {out}: {exc.strerror or exc}") from exc
    return len(rows)
