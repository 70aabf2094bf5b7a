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


def _sections(text: str) -> dict[str, list[str]]:
    """Help text split into its sections: heading -> the first word of each entry under it."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):
            current = sections.setdefault(line[:-1], [])
        elif current is not None and line.startswith("  ") and not line.startswith("   "):
            current.append(line.split()[0].rstrip(","))
    return sections


def test_commands_are_grouped_by_workflow_in_the_order_of_the_work() -> None:
    result = CliRunner().invoke(cli.app, ["--help"], env={"COLUMNS": "80"})
    sections = _sections(result.output)
    assert sections["Placing photos"] == ["scan", "predict", "review", "write-exif", "report", "export"]
    assert sections["Measuring"] == ["eval", "benchmark"]
    assert {"train", "embed", "cells", "gallery", "label-scenes", "experts", "shards", "segment"} <= set(
        sections["Making models"]
    )
    assert "Commands" not in sections  # every command has a workflow panel
    top = {words[0] for words, _ in COMMANDS if len(words) == 1}
    assert top == {name for names in cli.COMMAND_PANELS.values() for name in names}


def test_predict_options_are_grouped_into_panels() -> None:
    result = CliRunner().invoke(cli.app, ["predict", "--help"], env={"COLUMNS": "80"})
    sections = _sections(result.output)
    assert list(sections) == [
        "Arguments",
        "Input and output",
        "Model",
        "Speed",
        "Cluster",
        "Time",
        "Options",
    ]
    assert "--track" in sections["Time"] and "--speed-kmh" in sections["Time"]
    assert "--device" in sections["Speed"] and "--engine" in sections["Cluster"]
    assert "--model" in sections["Model"] and "-o" in sections["Input and output"]
    assert sections["Options"] == ["--progress", "--log-every", "--help"]
    predict = dict((" ".join(w), c) for w, c in COMMANDS)["predict"]
    names = {p.name for p in predict.params}
    assert set(predict.panels) <= names  # a renamed option cannot drop out of its panel unnoticed


@pytest.mark.parametrize(
    "words,argument", [(["predict"], "PATHS..."), (["scan"], "PATHS..."), (["eval"], "FILES...")]
)
def test_usage_line_names_the_arguments_plainly(words: list[str], argument: str) -> None:
    result = CliRunner().invoke(cli.app, [*words, "--help"], env={"COLUMNS": "80"})
    usage = result.output.splitlines()[0]
    assert usage.endswith(f"{words[0]} [OPTIONS] {argument}"), usage
    assert _sections(result.output)["Arguments"] == [argument]
