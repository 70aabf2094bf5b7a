"""Issue 7's speed work, checked on CPU: batch assembly from worker chunks, the stager and writer
threads, --compile's padding, fused attention in the towers, and the sort-free GeoCLIP confidence."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import torch

from geotag.config import PredictConfig
from geotag.engine import pipeline
from geotag.engine.pipeline import RowSink, StagedBatch, Stager, assemble, compile_model
from geotag.engine.predict import run_predict
from geotag.geo.distance import haversine_matrix_torch
from geotag.models.base import Preprocess
from geotag.models.clip_convert import ClipVisionConfig
from geotag.models.geoclip import CONFIDENCE_RADIUS_KM, half_mass_index
from geotag.models.registry import build_geoclip

GALLERY = torch.stack([torch.rand(300) * 160 - 80, torch.rand(300) * 360 - 180], dim=1)


def tiny_geoclip(size: int = 64):  # type: ignore[no-untyped-def]
    """A tiny-tower GeoCLIP over a 300-point gallery (the 100K one is too slow for CPU tests)."""
    torch.manual_seed(0)
    vit = ClipVisionConfig(width=32, layers=1, heads=2, mlp_dim=64, patch_size=16, image_size=size)
    model = build_geoclip(vit=vit, allow_untrained=True)
    model.set_gallery(GALLERY)
    model.eval().prepare()
    return model


# -- batch assembly -----------------------------------------------------------------------------------


def _chunk(start: int, n_rows: int, errors: set[int]) -> StagedBatch:
    """Rows start..start+n-1; row k's pixels are all k (mod 256) unless k is an error row."""
    rows = [{"k": k} for k in range(start, start + n_rows)]
    index = [i for i in range(n_rows) if start + i not in errors]
    if not index:
        return StagedBatch(rows, None, [], skipped=1)
    pixels = torch.stack([torch.full((3, 2, 2), (start + i) % 256, dtype=torch.uint8) for i in index])
    return StagedBatch(rows, pixels, index, skipped=1)


@pytest.mark.parametrize("batch_size", [1, 3, 4, 7, 100])
def test_assemble_gives_exact_batches_in_order(batch_size: int) -> None:
    errors = {2, 3, 9, 10, 11, 12, 13}
    chunks = [_chunk(0, 5, errors), _chunk(5, 4, errors), _chunk(9, 5, errors), _chunk(14, 6, errors)]
    batches = list(assemble(chunks, batch_size))
    seen = [r["k"] for b in batches for r in b.rows]
    assert seen == list(range(20))
    assert sum(b.skipped for b in batches) == 4
    for b in batches[:-1]:
        assert b.images == batch_size
    for b in batches:
        assert b.index == sorted(b.index)
        for j, i in enumerate(b.index):
            assert int(b.pixels[j, 0, 0, 0]) == b.rows[i]["k"]
            assert b.rows[i]["k"] not in errors


def test_stager_passes_errors_to_the_consumer_and_stops() -> None:
    pre = Preprocess(2, (0.5,) * 3, (0.5,) * 3)

    def chunks():  # type: ignore[no-untyped-def]
        yield {
            "rows": [{"k": 0}],
            "pixels": torch.zeros(1, 3, 2, 2, dtype=torch.uint8),
            "index": [0],
            "skipped": 0,
        }
        raise RuntimeError("worker died")

    with pytest.raises(RuntimeError, match="worker died"), Stager(chunks(), pre, torch.device("cpu"), 1) as s:
        for _ in s:
            pass

    def endless():  # type: ignore[no-untyped-def]
        while True:
            yield {
                "rows": [{}],
                "pixels": torch.zeros(1, 3, 2, 2, dtype=torch.uint8),
                "index": [0],
                "skipped": 0,
            }

    with Stager(endless(), pre, torch.device("cpu"), 2) as s:  # the consumer leaves early: no hang
        next(iter(s))
    assert not any(t.name == "geotag-stager" for t in threading.enumerate())


def test_row_sink_writes_in_order_and_reports_failures() -> None:
    written: list[int] = []
    with RowSink(lambda rows: written.extend(r["k"] for r in rows)) as sink:
        for k in range(50):
            sink.put([{"k": k}])
    assert written == list(range(50))

    def boom(rows: list[dict[str, Any]]) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"), RowSink(boom) as sink:
        sink.put([{"k": 0}])
    kept: list[int] = []
    with pytest.raises(KeyboardInterrupt), RowSink(lambda rows: kept.extend(r["k"] for r in rows)) as sink:
        sink.put([{"k": 1}])
        raise KeyboardInterrupt
    assert kept == [1]  # rows queued before the interrupt are still written


# -- engine -------------------------------------------------------------------------------------------


