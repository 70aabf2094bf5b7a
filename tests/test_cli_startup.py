"""The start-up shortcuts (geotag/cli_startup.py) change nothing the user sees: the lazily built group
gives Typer's help, errors and exit codes, and the deferred coercion Typer's values and messages."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import pytest
import typer
import typer.testing
from typer.testing import CliRunner

from geotag import cli
from geotag.cli_startup import LazyCommands, lazy_group

WIDE = {"COLUMNS": "200"}


def _invoke(
    make_command: object, args: list[str], monkeypatch: pytest.MonkeyPatch, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run `args` with typer.testing's runner building the app with `make_command`."""
    with monkeypatch.context() as m:
        m.setattr(typer.testing, "_get_command", make_command)
        result = CliRunner().invoke(cli.app, args, env={**WIDE, **(env or {})})
    return result.exit_code, result.output


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--help"],
        ["--version"],
        ["scan", "--help"],
        ["predict", "--help"],
        ["models", "--help"],
        ["cells", "build", "--help"],
        ["sacn"],  # Typer's "Did you mean 'scan'?"
        ["scan"],
        ["scan", "photos"],
        ["--log-every", "-1", "scan", "photos", "--out", "x.parquet"],
        ["predict", "photos", "--out", "x.parquet", "--top-k", "zero"],
        ["predict", "photos", "--out", "x.parquet", "--top-k", "0"],
        ["predict", "photos", "--out", "x.parquet", "--gpu-decode-share", "1.5"],
        ["scan", "photos", "--out", "x.parquet", "--frobnicate"],
    ],
    ids=lambda a: " ".join(a) or "no-args",
)
def test_lazy_group_reads_as_typers_own(args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    eager = _invoke(typer.main.get_command, args, monkeypatch)
    lazy = _invoke(lazy_group, args, monkeypatch)
    assert lazy == eager
    assert eager[0] != 1  # help or a usage error: nothing ran


@pytest.mark.parametrize(
    "env",
    [
        {"_GEOTAG_COMPLETE": "complete_bash", "COMP_WORDS": "geotag s", "COMP_CWORD": "1"},
        {"_GEOTAG_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "geotag scan --o"},
        {"_GEOTAG_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "geotag cells b"},
    ],
    ids=["commands", "options", "sub-app"],
)
def test_lazy_group_completes_as_typers_own(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    eager = _invoke(typer.main.get_command, [], monkeypatch, env)
    assert eager[1].strip()  # the shell gets candidates
    assert _invoke(lazy_group, [], monkeypatch, env) == eager


def test_lazy_group_builds_only_the_command_used(tmp_path: Path) -> None:
    group = lazy_group(cli.app)
    assert isinstance(group.commands, LazyCommands)
    names = list(group.commands)
    assert names[:2] == ["scan", "predict"] and "models" in names and "cells" in names
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as done:
        group.main(
            ["scan", str(tmp_path / "empty"), "--out", str(tmp_path / "s.parquet")], prog_name="geotag"
        )
    assert done.value.code == 0
    assert group.commands._built.keys() == {"scan"}  # predict, train, ... never built


class Colour(StrEnum):
    red = "red"
    blue = "blue"


def _probe(app: typer.Typer) -> typer.Typer:
    """One command taking every kind of parameter the CLI uses; prints what it was given."""

    @app.command()
    def probe(
        paths: Annotated[list[Path], typer.Argument()],
        out: Annotated[Path, typer.Option()],
        name: Annotated[str, typer.Option()] = "default",
        words: Annotated[list[str] | None, typer.Option()] = None,
        count: Annotated[int, typer.Option(min=1)] = 5,
        share: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.5,
        every: Annotated[float | None, typer.Option(min=0.0)] = None,
        flag: Annotated[bool, typer.Option()] = True,
        existing: Annotated[Path | None, typer.Option(exists=True, dir_okay=False)] = None,
        colour: Annotated[Colour, typer.Option()] = Colour.red,
    ) -> None:
        values = [paths, out, name, words, count, share, every, flag, existing, colour]
        print(repr([(type(v).__name__, v) for v in values]))

    @app.command()
    def other() -> None:
        print("other")

    return app


def _no_usage(output: str) -> str:
    """Without the usage line: PanelCommand writes PATHS... where Typer's own writes {paths}..."""
    return "\n".join(line for line in output.splitlines() if not line.startswith("Usage:"))


@pytest.mark.parametrize(
    "args",
    [
        ["a", "b/c", "--out", "o.parquet"],
        ["", "--out", "", "--name", "n [x]", "--words", "w1", "--words", "w2"],
        ["a", "--out", "o", "--count", "7", "--share", "1", "--every", "0.25", "--no-flag"],
        ["a", "--out", "o", "--count", "0"],
        ["a", "--out", "o", "--count", "x"],
        ["a", "--out", "o", "--share", "1.01"],
        ["a", "--out", "o", "--every", "-1"],
        ["a", "--out", "o", "--every", "nan"],
        ["a", "--out", "o", "--existing", "/no/such/file"],
        ["a", "--out", "o", "--existing", "/"],
        ["a", "--out", "o", "--existing", __file__],
        ["a", "--out", "o", "--colour", "blue"],
        ["a", "--out", "o", "--colour", "green"],
        ["a"],
    ],
    ids=lambda a: " ".join(a),
)
def test_deferred_coercion_gives_typers_values_and_errors(args: list[str]) -> None:
    """cli.Typer's commands (DeferredCoercion) against plain typer.Typer's (Pydantic for every value)."""
    ours = CliRunner().invoke(_probe(cli.Typer(rich_markup_mode=None)), ["probe", *args], env=WIDE)
    typers = CliRunner().invoke(_probe(typer.Typer(rich_markup_mode=None)), ["probe", *args], env=WIDE)
    assert (ours.exit_code, _no_usage(ours.output)) == (typers.exit_code, _no_usage(typers.output))
    assert ours.exception is None or isinstance(ours.exception, SystemExit), ours.exception


def test_say_writes_user_text_as_it_is(capsys: pytest.CaptureFixture[str]) -> None:
    """No markup, no emoji codes (rich turned ':smile:' into an emoji), control characters escaped."""
    cli.say("photo[bold]:smile:.jpg\x1b[2J")
    cli.say("to stdout :+1:", cli.out)
    captured = capsys.readouterr()
    assert captured.err == "photo[bold]:smile:.jpg\\x1b[2J\n"
    assert captured.out == "to stdout :+1:\n"
