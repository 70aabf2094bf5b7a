"""Issue 29 group 4: training never "succeeds" on nothing, and unreadable rows are counted, not lost.

A manifest whose images are all missing trained 2 steps, wrote a checkpoint and exited 0; rows naming a
device, a URL or a file that is no image vanished uncounted. Now: no image readable -> one line, exit 2,
nothing written; some unreadable -> trained, counted in the summary (once each), exit 1. `gallery build`
counts such rows as failed too."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
from tiny_weights import tiny_train_config, tiny_translocator_task

from geotag.config import GalleryConfig, TrainConfig
from geotag.engine.train import run_train
from geotag.errors import InputError

from conftest import write_tagged_photos

BAD_ROWS = ("gone/missing.jpg", "/dev/zero", "https://example.com/a.jpg", "notes.txt")


def _cfg(data: Path, out: Path, **kw: object) -> TrainConfig:
    return tiny_train_config(data, out, **{"epochs": 2, **kw})


_task = tiny_translocator_task


def _manifest(folder: Path, good: list[Path], bad: tuple[str, ...]) -> Path:
    (folder / "notes.txt").write_text("this is not a picture\n")
    path = folder / "manifest.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "lat", "lon"])
        for i, p in enumerate([*map(str, good), *bad]):
            w.writerow([p, -40 + i * 9, -150 + i * 25])
    return path


def test_no_readable_image_is_refused_before_any_step(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, [], BAD_ROWS * 2)
    out = tmp_path / "run"
    with pytest.raises(InputError, match="none of the 8 training image") as info:
        run_train(_cfg(manifest, out), task=_task())
    assert info.value.exit_code == 2 and "\n" not in str(info.value)
    assert not list(out.glob("step-*")) and not (out / "metrics.csv").exists()


def test_unreadable_rows_are_counted_once_and_exit_1(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    photos = sorted(write_tagged_photos(tmp_path / "photos", n=8).glob("*.jpg"))
    manifest = _manifest(tmp_path, photos, BAD_ROWS)
    summary = run_train(_cfg(manifest, tmp_path / "run"), task=_task())
    assert summary.steps > 0 and summary.checkpoint is not None
    assert summary.unreadable == len(BAD_ROWS)  # two epochs, each row counted once
    assert summary.unreadable_example


def test_cli_refuses_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # type: ignore[no-untyped-def]
    from geotag.cli import main

    manifest = _manifest(tmp_path, [], BAD_ROWS + tuple(f"gone/{i}.jpg" for i in range(8)))
    args = ["train", "--data", str(manifest), "--out", str(tmp_path / "r"), "--batch-size", "4"]
    monkeypatch.setattr(sys, "argv", ["geotag", *args, "--val-fraction", "0"])
    with pytest.raises(SystemExit) as info:
        main()
    said = capsys.readouterr().err
    assert info.value.code == 2 and "none of the 12 training image(s) could be read (e.g. " in said, said
    assert len(said.strip().splitlines()) == 1 and "Traceback" not in said


def test_gallery_build_counts_devices_urls_and_missing_rows(tmp_path: Path) -> None:
    from geotag.engine.gallery import run_gallery_build

    photos = sorted(write_tagged_photos(tmp_path, n=3).glob("*.jpg"))
    manifest = _manifest(tmp_path, photos, BAD_ROWS)
    summary = run_gallery_build(GalleryConfig(paths=[manifest], out=tmp_path / "g.parquet", workers=0))
    assert summary.embedded == 3
    assert summary.failed == len(BAD_ROWS) and summary.total == 3 + len(BAD_ROWS)