def test_compile_pads_the_last_batch_and_changes_no_row(
    sample_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--compile (static shapes) pads the last batch; torch.compile itself is stubbed out (CPU CI)."""
    model = tiny_geoclip()
    compiled: list[torch.nn.Module] = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: compiled.append(self))
    sizes: list[int] = []
    real = model.predict
    monkeypatch.setattr(
        model, "predict", lambda images, k, **kw: sizes.append(len(images)) or real(images, k)
    )
    base = {"device": "cpu", "workers": 0, "batch_size": 5}
    run_predict(PredictConfig(paths=[sample_data], out=tmp_path / "a.parquet", **base), model=model)
    plain = list(sizes)
    sizes.clear()
    cfg = PredictConfig(paths=[sample_data], out=tmp_path / "b.parquet", compile=True, **base)
    run_predict(cfg, model=model)
    assert compiled == [model.image_encoder.backbone]
    assert plain[-1] < 5 and set(sizes) == {5}
    cols = ["path", "status", "pred_lat", "pred_lon", "confidence", "error_km"]
    a, b = pq.read_table(tmp_path / "a.parquet", columns=cols), pq.read_table(cfg.out, columns=cols)
    assert a.column("path").equals(b.column("path")) and a.column("status").equals(b.column("status"))
    for col in cols[2:]:
        assert a.column(col).to_pylist() == pytest.approx(b.column(col).to_pylist(), abs=1e-5, nan_ok=True)
    assert compile_model(model) == 1 and len(compiled) == 1  # idempotent


def test_small_chunks_feed_big_batches(
    sample_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers hand over chunks smaller than a batch; rows and order are those of one big batch."""
    model = tiny_geoclip()
    cols = ["path", "status", "error", "pred_lat", "pred_lon", "image_id"]
    base = {"device": "cpu", "workers": 0, "batch_size": 8}
    run_predict(PredictConfig(paths=[sample_data], out=tmp_path / "a.parquet", **base), model=model)
    monkeypatch.setattr(pipeline, "LOADER_CHUNK", 3)
    monkeypatch.setattr("geotag.engine.predict.LOADER_CHUNK", 3)
    run_predict(PredictConfig(paths=[sample_data], out=tmp_path / "b.parquet", **base), model=model)
    assert pq.read_table(tmp_path / "a.parquet", columns=cols).equals(
        pq.read_table(tmp_path / "b.parquet", columns=cols)
    )


def test_towers_use_fused_attention() -> None:
    """timm's Attention calls F.scaled_dot_product_attention (flash / memory-efficient kernels on CUDA)."""
    from geotag.models.translocator import BackboneConfig, TransLocatorConfig, create_vit

    geoclip = tiny_geoclip()
    assert all(b.attn.fused_attn for b in geoclip.image_encoder.backbone.blocks)
    vit = create_vit(
        TransLocatorConfig(backbone=BackboneConfig(overrides={"embed_dim": 32, "depth": 1, "num_heads": 2}))
    )
    assert all(b.attn.fused_attn for b in vit.blocks)
    calls = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(*a, **k):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(*a, **k)

    torch.nn.functional.scaled_dot_product_attention = spy
    try:
        with torch.inference_mode():
            geoclip.image_encoder(torch.zeros(1, 3, 64, 64))
    finally:
        torch.nn.functional.scaled_dot_product_attention = real
    assert len(calls) == len(geoclip.image_encoder.backbone.blocks)


# -- GeoCLIP confidence and radius --------------------------------------------------------------------


def _brute_force(
    probs: torch.Tensor, points: torch.Tensor, gallery: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The definition: haversine to every gallery point, full sort, cumulative sum."""
    d = haversine_matrix_torch(
        points[:, 0].double(), points[:, 1].double(), gallery[:, 0].double(), gallery[:, 1].double()
    )
    mass = torch.where(d <= CONFIDENCE_RADIUS_KM, probs.double(), 0.0).sum(dim=1)
    d_sorted, order = d.sort(dim=1)
    cum = probs.double().gather(1, order).cumsum(dim=1)
    half = (cum < 0.5 * cum[:, -1:]).sum(dim=1, keepdim=True).clamp(max=d.shape[1] - 1)
    return mass, d_sorted.gather(1, half).squeeze(1)


@pytest.mark.parametrize("temperature", [0.01, 3.0, 60.0])
def test_spread_equals_the_brute_force(temperature: float) -> None:
    model = tiny_geoclip()
    gen = torch.Generator().manual_seed(1)
    clustered = GALLERY[:50] + torch.randn(50, 2, generator=gen) * 0.05  # dense city-like clusters
    gallery = torch.cat([GALLERY, clustered, GALLERY[:20]])  # and exact duplicates
    model.set_gallery(gallery)
    probs = (torch.randn(12, len(gallery), generator=gen) * temperature).softmax(dim=1)
    points = gallery[probs.argmax(dim=1)]
    mass, radius = model._spread(probs, points)
    want_mass, want_radius = _brute_force(probs, points, gallery)
    assert torch.allclose(mass.double(), want_mass, atol=1e-6)
    assert torch.allclose(radius.double(), want_radius, atol=2e-3)  # metres: float32 gallery


def test_half_mass_index_matches_a_full_sort() -> None:
    gen = torch.Generator().manual_seed(2)
    key = torch.rand(6, 5000, generator=gen) * 2
    key[:, :300] = key[:, :1]  # ties and a crowded bin
    p = torch.rand(6, 5000, generator=gen) ** 8
    got = half_mass_index(key, p, bins=64)
    order = key.sort(dim=1, stable=True).indices
    cum = p.gather(1, order).cumsum(dim=1)
    want = order.gather(1, (cum < 0.5 * cum[:, -1:]).sum(dim=1, keepdim=True)).squeeze(1)
    assert torch.equal(key.gather(1, got[:, None]), key.gather(1, want[:, None]))


def test_mpo_photos_are_decoded_in_draft_mode() -> None:
    """Phone JPEGs with a second image appended open as MPO; draft mode applies to them too (it did not:
    a full 8 MP decode, 7-8x slower)."""
    from geotag.io.decode import load_rgb

    from conftest import fixture_dir

    path = fixture_dir("geotagged") / "mapillary-portland-3840x2160.jpg"
    assert load_rgb(path, 224).size == (480, 270)
