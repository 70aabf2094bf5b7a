"""JSON state files read as untrusted data: only inside their folder, bounded, and typed field by field.

A checkpoint or cache folder may come from anyone (a colleague's run, a download), so a name it holds
(`files.gallery` in config.json, say) is resolved inside the folder only: no absolute path, no `..`,
no symlink leading out. Every field is checked for its type and range before use, and a bad one is one
line naming the file and the field, never its content (which could be a line of a file that should not
have been read), instead of an internal error deep in the loader.
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from geotag.errors import GeotagError, WeightsError

MAX_JSON_BYTES = 64 * 2**20
"""A state file larger than this is refused unread (trainer.json of a big run is about 10 KB)."""
MAX_STEP = 10**12
"""Steps, epochs and counts beyond this are refused as implausible (a trillion optimizer steps)."""

_MISSING = object()


def inside(folder: Path, name: object, where: str, error: type[GeotagError] = WeightsError) -> Path:
    """`folder / name` for a file name a state file holds: a relative path without `..` whose real path
    (links resolved) stays inside `folder`. One line naming `where` otherwise."""
    if not isinstance(name, str) or not name or "\0" in name:
        raise error(f"{where}: must be a file name inside the folder")
    rel = PurePosixPath(name)
    if rel.is_absolute() or Path(name).is_absolute() or ".." in rel.parts:
        raise error(f"{where}: must name a file inside the checkpoint folder (no absolute path, no '..')")
    path = Path(folder) / name
    root = os.path.realpath(folder)
    real = os.path.realpath(path)
    if os.path.commonpath([root, real]) != root:
        raise error(f"{where}: leads out of the folder (a symlink); refused")
    return path


def read_json_object(
    folder: Path, name: str, where: str | None = None, error: type[GeotagError] = WeightsError
) -> dict[str, Any]:
    """A JSON object file inside `folder` (see `inside`): a regular file of at most MAX_JSON_BYTES,
    read without following a link out; one `error` line otherwise (the content is never quoted)."""
    label = where or str(Path(folder) / name)
    path = inside(folder, name, label, error)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise error(f"cannot read {label}: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{label} is not a regular file")
        if st.st_size > MAX_JSON_BYTES:
            raise error(f"{label} is {st.st_size:,} bytes: over the {MAX_JSON_BYTES:,} a state file may be")
        data = fh.read(MAX_JSON_BYTES + 1)
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as exc:
        msg = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
        raise error(f"{label} is not valid JSON ({msg})") from None
    if not isinstance(value, dict):
        raise error(f"{label} must hold a JSON object, not a {type(value).__name__}")
    return value


class Fields:
    """Typed access to one JSON object's fields: each wrong or missing one is one `error` line naming the
    file and the field (`where: field` ...), with the type found but never the value."""

    def __init__(
        self, data: object, where: str, prefix: str = "", error: type[GeotagError] = WeightsError
    ) -> None:
        self.where, self.prefix, self.error = where, prefix, error
        if not isinstance(data, dict):
            raise self.fail("", "an object", data)
        self.data: dict[str, Any] = data

    def fail(self, key: str, expected: str, value: object) -> GeotagError:
        name = f"{self.prefix}{key}".rstrip(".") or "the top level"
        got = "missing" if value is _MISSING else f"got {_kind(value)}"
        return self.error(f"{self.where}: {name} must be {expected} ({got})")

    def _get(self, key: str, default: object) -> object:
        value = self.data.get(key, _MISSING)
        if value is _MISSING and default is not _MISSING:
            return default
        return value

    def check(self, key: str, expected: str, ok: Callable[[Any], bool], default: object = _MISSING) -> Any:
        value = self._get(key, default)
        if value is default and default is not _MISSING:
            return value
        if value is _MISSING or not ok(value):
            raise self.fail(key, expected, value)
        return value

    def int(self, key: str, lo: int = 0, hi: int = MAX_STEP, default: object = _MISSING) -> Any:
        return self.check(
            key, f"an integer from {lo} to {hi:,}", lambda v: _is_int(v) and lo <= v <= hi, default
        )

    def number(self, key: str, default: object = _MISSING) -> Any:
        return self.check(key, "a finite number", is_finite_number, default)

    def str(self, key: str, choices: tuple[str, ...] | None = None, default: object = _MISSING) -> Any:
        expected = f"one of {', '.join(choices)}" if choices else "a string"
        return self.check(
            key, expected, lambda v: isinstance(v, str) and (choices is None or v in choices), default
        )

    def bool(self, key: str, default: object = _MISSING) -> Any:
        return self.check(key, "true or false", lambda v: isinstance(v, bool), default)

    def obj(self, key: str, default: object = _MISSING) -> Fields:
        value = self.check(key, "an object", lambda v: isinstance(v, dict), default)
        return Fields(
            value if isinstance(value, dict) else {}, self.where, f"{self.prefix}{key}.", self.error
        )

    def list(
        self, key: str, item: str, ok: Callable[[Any], bool], max_len: int, default: object = _MISSING
    ) -> Any:
        return self.check(
            key,
            f"a list of at most {max_len:,} {item}",
            lambda v: isinstance(v, list) and len(v) <= max_len and all(ok(x) for x in v),
            default,
        )


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_int(v: object) -> bool:
    return _is_int(v)


def is_finite_number(v: object) -> bool:
    """An int or float (not a bool) that is finite and fits a float."""
    if isinstance(v, float):
        return math.isfinite(v)
    return _is_int(v) and v.bit_length() < 1024  # type: ignore[union-attr]


def _kind(value: object) -> str:
    """What a wrong value is, in a few words and without its content."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an out-of-range integer"
    if isinstance(value, float):
        return "an out-of-range number"
    return {"str": "a string", "list": "a list", "dict": "an object"}.get(
        type(value).__name__, "another type"
    )
