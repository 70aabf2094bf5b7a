"""The `geotag` command: thin Typer commands that parse options and call the library.

Errors of the library (GeotagError) are caught once, here, and become one line on stderr and an exit
code: 0 ok, 1 some files failed, 2 usage or input error.
"""

from __future__ import annotations

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


@app.command("eval")
def eval_cmd(
    files: Annotated[list[Path], typer.Argument(help="One or more predictions Parquet files.")],
    thresholds: Annotated[
        str, typer.Option(help="Comma-separated distance thresholds in km.")
    ] = "1,25,200,750,2500",
    by: Annotated[
        list[str] | None, typer.Option("--by", help="Break down by a column (scene, model, folder, country, ...).")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table | json | csv | markdown")] = "table",
) -> None:
    """Score predictions against ground truth with DuckDB: accuracy at thresholds, median error, GeoScore."""
    from geotag.eval.metrics import evaluate, parse_thresholds
    from geotag.eval.report import render

    result = evaluate(files, thresholds=parse_thresholds(thresholds), by=by or [])
    render(result, fmt=fmt, console=out)


def main() -> None:
    """Entry point: run the app, turning library errors into one line and an exit code."""
    try:
        app()
    except GeotagError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
