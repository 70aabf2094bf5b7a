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
from typing import Annotated

import typer
from rich.console import Console

from geotag import __version__
from geotag.errors import GeotagError

app = typer.Typer(
    name="geotag",
    help="Geolocate photos in bulk: scan, predict, evaluate, write GPS back.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)
out = Console()


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
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
) -> None:
    """geotag: geolocate photos in bulk."""


@app.command()
def scan(
    paths: Annotated[list[Path], typer.Argument(help="Photo files or folders (walked recursively).")],
    out_path: Annotated[Path, typer.Option("--out", "-o", help="Parquet file to write.")],
    progress: Annotated[bool, typer.Option(help="Show a progress bar (on a terminal).")] = True,
) -> None:
    """Inventory photos with their EXIF ground truth (GPS, time, camera) into a predictions-schema Parquet."""
    from geotag.engine.scan import run_scan

    summary = run_scan(paths, out_path, progress=progress and sys.stderr.isatty())
    err.print(
        f"scanned {summary.total} file(s): {summary.with_gps} with GPS, "
        f"{summary.failed} unreadable -> {out_path}",
        highlight=False,
    )
    raise typer.Exit(1 if summary.failed else 0)


@app.command()
def predict(
    paths: Annotated[list[Path], typer.Argument(help="Photo files or folders (walked recursively).")],
    out_path: Annotated[Path, typer.Option("--out", "-o", help="Parquet file to write.")],
    model: Annotated[str, typer.Option(help="Model name (see `geotag models`).")] = "geoclip",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Images per batch (default: from the device).")
    ] = None,
    top_k: Annotated[int, typer.Option(min=1, help="Candidates kept per photo.")] = 5,
    workers: Annotated[
        int | None, typer.Option(min=0, help="Decoding processes (default: from the cores).")
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Keep what an earlier run wrote and do only the rest.")
    ] = False,
    backbone_weights: Annotated[
        Path | None, typer.Option(help="Local backbone weights: a timm state dict or an HF CLIP folder.")
    ] = None,
    gallery: Annotated[
        Path | None, typer.Option(help="Your own GPS gallery (CSV or Parquet with lat, lon).")
    ] = None,
    untrained_backbone: Annotated[
        bool,
        typer.Option(help="Run with a random backbone when no weights can be had (shows the pipeline only)."),
    ] = False,
    amp: Annotated[bool, typer.Option(help="bf16 autocast on CUDA.")] = True,
    draft: Annotated[bool, typer.Option(help="Fast reduced-scale JPEG decoding.")] = True,
    checkpoint_rows: Annotated[int, typer.Option(min=1, help="Rows per crash-safe part file.")] = 4096,
    progress: Annotated[bool, typer.Option(help="Show a progress bar (on a terminal).")] = True,
) -> None:
    """Predict where each photo was taken; one row per file, broken files included."""
    from geotag.config import PredictConfig
    from geotag.engine.predict import run_predict

    cfg = PredictConfig(
        paths=paths,
        out=out_path,
        model=model,
        device=device,
        batch_size=batch_size,
        top_k=top_k,
        workers=workers,
        resume=resume,
        backbone_weights=backbone_weights,
        gallery=gallery,
        allow_untrained=untrained_backbone,
        amp=amp,
        draft=draft,
        checkpoint_rows=checkpoint_rows,
        progress=progress and sys.stderr.isatty(),
    )
    summary = run_predict(cfg)
    if summary.restarted:
        err.print("note: an unfinished earlier run was discarded (pass --resume to continue one)")
    err.print(
        f"predicted {summary.new} new file(s) on {summary.device}"
        + (f", {summary.skipped} already done" if summary.skipped else "")
        + f"; {summary.total} rows, {summary.failed} failed -> {out_path}",
        highlight=False,
    )
    raise typer.Exit(1 if summary.failed else 0)


@app.command()
def models() -> None:
    """List the models `predict --model` accepts."""
    from rich.table import Table

    from geotag.models.registry import MODELS

    table = Table("name", "model", "paper", box=None)
    for name in sorted(MODELS):
        spec = MODELS[name]
        table.add_row(name, spec.description, spec.paper)
    out.print(table)


@app.command("eval")
def eval_cmd(
    files: Annotated[list[Path], typer.Argument(help="One or more predictions Parquet files.")],
    thresholds: Annotated[
        str, typer.Option(help="Comma-separated distance thresholds in km.")
    ] = "1,25,200,750,2500",
    by: Annotated[
        list[str] | None,
        typer.Option("--by", help="Break down by a column (scene, model, folder, country, ...)."),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table | json | csv | markdown")] = "table",
) -> None:
    """Score predictions against ground truth with DuckDB: accuracy at thresholds, median error, GeoScore."""
    from geotag.eval.metrics import evaluate, parse_thresholds
    from geotag.eval.report import render

    result = evaluate(files, thresholds=parse_thresholds(thresholds), by=by or [])
    render(result, fmt=fmt, console=out)
    for note in result.notes:
        err.print(f"[bold yellow]warning:[/] {note}", highlight=False)


def _setup_logging() -> None:
    """Library warnings (for example an UNTRAINED backbone) reach the user as one plain stderr line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    root = logging.getLogger("geotag")
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    root.propagate = False


def main() -> None:
    """Entry point: run the app, turning library errors into one line and an exit code."""
    _setup_logging()
    try:
        app()
    except GeotagError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # a bug of ours: still one line for the user, the traceback on request
        if os.environ.get("GEOTAG_DEBUG"):
            raise
        first = (str(exc).strip().splitlines() or [""])[0]
        err.print(
            f"[bold red]internal error:[/] {type(exc).__name__}: {first} "
            "(please report it; GEOTAG_DEBUG=1 shows the traceback)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(3)


if __name__ == "__main__":
    main()
