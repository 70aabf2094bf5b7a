"""The `geotag` command: thin Typer commands that parse options and call the library.

Errors of the library (GeotagError) are caught once, here, and become one line on stderr and an exit
code: 0 ok, 1 some files failed, 2 usage or input error, 3 internal error (a bug: one line, and the
traceback with GEOTAG_DEBUG=1).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperCommand, TyperGroup

from geotag import __version__
from geotag.errors import GeotagError
from geotag.io.pathtext import shown
from geotag.progress import DEFAULT_LOG_EVERY, LOG_EVERY_ENV

# Spelled out here because the registry imports torch; tests/test_light_imports.py checks it matches.
TILES_HELP = (
    "Basemap tiles from the network: 'osm' (OpenStreetMap) or a URL template https://.../{z}/{x}/{y}.png. "
    "Default: none (offline borders and place names)."
)
MODEL_NAMES = "experts, geoclip, geoclip-lite, geodecoder, knn, knn-loo, translocator"
err = Console(stderr=True, soft_wrap=True)  # a summary stays one line in logs; terminals wrap it
out = Console()


def _set_log_every(value: float | None) -> float | None:
    """--log-every, before or after the command: through the environment, so worker processes
    (DataLoader, torchrun, Ray) see it too; the command's own option is parsed last, so it wins."""
    if value is not None:
        os.environ[LOG_EVERY_ENV] = f"{value:g}"
    return value


# Options several commands take, declared once (the parameter name gives the flag).
Progress = Annotated[
    bool,
    typer.Option(help="Progress on stderr: a bar on a terminal, else a line every --log-every s."),
]
LogEvery = Annotated[
    float | None,
    typer.Option(
        min=0.0,
        callback=_set_log_every,
        help=f"When stderr is no terminal: a progress line every this many seconds (0: none) "
        f"[default: {DEFAULT_LOG_EVERY:g}, or ${LOG_EVERY_ENV}].",
    ),
]
Device = Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")]
ModelName = Annotated[str, typer.Option(help=f"Model: {MODEL_NAMES} (see `geotag models list`).")]
BatchSize = Annotated[int | None, typer.Option(min=1, help="Images per batch (default: from the device).")]
Workers = Annotated[int | None, typer.Option(min=0, help="Decoding processes (default: from the cores).")]
Amp = Annotated[bool, typer.Option(help="bf16 autocast on CUDA.")]
BackboneWeights = Annotated[
    Path | None, typer.Option(help="Local backbone weights: a timm state dict or an HF CLIP folder.")
]
Weights = Annotated[
    Path | None, typer.Option(help="Trained weights: a `geotag train` checkpoint or run folder.")
]
Gallery = Annotated[
    Path | None, typer.Option(help="GPS gallery (CSV / Parquet: lat, lon); knn: a `gallery build` file.")
]
Truth = Annotated[
    Path | None,
    typer.Option(help="Ground-truth manifest (CSV or Parquet: places365, OSV-5M or path,lat,lon)."),
]
UntrainedBackbone = Annotated[
    bool,
    typer.Option(help="Run with a random backbone when no weights can be had (shows the pipeline only)."),
]
Include = Annotated[
    list[str] | None,
    typer.Option(help="Walk only files matching this glob (repeatable; see the README, Walking folders)."),
]
Exclude = Annotated[list[str] | None, typer.Option(help="Skip files matching this glob (repeatable).")]
Ext = Annotated[str | None, typer.Option(help="Walk only these extensions, e.g. jpg,png (any case).")]
ImageRoot = Annotated[Path | None, typer.Option(help="Base folder of relative manifest paths.")]
Engine = Annotated[str, typer.Option(help="local | ray (a Ray cluster; see docs/scale.md).")]
RayAddress = Annotated[
    str | None, typer.Option(help="ray: cluster to join (auto, ray://HOST:10001); default: start one.")
]
IncludeSelf = Annotated[
    bool,
    typer.Option(
        "--include-self-matches",
        help="Score kNN rows answered by the photo's own gallery entry (column self_match) too.",
    ),
]
ForeignColumns = Annotated[
    str | None,
    typer.Option(
        "--columns",
        help="Someone else's predictions file: its columns per role, e.g. pred_lat=LAT_pred,"
        "pred_lon=LON_pred,path=IMG_ID (unambiguous names are mapped without it).",
    ),
]


def _write_panels(
    formatter: click.HelpFormatter, rows: list[tuple[str, tuple[str, str]]], first: str, last: str
) -> None:
    """Help rows grouped into sections by panel: `first` on top, `last` at the bottom, the others in the
    order they first occur (the one mechanism behind command and option panels)."""
    groups: dict[str, list[tuple[str, str]]] = {first: []}
    for panel, record in rows:
        groups.setdefault(panel, []).append(record)
    groups[last] = groups.pop(last, [])
    for name, records in groups.items():
        if records:
            with formatter.section(name):
                formatter.write_dl(records)


def _argument_name(param: click.Parameter) -> str:
    """PATHS... (required) or [PATHS]...: the name an argument has in the usage line and its help."""
    name = (param.metavar or param.name or "").upper()
    name = name if param.required else f"[{name}]"
    return name + ("..." if param.nargs != 1 else "")


class PanelCommand(TyperCommand):
    """Plain click help (rich_markup_mode=None) that still groups options by their `rich_help_panel`
    (set per option, or per name in the command's `panels`, see `panelled`): `geotag predict --help`
    lists its time options under "Time". Arguments read PATHS... in the usage line and their help."""

    panels: dict[str, str] = {}  # parameter name -> panel, for options declared without one

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":  # typer vendors click: no isinstance
                pieces.append(_argument_name(param))
            else:
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":  # typer vendors click: no isinstance
                rows.append(("Arguments", (_argument_name(param), record[1])))
            else:
                panel = getattr(param, "rich_help_panel", None) or self.panels.get(param.name or "")
                rows.append((panel or "Options", record))
        _write_panels(formatter, rows, first="Arguments", last="Options")


def panelled(panels: dict[str, tuple[str, ...]]) -> type[PanelCommand]:
    """A PanelCommand whose options go to panels by name: {"Model": ("model", "top_k"), ...}."""
    return type("PanelCommand", (PanelCommand,), {"panels": {n: p for p, ns in panels.items() for n in ns}})


class PanelGroup(TyperGroup):
    """`geotag --help`: commands grouped by workflow (COMMAND_PANELS, or a command's own
    `rich_help_panel`), in the order of the work, with the same plain sections as the options."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        order = {name: i for i, name in enumerate(n for names in COMMAND_PANELS.values() for n in names)}
        panel_of = {name: panel for panel, names in COMMAND_PANELS.items() for name in names}
        found = [(name, self.get_command(ctx, name)) for name in self.list_commands(ctx)]
        shown = sorted(
            ((n, c) for n, c in found if c is not None and not c.hidden),
            key=lambda nc: order.get(nc[0], len(order)),
        )
        if not shown:
            return
        limit = formatter.width - 6 - max(len(name) for name, _ in shown)
        rows = [
            (
                getattr(cmd, "rich_help_panel", None) or panel_of.get(name) or "Commands",
                (name, cmd.get_short_help_str(limit)),
            )
            for name, cmd in shown
        ]
        _write_panels(formatter, rows, first="Commands", last="Commands")


class Typer(typer.Typer):
    """typer.Typer whose groups are PanelGroups and whose commands PanelCommands (plain help, panels)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("cls", PanelGroup)
        super().__init__(**kwargs)

    def command(self, *args: Any, cls: type[TyperCommand] = PanelCommand, **kwargs: Any) -> Any:  # type: ignore[override]
        return super().command(*args, cls=cls, **kwargs)


# `geotag --help`, by workflow; a command in none of these panels is listed under "Commands".
COMMAND_PANELS: dict[str, tuple[str, ...]] = {
    "Placing photos": ("scan", "predict", "review", "write-exif", "report", "export"),
    "Measuring": ("eval", "benchmark"),
    "Making models": ("train", "shards", "embed", "segment", "label-scenes", "cells", "gallery", "experts"),
    "Looking into models": ("models", "query", "embed-locations"),
}

# Every Typer here takes rich_markup_mode=None: click's plain help, whose option names are never cut
# at 80 columns, whose brackets stay text (no rich markup) and which pipes get without box drawing.
app = Typer(
    rich_markup_mode=None,
    name="geotag",
    help="Geolocate photos in bulk: scan, predict, evaluate, write GPS back.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
    pretty_exceptions_enable=False,
)


