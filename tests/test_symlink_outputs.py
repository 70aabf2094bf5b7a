"""Issue 29, group 1: no command writes through a symlink planted at one of its output names.

Each test plants a link at an output name (a folder geotag writes into, or a file it writes), pointing at a
victim outside the output, runs the command cheaply, and checks the victim is untouched and the command
either refused with one line (folders, appended files) or replaced the link with its own file (files
written whole). The rule: README, Outputs."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from tiny_weights import tiny_train_config, tiny_translocator_task
from write_exif_util import write_predictions

from geotag.config import PredictConfig, TrainConfig
from geotag.errors import OutputError

from conftest import write_tagged_photos

SECRET = b"the victim's own bytes\n"


class Victims:
    """A victim file and a victim folder (with one file) outside every output; `untouched()` checks both."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "victim-dir"
        self.dir.mkdir()
        (self.dir / "keep.txt").write_bytes(SECRET)
        self.file = root / "victim.txt"
        self.file.write_bytes(SECRET)
        self.file.chmod(0o600)

    def untouched(self) -> None:
        assert self.file.read_bytes() == SECRET and (self.file.stat().st_mode & 0o777) == 0o600
        assert sorted(p.name for p in self.dir.iterdir()) == ["keep.txt"]
        assert (self.dir / "keep.txt").read_bytes() == SECRET


@pytest.fixture
def victims(tmp_path: Path) -> Victims:
    return Victims(tmp_path)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tagged_photos(tmp_path_factory.mktemp("photos"), n=8)


def plant(name: Path, target: Path) -> Path:
    name.parent.mkdir(parents=True, exist_ok=True)
    name.symlink_to(target)
    return name


def replaced(name: Path) -> bool:
    """The link at `name` was replaced by a regular file of geotag's."""
    return not name.is_symlink() and name.is_file()


