"""File names as text: stored losslessly in tables, shown safely in messages.

A Linux file name is bytes; Python hands undecodable bytes over as lone surrogates (`os.fsdecode`'s
surrogateescape: b'caf\\xe9.jpg' -> 'caf\\udce9.jpg'), which Arrow and Parquet (UTF-8 only) refuse.
In a table a path that is valid UTF-8 is stored as it is (every ordinary file); one that is not is
stored as an RFC 8089 file URI of its bytes, percent-encoded (`file:///photos/caf%E9.jpg`), and
`from_text` gives back the very same name. A path geotag writes is never a real name starting with
`file://` (`str(Path)` collapses "//"), so the two forms cannot be confused.

`shown` is for messages: control characters (escape sequences, carriage returns) and undecodable bytes
come out as visible escapes, so a file name cannot rewrite the terminal.
"""

from __future__ import annotations

import os
import re
from urllib.parse import quote_from_bytes, unquote_to_bytes

URI_PREFIX = "file://"
_SURROGATE = re.compile("[\udc80-\udcff]")
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def to_text(path: str | os.PathLike[str]) -> str:
    """The path as table text: unchanged when it is valid UTF-8, else a percent-encoded file URI."""
    text = os.fspath(path)
    if not _SURROGATE.search(text):
        return text
    return URI_PREFIX + quote_from_bytes(os.fsencode(text), safe="/")


def from_text(text: str) -> str:
    """The file system name of a path read from a table (inverse of to_text)."""
    if text.startswith(URI_PREFIX):
        return os.fsdecode(unquote_to_bytes(text[len(URI_PREFIX) :]))
    return text


def safe_text(text: str) -> str:
    """Any string made storable: undecodable bytes (lone surrogates) as `\\xNN`, the rest unchanged."""
    if not _SURROGATE.search(text):
        return text
    return _SURROGATE.sub(lambda m: f"\\x{ord(m.group()) - 0xDC00:02x}", text)


def shown(text: object) -> str:
    """User text (a path, a value from data) for a terminal line: control characters, bidirectional
    overrides and undecodable bytes escaped (`\\x1b`, `\\r`, `\\xe9`), newlines and tabs kept."""
    value = safe_text(str(text))
    if not _CONTROL.search(value):
        return value
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), value)