TIME = "Time"  # help panel of predict's time-evidence options (docs/time-predict.md)
# predict's other option panels, by parameter name (TIME's options name their panel themselves)
PREDICT_PANELS = {
    "Input and output": (
        "out_path",
        "include",
        "exclude",
        "ext",
        "truth",
        "resume",
        "checkpoint_rows",
        "skip_tagged",
    ),
    "Model": (
        "model",
        "top_k",
        "weights",
        "backbone_weights",
        "gallery",
        "exclude_same",
        "seg_dir",
        "segmenter",
        "tta_crops",
        "tta_mirrors",
        "untrained_backbone",
        "allow_mismatched_heads",
    ),
    "Speed": (
        "device",
        "batch_size",
        "workers",
        "amp",
        "draft",
        "gpu_decode",
        "gpu_decode_share",
        "compile_model",
    ),
    "Cluster": ("engine", "address", "gpus", "actors", "cpus_per_decoder"),
}


def say(message: str, console: Console = err) -> None:
    """A summary or notice line (stderr by default), as plain text: no markup (paths may hold brackets),
    control characters escaped (a file name cannot rewrite the terminal), no highlighting, never
    hard-wrapped."""
    console.print(shown(message), highlight=False, markup=False, soft_wrap=True)


def say_labelled(label: str, style: str, message: object) -> None:
    """`label` styled (error:, warning:), then the message as say() prints it: never read as markup."""
    err.print(Text.assemble((label, style), " ", shown(message)), highlight=False, soft_wrap=True)


def _folders_note(unreadable: int) -> str:
    """The summary's count of folders the walk could not read (each was a warning line)."""
    return f", {unreadable} folder(s) could not be read" if unreadable else ""


def fail(message: str, code: int = 2) -> typer.Exit:
    say_labelled("error:", "bold red", message)
    return typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        out.print(f"geotag {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log per-file details (library warnings, ...) to stderr.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Log errors only.")] = False,
    log_every: LogEvery = None,
) -> None:
    """geotag: geolocate photos in bulk."""
    if verbose or quiet:
        logging.getLogger("geotag").setLevel(logging.INFO if verbose else logging.ERROR)


@app.command()
def scan(
    paths: Annotated[list[Path], typer.Argument(help="Photo files or folders (walked recursively).")],
    out_path: Annotated[Path, typer.Option("--out", "-o", help="Parquet file to write.")],
    truth: Truth = None,
    include: Include = None,
    exclude: Exclude = None,
    ext: Ext = None,
    progress: Progress = True,
    log_every: LogEvery = None,
) -> None:
    """Inventory photos with their EXIF ground truth (GPS, time, camera) into a predictions-schema Parquet."""
    from geotag.engine.scan import run_scan
    from geotag.io.scan import PathFilter

    only = PathFilter.from_options(include, exclude, ext)
    summary = run_scan(paths, out_path, progress=progress, truth=truth, only=only)
    _say_truth(summary.truth)
    _say_not_read(summary.not_read)
    say(
        f"scanned {summary.total} file(s): {summary.with_gps} with {'ground truth' if truth else 'GPS'}, "
        f"{summary.failed} unreadable{_folders_note(summary.unreadable_folders)} -> {out_path}"
    )
    raise typer.Exit(1 if summary.failed or summary.unreadable_folders else 0)


