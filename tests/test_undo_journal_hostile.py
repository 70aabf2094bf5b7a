"""`write-exif --undo` treats its journal as data: a crafted or tampered journal changes nothing
it should not, and undo works on a full disk and cleans what killed runs left."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
from datetime import datetime
from pathlib import Path

import pytest
from write_exif_util import write_predictions

import geotag.engine.write_exif as engine
from geotag.engine.write_exif import WriteOptions, run_undo, run_write_exif
from geotag.errors import InputError
from geotag.io.journal import JOURNAL_KIND, JOURNAL_VERSION, backup_dir_for
from geotag.io.scan import image_id
from geotag.sample_data import UNTAGGED, make_exif, render


def _jpeg(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    render(UNTAGGED[0], (64, 48)).save(
        path, "JPEG", quality=85, exif=make_exif(UNTAGGED[0], datetime(2024, 1, 2, 3, 4, 5)).tobytes()
    )
    return path


def _written(tmp_path: Path, n: int = 1) -> tuple[list[Path], list[bytes], Path]:
    photos = [_jpeg(tmp_path / "photos" / f"{i}.jpg") for i in range(n)]
    originals = [p.read_bytes() for p in photos]
    rows = [{"path": p, "pred_lat": 10.5, "pred_lon": -20.25} for p in photos]
    preds = write_predictions(tmp_path / "preds.parquet", rows)
    journal = tmp_path / "j.jsonl"
    assert run_write_exif(WriteOptions(preds, journal=journal, writer="python")).written == n
    return photos, originals, journal


def _crafted_journal(path: Path, records: list[dict[str, object]]) -> Path:
    header = {"kind": JOURNAL_KIND, "version": JOURNAL_VERSION}
    path.write_text("\n".join(json.dumps(r) for r in [header, *records]) + "\n")
    return path


def _tamper(journal: Path, **changes: object) -> None:
    lines = journal.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    for record in records[1:]:
        record.update(changes)
    journal.write_text("\n".join(json.dumps(r) for r in records) + "\n")


def test_crafted_record_with_absolute_backup_and_setuid_mode_changes_nothing(tmp_path: Path) -> None:
    """Item 3 as filed: a record names a file by its current hash, an absolute backup path holding
    chosen bytes, mode 0o4755. Undo must not replace the file nor make anything setuid."""
    victim = tmp_path / "bin" / "tool"
    victim.parent.mkdir()
    victim.write_bytes(b"#!/bin/sh\necho real\n")
    victim.chmod(0o755)
    evil = tmp_path / "evil"
    evil.write_bytes(b"#!/bin/sh\necho pwned\n")
    journal = _crafted_journal(
        tmp_path / "j.jsonl",
        [
            {
                "op": "photo",
                "path": str(victim),
                "old_hash": image_id(evil),
                "new_hash": image_id(victim),
                "backup": str(evil),
                "mode": 0o4755,
            }
        ],
    )
    summary = run_undo(journal)
    assert summary.restored == 0
    assert victim.read_bytes() == b"#!/bin/sh\necho real\n"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o755


@pytest.mark.parametrize("name", ["../evil", "/abs/evil", "sub/evil", "..", ""])
def test_backup_names_outside_the_backup_folder_are_refused(tmp_path: Path, name: str) -> None:
    photos, originals, journal = _written(tmp_path)
    (tmp_path / "evil").write_bytes(originals[0])  # even the right bytes, from the wrong place
    _tamper(journal, backup=name)
    summary = run_undo(journal)
    assert summary.restored == 0 and photos[0].read_bytes() != originals[0]


def test_backup_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    photos, originals, journal = _written(tmp_path)
    backups = backup_dir_for(journal)
    (backup,) = list(backups.iterdir())
    outside = tmp_path / "outside.jpg"
    shutil.copyfile(backup, outside)
    backup.unlink()
    backup.symlink_to(outside)
    assert run_undo(journal).restored == 0


def test_record_for_a_file_geotag_never_wrote_is_skipped(tmp_path: Path) -> None:
    """Only files whose current content is what a geotag run wrote (its hash and geotag's
    estimate mark): a journal cannot make undo 'restore' an arbitrary file from its own backups."""
    photos, originals, journal = _written(tmp_path)
    other = tmp_path / "photos" / "other.jpg"
    other.write_bytes(b"somebody's file")
    _tamper(journal, path=str(other), new_hash=image_id(other))
    summary = run_undo(journal)
    assert summary.restored == 0 and other.read_bytes() == b"somebody's file"


def test_mode_from_the_journal_is_masked(tmp_path: Path) -> None:
    """A tampered mode 0o6755 (setuid + setgid) comes back as 0o755 at most."""
    photos, originals, journal = _written(tmp_path)
    _tamper(journal, mode=0o7755)
    assert run_undo(journal).restored == 1
    assert photos[0].read_bytes() == originals[0]
    assert stat.S_IMODE(photos[0].stat().st_mode) == 0o755


def test_undo_works_on_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Undo links the backup back (a rename, no copy): no free space is needed."""
    photos, originals, journal = _written(tmp_path, 3)

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(engine.shutil, "copyfileobj", full)
    monkeypatch.setattr(engine.shutil, "copyfile", full)
    assert run_undo(journal).restored == 3
    assert [p.read_bytes() for p in photos] == originals


def test_undo_removes_leftovers_of_killed_runs(tmp_path: Path) -> None:
    photos, originals, journal = _written(tmp_path)
    stale = photos[0].parent / ".0.jpg.k1ll3d.geotag-tmp"
    stale.mkdir()
    (stale / "new.tmp").write_bytes(b"half")
    stale_file = photos[0].parent / ".0.jpg.x9y8.geotag-tmp"
    stale_file.write_bytes(b"half")
    assert run_undo(journal).restored == 1
    assert sorted(p.name for p in photos[0].parent.iterdir()) == ["0.jpg"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the journal to another user")
def test_journal_another_user_could_write_is_refused(tmp_path: Path) -> None:
    photos, originals, journal = _written(tmp_path)
    os.chown(journal, 12345, 12345)
    with pytest.raises(InputError, match="another user"):
        run_undo(journal)
    os.chown(journal, 0, 0)
    journal.chmod(0o666)
    with pytest.raises(InputError, match="another user"):
        run_undo(journal)
    journal.chmod(0o644)
    assert run_undo(journal).restored == 1
