"""`geotag label-scenes`: GeoEstimation-style scene labels (Places365 -> S3 / S16) for new training data,
with a small random-weight Places365 ResNet saved in CSAIL's checkpoint layout (no download)."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from geotag.errors import WeightsError
from geotag.io.samples import SCENES
from geotag.models.places365 import (
    DEFAULT_PLACES365,
    PLACES365_FILE,
    S3_NAMES,
    Places365Classifier,
    hierarchy,
    load_places365,
)
from geotag.models.segmentation import SegmentationProvider

from conftest import write_tagged_photos


def run_cli(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """`geotag ...` through its real entry point: (exit code, stderr)."""
    from geotag.cli import main

    monkeypatch.setattr(sys, "argv", ["geotag", *args])
    with pytest.raises(SystemExit) as info:
        main()
    return info.value.code, capsys.readouterr().err


@pytest.fixture(scope="module")
def classifier_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded random ResNet-18 with 365 outputs, saved as CSAIL saved theirs: {'arch', 'state_dict'}
    with DataParallel's `module.` prefix, in torch's legacy (non-zip) format."""
    torch.manual_seed(0)
    model = Places365Classifier("resnet18")
    state = {f"module.{k}": v for k, v in model.net.state_dict().items()}
    path = tmp_path_factory.mktemp("places365") / "resnet18_places365.pth.tar"
    checkpoint = {"epoch": 90, "arch": "resnet18", "state_dict": state, "best_prec1": 54.7}
    torch.save(checkpoint, path, _use_new_zipfile_serialization=False)
    return path


# ------------------------------------------------------------------------------------------------
# The hierarchy: what the shipped file holds is what the Places365 sheet says


def test_hierarchy_agrees_with_the_places365_sheet() -> None:
    """Counts read off the sheet (Places365 tab): 159 categories under indoor, 80 under outdoor natural,
    159 under outdoor man-made, 33 under two level-1 groups; each level-2 group under its own parent."""
    h = hierarchy()
    assert (
        len(h.categories) == 365 and h.categories[0] == "/a/airfield" and h.categories[-1] == "/z/zen_garden"
    )
    assert list(h.categories) == sorted(h.categories)  # categories_places365.txt's (alphabetical) order
    assert h.level1.sum(0).tolist() == [159, 80, 159]
    assert int((h.level1.sum(1) > 1).sum()) == 33 and bool((h.level1.sum(1) >= 1).all())
    sizes = [44, 35, 31, 16, 17, 30, 33, 14, 31, 32, 25, 31, 36, 11, 37, 37]
    assert h.level2.sum(0).tolist() == sizes and bool((h.level2.sum(1) >= 1).all())
    parent = [0] * 6 + [1] * 4 + [2] * 6  # 6 indoor groups, 4 natural, 6 man-made
    for k, p in enumerate(parent):
        assert bool((h.level1[h.level2[:, k] > 0, p] == 1).all()), h.level2_names[k]
    one = {name: h.level1[i].tolist() for i, name in enumerate(h.names)}
    assert one["airfield"] == [0, 0, 1] and one["airplane_cabin"] == [1, 0, 0]
    assert one["swimming_hole"] == [0, 1, 0] and one["bus_station/indoor"] == [1, 0, 1]
    assert S3_NAMES == SCENES  # the names and order train's parse_scenes reads


def test_folding_follows_geoestimation_row_normalised() -> None:
    """S3 = p365 @ (level-1 rows / their sums): a two-group category splits its mass in half."""
    h = hierarchy()
    p = torch.zeros(2, 365)
    p[0, h.names.index("bus_station/indoor")] = 1.0
    p[1, h.names.index("airfield")] = 1.0
    assert (p @ h.to_s3).tolist() == [[0.5, 0.0, 0.5], [0.0, 0.0, 1.0]]
    assert torch.allclose((p @ h.to_s16).sum(1), torch.ones(2))


# ------------------------------------------------------------------------------------------------
# Weights: CSAIL's checkpoint layout, a bare state dict, and what is refused