class Cli:
    """`geotag ...` through its real entry point (errors become one line and an exit code)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
        self.monkeypatch, self.capsys = monkeypatch, capsys

    def __call__(self, *args: str) -> tuple[int, str]:
        from geotag.cli import main

        self.monkeypatch.setattr(sys, "argv", ["geotag", *args])
        with pytest.raises(SystemExit) as info:
            main()
        return int(info.value.code or 0), self.capsys.readouterr().err


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(monkeypatch, capsys)


def refused(result: tuple[int, str], name: Path) -> None:
    """The CLI refused with exit 2 and one line naming the link, no traceback."""
    code, said = result
    assert code == 2, said
    assert "symbolic link" in said and name.name in said and len(said.strip().splitlines()) == 1, said
    assert "Traceback" not in said


# --- scan / predict / label-scenes (PredictionWriter, the part store) -----------------------------------


def test_scan_replaces_a_link_at_its_out_file(
    cli: Cli, photos: Path, tmp_path: Path, victims: Victims
) -> None:
    out = plant(tmp_path / "scan.parquet", victims.file)
    result = cli(*["scan", str(photos), "--out", str(out), "--no-progress"])
    assert result[0] == 0, result[1]
    assert replaced(out)
    victims.untouched()


def test_predict_refuses_a_linked_parts_folder(
    cli: Cli, photos: Path, tmp_path: Path, victims: Victims
) -> None:
    """`OUT.parts` planted as a link to a folder: refused before anything is written (exit 2)."""
    out = tmp_path / "preds.parquet"
    parts = plant(tmp_path / "preds.parquet.parts", victims.dir)
    for extra in ([], ["--resume"]):
        result = cli(*["predict", str(photos), "--out", str(out), "--workers", "0", *extra])
        refused(result, parts)
    assert parts.is_symlink() and not out.exists()
    victims.untouched()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from tiny_weights import write_random_gallery

    from geotag.models.clip_convert import ClipVisionConfig
    from geotag.models.registry import build_geoclip

    gallery = write_random_gallery(tmp_path_factory.mktemp("gallery") / "g.csv", n=50)
    tiny = ClipVisionConfig(width=32, layers=1, heads=2, patch_size=16, image_size=64, proj_dim=768)
    torch.manual_seed(0)
    return build_geoclip(vit=tiny, allow_untrained=True, gallery=gallery)


def test_predict_replaces_links_at_out_and_at_files_arrow_on_resume(
    photos: Path, tmp_path: Path, victims: Victims, tiny_model
) -> None:  # type: ignore[no-untyped-def]
    """A link planted at the output file is replaced; on --resume the parts folder is kept, and a link
    planted at `files.arrow` inside it is replaced too, never written through."""
    from geotag.engine.predict import run_predict

    out = plant(tmp_path / "preds.parquet", victims.file)
    cfg = PredictConfig(paths=[photos], out=out, batch_size=4, workers=0, progress=False)
    assert run_predict(cfg, model=tiny_model).total == 8 and replaced(out)
    (tmp_path / "preds.parquet.parts").mkdir()
    plant(tmp_path / "preds.parquet.parts" / "files.arrow", victims.file)
    assert run_predict(replace(cfg, resume=True), model=tiny_model).total == 8
    assert not (tmp_path / "preds.parquet.parts").exists()
    victims.untouched()


def test_label_scenes_refuses_a_linked_parts_folder(photos: Path, tmp_path: Path, victims: Victims) -> None:
    from geotag.engine.label_scenes import run_label_scenes

    out = tmp_path / "scenes.csv"
    parts = plant(tmp_path / "scenes.csv.parts", victims.dir)
    with pytest.raises(OutputError, match="symbolic link"):
        run_label_scenes([photos], out, object(), device=torch.device("cpu"), workers=0)  # type: ignore[arg-type]
    assert parts.is_symlink()
    victims.untouched()


# --- report: the folder, figures/, thumbs/ and the files in them -----------------------------------------


@pytest.fixture
def preds(photos: Path, tmp_path: Path) -> Path:
    rows = [
        {"path": p, "pred_lat": 10.0 + i, "pred_lon": 20.0, "gt_lat": 11.0 + i, "gt_lon": 21.0}
        for i, p in enumerate(sorted(photos.glob("*.jpg")))
    ]
    return write_predictions(tmp_path / "preds.parquet", rows)


@pytest.mark.parametrize("name", ["report", "report/figures", "report/thumbs"])
def test_report_refuses_linked_folders(
    cli: Cli, preds: Path, tmp_path: Path, victims: Victims, name: str
) -> None:
    (tmp_path / "report").mkdir(exist_ok=name != "report")
    if name == "report":
        (tmp_path / "report").rmdir()
    link = plant(tmp_path / name, victims.dir)
    result = cli(*["report", str(preds), "--out", str(tmp_path / "report")])
    refused(result, link)
    victims.untouched()


def test_report_replaces_links_at_its_figures_and_thumbnails(
    cli: Cli, preds: Path, tmp_path: Path, victims: Victims
) -> None:
    """Figures and thumbnails are written whole under new names and renamed: links at their names
    (the figure names are fixed, the thumbnail names are a hash of the path: both predictable) are
    replaced."""
    first = tmp_path / "first"
    assert cli(*["report", str(preds), "--out", str(first)])[0] == 0
    names = [p.relative_to(first) for p in (first / "figures").iterdir()]
    names += [p.relative_to(first) for p in (first / "thumbs").iterdir()]
    assert any(n.suffix == ".png" for n in names) and any(n.suffix == ".jpg" for n in names)
    report = tmp_path / "report"
    for n in names:
        plant(report / n, victims.file)
    result = cli(*["report", str(preds), "--out", str(report)])
    assert result[0] == 0, result[1]
    assert all(replaced(report / n) for n in names)
    victims.untouched()


# --- experts extract: the folder, its group folders, extract.json, crops.csv and the crops ---------------


@pytest.fixture(scope="module")
def segmenter():  # type: ignore[no-untyped-def]
    from test_experts import tiny_mask2former

    return tiny_mask2former()


def _extract(photos: Path, out: Path, segmenter):  # type: ignore[no-untyped-def]
    from geotag.engine.crops import ExtractConfig, run_extract

    cfg = ExtractConfig(
        paths=[photos], out=out, min_score=0.0, max_crops=2, image_size=64, crop_size=16, device="cpu"
    )
    return run_extract(replace(cfg, workers=0, batch_size=4), segmenter=segmenter)


def test_experts_extract_refuses_linked_folders(
    photos: Path, tmp_path: Path, victims: Victims, segmenter
) -> None:  # type: ignore[no-untyped-def]
    from geotag.models.experts import GROUPS

    link = plant(tmp_path / "crops", victims.dir)
    with pytest.raises(OutputError, match="symbolic link"):
        _extract(photos, link, segmenter)
    group = plant(tmp_path / "crops2" / GROUPS[0], victims.dir)
    with pytest.raises(OutputError, match="symbolic link"):
        _extract(photos, tmp_path / "crops2", segmenter)
    assert group.is_symlink()
    victims.untouched()


def test_experts_extract_replaces_links_at_its_files(
    photos: Path, tmp_path: Path, victims: Victims, segmenter
) -> None:  # type: ignore[no-untyped-def]
    from geotag.models.experts import CROPS_MANIFEST, EXTRACT_FILE

    first = tmp_path / "first"
    _extract(photos, first, segmenter)
    crops = sorted(p.relative_to(first) for p in first.rglob("*.jpg"))
    assert crops
    out = tmp_path / "crops"
    for n in crops:
        plant(out / n, victims.file)
    plant(out / EXTRACT_FILE, victims.file)
    plant(out / CROPS_MANIFEST, tmp_path / "nothing-here.csv")  # dangling: "no crops yet" to the check
    _extract(photos, out, segmenter)
    assert all(replaced(out / n) for n in [*crops, Path(EXTRACT_FILE), Path(CROPS_MANIFEST)])
    assert not (tmp_path / "nothing-here.csv").exists()
    victims.untouched()


# --- train: the run folder, metrics.csv, the TensorBoard folder, best/ ------------------------------------


def _train_cfg(data: Path, out: Path, **kw: object) -> TrainConfig:
    return tiny_train_config(data, out, **{"max_steps": 1, **kw})


_task = tiny_translocator_task


def test_train_refuses_a_linked_run_folder_and_tensorboard_folder(
    photos: Path, tmp_path: Path, victims: Victims
) -> None:
    from geotag.engine.train import run_train

    run = plant(tmp_path / "run", victims.dir)
    with pytest.raises(OutputError, match="symbolic link"):
        run_train(_train_cfg(photos, run), task=_task())
    tb = plant(tmp_path / "run2" / "tb", victims.dir)
    with pytest.raises(OutputError, match="symbolic link"):
        run_train(_train_cfg(photos, tmp_path / "run2", log_to=("tensorboard",)), task=_task())
    assert tb.is_symlink()
    best = plant(tmp_path / "run3" / "best", victims.dir)
    with pytest.raises(OutputError, match="symlink"):
        run_train(
            _train_cfg(photos, tmp_path / "run3", val_fraction=0.5, best_metric="acc_2500km"), task=_task()
        )
    assert best.is_symlink()
    victims.untouched()


def test_train_resume_refuses_a_linked_metrics_file(photos: Path, tmp_path: Path, victims: Victims) -> None:
    """metrics.csv is appended to (and rewritten on --resume): a link planted there is refused, not
    truncated through; the victim keeps its bytes."""
    from geotag.engine.train import run_train

    cfg = _train_cfg(photos, tmp_path / "run", val_fraction=0.5, epochs=2, max_steps=None)
    first = run_train(replace(cfg, max_steps=1), task=_task())
    assert first.checkpoint is not None
    metrics = tmp_path / "run" / "metrics.csv"
    metrics.unlink(missing_ok=True)
    plant(metrics, victims.file)
    with pytest.raises(OutputError, match="symbolic link"):
        run_train(replace(cfg, resume=True), task=_task())
    assert metrics.is_symlink()
    victims.untouched()


def test_train_cli_refuses_with_one_line(cli: Cli, photos: Path, tmp_path: Path, victims: Victims) -> None:
    run = plant(tmp_path / "run", victims.dir)
    result = cli(*["train", "--data", str(photos), "--out", str(run), "--epochs", "1", "--device", "cpu"])
    refused(result, run)
    victims.untouched()


# --- folders of many files: shards, embed, segment, the Ray engine's folder ------------------------------


def test_shards_refuses_a_linked_out_folder(cli: Cli, photos: Path, tmp_path: Path, victims: Victims) -> None:
    out = plant(tmp_path / "shards", victims.dir)
    result = cli(*["shards", str(photos), "--out", str(out)])
    refused(result, out)
    victims.untouched()


def test_embed_refuses_a_linked_out_folder(tmp_path: Path, victims: Victims) -> None:
    from geotag.engine.embed import _start

    with pytest.raises(OutputError, match="symbolic link"):
        _start(plant(tmp_path / "cache", victims.dir), object())  # type: ignore[arg-type]
    victims.untouched()


def test_segment_refuses_a_linked_out_folder(photos: Path, tmp_path: Path, victims: Victims) -> None:
    from geotag.engine.segment import run_segment

    with pytest.raises(OutputError, match="symbolic link"):
        run_segment([photos], plant(tmp_path / "maps", victims.dir), object())  # type: ignore[arg-type]
    victims.untouched()


def test_ray_out_folder_link_is_refused(tmp_path: Path, victims: Victims) -> None:
    ray_predict = pytest.importorskip("geotag.engine.ray_predict")
    with pytest.raises(OutputError, match="symbolic link"):
        ray_predict.check_out_folder(plant(tmp_path / "parts", victims.dir))
    victims.untouched()


# --- files written whole: a link at the name is replaced ----------------------------------------------


def test_files_written_whole_replace_a_link(
    cli: Cli, photos: Path, tmp_path: Path, victims: Victims, preds: Path
) -> None:
    """export, cells build, eval --plot: each output name planted with a link to the victim."""
    outs = {
        "export": plant(tmp_path / "out.csv", victims.file),
        "cells": plant(tmp_path / "cells.parquet", victims.file),
        "plot": plant(tmp_path / "curve.png", victims.file),
    }
    result = cli(*["export", str(preds), "--out", str(outs["export"])])
    assert result[0] == 0, result[1]
    coords = tmp_path / "coords.csv"
    coords.write_text("lat,lon\n" + "".join(f"{i * 7 - 30},{i * 40 - 150}\n" for i in range(8)))
    result = cli(
        *[
            "cells",
            "build",
            str(coords),
            "--out",
            str(outs["cells"]),
            "--names",
            "a",
            "--tau-min",
            "0",
            "--tau-max",
            "4",
        ]
    )
    assert result[0] == 0, result[1]
    result = cli(*["eval", str(preds), "--plot", str(outs["plot"])])
    assert result[0] == 0, result[1]
    assert all(replaced(p) for p in outs.values())
    victims.untouched()


def test_durable_helpers_never_follow(tmp_path: Path, victims: Victims) -> None:
    from geotag.io.durable import open_append, read_own_file, real_dir, write_file

    with pytest.raises(OutputError, match="symbolic link"):
        real_dir(plant(tmp_path / "d", victims.dir))
    with pytest.raises(OutputError, match="symbolic link"):
        open_append(plant(tmp_path / "log.csv", victims.file))
    with pytest.raises(OutputError, match="symbolic link"):
        read_own_file(tmp_path / "log.csv")
    os.link(victims.file, tmp_path / "hard.csv")
    with pytest.raises(OutputError, match="hard link"):
        open_append(tmp_path / "hard.csv")
    write_file(plant(tmp_path / "x.json", victims.file), json.dumps({"a": 1}).encode())
    assert replaced(tmp_path / "x.json")
    victims.untouched()


def test_gallery_build_and_shards_never_follow_a_link_at_their_files(
    cli: Cli, photos: Path, tmp_path: Path, victims: Victims
) -> None:
    """gallery build's --out is replaced; a shard name planted with a link is refused (shards never
    overwrite), the victim untouched either way."""
    from geotag.config import GalleryConfig
    from geotag.engine.gallery import run_gallery_build

    out = plant(tmp_path / "g.parquet", victims.file)
    assert run_gallery_build(GalleryConfig(paths=[photos], out=out, workers=0, progress=False)).embedded == 8
    assert replaced(out)
    plant(tmp_path / "shards" / "00000.tar", victims.file)
    code, said = cli("shards", str(photos), "--out", str(tmp_path / "shards"))
    assert code == 2 and "already exists" in said, said
    victims.untouched()