@app.command(cls=panelled(PREDICT_PANELS))
def predict(
    paths: Annotated[
        list[str], typer.Argument(help="Photo files or folders (walked recursively); URLs with --engine ray.")
    ],
    out_path: Annotated[
        Path, typer.Option("--out", "-o", help="Parquet file to write (--engine ray: a folder of parts).")
    ],
    model: Annotated[
        str, typer.Option(help=f"Model: {MODEL_NAMES}; none: time evidence only (docs/time-predict.md).")
    ] = "geoclip",
    device: Device = "auto",
    batch_size: BatchSize = None,
    top_k: Annotated[int, typer.Option(min=1, help="Candidates kept per photo.")] = 5,
    workers: Workers = None,
    resume: Annotated[
        bool, typer.Option(help="Keep what an earlier run wrote and do only the rest.")
    ] = False,
    backbone_weights: BackboneWeights = None,
    weights: Weights = None,
    gallery: Gallery = None,
    truth: Truth = None,
    exclude_same: Annotated[
        str | None,
        typer.Option(help="knn-loo: also leave out photos sharing this --truth column (e.g. author)."),
    ] = None,
    seg_dir: Annotated[
        Path | None, typer.Option(help="Precomputed segmentation maps (<image_id>.png or <stem>.png).")
    ] = None,
    segmenter: Annotated[
        str | None, typer.Option(help="Segmentation model: HF hub id or local folder (TransLocator).")
    ] = None,
    tta_crops: Annotated[
        int, typer.Option(help="Test-time augmentation crops: 1 (off), 2, 5 or 10 (TransLocator).")
    ] = 1,
    tta_mirrors: Annotated[
        bool, typer.Option(help="Allow --tta-crops 2 / 10, whose mirrored views swap the driving side.")
    ] = False,
    untrained_backbone: UntrainedBackbone = False,
    allow_mismatched_heads: Annotated[
        bool, typer.Option(help="GeoCLIP: use heads trained on another backbone (label records it).")
    ] = False,
    amp: Amp = True,
    draft: Annotated[bool, typer.Option(help="Fast reduced-scale JPEG decoding.")] = True,
    skip_tagged: Annotated[
        bool,
        typer.Option(
            "--skip-tagged",
            help="Predict only photos without measured GPS; tagged ones keep a row with their own position "
            "and source=exif (never scored, never written back).",
        ),
    ] = False,
    gpu_decode: Annotated[
        bool, typer.Option(help="CUDA: decode a share of the large JPEGs with nvJPEG, the rest on the CPU.")
    ] = False,
    gpu_decode_share: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of the large JPEGs sent to nvJPEG.")
    ] = 0.6,
    compile_model: Annotated[
        bool, typer.Option("--compile/--no-compile", help="torch.compile the backbone (slow start).")
    ] = False,
    checkpoint_rows: Annotated[int, typer.Option(min=1, help="Rows per crash-safe part file.")] = 4096,
    include: Include = None,
    exclude: Exclude = None,
    ext: Ext = None,
    progress: Progress = True,
    log_every: LogEvery = None,
    engine: Engine = "local",
    address: RayAddress = None,
    gpus: Annotated[
        int | None, typer.Option(min=0, help="ray: GPU model actors (default: every GPU; 0: CPU actors).")
    ] = None,
    actors: Annotated[int | None, typer.Option(min=1, help="ray: CPU model actors (default 1).")] = None,
    cpus_per_decoder: Annotated[
        float, typer.Option(min=0.01, help="ray: CPUs per listing / decoding task.")
    ] = 1.0,
    track: Annotated[
        list[Path] | None,
        typer.Option(
            help="GPS track or location history, or a folder of them (repeatable).", rich_help_panel=TIME
        ),
    ] = None,
    tz: Annotated[
        str | None,
        typer.Option(
            metavar="ZONE",
            help="Zone of photos without OffsetTimeOriginal: IANA name, +HH:MM, or auto (at the track).",
            rich_help_panel=TIME,
        ),
    ] = None,
    ignore_photo_tz: Annotated[
        bool,
        typer.Option(
            "--ignore-photo-tz",
            help="--tz wins over the photos' own OffsetTimeOriginal.",
            rich_help_panel=TIME,
        ),
    ] = False,
    clock_offset: Annotated[
        list[str] | None,
        typer.Option(
            metavar="[CAMERA=]OFFSET",
            help="GPS minus camera clock, exiftool -geosync form (+0:03:12); CAMERA: make model or serial.",
            rich_help_panel=TIME,
        ),
    ] = None,
    sync: Annotated[
        list[str] | None,
        typer.Option(
            metavar="PHOTO=TIME",
            help="PHOTO shows the true TIME (YYYY:MM:DD HH:MM:SS[Z|+HH:MM]); two per camera: drift.",
            rich_help_panel=TIME,
        ),
    ] = None,
    max_gap: Annotated[
        float, typer.Option(min=0.0, help="Longest gap between fixes interpolated (s).", rich_help_panel=TIME)
    ] = 1800.0,
    max_extrapolate: Annotated[
        float,
        typer.Option(min=0.0, help="Farthest a photo may be from its nearest fix (s).", rich_help_panel=TIME),
    ] = 1800.0,
    max_hdop: Annotated[
        float | None, typer.Option(min=0.0, help="Drop track fixes with a larger HDOP.", rich_help_panel=TIME)
    ] = None,
    max_pdop: Annotated[
        float | None, typer.Option(min=0.0, help="Drop track fixes with a larger PDOP.", rich_help_panel=TIME)
    ] = None,
    min_sats: Annotated[
        int | None, typer.Option(min=0, help="Drop track fixes with fewer satellites.", rich_help_panel=TIME)
    ] = None,
    siblings: Annotated[
        bool,
        typer.Option(
            help="The GPS-tagged photos among PHOTOS place the others by time.", rich_help_panel=TIME
        ),
    ] = False,
    siblings_dir: Annotated[
        list[Path] | None,
        typer.Option(
            metavar="DIR",
            help="A folder of GPS-tagged photos used as fixes (repeatable).",
            rich_help_panel=TIME,
        ),
    ] = None,
    speed_kmh: Annotated[
        float, typer.Option(min=0.0, help="Speed bound of the error radius (km/h).", rich_help_panel=TIME)
    ] = 50.0,
    prior_window: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Photos time cannot place: fixes this near (s) restrict the model to where one could get "
            "(0: off).",
            rich_help_panel=TIME,
        ),
    ] = 21600.0,
    max_speed: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Fastest travel (km/h) of the reachable region: 150 ground, 300 fast rail, 900 flights.",
            rich_help_panel=TIME,
        ),
    ] = 150.0,
    fuse: Annotated[
        str,
        typer.Option(
            metavar="none|session|hmm",
            help="Album fusion: the photos of a session share evidence (docs/time-predict.md).",
            rich_help_panel=TIME,
        ),
    ] = "none",
    session_gap: Annotated[
        float,
        typer.Option(
            metavar="SECONDS", help="A longer gap on one camera starts a new session.", rich_help_panel=TIME
        ),
    ] = 7200.0,
    group_by: Annotated[
        str | None,
        typer.Option(
            metavar="folder|COLUMN",
            help="Sessions are albums instead: the parent folder, or a column of the --truth manifest.",
            rich_help_panel=TIME,
        ),
    ] = None,
) -> None:
    """Predict where each photo was taken; one row per file, broken files included."""
    from geotag.config import PredictConfig, TimeConfig

    if engine not in ("local", "ray"):
        raise fail(f"--engine {engine}: choose local or ray")
    time_cfg = TimeConfig(
        tracks=tuple(track or ()),
        tz=tz,
        ignore_photo_tz=ignore_photo_tz,
        clock_offsets=tuple(clock_offset or ()),
        syncs=tuple(sync or ()),
        max_gap=max_gap,
        max_extrapolate=max_extrapolate,
        max_hdop=max_hdop,
        max_pdop=max_pdop,
        min_sats=min_sats,
        siblings=siblings,
        sibling_dirs=tuple(siblings_dir or ()),
        speed_kmh=speed_kmh,
        prior_window=prior_window,
        max_speed=max_speed,
    )
    if engine == "ray" and fuse != "none":
        raise fail("--fuse needs --engine local")
    if engine == "ray" and (time_cfg.active or model == "none"):
        raise fail(
            "time evidence (--track, --siblings, --tz, --clock-offset, --sync, --model none) "
            "needs --engine local"
        )
    if ignore_photo_tz and not tz:
        raise fail("--ignore-photo-tz needs --tz ZONE (the zone to use instead)")
    if engine == "local" and any("://" in p for p in paths):
        raise fail("URLs (s3://, gs://, file://) need --engine ray")
    if engine == "ray" and skip_tagged:
        raise fail("--skip-tagged works with --engine local only")
    cfg = PredictConfig(
        paths=[p if "://" in p else Path(p) for p in paths],  # URLs stay text (a Path would eat the //)
        out=out_path,
        include=tuple(include or ()),
        exclude=tuple(exclude or ()),
        ext=ext,
        model=model,
        device=device,
        batch_size=batch_size,
        top_k=top_k,
        workers=workers,
        resume=resume,
        backbone_weights=backbone_weights,
        weights=weights,
        gallery=gallery,
        truth=truth,
        exclude_same=exclude_same,
        seg_dir=seg_dir,
        segmenter=segmenter,
        tta_crops=tta_crops,
        tta_mirrors=tta_mirrors,
        allow_untrained=untrained_backbone,
        allow_mismatched_heads=allow_mismatched_heads,
        amp=amp,
        draft=draft,
        skip_tagged=skip_tagged,
        gpu_decode=gpu_decode,
        gpu_decode_share=gpu_decode_share,
        compile=compile_model,
        checkpoint_rows=checkpoint_rows,
        progress=progress,
        engine=engine,
        ray_address=address,
        ray_gpus=gpus,
        ray_actors=actors,
        cpus_per_decoder=cpus_per_decoder,
        time=time_cfg,
        fuse=fuse.strip().lower(),
        session_gap=session_gap,
        group_by=group_by,
    )
    from geotag.engine.sessions import check_fuse_options  # no torch: --model none stays light

    check_fuse_options(cfg.fuse, cfg.session_gap, cfg.group_by, cfg.model, resume=cfg.resume)
    if engine == "ray":
        from geotag.engine.ray_predict import run_ray_predict

        summary = run_ray_predict(cfg)
    elif model == "none":
        from geotag.engine.time_only import run_time_only  # imports no torch

        summary = run_time_only(cfg)
    else:
        from geotag.engine.predict import run_predict

        summary = run_predict(cfg)
    _say_truth(summary.truth)
    _say_not_read(summary.not_read)
    if summary.restarted:
        err.print("note: an unfinished earlier run was discarded (pass --resume to continue one)")
    if summary.resumed:
        changed = summary.changed or 0
        said = f"resumed: {summary.skipped} already done, {summary.new - changed} new"
        if summary.changed is not None:
            said += f", {summary.changed} changed"
        if summary.deleted is not None:
            said += f", {summary.deleted} deleted"
        say(said)
    for line in summary.clocks or ():
        say(line)
    if summary.sources is not None:
        say(_placed_line(summary.sources))
    if summary.fused is not None:
        say(f"fused {summary.fused[0]} photo(s) in {summary.fused[1]} session(s) (--fuse {fuse})")
    say(
        f"predicted {summary.new} file(s) on {summary.device}; {summary.total} rows, "
        f"{summary.failed} failed{_folders_note(summary.unreadable_folders)}"
        + (f", {summary.measured} kept their measured GPS" if summary.measured is not None else "")
        + f" -> {out_path}"
    )
    raise typer.Exit(1 if summary.failed or summary.unreadable_folders else 0)


def _placed_line(sources: dict[str, int]) -> str:
    """How this run's rows got their position (time evidence runs)."""
    line = (
        f"placed {sources.get('track', 0)} by track, {sources.get('sibling', 0)} by sibling, "
        f"{sources.get('model', 0)} by the model; {sources.get('left', 0)} left without a position"
    )
    if sources.get("fused"):
        line += f"; {sources['fused']} by the model fused with their session"
    if sources.get("exif"):
        line += f"; {sources['exif']} kept their own GPS"
    return line


models_app = Typer(
    rich_markup_mode=None, help="Registered models and backbones, and where their weights come from."
)
app.add_typer(models_app, name="models")


@models_app.callback(invoke_without_command=True)
def _models(ctx: typer.Context) -> None:
    """`geotag models` alone lists them, as `geotag models list` does."""
    if ctx.invoked_subcommand is None:
        models_list()


@models_app.command("list")
def models_list(
    fmt: Annotated[str, typer.Option("--format", "-f", help="table | json")] = "table",
) -> None:
    """Every model and backbone: where its weights come from, whether this machine has them, their size."""
    import json

    from rich.table import Table

    from geotag.models.catalog import weight_sources
    from geotag.models.registry import MODELS

    rows = weight_sources()
    if fmt == "json":
        out.file.write(json.dumps([r.to_dict() for r in rows], indent=2) + "\n")
        return
    if fmt != "table":
        raise fail(f"--format {fmt}: choose table or json")
    models_table = Table("model", "what it is", "paper", box=None, title="models (predict --model)")
    for name in sorted(MODELS):
        models_table.add_row(name, MODELS[name].description, MODELS[name].paper)
    weights = Table("name", "kind", "part", "source", "here", "size", "location", box=None, title="weights")
    for r in rows:
        here = "-" if r.present is None else "yes" if r.present else "no"
        size = "" if r.size_bytes is None else f"{r.size_bytes / 1e6:,.1f} MB"
        weights.add_row(r.name, r.kind, r.part, r.source, here, size, r.location)
    for table in (models_table, weights):
        _print_unsqueezed(table)


