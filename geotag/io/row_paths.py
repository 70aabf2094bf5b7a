"""Where a predictions row's `path` points: one rule for write-exif, review and report.

An absolute path is used as it is (scan and predict write absolute paths). A relative one, as a
hand-made or moved predictions file may hold, is taken relative to the predictions file's folder (a
Ray output folder: relative to that folder), never to the current folder: the same file then names
the same photos wherever a command runs, and `cd` cannot make write-exif write a different file.
"""

from __future__ import annotations

from pathlib import Path

from geotag.io.pathtext import from_text


def base_folder(predictions: Path) -> Path:
    """The folder relative `path`s are resolved against: the predictions file's (or the folder itself)."""
    predictions = Path(predictions).absolute()
    return predictions if predictions.is_dir() else predictions.parent


def row_path(text: str, base: Path) -> Path:
    """The photo `text` names: absolute as given, relative under `base` (see base_folder); a name that
    is not UTF-8 is stored as a file URI (geotag.io.pathtext) and comes back as the bytes it was."""
    path = Path(from_text(text))
    return path if path.is_absolute() else base / path
