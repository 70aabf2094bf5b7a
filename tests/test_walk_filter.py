"""--include / --exclude / --ext: one filter in the shared folder walk (geotag.io.scan), for every command."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from geotag import cli
from geotag.errors import InputError
from geotag.io.scan import PathFilter, iter_image_paths

NAMES = ["a.jpg", "b.png", "e.JPG", "sub/c.jpg", "sub/thumbs/d.jpg", "thumbs/t.jpg", "sub/f.tif"]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    for name in NAMES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(root / name, format="PNG" if name.endswith(".png") else None)
    return root


def walked(root: Path, only: PathFilter | None) -> list[str]:
    return [p.relative_to(root).as_posix() for p in iter_image_paths([root], only)]


@pytest.mark.parametrize(
    "include,exclude,ext,expected",
    [
        ((), (), "jpg", ["a.jpg", "e.JPG", "sub/c.jpg", "sub/thumbs/d.jpg", "thumbs/t.jpg"]),
        ((), (), ".PNG, tif", ["b.png", "sub/f.tif"]),
        (("c.*", "a*"), (), None, ["a.jpg", "sub/c.jpg"]),  # no "/": the file name
        (("sub/*",), (), None, ["sub/c.jpg", "sub/f.tif", "sub/thumbs/d.jpg"]),  # "*" crosses folders
        (("sub/**/*.jpg",), (), None, ["sub/c.jpg", "sub/thumbs/d.jpg"]),  # "**/" also no folder
        ((), ("**/thumbs/*",), None, ["a.jpg", "b.png", "e.JPG", "sub/c.jpg", "sub/f.tif"]),
        ((), ("thumbs/*",), "jpg", ["a.jpg", "e.JPG", "sub/c.jpg", "sub/thumbs/d.jpg"]),  # anchored
        (("*.jpg",), ("sub/*",), None, ["a.jpg", "thumbs/t.jpg"]),  # case-sensitive globs
    ],
)
def test_filter(tree: Path, include: tuple, exclude: tuple, ext: str | None, expected: list[str]) -> None:
    assert walked(tree, PathFilter.from_options(include, exclude, ext)) == expected


def test_no_options_no_filter_and_bad_ext(tree: Path) -> None:
    assert PathFilter.from_options(None, None, None) is None
    assert len(walked(tree, None)) == len(NAMES)
    with pytest.raises(InputError):
        PathFilter.from_options(None, None, " , ")


def test_a_file_named_explicitly_is_always_taken(tree: Path) -> None:
    only = PathFilter.from_options(None, ["*.png"], "jpg")
    assert list(iter_image_paths([tree / "b.png"], only)) == [tree / "b.png"]


def test_scan_cli_filters(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.parquet"
    args = ["scan", str(tree), "--out", str(out), "--ext", "jpg", "--exclude", "**/thumbs/*"]
    result = CliRunner().invoke(cli.app, [*args, "--include", "*.jpg", "--include", "*.JPG"])
    assert result.exit_code == 0, result.output
    paths = sorted(
        Path(p).relative_to(tree).as_posix() for p in pq.read_table(out).column("path").to_pylist()
    )
    assert paths == ["a.jpg", "e.JPG", "sub/c.jpg"]
    bad = CliRunner().invoke(cli.app, ["scan", str(tree), "--out", str(out), "--ext", ","])
    assert isinstance(bad.exception, InputError)  # main() turns it into one line and exit 2