def _print_unsqueezed(table: object) -> None:
    """On a terminal, as rich fits it; into a pipe or file at its natural width (never cut to 80)."""
    import io

    from rich.measure import Measurement

    if out.is_terminal:
        out.print(table)
        return
    width = Measurement.get(out, out.options.update(width=10_000), table).maximum
    wide = Console(file=io.StringIO(), width=width, color_system=None)
    wide.print(table)
    out.file.write(wide.file.getvalue())


gallery_app = Typer(
    rich_markup_mode=None, help="Embedding galleries of geotagged photos for `predict --model knn`."
)
app.add_typer(gallery_app, name="gallery")


@gallery_app.command("build")
def gallery_build(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Geotagged photos / folders, or one manifest CSV (path, lat, lon)."),
    ] = None,
    out_path: Annotated[
        Path | None, typer.Option("--out", "-o", help="Gallery Parquet file to write.")
    ] = None,
    truth: Annotated[
        Path | None,
        typer.Option(help="Positions from a manifest, read as scan, predict and eval read it."),
    ] = None,
    backbone: Annotated[
        str, typer.Option(help="Backbone (see `geotag models list`).")
    ] = "efficientnet_lite0.imagenet",
    backbone_weights: BackboneWeights = None,
    device: Device = "auto",
    batch_size: BatchSize = None,
    workers: Workers = None,
    include: Include = None,
    exclude: Exclude = None,
    ext: Ext = None,
    embeddings: Annotated[
        Path | None, typer.Option(help="Build from a `geotag embed` cache instead of photos (no decoding).")
    ] = None,
    progress: Progress = True,
    log_every: LogEvery = None,
) -> None:
    """Embed photos that have a position (EXIF GPS or the manifest's) into a kNN gallery file."""
    from geotag.config import GalleryConfig
    from geotag.engine.gallery import gallery_from_cache, run_gallery_build

    if (embeddings is None) == (not paths) or out_path is None:
        raise fail("give photos / a manifest or --embeddings CACHE (not both), and --out FILE")
    if embeddings is not None:
        s = gallery_from_cache(embeddings, out_path)
        say(
            f"wrote {s.embedded} embedding(s) of {s.backbone} ({s.feature_dim}-d) from {embeddings} "
            f"-> {out_path}"
        )
        raise typer.Exit(0)
    assert paths is not None
    cfg = GalleryConfig(
        paths=paths,
        out=out_path,
        include=tuple(include or ()),
        exclude=tuple(exclude or ()),
        ext=ext,
        truth=truth,
        backbone=backbone,
        backbone_weights=backbone_weights,
        device=device,
        batch_size=batch_size,
        workers=workers,
        progress=progress,
    )
    s = run_gallery_build(cfg)
    _say_truth(s.truth)
    say(
        f"embedded {s.embedded} photo(s) with {s.backbone} ({s.feature_dim}-d) on {s.device}; skipped "
        f"{s.no_gps} without a position, {s.failed} unreadable -> {out_path}"
    )
    raise typer.Exit(1 if s.failed else 0)


@app.command("write-exif")
def write_exif(
    predictions: Annotated[
        Path | None,
        typer.Argument(help="Predictions file or Ray output folder (`geotag predict`).", show_default=False),
    ] = None,
    min_confidence: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="Write only predictions at least this confident.")
    ] = None,
    overwrite_gps: Annotated[
        bool, typer.Option("--overwrite-gps", help="Also replace GPS a photo already has (measured GPS!).")
    ] = False,
    sidecar: Annotated[
        bool, typer.Option("--sidecar", help="Write XMP sidecars; leave the photos untouched.")
    ] = False,
    sidecar_name: Annotated[
        str, typer.Option(help="photo.jpg.xmp (darktable, digiKam) or photo.xmp (Lightroom).")
    ] = "photo.jpg.xmp",
    raw_in_file: Annotated[
        bool,
        typer.Option(
            "--raw-in-file", help="Camera RAW files: write into the file itself (exiftool), not a sidecar."
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would change; change nothing.")
    ] = False,
    backup: Annotated[
        bool, typer.Option("--backup/--no-backup", help="Keep the old bytes so --undo can restore them.")
    ] = True,
    journal: Annotated[
        Path | None, typer.Option(help="Journal file (default: beside PREDICTIONS, named by the time).")
    ] = None,
    undo: Annotated[
        Path | None, typer.Option(help="Restore every file a journal records, then exit.", show_default=False)
    ] = None,
    writer: Annotated[
        str, typer.Option(help="auto (exiftool if found) | exiftool | python (JPEG and WebP only).")
    ] = "auto",
    progress: Progress = True,
    log_every: LogEvery = None,
    decisions: Annotated[
        Path | None,
        typer.Option(help="Decisions from `geotag review`: write only the accepted photos, where chosen."),
    ] = None,
) -> None:
    """Write predicted GPS into photos (or XMP sidecars), marked as estimated; journalled and undoable."""
    from geotag.engine.write_exif import FileResult, WriteOptions, run_undo, run_write_exif

    if undo is not None:
        if predictions is not None:
            raise fail("give either PREDICTIONS or --undo JOURNAL, not both")
        undone = run_undo(undo, report=lambda p, a, r: a == "failed" and say(f"failed: {p}: {r}"))
        say(undone.describe())
        raise typer.Exit(1 if undone.failed else 0)
    if predictions is None:
        raise fail("give a predictions file (or --undo JOURNAL)")
    opts = WriteOptions(
        predictions=predictions,
        min_confidence=min_confidence,
        overwrite_gps=overwrite_gps,
        sidecar=sidecar,
        sidecar_name=sidecar_name,
        raw_in_file=raw_in_file,
        dry_run=dry_run,
        backup=backup,
        journal=journal,
        writer=writer,
        progress=progress,
        decisions=decisions,
    )

    def report(result: FileResult) -> None:  # the dry-run list on stdout, failures on stderr
        if result.action in ("would write", "failed"):
            say(result.describe(dry_run), out if result.action == "would write" else err)

    summary = run_write_exif(opts, report=report)
    say(summary.describe(dry_run))
    if summary.journal is not None:
        say(f"journal: {summary.journal} (undo: geotag write-exif --undo {summary.journal})")
    raise typer.Exit(1 if summary.failed else 0)


@app.command("embed-locations")
def embed_locations_cmd(
    coords: Annotated[Path, typer.Argument(help="CSV or Parquet with lat, lon (or latitude, longitude).")],
    out_path: Annotated[Path, typer.Option("--out", "-o", help="Output file: .parquet or .csv.")],
    normalize: Annotated[bool, typer.Option(help="L2-normalise each embedding.")] = False,
) -> None:
    """Write GeoCLIP's GPS-encoder embedding (512-d, released weights) of every coordinate."""
    from geotag.engine.locations import embed_locations_file

    s = embed_locations_file(coords, out_path, normalize=normalize)
    say(f"embedded {s.embedded} of {s.rows} row(s) ({s.dim}-d) -> {out_path}")


@app.command("query")
def query_cmd(
    texts: Annotated[list[str], typer.Argument(help='Query texts, e.g. "a beach with palm trees".')],
    out_path: Annotated[Path, typer.Option("--out", "-o", help="Top places: .parquet or .csv.")],
    text_model: Annotated[
        str, typer.Option(help="CLIP text tower: HF hub id or local HF CLIP folder.")
    ] = "openai/clip-vit-large-patch14",
    gallery: Annotated[Path | None, typer.Option(help="GPS gallery CSV / Parquet [geoclip's 100K].")] = None,
    grid: Annotated[float | None, typer.Option(help="Score a lat/lon grid of this step (degrees).")] = None,
    top_k: Annotated[int, typer.Option(min=1, help="Places per query.")] = 20,
    heatmap: Annotated[Path | None, typer.Option(help="Also write a heat map PNG.")] = None,
    map_html: Annotated[
        Path | None, typer.Option("--map", help="Also write the top places on an offline interactive map.")
    ] = None,
    filter_preds: Annotated[
        Path | None,
        typer.Option(help="Predictions (file or Ray folder): reweight each row's top-k by the text instead."),
    ] = None,
) -> None:
    """Where does a text fit? GeoCLIP's heads over CLIP's text tower, scored on a gallery or a grid."""
    from geotag.engine.query import filter_predictions, run_query

    if filter_preds is not None:
        if len(texts) != 1:
            raise fail("--filter-preds takes exactly one query text")
        f = filter_predictions(filter_preds, texts[0], out_path, text_model=text_model)
        say(f"reweighted {f.rescored} of {f.rows} prediction(s) -> {out_path}")
        if f.bad_candidates or f.cut_rows:
            say(
                f"warning: {f.bad_candidates} NaN, infinite or out-of-range candidate(s) left out; "
                f"{f.cut_rows} row(s) with more than 1000 candidates cut to their first 1000"
            )
        return

    s = run_query(
        texts,
        out_path,
        text_model=text_model,
        gallery=gallery,
        grid_deg=grid,
        top_k=top_k,
        heatmap=heatmap,
        map_html=map_html,
    )
    say(f"{s.queries} query text(s) over {s.points} points with {s.text_model}: {s.rows} rows -> {out_path}")


