"""Registry and weights resolution, offline: nothing here may touch the network."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from geotag.errors import InputError, WeightsError
from geotag.models import clip_convert as cc
from geotag.models import registry
from geotag.models.geoclip import GeoCLIP, geoclip_version
from geotag.models.registry import available_models, build_geoclip, build_model, clip_preprocess

transformers = pytest.importorskip("transformers")

TINY = cc.ClipVisionConfig(width=64, layers=2, heads=4, mlp_dim=256, patch_size=14, image_size=224)


def tiny_clip(projection_dim: int = 768):
    torch.manual_seed(0)
    config = transformers.CLIPConfig(
        projection_dim=projection_dim,
        text_config=dict(hidden_size=32, intermediate_size=64, num_attention_heads=2, num_hidden_layers=1),
        vision_config=dict(
            hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, patch_size=14
        ),
    )
    return transformers.CLIPModel(config).eval()


@pytest.fixture
def empty_hub(tmp_path, monkeypatch) -> Path:
    """An empty HF cache and offline mode, whatever the machine's own cache holds."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def fake_cache_entry(cache: Path, repo_id: str, files: dict[str, object]) -> Path:
    """Lay out `files` as huggingface_hub's cache does (refs/main -> snapshots/<rev>/...)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    for name, content in files.items():
        if isinstance(content, str):
            (snapshot / name).write_text(content)
        else:
            save_file({k: v.contiguous() for k, v in content.items()}, snapshot / name)
    return snapshot


def test_available_models_and_unknown_name():
    assert "geoclip" in available_models()
    assert registry.MODELS["geoclip"].backbone.timm_hub_id == "timm/vit_large_patch14_clip_224.openai"
    with pytest.raises(InputError, match="available: .*geoclip"):
        build_model("nope")


def test_offline_without_weights_fails_fast(empty_hub):
    start = time.perf_counter()
    with pytest.raises(WeightsError) as info:
        build_model("geoclip")
    assert time.perf_counter() - start < 5
    message = str(info.value)
    assert "--backbone-weights" in message and "\n" not in message
    assert "hf download timm/vit_large_patch14_clip_224.openai" in message
    assert "openai/clip-vit-large-patch14" in message and "StreetCLIP" not in message  # not GeoCLIP heads


def test_unreachable_hub_fails_fast_without_retries(empty_hub, monkeypatch):
    """Not offline, but the endpoint refuses: the probe answers at once and no download is tried."""
    import huggingface_hub
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", pytest.fail)
    start = time.perf_counter()
    with pytest.raises(WeightsError, match="--backbone-weights"):
        build_model("geoclip")
    assert time.perf_counter() - start < 5


def test_hub_probe_is_bounded(monkeypatch):
    """A connection (or DNS lookup) that hangs cannot hold the probe past its timeout."""

    def hang(*args, **kwargs):
        time.sleep(3)
        raise OSError("timed out")

    monkeypatch.setattr(registry.socket, "create_connection", hang)
    start = time.perf_counter()
    assert registry.hub_reachable(timeout=0.5) is False
    assert time.perf_counter() - start < 2


@pytest.mark.slow
def test_untrained_vit_l14_builds_and_says_so(empty_hub):
    model = build_model("geoclip", allow_untrained=True)
    assert isinstance(model, GeoCLIP) and model.name == "geoclip"
    assert model.weights_label == f"UNTRAINED backbone (random init) + geoclip {geoclip_version()} heads"
    assert model.preprocess() == clip_preprocess(224)
    assert len(model.gps_gallery) == 100_000
    assert model.image_encoder.backbone.blocks[0].mlp.act.__class__.__name__ == "QuickGELU"
    assert len(model.image_encoder.backbone.blocks) == 24 and model.image_encoder.backbone.embed_dim == 1024
    model.set_gallery(model.gps_gallery[:64])
    with torch.inference_mode():
        pred = model.predict(torch.randn(1, 3, 224, 224), top_k=3)
    assert pred.topk_lat.shape == (1, 3)


def test_tiny_untrained_build_needs_permission(empty_hub):
    with pytest.raises(WeightsError):
        build_geoclip(vit=TINY)
    model = build_geoclip(vit=TINY, allow_untrained=True)
    assert model.weights_label.startswith("UNTRAINED backbone (random init)")
    assert model.image_encoder.backbone.embed_dim == 64


def test_hf_clip_folder_via_backbone_weights(empty_hub, tmp_path):
    clip = tiny_clip()
    folder = tmp_path / "my-clip"
    clip.save_pretrained(folder)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    preprocessor = dict(crop_size={"height": 224, "width": 224}, image_mean=mean, image_std=std, resample=3)
    (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    for path in (folder, folder / "model.safetensors"):
        model = build_model("geoclip", backbone_weights=path, allow_mismatched_heads=True)
        assert "HF CLIP" in model.weights_label and "UNTRAINED" not in model.weights_label
        assert model.preprocess() == cc.Preprocess(224, mean, std, "bicubic")
        x = torch.randn(2, 3, 224, 224)
        with torch.no_grad():
            want = clip.get_image_features(pixel_values=x)
            want = getattr(want, "pooler_output", want)
            assert (model.image_encoder.backbone(x) - want).abs().max().item() <= 1e-5


def test_hf_cache_of_openai_clip_is_used(empty_hub):
    clip = tiny_clip()
    fake_cache_entry(
        empty_hub,
        "openai/clip-vit-large-patch14",
        {"config.json": clip.config.to_json_string(), "model.safetensors": clip.state_dict()},
    )
    model = build_model("geoclip")
    assert model.weights_label.startswith("HF CLIP openai/clip-vit-large-patch14 (HF cache) + geoclip")


def test_timm_cache_entry_is_found_and_shape_checked(empty_hub):
    """A timm-format file in timm's repo cache is picked up (and must be a ViT-L/14)."""
    tiny = cc.create_clip_vit(TINY).state_dict()
    fake_cache_entry(empty_hub, "timm/vit_large_patch14_clip_224.openai", {"model.safetensors": tiny})
    with pytest.raises(
        WeightsError, match=r"timm/vit_large_patch14_clip_224\.openai \(HF cache\) do not fit"
    ):
        build_model("geoclip")


def test_timm_file_with_tiny_config(empty_hub, tmp_path):
    tower = cc.create_clip_vit(TINY)
    save_file(tower.state_dict(), tmp_path / "tower.safetensors")
    model = build_geoclip(
        vit=TINY, backbone_weights=tmp_path / "tower.safetensors", allow_mismatched_heads=True
    )
    assert str(tmp_path / "tower.safetensors") in model.weights_label
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(model.image_encoder.backbone(x), tower.eval()(x))


def test_projection_must_be_768(empty_hub, tmp_path):
    tiny_clip(projection_dim=512).save_pretrained(tmp_path)
    with pytest.raises(WeightsError, match="768"):
        build_model("geoclip", backbone_weights=tmp_path)


def test_custom_gallery_is_labelled(empty_hub, tmp_path):
    gallery = tmp_path / "region.csv"
    gallery.write_text("latitude,longitude\n48.85,2.35\n51.5,-0.12\n")
    model = build_geoclip(vit=TINY, allow_untrained=True, gallery=gallery)
    assert model.gps_gallery.shape == (2, 2)
    assert "gallery region.csv (2 points)" in model.weights_label
    with pytest.raises(InputError):
        build_geoclip(vit=TINY, allow_untrained=True, gallery=tmp_path / "missing.csv")