def test_csail_checkpoint_and_bare_state_dict_load_to_the_same_network(
    classifier_file: Path, tmp_path: Path
) -> None:
    from safetensors.torch import save_file

    a = load_places365(classifier_file)
    assert a.arch == "resnet18" and a.name == str(classifier_file)
    (tmp_path / "bare").mkdir()
    bare = tmp_path / "bare" / "model.safetensors"  # no 'arch': the depth is read off the keys
    save_file({k: v.contiguous() for k, v in a.net.state_dict().items()}, str(bare))
    b = load_places365(bare.parent)  # a folder holding one weights file (hf download --local-dir)
    x = torch.randn(2, 3, 64, 64)
    assert b.arch == "resnet18" and torch.equal(a.classify(x).p365, b.classify(x).p365)
    scores = a.classify(x)
    assert torch.allclose(scores.p3.sum(1), torch.ones(2)) and torch.allclose(
        scores.p16.sum(1), torch.ones(2)
    )

    wrong = tmp_path / "imagenet.safetensors"
    import torchvision

    save_file(torchvision.models.resnet18(weights=None).state_dict(), str(wrong))
    with pytest.raises(WeightsError, match="1000 outputs"):
        load_places365(wrong)
    with pytest.raises(WeightsError, match="no such weights file"):
        load_places365(tmp_path / "missing.pth.tar")
    (tmp_path / "junk.pth.tar").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read Places365 weights"):
        load_places365(tmp_path / "junk.pth.tar")


def test_offline_without_weights_names_the_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match=f"hf download {DEFAULT_PLACES365} {PLACES365_FILE}"):
        load_places365(None)
    (tmp_path / "p").mkdir()
    code, err = run_cli(
        ["label-scenes", str(tmp_path / "p"), "--out", str(tmp_path / "s.csv")], monkeypatch, capsys
    )
    assert code == 2 and "hf download" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "s.csv").exists()
    args = ["label-scenes", str(tmp_path / "nowhere"), "--out", str(tmp_path / "s.csv")]
    code, err = run_cli(args, monkeypatch, capsys)  # the photos are checked before any weights
    assert code == 2 and "nowhere" in err and "hf download" not in err


# ------------------------------------------------------------------------------------------------
# The command: rows per file, error rows, resume, the labels themselves


def _photos(folder: Path) -> Path:
    (folder / "deeper").mkdir(parents=True)
    write_tagged_photos(folder, n=5)
    write_tagged_photos(folder / "deeper", n=2)  # recursive walk; same names as above, other folder
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (folder / "notes.txt").write_text("not a photo")  # not an image name: not listed, as in predict
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 70, 3), dtype=np.uint8)).save(folder / "untagged.png")
    return folder