cells_app = Typer(
    rich_markup_mode=None, help="Hierarchical S2 geocells for cell classifiers.", no_args_is_help=True
)
app.add_typer(cells_app, name="cells")


@cells_app.command("build")
def cells_build(
    manifest: Annotated[Path, typer.Argument(help="CSV or Parquet with lat, lon (or latitude, longitude).")],
    out_path: Annotated[Path, typer.Option("--out", "-o", help="Cells Parquet file to write.")],
    names: Annotated[str | None, typer.Option(help="Partition names, coarse to fine.")] = None,
    tau_max: Annotated[
        str | None,
        typer.Option(help="Split cells holding more coordinates, per partition (default 5000,2000,1000)."),
    ] = None,
    tau_min: Annotated[
        str | None,
        typer.Option(help="Drop cells holding this many or fewer: one, or one per partition (default 50)."),
    ] = None,
    scale: Annotated[
        str,
        typer.Option(help="none | auto (shrink by sqrt(n / MP-16 size)) | a factor; the result is printed."),
    ] = "none",
) -> None:
    """Build adaptive S2 partitions as GeoEstimation does (level-2 start, drop cells holding tau_min or
    fewer, split above tau_max) from training coordinates."""
    from geotag.geo.cells import build_cells_file, parse_specs

    specs, _ = parse_specs(names, tau_max, tau_min)
    summary = build_cells_file(manifest, out_path, specs, scale=scale)
    if scale != "none":
        say(f"thresholds scaled ({scale}) to {summary.used} coordinates:")
    for name, lo, hi, cells, covered in summary.partitions:
        say(f"{name}: {cells} cells (tau_min {lo}, tau_max {hi}), {covered} coordinates inside")
    say(f"{summary.used} of {summary.rows} manifest rows had coordinates -> {out_path}")


@cells_app.command("import")
def cells_import(
    files: Annotated[list[Path], typer.Argument(help="GeoEstimation's cells_50_5000.csv, ... (any order).")],
    out_path: Annotated[Path, typer.Option("--out", "-o", help="Cells Parquet file to write.")],
    names: Annotated[
        str | None, typer.Option(help="Partition names, coarse to fine [coarse,middle,fine].")
    ] = None,
) -> None:
    """Import GeoEstimation's published partitions, keeping their class order."""
    from geotag.geo.cells_import import import_geoestimation
    from geotag.io.parquet import check_output_path

    check_output_path(out_path)
    cells = import_geoestimation(files, [n.strip() for n in names.split(",")] if names else None)
    cells.save(out_path)
    for part in cells.partitions:
        say(f"{part.name}: {len(part)} cells (tau_min {part.spec.tau_min}, tau_max {part.spec.tau_max})")
    say(f"{cells.n_input} training images in the files' header -> {out_path}")


def _say_not_read(counts: Any) -> None:
    """ "skipped 5 files geotag does not read: .mov 3, .xyz 2" (scan, predict): nothing passes in silence."""
    from geotag.io.scan import describe_skipped

    if (line := describe_skipped(counts)) is not None:
        say(line)


def _say_truth(report: object | None) -> None:
    """The --truth summary line of scan / predict (and the manifest's notes) on stderr."""
    if report is None:
        return
    from geotag.io.truth import TruthReport, describe

    assert isinstance(report, TruthReport)
    for line in [describe(report), *(f"note: {n}" for n in report.notes)]:
        say(line)


@app.command()
def benchmark(
    name: Annotated[str, typer.Argument(help="Test set: im2gps, im2gps3k, yfcc4k, yfcc26k, osv5m-test, ...")],
    folder: Annotated[Path, typer.Argument(help="Folder holding the test set's images.")],
    truth: Annotated[
        Path | None,
        typer.Option(help="The set's manifest (default: its usual file in FOLDER or its parent)."),
    ] = None,
    out_path: Annotated[
        Path | None, typer.Option("--out", "-o", help="Predictions file (default: benchmark-NAME.parquet).")
    ] = None,
    model: ModelName = "geoclip",
    device: Device = "auto",
    batch_size: BatchSize = None,
    workers: Workers = None,
    backbone_weights: BackboneWeights = None,
    weights: Weights = None,
    gallery: Gallery = None,
    untrained_backbone: UntrainedBackbone = False,
    exclude_same: Annotated[
        str | None,
        typer.Option(
            help="knn-loo: leave out every photo sharing this manifest column (default: its author column)."
        ),
    ] = None,
    allow_mismatch: Annotated[
        bool, typer.Option(help="Run even when the folder does not match the set (its images only).")
    ] = False,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table | markdown | json")] = "table",
    progress: Progress = True,
    log_every: LogEvery = None,
    siblings: Annotated[
        bool, typer.Option("--siblings", help="Refused: a test set's GPS-tagged photos are its ground truth.")
    ] = False,
    siblings_dir: Annotated[
        list[Path] | None, typer.Option(metavar="DIR", help="Refused, as --siblings.")
    ] = None,
    fuse: Annotated[
        str,
        typer.Option(metavar="none", help="Refused: published figures are single-image; use predict + eval."),
    ] = "none",
) -> None:
    """Check a test-set folder against its description, then predict, score and compare with the papers."""
    from geotag.config import PredictConfig
    from geotag.engine.benchmark import REFUSE_FUSE, REFUSE_SIBLINGS, check_folder, run_benchmark
    from geotag.eval.benchmark_report import FORMATS, render_benchmark

    if siblings or siblings_dir:  # accepted only to say why not: a test set's tagged photos are its truth
        raise fail(REFUSE_SIBLINGS)
    if fuse.strip().lower() != "none":
        raise fail(REFUSE_FUSE)

    if fmt.strip().lower() not in (*FORMATS, "md"):
        raise fail(f"--format {fmt}: unknown format; choose one of {', '.join(FORMATS)}")
    check = check_folder(name, folder, truth)  # no model is built before this passes
    for line in check.report_lines():
        say(line)
    if not check.ok and not allow_mismatch:
        raise fail(f"{check.summary()}; no model was run (fix the folder, or pass --allow-mismatch)")
    cfg = PredictConfig(
        paths=[folder],
        out=out_path or Path(f"benchmark-{check.test_set.name}.parquet"),
        model=model,
        device=device,
        batch_size=batch_size,
        workers=workers,
        backbone_weights=backbone_weights,
        weights=weights,
        gallery=gallery,
        allow_untrained=untrained_backbone,
        exclude_same=exclude_same,
        progress=progress,
        extra_metadata={"benchmark": check.test_set.name},
    )
    result = run_benchmark(check, cfg)
    render_benchmark(result, fmt, out)
    raise typer.Exit(1 if result.predict.failed else 0)


