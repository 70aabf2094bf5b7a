"""Item 7: a nearly full disk. Temps are bounded by the free space (each photo that fits alone is
written), a photo that cannot fit fails 'disk full' with the numbers, and undo needs no space."""

from __future__ import annotations

from collections import namedtuple
from datetime import datetime
from pathlib import Path

import pytest
from write_exif_util import write_predictions

import geotag.engine.write_exif as engine
from geotag.engine.write_exif import WriteOptions, run_undo, run_write_exif
from geotag.sample_data import UNTAGGED, make_exif, render

Usage = namedtuple("Usage", "total used free")


def _photos(tmp_path: Path, n: int) -> list[Path]:
    out = []
    for i in range(n):
        path = tmp_path / "photos" / f"{i}.jpg"
        path.parent.mkdir(exist_ok=True)
        render(UNTAGGED[0], (320, 240)).save(
            path, "JPEG", quality=95, exif=make_exif(UNTAGGED[0], datetime(2024, 1, 2, 3, 4, 5)).tobytes()
        )
        out.append(path)
    return out


def test_temps_are_bounded_by_free_space(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    photos = _photos(tmp_path, 21)
    originals = [p.read_bytes() for p in photos]
    size = max(p.stat().st_size for p in photos) + engine.SPACE_MARGIN
    monkeypatch.setattr(engine.shutil, "disk_usage", lambda p: Usage(10 * size, 0, int(2.5 * size)))
    live, peak = [0], [0]
    real_new, real_discard = engine.new_temp_dir, engine.discard_temp_dir

    def counting_new(target: Path) -> Path:
        live[0] += 1
        peak[0] = max(peak[0], live[0])
        return real_new(target)

    def counting_discard(folder: Path) -> None:
        live[0] -= 1
        real_discard(folder)

    monkeypatch.setattr(engine, "new_temp_dir", counting_new)
    monkeypatch.setattr(engine, "discard_temp_dir", counting_discard)
    rows = [{"path": p, "pred_lat": 1.5, "pred_lon": 2.5} for p in photos]
    preds = write_predictions(tmp_path / "p.parquet", rows)
    summary = run_write_exif(WriteOptions(preds, journal=tmp_path / "j.jsonl", writer="python"))
    assert summary.written == 21 and summary.failed == []
    assert peak[0] <= 2  # never more temps at once than the free space holds
    monkeypatch.undo()
    assert run_undo(tmp_path / "j.jsonl").restored == 21
    assert [p.read_bytes() for p in photos] == originals


def test_photo_larger_than_the_free_space_fails_with_disk_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (photo,) = _photos(tmp_path, 1)
    before = photo.read_bytes()
    monkeypatch.setattr(engine.shutil, "disk_usage", lambda p: Usage(1 << 30, 0, 1000))
    preds = write_predictions(tmp_path / "p.parquet", [{"path": photo, "pred_lat": 1.5, "pred_lon": 2.5}])
    summary = run_write_exif(WriteOptions(preds, journal=tmp_path / "j.jsonl", writer="python"))
    assert summary.written == 0 and summary.failed[0][1].startswith("disk full: needs")
    assert photo.read_bytes() == before