def _rows(path: Path) -> list[dict[str, Any]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_label_scenes_rows_errors_resume_and_labels(
    classifier_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    photos = _photos(tmp_path / "photos")
    out = tmp_path / "scenes.csv"
    args = ["label-scenes", str(photos), "--out", str(out), "--classifier", str(classifier_file)]
    args += ["--device", "cpu", "--workers", "0", "--batch-size", "3"]
    code, err = run_cli(args, monkeypatch, capsys)
    assert code == 1, err  # one broken file
    assert "labelled 8 photo(s)" in err and "1 error(s)" in err and "broken.jpg" in err
    rows = {Path(r["path"]).relative_to(photos).as_posix(): r for r in _rows(out)}
    assert sorted(rows) == sorted(
        [
            "broken.jpg",
            "untagged.png",
            *(f"p{i:03d}.jpg" for i in range(5)),
            "deeper/p000.jpg",
            "deeper/p001.jpg",
        ]
    )
    assert rows["broken.jpg"]["status"] == "error" and rows["broken.jpg"]["error"]
    assert rows["broken.jpg"]["scene"] == ""
    ok = [r for r in rows.values() if r["status"] == "ok"]
    assert all(r["scene"] in SCENES and r["s16"] in hierarchy().level2_names for r in ok)
    assert all(abs(sum(float(r[f"prob_{s}"]) for s in SCENES) - 1) < 1e-5 for r in ok)
    assert rows["untagged.png"]["gt_lat"] == "" and rows["p001.jpg"]["gt_lat"] != ""

    # the labels are the classifier's: decode as the engine does, fold, take the best of each level
    from geotag.io.decode import decode_for_model, normalize

    model = load_places365(classifier_file)
    pre = model.preprocess()
    pixels = decode_for_model(photos / "p003.jpg", pre.input_size, pre.interpolation, draft=True)
    scores = model.classify(normalize(pixels[None], pre.mean, pre.std))
    row = rows["p003.jpg"]
    assert row["scene"] == S3_NAMES[int(scores.p3.argmax())]
    assert row["s365"] == hierarchy().names[int(scores.p365.argmax())]
    assert float(row["scene_confidence"]) == pytest.approx(float(scores.p3.max()), abs=1e-5)

    # resume: the ok rows stay, the broken file is tried again, a new photo is labelled
    Image.new("RGB", (50, 40), (20, 120, 40)).save(photos / "new.jpg")
    code, err = run_cli([*args, "--resume"], monkeypatch, capsys)
    assert code == 1 and "labelled 1 photo(s)" in err and "8 kept" in err and "(10 rows)" in err
    again = [r["path"] for r in _rows(out)]
    assert len(again) == len(set(again)) == 10 and str(photos / "new.jpg") in again
    assert not list(tmp_path.glob("scenes.csv.parts"))  # no part files left behind

    table = _rows(out)
    table[0]["size"] = "big"  # an edited file whose size is not a number: one line, exit 2
    with (tmp_path / "edited.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    edited_args = [*args[:3], str(tmp_path / "edited.csv"), *args[4:], "--resume"]
    code, err = run_cli(edited_args, monkeypatch, capsys)
    assert code == 2 and "column size is not int64" in err and "Traceback" not in err

    (photos / "broken.jpg").unlink()  # a fixed collection: exit 0; the gone file's row drops out
    parquet = tmp_path / "scenes.parquet"
    code, err = run_cli([*args[:3], str(parquet), *args[4:]], monkeypatch, capsys)
    assert code == 0, err
    table = pq.read_table(parquet)
    assert table.num_rows == 9 and set(table.column("status").to_pylist()) == {"ok"}


def test_bad_out_extension_is_an_input_error(
    classifier_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "p").mkdir()
    args = ["label-scenes", str(tmp_path / "p"), "--out", str(tmp_path / "s.json")]
    code, err = run_cli([*args, "--classifier", str(classifier_file)], monkeypatch, capsys)
    assert code == 2 and ".parquet or .csv" in err


# ------------------------------------------------------------------------------------------------
# End to end: the scene row of TransLocator trains on the labels label-scenes made


class GreySegmenter(SegmentationProvider):
    """A stand-in segmenter (no download): label = quantised brightness."""

    def labels(self, rgb: torch.Tensor) -> torch.Tensor:
        return (rgb.mean(dim=1) * 149).long()


def test_scene_translocator_trains_on_label_scenes_output(
    classifier_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A photo folder has no scene labels (the scene row refuses it); its label-scenes file is a
    manifest with them (path, gt_lat / gt_lon, scene), and the full row trains on it."""
    from geotag.config import TrainConfig
    from geotag.engine.train import run_train
    from geotag.engine.train_data import load_samples
    from geotag.errors import InputError
    from geotag.models.tasks import TransLocatorTask
    from geotag.models.translocator import BackboneConfig

    (tmp_path / "photos").mkdir()
    photos = write_tagged_photos(tmp_path / "photos")
    scenes = tmp_path / "scenes.csv"
    args = ["label-scenes", str(photos), "--out", str(scenes), "--classifier", str(classifier_file)]
    code, err = run_cli([*args, "--device", "cpu", "--workers", "0"], monkeypatch, capsys)
    assert code == 0, err
    samples = load_samples([scenes])
    assert len(samples) == 24 and bool((samples.scene >= 0).all())
    labels = {r["path"]: SCENES.index(r["scene"]) for r in _rows(scenes)}
    assert samples.scene.tolist() == [labels[p] for p in samples.paths.to_pylist()]

    backbone = BackboneConfig(
        arch="vit_tiny_patch16_224",
        tag="none",
        overrides={"embed_dim": 32, "depth": 2, "num_heads": 2, "patch_size": 16},
    )

    def task() -> TransLocatorTask:
        kwargs = {"backbone": backbone, "img_size": 32, "segmenter": GreySegmenter()}
        return TransLocatorTask("vit+seg+mff+scene", model_kwargs=kwargs, cells_scale="auto")

    settings: dict[str, Any] = {
        "model": "translocator",
        "epochs": 1,
        "batch_size": 8,
        "workers": 0,
        "device": "cpu",
        "allow_untrained": True,
        "augment": False,
        "val_fraction": 0.0,
    }
    with pytest.raises(InputError, match="scene label"):
        run_train(TrainConfig(data=[photos], out=tmp_path / "folder", **settings), task=task())
    summary = run_train(TrainConfig(data=[scenes], out=tmp_path / "run", **settings), task=task())
    assert summary.steps == 3


def test_truth_manifest_gives_the_coordinates_of_untagged_photos(
    classifier_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """MP-16-style data: GPS in a CSV, not in the files. With --truth the scenes file carries the
    manifest's coordinates, so train reads it as a manifest with scene labels."""
    from geotag.engine.train_data import load_samples

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.new("RGB", (40, 30), (60 * i, 90, 30)).save(photos / f"img{i}.jpg")
    manifest = tmp_path / "mp16.csv"
    manifest.write_text("IMG_ID,LAT,LON\nimg0.jpg,10.5,20.25\nimg1.jpg,-33.9,151.2\nimg2.jpg,48.86,2.35\n")
    out = tmp_path / "scenes.csv"
    args = ["label-scenes", str(photos), "--out", str(out), "--classifier", str(classifier_file)]
    code, err = run_cli(
        [*args, "--truth", str(manifest), "--device", "cpu", "--workers", "0"], monkeypatch, capsys
    )
    assert code == 0, err
    assert "3 file(s) matched" in err
    samples = load_samples([out])
    by_name = {
        Path(p).name: (a, b)
        for p, a, b in zip(samples.paths.to_pylist(), samples.lat, samples.lon, strict=True)
    }
    assert by_name == {"img0.jpg": (10.5, 20.25), "img1.jpg": (-33.9, 151.2), "img2.jpg": (48.86, 2.35)}
    assert bool((samples.scene >= 0).all())


def test_a_stopped_run_keeps_its_rows_for_resume(
    classifier_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped after labelling (here: in the final merge), the rows made are in `<out>.parts`; --resume
    labels nothing again and writes them all."""
    import geotag.engine.label_scenes as ls

    photos = tmp_path / "photos"
    photos.mkdir()
    write_tagged_photos(photos, n=4)
    out = tmp_path / "scenes.parquet"
    model = load_places365(classifier_file)
    run = {"device": torch.device("cpu"), "workers": 0, "batch_size": 2}

    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(ls, "_merge", stop)
    with pytest.raises(KeyboardInterrupt):
        ls.run_label_scenes([photos], out, model, **run)
    monkeypatch.undo()
    assert not out.exists() and len(list((tmp_path / "scenes.parquet.parts").glob("scenes-*.parquet"))) == 1
    calls = []
    monkeypatch.setattr(
        model, "classify", lambda x: calls.append(x) or Places365Classifier.classify(model, x)
    )
    summary = ls.run_label_scenes([photos], out, model, resume=True, **run)
    assert (summary.labelled, summary.kept, summary.rows, calls) == (0, 4, 4, [])
    assert pq.read_table(out).column("scene").null_count == 0