@app.command()
def train(
    out_path: Annotated[Path, typer.Option("--out", "-o", help="Run folder: checkpoints, metrics.csv.")],
    data: Annotated[
        list[Path] | None,
        typer.Option("--data", help="Manifest (CSV / Parquet: path, lat, lon) or folder of tagged photos."),
    ] = None,
    model: Annotated[
        str, typer.Option(help="geoclip | geoclip-lite | translocator | geodecoder | experts.")
    ] = "geoclip",
    val: Annotated[
        Path | None, typer.Option(help="Validation manifest or folder (default: a seeded split of --data).")
    ] = None,
    val_fraction: Annotated[float, typer.Option(min=0.0, max=0.99, help="Held out by id hash.")] = 0.05,
    image_root: ImageRoot = None,
    epochs: Annotated[int, typer.Option(min=1)] = 10,
    max_steps: Annotated[int | None, typer.Option(min=1, help="Stop after this many steps.")] = None,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Images per micro-batch [32; 512 with --from-scratch].")
    ] = None,
    accum: Annotated[int, typer.Option(min=1, help="Micro-batches per optimizer step.")] = 1,
    lr: Annotated[float, typer.Option(min=0.0, help="Peak learning rate.")] = 3e-5,
    optimizer: Annotated[
        str | None, typer.Option(help="adamw | adam [adamw; adam with --from-scratch].")
    ] = None,
    schedule: Annotated[
        str | None,
        typer.Option(help="cosine | step (x --lr-gamma per epoch) [cosine; step with --from-scratch]."),
    ] = None,
    lr_gamma: Annotated[float, typer.Option(help="Step schedule: LR factor per epoch.")] = 0.87,
    weight_decay: Annotated[float, typer.Option(min=0.0)] = 1e-6,
    warmup_steps: Annotated[int, typer.Option(min=0, help="Linear warm-up, then cosine.")] = 0,
    clip_grad: Annotated[
        float | None, typer.Option(min=0.0, help="Max gradient norm, 0: off [1; off with --from-scratch].")
    ] = None,
    freeze_backbone: Annotated[
        bool | None,
        typer.Option(
            "--freeze-backbone/--full",
            help="Frozen backbone, or full fine-tuning (default: the model's paper; docs/training.md).",
        ),
    ] = None,
    layer_decay: Annotated[
        float, typer.Option(min=0.01, max=1.0, help="Layer-wise LR decay over backbone blocks (1: off).")
    ] = 1.0,
    augment: Annotated[bool, typer.Option(help="Seeded random resized crops.")] = True,
    save_every: Annotated[int, typer.Option(min=0, help="Also checkpoint every N steps (0: off).")] = 0,
    keep: Annotated[int, typer.Option(min=0, help="Newest checkpoints kept (0: all).")] = 3,
    resume: Annotated[bool, typer.Option(help="Continue from the newest checkpoint in --out.")] = False,
    device: Device = "auto",
    workers: Workers = None,
    seed: Annotated[int, typer.Option(help="Seeds the split, the data order and the initialisation.")] = 0,
    amp: Amp = True,
    backbone_weights: BackboneWeights = None,
    untrained_backbone: Annotated[
        bool, typer.Option(help="Start from a random backbone when no weights can be had.")
    ] = False,
    gallery: Annotated[
        Path | None, typer.Option(help="GeoCLIP: validation gallery (default: the training coordinates).")
    ] = None,
    train_gps_encoder: Annotated[bool, typer.Option(help="GeoCLIP: also train the GPS encoder.")] = False,
    queue_size: Annotated[int, typer.Option(min=0, help="GeoCLIP: GPS queue length.")] = 4096,
    from_scratch: Annotated[
        bool, typer.Option(help="GeoCLIP: random GPS encoder + image MLP, the paper's recipe as defaults.")
    ] = False,
    allow_mismatched_heads: Annotated[
        bool, typer.Option(help="GeoCLIP: fine-tune the released heads on another backbone anyway.")
    ] = False,
    gps_sigmas: Annotated[
        str | None, typer.Option(help='GeoCLIP --from-scratch: GPS RFF sigmas, e.g. "1,16,256,4096".')
    ] = None,
    train_fraction: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Train on a seeded fraction of the training split.")
    ] = 1.0,
    variant: Annotated[
        str | None,
        typer.Option(
            help="TransLocator: ablation row (vit, vit+seg, vit+seg+mff, vit+seg+mff+scene); GeoDecoder: "
            "encoder; experts: expert backbone. Default: each model's paper setting."
        ),
    ] = None,
    cells: Annotated[Path | None, typer.Option(help="Cell models: a `geotag cells build` file.")] = None,
    label_smoothing_km: Annotated[
        float | None, typer.Option(min=0.1, help="Cell models: PIGEON haversine label smoothing tau (km).")
    ] = None,
    val_every: Annotated[int, typer.Option(min=0, help="Also validate every N steps (0: per epoch).")] = 0,
    best_metric: Annotated[
        str | None, typer.Option(help="Keep OUT/best/ by this validation metric, e.g. acc_25km.")
    ] = None,
    log_to: Annotated[str, typer.Option(help="tensorboard,wandb,mlflow or none.")] = "tensorboard",
    grad_checkpointing: Annotated[bool, typer.Option(help="Recompute activations (memory).")] = False,
    compile_model: Annotated[bool, typer.Option("--compile", help="torch.compile the backbone.")] = False,
    gpu_decode: Annotated[
        bool, typer.Option(help="CUDA: decode the JPEGs of each batch with nvJPEG (docs/training.md).")
    ] = False,
    stream: Annotated[
        bool, typer.Option(help="Shards: each process and worker reads its own shards (webdataset order).")
    ] = False,
    shuffle_buffer: Annotated[int, typer.Option(min=0, help="--stream: shuffle buffer (samples).")] = 2000,
    cells_scale: Annotated[
        str,
        typer.Option(
            help="Cell models built from the data: none (GeoEstimation's thresholds), auto (scaled by "
            "sqrt(n / MP-16 size)) or a factor."
        ),
    ] = "none",
    fusion: Annotated[
        str | None,
        typer.Option(help="TransLocator: sum (the paper, default) or mean of the two [CLS] tokens."),
    ] = None,
    seg_dir: Annotated[
        Path | None,
        typer.Option(
            help="TransLocator seg rows: precomputed maps (`geotag segment`), cropped like each image."
        ),
    ] = None,
    segmenter: Annotated[
        str | None, typer.Option(help="TransLocator seg rows: segmentation model, HF hub id or local folder.")
    ] = None,
    embeddings: Annotated[
        Path | None,
        typer.Option(help="Train the heads on a `geotag embed` cache (frozen backbone; --val: a cache too)."),
    ] = None,
    progress: Progress = True,
    log_every: LogEvery = None,
    engine: Engine = "local",
    address: RayAddress = None,
    gpus: Annotated[
        int | None, typer.Option(min=0, help="ray: training workers, one GPU each (default: every GPU).")
    ] = None,
    actors: Annotated[
        int | None, typer.Option(min=1, help="ray: CPU workers when no GPU (default 1).")
    ] = None,
) -> None:
    """Train or fine-tune a model on a manifest or on your own GPS-tagged photos (docs/training.md)."""
    from geotag.config import TrainConfig, train_default
    from geotag.engine.train import RichMonitor, run_train

    def pick(value: object, name: str) -> object:
        return train_default(name, from_scratch) if value is None else value

    cfg = TrainConfig(
        data=data or [],
        out=out_path,
        model=model,
        val=val,
        val_fraction=val_fraction,
        image_root=image_root,
        epochs=epochs,
        max_steps=max_steps,
        batch_size=pick(batch_size, "batch_size"),  # type: ignore[arg-type]
        accum=accum,
        lr=lr,
        optimizer=pick(optimizer, "optimizer"),  # type: ignore[arg-type]
        schedule=pick(schedule, "schedule"),  # type: ignore[arg-type]
        lr_gamma=lr_gamma,
        weight_decay=weight_decay,
        warmup_steps=warmup_steps,
        clip_grad=pick(clip_grad, "clip_grad") or None,  # type: ignore[arg-type]
        freeze_backbone=freeze_backbone,
        layer_decay=layer_decay,
        augment=augment,
        save_every=save_every,
        keep=keep,
        resume=resume,
        device=device,
        workers=workers,
        seed=seed,
        amp=amp,
        backbone_weights=backbone_weights,
        allow_untrained=untrained_backbone,
        gallery=gallery,
        train_gps_encoder=train_gps_encoder,
        queue_size=queue_size,
        from_scratch=from_scratch,
        allow_mismatched_heads=allow_mismatched_heads,
        train_fraction=train_fraction,
        gps_sigmas=gps_sigmas,
        variant=variant,
        cells=cells,
        label_smoothing_km=label_smoothing_km,
        val_every=val_every,
        best_metric=best_metric,
        log_to=tuple(x.strip() for x in log_to.split(",") if x.strip()),
        grad_checkpointing=grad_checkpointing,
        compile=compile_model,
        gpu_decode=gpu_decode,
        stream=stream,
        shuffle_buffer=shuffle_buffer,
        cells_scale=cells_scale,
        fusion=fusion,
        seg_dir=seg_dir,
        segmenter=segmenter,
        embeddings=embeddings,
    )
    if engine not in ("local", "ray"):
        raise fail(f"--engine {engine}: choose local or ray")
    if engine == "ray":
        from geotag.engine.ray_train import run_ray_train

        summary = run_ray_train(cfg, address=address, gpus=gpus, actors=actors)
    else:
        summary = run_train(cfg, monitor=RichMonitor(err, enabled=progress))
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun rank 0 alone reports
    for note in summary.notes:
        say(f"note: {note}")
    say(
        f"trained {summary.steps} step(s) on {summary.device}"
        + (f" (resumed from {summary.resumed_from.name})" if summary.resumed_from else "")
        + f" -> {summary.checkpoint} (use: geotag predict PHOTOS --out PREDS {summary.predict_args})"
    )
    if summary.unreadable:  # skipped rows: counted, and the run exits 1 (as predict does for failed files)
        say(
            f"{summary.unreadable} image(s) could not be read and were skipped, "
            f"e.g. {summary.unreadable_example}"
        )
    raise typer.Exit(1 if summary.unreadable else 0)


