"""Durable writes: a whole file appears at its name, or the old one stays and no temporary is left."""

from __future__ import annotations

from pathlib import Path

import pytest

from geotag.io.durable import atomic_path, fsync_dir, fsync_file, write_new_file


@pytest.mark.parametrize("sync", [True, False])
def test_atomic_path_replaces_on_success(tmp_path: Path, sync: bool) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with atomic_path(target, sync=sync) as tmp:
        assert tmp.parent == tmp_path
        assert tmp.name.startswith(".out.bin.") and tmp.name.endswith(".geotag-tmp")
        tmp.write_bytes(b"new")
        assert target.read_bytes() == b"old"
    assert target.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_atomic_path_keeps_the_old_file_on_error(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_write_new_file_and_fsyncs(tmp_path: Path) -> None:
    path = tmp_path / "a.xmp"
    write_new_file(path, b"x" * 100_000)
    assert path.read_bytes() == b"x" * 100_000
    with pytest.raises(FileExistsError):
        write_new_file(path, b"again")
    fsync_file(path)
    fsync_dir(tmp_path)
    fsync_dir(tmp_path / "missing")  # best effort: no error
