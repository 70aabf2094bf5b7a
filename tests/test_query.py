"""Text queries: CLIP's text tower loaded from an HF CLIP checkpoint equals HF CLIPModel's text features
on a tiny random config; the query scores the gallery through GeoCLIP's released heads."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import torch

from geotag.engine.query import heads_model, load_text_encoder, run_query, text_features
from geotag.errors import WeightsError
from geotag.models.geoclip import embed_locations

transformers = pytest.importorskip("transformers")
pytest.importorskip("geoclip.model")

TEXTS = ["a beach", "snowy mountain village", "paris"]


@pytest.fixture(scope="module")
def tiny_clip_text(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """A tiny random HF CLIPModel (768-d projection) with a character-level CLIP tokenizer."""
    folder = tmp_path_factory.mktemp("tinyclipfull")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tok = transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    text = dict(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=32, bos_token_id=0, eos_token_id=1, pad_token_id=1,
    )  # fmt: skip
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                  image_size=32, patch_size=16)  # fmt: skip
    torch.manual_seed(0)
    model = transformers.CLIPModel(
        transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=768)
    ).eval()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder, model


def test_text_tower_matches_hf_get_text_features(tiny_clip_text) -> None:
    folder, reference = tiny_clip_text
    tower, tokenizer, _ = load_text_encoder(folder)
    ours = text_features(tower, tokenizer, TEXTS)
    tokens = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        want = reference.get_text_features(**tokens)
        want = getattr(want, "pooler_output", want)
    assert ours.shape == (3, 768)
    assert (ours - want).abs().max().item() <= 1e-5


def test_query_scores_gallery_through_released_heads(tiny_clip_text, tmp_path: Path) -> None:
    folder, reference = tiny_clip_text
    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(-80, 80, 300), rng.uniform(-180, 180, 300)
    gallery = tmp_path / "g.csv"
    gallery.write_text("lat,lon\n" + "\n".join(f"{a},{b}" for a, b in zip(lat, lon, strict=True)))
    out = tmp_path / "top.parquet"
    s = run_query(TEXTS, out, text_model=folder, gallery=gallery, top_k=5)
    assert (s.queries, s.points, s.rows) == (3, 300, 15)
    table = pq.read_table(out).to_pydict()
    assert table["query"][:5] == ["a beach"] * 5 and table["rank"][:5] == [1, 2, 3, 4, 5]
    # independent recomputation: HF text features -> released image MLP -> cosine with GPS embeddings
    model = heads_model(torch.zeros(1, 2))
    tokens = load_text_encoder(folder)[1](TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        feats = reference.get_text_features(**tokens)
        feats = getattr(feats, "pooler_output", feats)
        t = torch.nn.functional.normalize(model.image_encoder.mlp(feats), dim=1)
    g = torch.from_numpy(embed_locations(lat.astype(np.float32), lon.astype(np.float32), normalize=True))
    probs = (model.logit_scale.detach().exp() * t @ g.T).softmax(dim=1)
    best = probs.argmax(dim=1).numpy()
    for q in range(3):
        assert table["lat"][5 * q] == pytest.approx(float(np.float32(lat[best[q]])), abs=1e-4)
        assert table["probability"][5 * q] == pytest.approx(float(probs[q, best[q]]), rel=1e-4)
    grid_out = tmp_path / "grid.csv"
    png = tmp_path / "heat.png"
    page = tmp_path / "places.html"
    s = run_query(
        ["paris", "a beach"], grid_out, text_model=folder, grid_deg=10.0, top_k=3, heatmap=png, map_html=page
    )
    assert s.points == 18 * 36 and pacsv.read_csv(grid_out).num_rows == 6
    html = page.read_text()  # the report's offline map: no outside address, the six places as data
    assert "L.map" in html and "http://" not in html.replace("http://www.w3.org", "")
    assert html.count("a beach #") == 3 and html.count("paris #") == 3
    from PIL import Image

    with Image.open(png) as im:
        assert im.format == "PNG" and im.size == (1800, 500)


def test_query_errors_are_one_line(tiny_clip_text, tmp_path: Path, monkeypatch, capsys) -> None:
    from geotag.cli import main

    folder, _ = tiny_clip_text
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    for args, needle in (
        (["q", "--out", str(tmp_path / "x.txt"), "--text-model", str(folder)], ".parquet or .csv"),
        (["q", "--out", str(tmp_path / "x.csv"), "--text-model", "someone/missing"], "hf download"),
        (["q", "--out", str(tmp_path / "x.csv"), "--text-model", str(tmp_path)], "config.json"),
    ):
        monkeypatch.setattr(sys, "argv", ["geotag", "query", *args])
        with pytest.raises(SystemExit) as info:
            main()
        err = capsys.readouterr().err
        assert info.value.code == 2 and needle in err and err.count("\n") == 1, err
    assert not (tmp_path / "x.csv").exists()
    with pytest.raises(WeightsError):
        load_text_encoder(tmp_path)


def test_filter_preds_reweights_topk_by_text(tiny_clip_text, tmp_path: Path) -> None:
    import pyarrow as pa

    from geotag.engine.query import filter_predictions, text_features
    from geotag.io.parquet import TOPK_TYPE

    folder, _ = tiny_clip_text
    cands = [
        [{"lat": 10.0, "lon": 20.0, "score": 0.5}, {"lat": -30.0, "lon": 140.0, "score": 0.3},
         {"lat": 60.0, "lon": -100.0, "score": 0.2}],
        None,
    ]  # fmt: skip
    preds = tmp_path / "p.parquet"
    pq.write_table(
        pa.table({"image_id": ["a", "b"], "path": ["a.jpg", "b.jpg"], "topk": pa.array(cands, TOPK_TYPE)}),
        preds,
    )
    out = tmp_path / "f.csv"
    s = filter_predictions(preds, "a beach", out, text_model=folder)
    assert (s.rows, s.rescored) == (2, 1)
    got = pacsv.read_csv(out).to_pydict()
    # by hand: text softmax over the three candidates, times the image scores, renormalised
    tower, tokenizer, _ = load_text_encoder(folder)
    model = heads_model(torch.zeros(1, 2))
    with torch.no_grad():
        t = torch.nn.functional.normalize(
            model.image_encoder.mlp(text_features(tower, tokenizer, ["a beach"])), dim=1
        )
        g = model.encode_locations(torch.tensor([[c["lat"], c["lon"]] for c in cands[0]]))
        text_p = (model.logit_scale.exp() * t @ g.T).softmax(dim=1)[0].double()
    w = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64) * text_p
    w = w / w.sum()
    best = int(w.argmax())
    assert got["pred_lat"][0] == cands[0][best]["lat"] and got["score"][0] == pytest.approx(float(w[best]))
    assert got["orig_lat"][0] == 10.0 and got["pred_lat"][1] is None


def test_filter_preds_skips_bad_candidates_and_cuts_long_rows(tiny_clip_text, tmp_path: Path) -> None:
    """Issue 29: NaN / 1e308 candidates were passed through (a NaN point could win); a row of 2M
    candidates took 7 GB. Now bad candidates are left out and counted, a row uses its first 1000."""
    import pyarrow as pa

    from geotag.engine.query import MAX_CANDIDATES, filter_predictions
    from geotag.io.parquet import TOPK_TYPE

    folder, _ = tiny_clip_text
    nan = float("nan")
    cands = [
        [{"lat": nan, "lon": 20.0, "score": 0.9}, {"lat": 10.0, "lon": 1e308, "score": 0.9},
         {"lat": -30.0, "lon": 140.0, "score": 0.3}],
        [{"lat": nan, "lon": nan, "score": nan}],
        [{"lat": 1.0, "lon": 2.0, "score": 0.1}] * (MAX_CANDIDATES + 5),
    ]  # fmt: skip
    preds = tmp_path / "p.parquet"
    pq.write_table(
        pa.table({"image_id": ["a", "b", "c"], "path": ["a", "b", "c"], "topk": pa.array(cands, TOPK_TYPE)}),
        preds,
    )
    s = filter_predictions(preds, "a beach", tmp_path / "f.parquet", text_model=folder, batch_rows=1)
    assert (s.rows, s.rescored, s.bad_candidates, s.cut_rows) == (3, 2, 3, 1)
    got = pq.read_table(tmp_path / "f.parquet").to_pydict()
    assert got["pred_lat"] == [-30.0, None, 1.0] and got["orig_lat"][0] == -30.0


def test_filter_preds_malformed_topk_is_one_line(tiny_clip_text, tmp_path: Path) -> None:
    import pyarrow as pa

    from geotag.engine.query import filter_predictions
    from geotag.errors import InputError

    folder, _ = tiny_clip_text
    bad = pa.array([[{"lat": "x", "where": 1}]])
    preds = tmp_path / "p.parquet"
    pq.write_table(pa.table({"image_id": ["a"], "path": ["a"], "topk": bad}), preds)
    with pytest.raises(InputError, match="not a list of"):
        filter_predictions(preds, "a beach", tmp_path / "f.csv", text_model=folder)


def test_large_grid_is_scored_in_chunks_like_a_whole(tiny_clip_text, monkeypatch) -> None:
    """A gallery above CACHED_GALLERY_MAX is scored SCORE_CHUNK points at a time: the same logits."""
    from geotag.engine import query
    from geotag.engine.query import grid_points, score_texts

    folder, _ = tiny_clip_text
    tower, tokenizer, _ = load_text_encoder(folder)
    model = heads_model(grid_points(10.0))
    whole, _ = score_texts(TEXTS, tower, tokenizer, model)
    monkeypatch.setattr(query, "CACHED_GALLERY_MAX", 0)
    monkeypatch.setattr(query, "SCORE_CHUNK", 100)
    chunked, probs = score_texts(TEXTS, tower, tokenizer, model)
    assert chunked.shape == (3, 18 * 36)
    assert torch.allclose(chunked, whole, rtol=1e-5, atol=1e-5)
    assert torch.allclose(probs.sum(dim=1), torch.ones(3))