@app.command()
def shards(
    data: Annotated[list[Path], typer.Argument(help="Manifests (CSV / Parquet) or tagged photo folders.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for NNNNN.tar shards (new or empty).")],
    shard_size: Annotated[int, typer.Option(min=1, max=10_000, help="Samples per shard.")] = 10_000,
    image_root: Annotated[Path | None, typer.Option(help="Base folder of relative manifest paths.")] = None,
) -> None:
    """Pack training data into WebDataset tar shards (img2dataset layout) for `geotag train --data`."""
    from geotag.engine.shards import pack

    s = pack(data, out_dir, shard_size, image_root)
    written = s.shards
    pattern = f"{out_dir}/{{00000..{len(written) - 1:05d}}}.tar" if written else str(out_dir)
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(s.skipped.items()))
    say(f"wrote {len(written)} shard(s) of {s.packed} photo(s): use --data '{pattern}'")
    if skipped:
        say(f"not packed: {skipped} (regular image files of at most 256 MiB only)")
    raise typer.Exit(1 if s.skipped else 0)


@app.command()
def embed(
    data: Annotated[
        list[Path], typer.Argument(help="What `train --data` takes: folders, manifests, shards.")
    ],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Cache folder (new, or an unfinished cache).")],
    backbone: Annotated[
        str, typer.Option(help="A `geotag models list` backbone, or geoclip / geoclip-lite / translocator.")
    ] = "efficientnet_lite0.imagenet",
    backbone_weights: BackboneWeights = None,
    untrained_backbone: UntrainedBackbone = False,
    shard_size: Annotated[int, typer.Option(min=1, help="Rows per part-NNNNN.parquet file.")] = 10_000,
    dtype: Annotated[str, typer.Option(help="float16 | float32.")] = "float16",
    image_root: ImageRoot = None,
    device: Device = "auto",
    batch_size: BatchSize = None,
    workers: Workers = None,
    amp: Amp = True,
    progress: Progress = True,
    log_every: LogEvery = None,
) -> None:
    """Cache a frozen backbone's features of training data for `train --embeddings` (resumable)."""
    from geotag.config import EmbedConfig
    from geotag.engine.embed import run_embed

    cfg = EmbedConfig(
        data=data,
        out=out_dir,
        backbone=backbone,
        backbone_weights=backbone_weights,
        allow_untrained=untrained_backbone,
        shard_size=shard_size,
        dtype=dtype,
        image_root=image_root,
        device=device,
        batch_size=batch_size,
        workers=workers,
        amp=amp,
        progress=progress and sys.stderr.isatty(),
    )
    s = run_embed(cfg)
    kept = f" ({s.parts_kept} part(s) kept from an earlier run)" if s.parts_kept else ""
    say(
        f"embedded {s.embedded} sample(s) with {s.backbone} ({s.feature_dim}-d) on {s.device} in "
        f"{s.seconds:.1f} s; {s.failed} unreadable{kept} -> {out_dir}"
    )
    raise typer.Exit(1 if s.failed else 0)


