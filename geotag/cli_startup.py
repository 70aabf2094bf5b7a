"""What keeps `geotag`'s start-up short (issue 28, item 11: the start-up of an empty `geotag scan`).

Typer, run as `app()`, builds every command of the app before it parses a word (each signature's
annotations evaluated, about 0.12 s CPU for ours), and coerces each option's value through a Pydantic
TypeAdapter (importing Pydantic and building the adapters: about 0.2 s). Here:

- `lazy_group`: the same click group, whose commands are built the first time they are looked up
  (`LazyCommands`), so `geotag scan` builds scan alone; `geotag --help` still builds them all.
- `LazyConsole`: rich's Console, made when something is printed through it.
- `defer_coercion`: a parameter's value is coerced with Typer's own helpers where they need no Pydantic
  (a str, a Path, a list of them, a number already of its type, inside its bounds); any other value, or
  a failing one, goes through Typer's TypeAdapter as before, so results and error messages are Typer's.
"""

from __future__ import annotations

import copy
import functools
import sys
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
import typer.main
from typer.core import TyperGroup

try:  # Typer >= 0.2x coerces through Pydantic; an older one has nothing to defer
    from typer._coercion import RuntimeParam, TypeDescriptor, build_runtime_param
    from typer._param_types import coerce_cli_path, routes_to_path
    from typer._typing import get_args, get_origin, is_number_type
    from typer.core import _TyperParameter
except ImportError:  # pragma: no cover - depends on the installed Typer
    RuntimeParam = None  # type: ignore[assignment,misc]

if TYPE_CHECKING:
    import click
    from rich.console import Console


class LazyConsole:
    """A rich Console made on first use: a command that prints only plain lines (say) never imports rich
    (start-up, issue 28 item 11). Attributes are the Console's; `console` is the Console itself."""

    def __init__(self, stderr: bool = False, **kwargs: Any) -> None:
        self.stderr, self.kwargs = stderr, kwargs

    @property
    def stream(self) -> Any:
        """sys.stderr or sys.stdout as they are now (as rich's own Console resolves its file)."""
        return sys.stderr if self.stderr else sys.stdout

    @functools.cached_property
    def console(self) -> Console:
        from rich.console import Console

        return Console(stderr=self.stderr, **self.kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # copy, pickle and friends ask for hooks: not the Console's
            raise AttributeError(name)
        return getattr(self.console, name)


class LazyCommands(MutableMapping[str, Any]):
    """A group's name -> command table whose commands are built on first lookup, in the order given:
    iterating gives the names without building anything (click's suggestions, completion)."""

    def __init__(self, builders: dict[str, Callable[[], Any]]) -> None:
        self._builders = dict(builders)
        self._built: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._built:
            self._built[name] = self._builders[name]()  # KeyError for an unknown name, as a dict
        return self._built[name]

    def __setitem__(self, name: str, command: Any) -> None:
        self._builders.setdefault(name, lambda: command)
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        del self._builders[name]
        self._built.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._builders)

    def __len__(self) -> int:
        return len(self._builders)

    def __contains__(self, name: object) -> bool:
        return name in self._builders


class DeferredParams:
    """Mixin for a Typer command or group: its parameters, the help option included, coerce through
    DeferredCoercion."""

    params: list[Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        defer_coercion(self.params)

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)  # type: ignore[misc]
        defer_coercion([option])
        return option


def _part(app: typer.Typer, commands: list[Any], groups: list[Any]) -> TyperGroup:
    """Typer's own group for `app` with only these commands and sub-apps (its callback and options)."""
    part = copy.copy(app)
    part.registered_commands, part.registered_groups = commands, groups
    return typer.main.get_group(part)


def _built_alone(app: typer.Typer, name: str, commands: list[Any], groups: list[Any]) -> Callable[[], Any]:
    return lambda: _part(app, commands, groups).commands[name]


def lazy_group(app: typer.Typer) -> click.Command:
    """`typer.main.get_command(app)` (the group with its callback, options and completion options), whose
    commands and sub-apps are built when first looked up."""
    shell = copy.copy(app)
    shell.registered_commands, shell.registered_groups = [], []
    group = typer.main.get_command(shell)
    defer_coercion(group.params)  # the completion options, added after the group was made
    if not isinstance(group, TyperGroup):  # pragma: no cover - an app of one command: nothing to defer
        return typer.main.get_command(app)
    builders: dict[str, Callable[[], Any]] = {}
    for info in app.registered_commands:
        name = info.name or typer.main.get_command_name(info.callback.__name__)  # type: ignore[union-attr]
        builders[name] = _built_alone(app, name, [info], [])
    for info in app.registered_groups:
        if not info.name:  # its commands join the group's: nothing to defer
            return typer.main.get_command(app)
        builders[info.name] = _built_alone(app, info.name, [], [info])
    group.commands = LazyCommands(builders)
    return group


if RuntimeParam is not None:

    @dataclass(frozen=True)
    class DeferredCoercion(RuntimeParam):
        """Typer's coercion of one parameter, with its Pydantic TypeAdapter built only for a value that
        Typer's plain helpers cannot coerce exactly as the adapter would."""

        descriptor: TypeDescriptor

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            info, annotation = self.parameter_info, self.annotation
            if info.parser is None and get_origin(annotation) is list:
                (item,) = get_args(annotation)
                if isinstance(value, (list, tuple)):
                    done = [self._plain(item, v, param, ctx) for v in value]
                    if all(d is not _NOT_PLAIN for d in done):
                        return done
            elif info.parser is None:
                done = self._plain(annotation, value, param, ctx)
                if done is not _NOT_PLAIN:
                    return done
            param._runtime_param = build_runtime_param(self.descriptor)  # Typer's own, kept for next time
            return param._runtime_param._coerce_value(value, param=param, ctx=ctx)

        def _plain(self, annotation: Any, value: Any, param: Any, ctx: Any) -> Any:
            info = self.parameter_info
            if (annotation is str or annotation is bool) and type(value) is annotation:
                return value  # the adapter's str(value); a bool stays itself
            if annotation is Path and routes_to_path(annotation, info) and info.path_type in (None, Path):
                if type(value) is str:
                    value = Path(value)  # what the adapter's TypeAdapter(Path) makes of a str
                if isinstance(value, Path):
                    return coerce_cli_path(value, info, path_type=Path, param=param, ctx=ctx)
            if is_number_type(annotation) and annotation is not bool and type(value) is annotation:
                low, high = info.min, info.max
                if (low is None or value >= low) and (high is None or value <= high):
                    return value  # a default, already of its type, inside its bounds
            return _NOT_PLAIN


_NOT_PLAIN = object()


def defer_coercion(params: list[Any]) -> None:
    """Give each Typer parameter whose coercion Typer has not built yet a DeferredCoercion."""
    if RuntimeParam is None:  # pragma: no cover - an older Typer: no Pydantic to defer
        return
    for param in params:
        if not isinstance(param, _TyperParameter) or getattr(param, "_runtime_param", _NOT_PLAIN) is not None:
            continue
        descriptor = param.type_descriptor
        if descriptor.file_annotation is not None:  # typer.FileText and friends: Typer's own
            continue
        param._runtime_param = DeferredCoercion(
            parameter_info=descriptor.parameter_info, annotation=descriptor.annotation, descriptor=descriptor
        )
