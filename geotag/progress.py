"""Progress bars on stderr (machine output stays on stdout); off when not on a terminal."""

from __future__ import annotations

from contextlib import AbstractContextManager

from tqdm import tqdm


def progress_bar(total: int | None, desc: str, *, enabled: bool = True) -> AbstractContextManager[tqdm]:
    """A tqdm bar counting images; `enabled=False` or no terminal gives a silent bar with the same API."""
    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, dynamic_ncols=True, leave=True)
