"""A hostile co-user owns the folder geotag writes into: temps, renames, attributes and locks.

Races are simulated deterministically: a hook between writing a temp and renaming it plants a
symlink (what a co-user watching the folder with inotify could do)."""

from __future__ import annotations

import errno
import os
import stat
from datetime import datetime
from pathlib import Path

import pytest
from write_exif_util import write_predictions

import geotag.engine.write_exif as engine
from geotag.engine.write_exif import WriteOptions, run_undo, run_write_exif
from geotag.io.durable import atomic_file, atomic_path
from geotag.io.exif import read_exif
from geotag.io.locks import BUSY, FolderLocks
from geotag.io.parquet import PredictionWriter
from geotag.sample_data import UNTAGGED, make_exif, render


def _jpeg(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    render(UNTAGGED[0], (64, 48)).save(
        path, "JPEG", quality=85, exif=make_exif(UNTAGGED[0], datetime(2024, 1, 2, 3, 4, 5)).tobytes()
    )
    return path


def _victim(tmp_path: Path) -> tuple[Path, bytes]:
    """A 'root-only' file outside the photo folder that an attacker wants changed."""
    victim = tmp_path / "secret" / "shadow"
    victim.parent.mkdir()
    victim.write_bytes(b"root only\n")
    victim.chmod(0o600)
    return victim, victim.read_bytes()


def _preds(tmp_path: Path, photos: list[Path]) -> Path:
    rows = [{"path": p, "pred_lat": -33.5, "pred_lon": -70.25} for p in photos]
    return write_predictions(tmp_path / "preds.parquet", rows)


def test_temp_swapped_for_a_symlink_before_the_rename_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 1: the temp is swapped for a symlink to a root-only file after it was written. Mode,
    owner and times are never set through that link and the photo never becomes a symlink."""
    victim, secret = _victim(tmp_path)
    photos = [_jpeg(tmp_path / "photos" / f"{i}.jpg") for i in range(3)]
    originals = [p.read_bytes() for p in photos]
    preds = _preds(tmp_path, photos)
    real_verify = engine._Run._verify

    def plant(self: engine._Run, jobs: list[engine._Job]) -> None:
        real_verify(self, jobs)
        for job in jobs:
            if job.tmp is not None and job.tmp.exists():
                job.tmp.unlink()
                job.tmp.symlink_to(victim)

    monkeypatch.setattr(engine._Run, "_verify", plant)
    summary = run_write_exif(WriteOptions(preds, journal=tmp_path / "j.jsonl", writer="python"))
    assert summary.written == 0 and len(summary.failed) == 3
    assert all("replaced" in reason for _, reason in summary.failed)
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600 and victim.read_bytes() == secret
    assert [p.is_symlink() for p in photos] == [False] * 3
    assert [p.read_bytes() for p in photos] == originals
    assert sorted(p.name for p in photos[0].parent.iterdir()) == ["0.jpg", "1.jpg", "2.jpg"]


def test_symlink_planted_at_the_target_during_the_rename_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 1: whatever lands at the photo's name during the rename, the run never says 'written'
    for a file that is not the one it wrote."""
    victim, secret = _victim(tmp_path)
    photo = _jpeg(tmp_path / "photos" / "a.jpg")
    preds = _preds(tmp_path, [photo])
    real_replace = os.replace

    def swap_after(src: str | Path, dst: str | Path) -> None:
        real_replace(src, dst)
        if Path(dst) == photo:  # the co-user renames our new photo away and plants a link
            real_replace(dst, tmp_path / "stolen.jpg")
            Path(dst).symlink_to(victim)

    monkeypatch.setattr(engine.os, "replace", swap_after)
    summary = run_write_exif(WriteOptions(preds, journal=tmp_path / "j.jsonl", writer="python"))
    assert summary.written == 0 and "swapped" in summary.failed[0][1]
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600 and victim.read_bytes() == secret


def test_output_temps_are_exclusive_and_unpredictable(tmp_path: Path) -> None:
    """Item 2: symlinks planted at every name the old scheme (`.NAME.tmp-PID`) would use, for a
    range of PIDs around ours: the Parquet, report and cache writers never write through them."""
    victim, secret = _victim(tmp_path)
    out = tmp_path / "shared" / "out.parquet"
    out.parent.mkdir()
    pid = os.getpid()
    for p in range(pid - 5, pid + 6):
        (out.parent / f".out.parquet.tmp-{p}").symlink_to(victim)
    with PredictionWriter(out, metadata={"command": "test"}) as writer:
        writer.write({"path": "x.jpg", "status": "ok", "image_id": "0" * 32})
    with atomic_file(out.parent / "index.html") as fh:
        fh.write(b"<html></html>")
    with atomic_path(out.parent / "cells.bin") as tmp:
        assert not tmp.is_symlink() and tmp.name != f".cells.bin.tmp-{pid}"
        tmp.write_bytes(b"cells")
    assert victim.read_bytes() == secret and stat.S_IMODE(victim.stat().st_mode) == 0o600
    assert out.stat().st_size > 0 and not out.is_symlink()


def test_output_written_onto_a_symlinked_target_replaces_the_link_only(tmp_path: Path) -> None:
    """Item 2: `--out shared/out.parquet` where a co-user made out.parquet a link to a root file."""
    victim, secret = _victim(tmp_path)
    out = tmp_path / "out.parquet"
    out.symlink_to(victim)
    with PredictionWriter(out, metadata={"command": "test"}) as writer:
        writer.write({"path": "x.jpg", "status": "ok", "image_id": "0" * 32})
    assert victim.read_bytes() == secret and not out.is_symlink()


def test_temp_name_swapped_while_a_library_writes_by_name_is_refused(tmp_path: Path) -> None:
    """Item 2: atomic_path (for GDAL-style writers) refuses to rename a name that is no longer the
    file it created."""
    victim, secret = _victim(tmp_path)
    target = tmp_path / "out.gpkg"
    with pytest.raises(OSError, match="replaced"), atomic_path(target) as tmp:
        tmp.unlink()
        tmp.symlink_to(victim)
    assert not target.exists() and victim.read_bytes() == secret


def test_symlinked_photo_is_written_at_its_target(tmp_path: Path) -> None:
    """Item 1: a photo given as a symlink: the link stays a link, its target gets the GPS."""
    real = _jpeg(tmp_path / "library" / "real.jpg")
    link = tmp_path / "photos" / "link.jpg"
    link.parent.mkdir()
    link.symlink_to(real)
    preds = _preds(tmp_path, [link])
    assert run_write_exif(WriteOptions(preds, journal=tmp_path / "j.jsonl", writer="python")).written == 1
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert read_exif(real).gt_lat == pytest.approx(-33.5)


def test_second_run_on_a_locked_folder_skips_with_a_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 4: another run holds the folder: this run waits (briefly here), then skips with a
    reason, and changes nothing; once the folder is free it writes."""
    photo = _jpeg(tmp_path / "photos" / "a.jpg")
    before = photo.read_bytes()
    preds = _preds(tmp_path, [photo])
    monkeypatch.setattr(engine, "LOCK_WAIT_S", 0.2)
    other = FolderLocks(0)
    assert other.acquire([photo.parent]) == set()
    try:
        summary = run_write_exif(WriteOptions(preds, journal=tmp_path / "j.jsonl", writer="python"))
        assert summary.written == 0 and summary.skipped == {BUSY: 1}
        assert photo.read_bytes() == before
        undone = run_undo(tmp_path / "j.jsonl") if (tmp_path / "j.jsonl").exists() else None
        assert undone is None or undone.restored == 0
    finally:
        other.release()
    assert run_write_exif(WriteOptions(preds, journal=tmp_path / "j2.jsonl", writer="python")).written == 1


def test_python_writer_says_disk_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 7: ENOSPC while the new file is written -> 'disk full', photo and folder untouched."""
    import geotag.io.durable as durable

    photo = _jpeg(tmp_path / "a.jpg")
    before = photo.read_bytes()
    preds = _preds(tmp_path, [photo])

    def full(fd: int, data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(durable.os, "write", full)
    summary = run_write_exif(WriteOptions(preds, journal=tmp_path / "j.jsonl", writer="python"))
    monkeypatch.undo()
    assert summary.failed == [(str(photo), "disk full")] and photo.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jpg", "preds.parquet"]