@app.command()
def segment(
    paths: Annotated[list[Path], typer.Argument(help="Photos or folders (walked recursively).")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Maps folder: one STEM.png per photo.")],
    segmenter: Annotated[
        str | None, typer.Option(help="ADE20K SegFormer: HF hub id or local folder (default SegFormer-B0).")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Photos per forward pass.")] = 16,
    device: Device = "auto",
    include: Include = None,
    exclude: Exclude = None,
    ext: Ext = None,
    progress: Progress = True,
    log_every: LogEvery = None,
) -> None:
    """Precompute segmentation maps of whole photos for `train` / `predict --seg-dir` (resumable)."""
    from geotag.engine.segment import load_provider, run_segment
    from geotag.io.scan import PathFilter
    from geotag.progress import progress_bar

    only = PathFilter.from_options(include, exclude, ext)  # a bad --ext fails before the model loads
    provider = load_provider(segmenter, device)
    with progress_bar(None, "segment", enabled=progress) as bar:
        s = run_segment(paths, out_dir, provider, batch_size=batch_size, on_progress=bar.update, only=only)
    for path, why in s.errors:
        say(f"error: {path}: {why}")
    say(f"{s.written} map(s) written, {s.kept} already there, {len(s.errors)} error(s) -> {out_dir}")
    raise typer.Exit(1 if s.errors else 0)


@app.command("label-scenes")
def label_scenes(
    paths: Annotated[list[Path], typer.Argument(help="Photos or folders (walked recursively).")],
    out_path: Annotated[Path, typer.Option("--out", "-o", help="Scenes table to write: .csv or .parquet.")],
    classifier: Annotated[
        str | None,
        typer.Option(
            help="Places365 ResNet: HF hub repo id or local .pth.tar / .safetensors (default CSAIL's)."
        ),
    ] = None,
    device: Device = "auto",
    batch_size: BatchSize = None,
    workers: Workers = None,
    resume: Annotated[bool, typer.Option(help="Keep the rows an earlier run wrote; label the rest.")] = False,
    truth: Truth = None,
    progress: Progress = True,
    log_every: LogEvery = None,
) -> None:
    """Label scenes (S3 indoor/natural/urban, S16, S365) with a Places365 CNN for `train` (resumable)."""
    from geotag.engine.label_scenes import run_label_scenes
    from geotag.engine.predict import resolve_device
    from geotag.io.truth import load_truth

    dev = resolve_device(device)
    manifest = load_truth(truth) if truth is not None else None
    s = run_label_scenes(
        paths,
        out_path,
        classifier,
        device=dev,
        batch_size=batch_size,
        workers=workers,
        resume=resume,
        progress=progress and sys.stderr.isatty(),
        truth=manifest,
    )
    _say_truth(s.truth)
    for path, why in s.errors[:20]:
        say(f"error: {path}: {why}")
    more = f" (first 20 shown; status = error rows in {out_path})" if len(s.errors) > 20 else ""
    say(
        f"labelled {s.labelled} photo(s) with {s.classifier} on {s.device}, {s.kept} kept from an earlier "
        f"run, {len(s.errors)} error(s){more} -> {out_path} ({s.rows} rows)"
    )
    raise typer.Exit(1 if s.errors else 0)


@app.command()
def report(
    files: Annotated[
        list[Path], typer.Argument(help="Predictions files or Ray output folders (part-*.parquet).")
    ],
    out_dir: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for index.html, figures/ and thumbs/ (created).")
    ],
    thresholds: Annotated[
        str, typer.Option(help="Comma-separated distance thresholds in km.")
    ] = "1,25,200,750,2500",
    truth: Annotated[
        Path | None,
        typer.Option(help="Re-join ground truth from a manifest by file name (manifest wins over EXIF)."),
    ] = None,
    worst: Annotated[int, typer.Option(min=1, max=500, help="Worst errors listed per file.")] = 12,
    include_self: IncludeSelf = False,
    columns: ForeignColumns = None,
    tiles: Annotated[str | None, typer.Option(help=TILES_HELP)] = None,
) -> None:
    """An HTML report that opens offline: maps, error curve, calibration, by country / scene, worst errors."""
    from geotag.eval.basemap import parse_tiles
    from geotag.eval.html_report import build_report
    from geotag.eval.metrics import parse_thresholds

    s = build_report(
        files,
        out_dir,
        parse_thresholds(thresholds),
        truth=truth,
        worst=worst,
        include_self=include_self,
        columns=columns,
        tiles=parse_tiles(tiles),
    )
    for note in s.notes:
        say_labelled("warning:", "bold yellow", note)
    say(
        f"report of {s.rows:,} row(s) in {s.seconds:.1f} s: {len(s.figures)} figure(s), {s.thumbnails} "
        f"thumbnail(s), {s.missing_photos} photo(s) not found -> {s.index}"
    )


@app.command("review")
def review_cmd(
    predictions: Annotated[
        Path, typer.Argument(help="Predictions file or Ray output folder (`geotag predict`).")
    ],
    decisions: Annotated[
        Path | None,
        typer.Option(help="Decisions file (default: PREDICTIONS stem + .decisions.jsonl beside it)."),
    ] = None,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (default: a free one).")] = 0,
    no_browser: Annotated[
        bool, typer.Option("--no-browser", help="Print the URL; do not open a browser.")
    ] = False,
    columns: Annotated[
        str | None,
        typer.Option(
            "--columns",
            help="Someone else's predictions file: its columns per role (pred_lat=LAT_pred,path=IMG_ID,...).",
        ),
    ] = None,
    tiles: Annotated[str | None, typer.Option(help=TILES_HELP)] = None,
) -> None:
    """Look through predictions in a local web app and accept, move or reject each; nothing is written."""
    from geotag.eval.basemap import parse_tiles
    from geotag.review.app import make_server, serve

    server = make_server(predictions, decisions, port, columns, parse_tiles(tiles))
    serve(server, not no_browser, say)


@app.command("export")
def export_cmd(
    predictions: Annotated[Path, typer.Argument(help="Predictions file or Ray output folder.")],
    out_path: Annotated[Path, typer.Option("--out", "-o", help="File to write: .geojson .gpkg .csv .kml")],
    fmt: Annotated[
        str | None, typer.Option("--format", "-f", help="geojson | gpkg | csv | kml (default: from --out).")
    ] = None,
    what: Annotated[str, typer.Option(help="pred: the predicted points | gt: the ground truth.")] = "pred",
) -> None:
    """Export points for GIS tools (QGIS, Google Earth, kepler.gl) with confidence and error attributes.

    In CSV, a text cell beginning with = + - @ tab or CR gets a leading ' (no formula injection)."""
    from geotag.io.export import export_points

    s = export_points(predictions, out_path, fmt=fmt, what=what)
    say(
        f"exported {s.written:,} point(s) ({s.what}, {s.fmt}); {s.skipped:,} row(s) without one skipped "
        f"-> {s.out}"
    )
    if s.odd_parts:
        say(f"warning: {s.odd_parts} part file(s) that are not regular files were skipped")


experts_app = Typer(
    rich_markup_mode=None, help="Directed feature experts: feature crops to train on.", no_args_is_help=True
)
app.add_typer(experts_app, name="experts")


@experts_app.command("extract")
def experts_extract(
    paths: Annotated[
        list[Path],
        typer.Argument(help="Geotagged photos / folders, or one manifest (path, lat, lon, country)."),
    ],
    out_path: Annotated[Path, typer.Option("--out", "-o", help="Crops folder: <group>/*.jpg, crops.csv.")],
    segmenter: Annotated[
        str, typer.Option(help="Instance segmenter: Mask2Former hub id or local folder.")
    ] = "facebook/mask2former-swin-large-coco-panoptic",
    label_set: Annotated[str, typer.Option(help="auto | coco-panoptic | ade20k")] = "auto",
    min_score: Annotated[float, typer.Option(min=0.0, max=1.0, help="Keep features scoring at least.")] = 0.5,
    max_crops: Annotated[int, typer.Option(min=1, help="Features per photo, best first.")] = 16,
    image_size: Annotated[int, typer.Option(min=16, help="The segmenter sees this centre square.")] = 512,
    crop_size: Annotated[int, typer.Option(min=8, help="Crops are written at this size.")] = 224,
    image_root: ImageRoot = None,
    device: Device = "auto",
    batch_size: Annotated[int | None, typer.Option(min=1, help="Photos per batch.")] = None,
    workers: Workers = None,
    progress: Progress = True,
    log_every: LogEvery = None,
) -> None:
    """Cut the features of geotagged photos into crops + a manifest with group and country, for
    `geotag train --model experts --data OUT/crops.csv`."""
    from geotag.engine.crops import ExtractConfig, run_extract

    cfg = ExtractConfig(
        paths=paths,
        out=out_path,
        segmenter=segmenter,
        label_set=label_set,
        min_score=min_score,
        max_crops=max_crops,
        image_size=image_size,
        crop_size=crop_size,
        image_root=image_root,
        device=device,
        batch_size=batch_size,
        workers=workers,
        progress=progress,
    )
    s = run_extract(cfg)
    for note in s.notes:
        say(f"note: {note}")
    counts = ", ".join(f"{n} {g}" for g, n in s.crops.items())
    say(
        f"{s.with_crops} of {s.photos} photo(s) gave crops ({counts}) on {s.device}; skipped {s.no_country} "
        f"without a country, {s.failed} unreadable -> {s.manifest}"
    )
    raise typer.Exit(1 if s.failed else 0)


@app.command("eval")
def eval_cmd(
    files: Annotated[
        list[Path], typer.Argument(help="Predictions files or Ray output folders (part-*.parquet).")
    ],
    thresholds: Annotated[
        str, typer.Option(help="Comma-separated distance thresholds in km.")
    ] = "1,25,200,750,2500",
    by: Annotated[
        list[str] | None,
        typer.Option(
            "--by",
            help="Break down by a category column (scene, model, folder, country, source, ...; with --truth "
            "also a manifest column such as author).",
        ),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table | json | csv | markdown")] = "table",
    truth: Annotated[
        Path | None,
        typer.Option(help="Re-join ground truth from a manifest by file name (manifest wins over EXIF)."),
    ] = None,
    plot: Annotated[
        Path | None, typer.Option(help="Also draw the cumulative error curve into this PNG file.")
    ] = None,
    include_self: IncludeSelf = False,
    columns: ForeignColumns = None,
    missing_as_wrong: Annotated[
        bool,
        typer.Option(
            "--missing-as-wrong",
            help="Score a photo with ground truth but no prediction (a manifest row included) as a miss.",
        ),
    ] = False,
) -> None:
    """Score predictions against ground truth with DuckDB: accuracy at thresholds, median error, GeoScore."""
    from geotag.eval.metrics import evaluate, parse_thresholds
    from geotag.eval.report import render

    if plot is not None:  # a bad --plot path fails before any work
        from geotag.eval.html_report import check_figure_path, plot_error_curve

        check_figure_path(plot)
    result = evaluate(
        files,
        parse_thresholds(thresholds),
        by=by or [],
        truth=truth,
        include_self=include_self,
        columns=columns,
        missing_as_wrong=missing_as_wrong,
    )
    render(result, fmt=fmt, console=out)
    for note in result.notes:
        say_labelled("warning:", "bold yellow", note)
    if plot is not None:
        plot_error_curve(files, plot, result.thresholds, truth, include_self, columns)
        say(f"error curve -> {plot}")


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time (not the stream of the first call), so calling
    main() again in one process (tests, notebooks) neither stacks handlers nor writes to a closed one."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        pass


class _ShownFormatter(logging.Formatter):
    """Log lines carry paths and data too: control characters escaped, as say() does."""

    def format(self, record: logging.LogRecord) -> str:
        return shown(super().format(record))


def _setup_logging() -> None:
    """Library warnings (for example an UNTRAINED backbone) reach the user as one plain stderr line."""
    root = logging.getLogger("geotag")
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(_ShownFormatter("%(levelname)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.WARNING)
    root.propagate = False


def main() -> None:
    """Entry point: run the app, turning library errors into one line and an exit code."""
    _setup_logging()
    try:
        app()
    except GeotagError as exc:
        say_labelled("error:", "bold red", exc)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # a bug of ours: still one line for the user, the traceback on request
        if os.environ.get("GEOTAG_DEBUG"):
            raise
        first = (str(exc).strip().splitlines() or [""])[0]
        say_labelled(
            "internal error:",
            "bold red",
            f"{type(exc).__name__}: {first} (please report it; GEOTAG_DEBUG=1 shows the traceback)",
        )
        sys.exit(3)


if __name__ == "__main__":
    main()
