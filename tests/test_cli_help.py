"""Every command's help reads at 80 columns: option names whole, help texts whole (no markup eaten)."""

from __future__ import annotations

from typing import Any

import pytest
import typer
from typer.core import TyperArgument
from typer.testing import CliRunner

from geotag import cli


def _commands() -> list[tuple[list[str], Any]]:
    """Every command and sub-command of the app, with the words that reach it (typer vendors click, so
    commands are duck-typed)."""
    found: list[tuple[list[str], Any]] = []

    def walk(words: list[str], command: Any) -> None:
        found.append((words, command))
        for name, sub in getattr(command, "commands", {}).items():
            walk([*words, name], sub)

    walk([], typer.main.get_command(cli.app))
    return found


COMMANDS = _commands()


def test_the_walk_finds_the_nested_commands() -> None:
    names = {" ".join(words) for words, _ in COMMANDS}
    assert {"predict", "cells build", "cells import", "gallery build", "models list"} <= names


@pytest.mark.parametrize("words,command", COMMANDS, ids=[" ".join(w) or "geotag" for w, _ in COMMANDS])
def test_help_at_80_columns_shows_every_option_and_help_text_whole(words: list[str], command: Any) -> None:
    result = CliRunner().invoke(cli.app, [*words, "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    text = result.output
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    tokens = set(text.replace(",", " ").replace("/", " ").split())
    flat = "".join(text.split())  # wrapping (also after hyphens) only adds whitespace
    for param in command.params:
        if not isinstance(param, TyperArgument):
            for name in [*param.opts, *param.secondary_opts]:
                assert name in tokens, f"{' '.join(words)}: {name} cut or missing"
        help_text = getattr(param, "help", None)
        if help_text:  # square brackets and all: nothing eaten as markup
            assert "".join(help_text.split()) in flat, f"{' '.join(words)}: help of {param.name} altered"


def test_brackets_in_help_texts_survive() -> None:
    result = CliRunner().invoke(cli.app, ["cells", "import", "--help"], env={"COLUMNS": "80"})
    assert "[coarse,middle,fine]" in result.output
