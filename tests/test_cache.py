"""The on-disk tensor cache: computed once, reused, damaged entries recomputed, can be turned off."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from geotag.cache import cache_dir, cached_tensor, tensor_key


def test_computed_once_then_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEOTAG_CACHE", str(tmp_path))
    calls = []

    def compute() -> torch.Tensor:
        calls.append(1)
        return torch.arange(6, dtype=torch.float32).view(2, 3)

    first = cached_tensor("t", "k", compute)
    second = cached_tensor("t", "k", compute)
    assert torch.equal(first, second) and len(calls) == 1
    (tmp_path / "t-k.safetensors").write_bytes(b"garbage")
    third = cached_tensor("t", "k", compute)
    assert torch.equal(third, first) and len(calls) == 2


def test_cache_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEOTAG_CACHE", "off")
    assert cache_dir() is None
    assert cached_tensor("t", "k", lambda: torch.ones(2)).sum() == 2


def test_key_depends_on_content_dtype_and_shape() -> None:
    a = torch.zeros(4)
    assert tensor_key(a) == tensor_key(torch.zeros(4))
    assert tensor_key(a) != tensor_key(torch.zeros(2, 2))
    assert tensor_key(a) != tensor_key(torch.zeros(4, dtype=torch.float64))
    assert tensor_key(a) != tensor_key(torch.tensor([0.0, 0.0, 0.0, 1.0]))


def test_geoclip_gallery_from_cache_equals_fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from geotag.models.clip_convert import ClipVisionConfig
    from geotag.models.registry import build_geoclip

    monkeypatch.setenv("GEOTAG_CACHE", str(tmp_path))
    tiny = ClipVisionConfig(width=32, layers=1, heads=2, mlp_dim=64, patch_size=16, image_size=64)
    model = build_geoclip(vit=tiny, allow_untrained=True)
    model.set_gallery(model.gps_gallery[:2000].clone())
    model.prepare()
    fresh = model.gallery_features.clone()
    assert len(list(tmp_path.glob("geoclip-gallery-cpu-*.safetensors"))) == 1
    model.gallery_features = None
    model.prepare()
    assert torch.equal(model.gallery_features, fresh)
