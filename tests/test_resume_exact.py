"""Item 6: `predict --resume` keeps exactly one row per file on disk: identical copies keep their own
rows, an edited file's row is replaced, a deleted file's row drops out, and finalisation is
idempotent when a crash is injected at each point of it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

import geotag.io.parts as parts_mod
from geotag.config import PredictConfig
from geotag.engine.predict import run_predict
from geotag.models.clip_convert import ClipVisionConfig
from geotag.models.registry import build_geoclip

TINY = ClipVisionConfig(width=32, layers=1, heads=2, mlp_dim=64, patch_size=16, image_size=64)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    gallery = tmp_path_factory.mktemp("gallery") / "g.csv"
    gallery.write_text("lat,lon\n" + "".join(f"{-80 + i * 1.6},{-180 + i * 3.6}\n" for i in range(100)))
    torch.manual_seed(0)
    return build_geoclip(vit=TINY, allow_untrained=True, gallery=gallery)


def _cfg(paths: list[Path], out: Path, **kw: object) -> PredictConfig:
    return PredictConfig(paths=paths, out=out, workers=0, batch_size=4, **kw)  # type: ignore[arg-type]


def _paths(out: Path) -> list[str]:
    return pq.read_table(out, columns=["path"]).column(0).to_pylist()


@pytest.fixture
def photos(sample_data: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    shutil.copytree(sample_data / "europe", folder)
    shutil.copyfile(next(folder.iterdir()), folder / "copy-of-first.jpg")  # identical bytes
    return folder


def test_identical_edited_and_deleted_files(photos: Path, tmp_path: Path, tiny_model) -> None:
    out = tmp_path / "preds.parquet"
    run_predict(_cfg([photos], out), model=tiny_model)
    files = sorted(str(p) for p in photos.iterdir())
    assert sorted(_paths(out)) == files  # the identical copy has its own row
    victim, edited = sorted(photos.iterdir())[:2]
    victim.unlink()
    edited.write_bytes(edited.read_bytes() + b"\0")  # an edit: new size and mtime
    os.utime(edited, ns=(1, 1))
    run_predict(_cfg([photos], out, resume=True), model=tiny_model)
    paths = _paths(out)
    assert sorted(paths) == sorted(str(p) for p in photos.iterdir())  # deleted gone, one row each
    row = pq.read_table(out).to_pylist()[paths.index(str(edited))]
    assert row["size"] == edited.stat().st_size


@pytest.mark.parametrize("where", ["before_rename", "after_rename"])
def test_crash_in_finalisation_then_resume(
    photos: Path, tmp_path: Path, tiny_model, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    out = tmp_path / "preds.parquet"
    real_rmtree = parts_mod.shutil.rmtree
    real_close = parts_mod.PredictionWriter.close

    def crash_close(self: object) -> None:
        raise KeyboardInterrupt

    def crash_rmtree(path: Path, *args: object, **kwargs: object) -> None:
        if list(Path(path).glob("part-*.parquet")):  # finalisation, after `out` was renamed into place
            raise KeyboardInterrupt
        real_rmtree(path, *args, **kwargs)  # type: ignore[arg-type]

    if where == "before_rename":
        monkeypatch.setattr(parts_mod.PredictionWriter, "close", crash_close)
    else:
        monkeypatch.setattr(parts_mod.shutil, "rmtree", crash_rmtree)
    with pytest.raises(KeyboardInterrupt):
        run_predict(_cfg([photos], out), model=tiny_model)
    monkeypatch.setattr(parts_mod.PredictionWriter, "close", real_close)
    monkeypatch.setattr(parts_mod.shutil, "rmtree", real_rmtree)
    assert (tmp_path / "preds.parquet.parts").exists()  # the parts survived the crash
    assert out.exists() == (where == "after_rename")
    run_predict(_cfg([photos], out, resume=True), model=tiny_model)
    paths = _paths(out)
    assert sorted(paths) == sorted(str(p) for p in photos.iterdir())
    assert not (tmp_path / "preds.parquet.parts").exists()
