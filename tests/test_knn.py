"""kNN over embedding galleries: chunked search, the estimator, gallery files, and real photos end to end."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

from geotag.config import GalleryConfig, PredictConfig
from geotag.engine.gallery import run_gallery_build
from geotag.engine.predict import run_predict
from geotag.errors import InputError
from geotag.geo.distance import haversine_np
from geotag.io.embeddings import GALLERY_KEY, read_gallery, read_gallery_info
from geotag.models.backbones import PooledBackbone, create_backbone
from geotag.models.base import Preprocess
from geotag.models.knn import GalleryKeys, KNNGeoModel, build_knn, chunked_topk, spherical_mean
from geotag.models.registry import build_model

from conftest import REPO, fixture_dir

GEOTAG = [sys.executable, "-m", "geotag.cli"]


def test_chunked_topk_equals_full_search() -> None:
    gen = torch.Generator().manual_seed(0)
    q = nn.functional.normalize(torch.randn(7, 16, generator=gen), dim=1)
    g = nn.functional.normalize(torch.randn(1000, 16, generator=gen), dim=1).half()
    s, i = chunked_topk(q, g, 12, block=7 * 50)  # 20 chunks of 50 rows
    ref_s, ref_i = (q @ g.float().T).topk(12, dim=1)
    assert torch.equal(i, ref_i)
    assert torch.allclose(s, ref_s, atol=1e-6)
    s_all, _ = chunked_topk(q, g[:5], 12)  # k larger than the gallery
    assert s_all.shape == (7, 5)


def test_spherical_mean_across_the_antimeridian() -> None:
    lat = torch.tensor([[10.0, -10.0]], dtype=torch.float64)
    lon = torch.tensor([[179.0, -179.0]], dtype=torch.float64)
    mlat, mlon = spherical_mean(lat, lon, torch.tensor([[0.5, 0.5]]))
    assert mlat.item() == pytest.approx(0.0, abs=1e-9)
    assert abs(mlon.item()) == pytest.approx(180.0, abs=1e-9)


class Fixed(nn.Module):
    """A 'backbone' whose feature is the image's mean colour: lets tests place exact features."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.mean(dim=(2, 3))


def _toy(coords: list[tuple[float, float]], feats: list[list[float]], **kw: object) -> KNNGeoModel:
    backbone = PooledBackbone("toy", Fixed(), 3, "toy weights", pooled=True)
    emb = nn.functional.normalize(torch.tensor(feats), dim=1)
    pre = Preprocess(8, (0.0,) * 3, (1.0,) * 3)
    return KNNGeoModel(backbone, pre, torch.tensor(coords, dtype=torch.float64), emb, **kw)  # type: ignore[arg-type]


def _img(rgb: list[float]) -> torch.Tensor:
    return torch.tensor(rgb).view(1, 3, 1, 1).expand(1, 3, 8, 8)


def test_a_query_in_the_gallery_gets_its_own_coordinates() -> None:
    coords = [(43.4673, 11.8850), (43.4680, 11.8820), (40.4470, -3.7250), (-33.85, 151.2)]
    feats = [[1.0, 0.2, 0.1], [0.9, 0.3, 0.1], [0.8, 0.4, 0.3], [0.1, 0.2, 1.0]]
    model = _toy(coords, feats)
    pred = model.predict(_img(feats[0]), top_k=3)
    assert (pred.lat.item(), pred.lon.item()) == pytest.approx(coords[0], abs=1e-9)
    assert (pred.topk_lat[0, 0].item(), pred.topk_lon[0, 0].item()) == coords[0]
    assert pred.topk_score[0].tolist() == pytest.approx([1.0, 0.0, 0.0])
    assert pred.confidence.item() == pytest.approx(1.0)
    assert pred.error_km.item() == 25.0  # neighbours that coincide: the kernel's sigma, never 0
    assert pred.extras["self_match"] == ["copy"]  # near-identical features, no keys to say more
    keys = GalleryKeys(["a", "b", "c", "d"], ["/g/a.jpg", "/g/b.jpg", "/g/c.jpg", "/g/d.jpg"])
    loo = _toy(coords, feats, leave_one_out=True, gallery_keys=keys).predict(
        _img(feats[0]), top_k=3, image_ids=["a"]
    )
    assert loo.topk_lat[0, 0].item() != coords[0][0]  # the copy is skipped
    assert loo.extras["self_match"] == [None]
    assert haversine_np(loo.lat.item(), loo.lon.item(), *coords[0]) < 1.0  # its Arezzo neighbour places it


def test_self_matches_are_flagged_by_image_id_path_and_copy() -> None:
    coords = [(43.4673, 11.8850), (43.4680, 11.8820), (40.4470, -3.7250), (-33.85, 151.2)]
    feats = [[1.0, 0.2, 0.1], [0.9, 0.3, 0.1], [0.8, 0.4, 0.3], [0.1, 0.2, 1.0]]
    keys = GalleryKeys(["a", "b", "c", "d"], ["/g/a.jpg", "/g/b.jpg", "/g/c.jpg", "/g/d.jpg"])
    model = _toy(coords, feats, gallery_keys=keys, k=2)
    assert model.needs_image_keys  # plain kNN with keys asks the engine for them
    images = torch.cat([_img(feats[0]), _img([0.85, 0.35, 0.2]), _img([0.85, 0.35, 0.2])])
    pred = model.predict(images, top_k=2, image_ids=["a", "b", "zz"], paths=["/x/a.jpg", "/y/q.jpg", "/q"])
    # the photo itself by id; the second query is photo "b" (re-decoded: other features), found among
    # its 2 neighbours by its id; the third is an unrelated photo
    assert pred.extras["self_match"] == ["image", "image", None]
    by_path = model.predict(images[1:2], top_k=2, image_ids=[None], paths=["/g/b.jpg"])
    assert by_path.extras["self_match"] == ["image"]
    far = _toy(coords, feats, gallery_keys=keys, k=1).predict(
        _img(feats[3]), top_k=1, image_ids=["b"], paths=["/q.jpg"]
    )
    assert far.extras["self_match"] == ["copy"]  # its own entry "b" is not among the 1 used; a copy is


def test_error_radius_is_never_below_the_kernel_sigma() -> None:
    coords = [(10.0, 10.0)] * 3 + [(-33.85, 151.2)]
    feats = [[1.0, 0.2, 0.1], [0.9, 0.3, 0.1], [0.8, 0.4, 0.3], [0.1, 0.2, 1.0]]
    for sigma in (25.0, 3.0):
        pred = _toy(coords, feats, k=3, sigma_km=sigma).predict(_img([0.85, 0.3, 0.2]), top_k=3)
        assert pred.error_km.item() == sigma  # three neighbours at one point: the median distance is 0
    spread = [(10.0, 10.0), (10.0, 13.0), (10.0, 16.0), (-33.85, 151.2)]
    wide = _toy(spread, feats, k=3, sigma_km=1.0).predict(_img([0.85, 0.3, 0.2]), top_k=3)
    assert wide.error_km.item() > 100.0  # above the floor, the weighted median is kept as it is


def test_the_densest_group_wins_over_a_single_closer_match() -> None:
    """One very similar photo far away against three slightly less similar ones close together."""
    coords = [(50.3, 14.8), (43.467, 11.885), (43.468, 11.882), (43.466, 11.879)]
    feats = [[math.cos(a), math.sin(a), 0.0] for a in map(math.radians, (35, 57, 58, 59))]
    query = [math.cos(math.radians(45)), math.sin(math.radians(45)), 0.0]  # cosines .985 / .978 .974 .970
    pred = _toy(coords, feats).predict(_img(query), top_k=4)
    assert haversine_np(pred.lat.item(), pred.lon.item(), 43.467, 11.882) < 2.0
    assert pred.topk_lat[0, 0].item() == 50.3  # the list still shows the nearest neighbour first
    assert pred.topk_score.sum().item() == pytest.approx(1.0, abs=1e-6)


@pytest.fixture(scope="module")
def fixture_gallery(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Lite0 gallery of every GPS photo in ../shared/fixtures/geotagged and exif-samples (23 photos)."""
    out = tmp_path_factory.mktemp("gallery") / "fixtures.parquet"
    cfg = GalleryConfig(
        paths=[fixture_dir("geotagged"), fixture_dir("exif-samples")], out=out, workers=0, batch_size=8
    )
    summary = run_gallery_build(cfg)
    assert summary.embedded >= 20 and summary.failed == 0
    return out


def test_arezzo_photos_placed_by_all_the_others(fixture_gallery: Path) -> None:
    """Issue 12's bar: gallery = all fixture GPS photos but one; each Arezzo photo within 25 km."""
    info, coords, emb = read_gallery(fixture_gallery)
    paths = pq.read_table(fixture_gallery, columns=["path"]).column(0).to_pylist()
    module, pre, _ = create_backbone(info.backbone)
    arezzo = [i for i, p in enumerate(paths) if Path(p).name.startswith("DSCN00")]
    assert len(arezzo) == 9
    distances = []
    for i in arezzo:
        keep = torch.tensor([j != i for j in range(len(paths))])
        model = KNNGeoModel(module, pre, coords[keep], emb[keep]).eval()
        query = emb[i : i + 1].float()  # the photo's own features, as predict computes them (same decode)
        pred = model.predict_features(query / query.norm(), top_k=5)
        distances.append(float(haversine_np(pred.lat.item(), pred.lon.item(), *coords[i].tolist())))
    assert max(distances) <= 25.0, distances


def test_knn_loo_through_the_engine(fixture_gallery: Path, tmp_path: Path) -> None:
    out = tmp_path / "arezzo.parquet"
    gps = fixture_dir("exif-samples") / "jpg" / "gps"
    model = build_model("knn-loo", gallery=fixture_gallery)
    run_predict(PredictConfig(paths=[gps], out=out, workers=0, batch_size=4, model="knn-loo"), model=model)
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 9
    for r in rows:
        assert haversine_np(r["pred_lat"], r["pred_lon"], r["gt_lat"], r["gt_lon"]) <= 25.0
        assert r["country"] == r["gt_country"] == "IT"
        assert r["model"] == "knn-loo" and "leave-one-out" in r["weights"]


def test_gallery_file_records_its_backbone(fixture_gallery: Path, tmp_path: Path) -> None:
    info = read_gallery_info(fixture_gallery)
    assert info.backbone == "efficientnet_lite0.imagenet" and info.feature_dim == 1280
    with pytest.raises(InputError, match="embedded with backbone efficientnet_lite0.imagenet"):
        build_knn(gallery=fixture_gallery, backbone="efficientnet_lite1.imagenet")
    tampered = tmp_path / "tampered.parquet"
    table = pq.read_table(fixture_gallery)
    meta = json.loads(table.schema.metadata[GALLERY_KEY]) | {"fingerprint": "0123456789abcdef"}
    pq.write_table(table.replace_schema_metadata({GALLERY_KEY: json.dumps(meta).encode()}), tampered)
    with pytest.raises(InputError, match="not comparable"):
        build_knn(gallery=tampered)
    plain = tmp_path / "coords.csv"
    plain.write_text("lat,lon\n1,2\n")
    with pytest.raises(InputError, match="gallery build"):
        build_knn(gallery=plain)
    with pytest.raises(InputError, match="--gallery"):
        build_knn()


def test_gallery_from_a_manifest(sample_data: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "lat", "lon"])
        w.writerow([str(sample_data / "untagged" / "no_gps_1.jpg"), 46.0, 8.0])  # absolute
        w.writerow(["nowhere.jpg", 1.0, 2.0])  # missing file: counted as failed
        w.writerow([str(sample_data / "europe" / "paris.jpg"), "n/a", 2.0])  # no position: left out
    out = tmp_path / "g.parquet"
    summary = run_gallery_build(GalleryConfig(paths=[manifest], out=out, workers=0))
    assert (summary.embedded, summary.failed) == (1, 1)
    row = pq.read_table(out).to_pylist()[0]
    assert (row["lat"], row["lon"], row["gt_source"]) == (46.0, 8.0, "manifest")
    with pytest.raises(InputError, match="no photo with a position"):
        run_gallery_build(
            GalleryConfig(paths=[sample_data / "untagged"], out=tmp_path / "x.parquet", workers=0)
        )
    assert not (tmp_path / "x.parquet").exists()


def test_gallery_build_truth_reads_an_im2gps3k_manifest(sample_data: Path, tmp_path: Path) -> None:
    """--truth takes the manifest scan/predict/eval read (IMG_ID, AUTHOR, LAT, LON); photos it names get
    its positions, untagged ones included; the others keep their EXIF GPS."""
    manifest = tmp_path / "im2gps3k_places365.csv"
    manifest.write_text("IMG_ID,AUTHOR,LAT,LON\nno_gps_1.jpg,alice,46.0,8.0\nno_gps_2.png,bob,-33.0,151.0\n")
    out = tmp_path / "g.parquet"
    summary = run_gallery_build(
        GalleryConfig(paths=[sample_data / "untagged"], out=out, truth=manifest, workers=0)
    )
    assert summary.embedded == 2 and summary.truth is not None and summary.truth.matched == 2
    rows = {Path(r["path"]).name: r for r in pq.read_table(out).to_pylist()}
    assert (rows["no_gps_1.jpg"]["lat"], rows["no_gps_1.jpg"]["lon"]) == (46.0, 8.0)
    assert rows["no_gps_2.png"]["gt_source"] == "manifest"


def test_cli_gallery_build_then_predict(sample_data: Path, tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    gallery = tmp_path / "g.parquet"
    built = subprocess.run(
        [*GEOTAG, "gallery", "build", str(sample_data / "europe"), "--out", str(gallery), "--workers", "0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
    )
    assert built.returncode == 0, built.stderr
    assert "embedded 6 photo(s) with efficientnet_lite0.imagenet" in built.stderr
    out = tmp_path / "p.parquet"
    model = build_model("knn", gallery=gallery)
    model.prepare()  # what the engine does after .to(device): a small CPU gallery becomes float32
    assert model.gallery_embeddings.dtype == torch.float32
    run_predict(PredictConfig(paths=[sample_data / "europe"], out=out, workers=0, model="knn"), model=model)
    for r in pq.read_table(out).to_pylist():  # each photo is in the gallery: its own coordinates come back
        assert (r["pred_lat"], r["pred_lon"]) == pytest.approx((r["gt_lat"], r["gt_lon"]), abs=1e-9)
        assert r["country"] == r["gt_country"] and r["country"] in {"FR", "IT"}
        assert r["self_match"] == "image"  # found by its image id: eval leaves it out of the scores


def test_leave_author_out_with_fewer_eligible_entries_than_top_k_lists_no_left_out_candidate() -> None:
    # three photos, two of them by one author: leaving the query's author out leaves one eligible entry,
    # fewer than top_k; the left-out entries (the query's own position among them) are no candidates and
    # do not centre the estimate
    coords = [(43.4673, 11.8850), (43.4680, 11.8820), (40.4470, -3.7250)]
    feats = [[1.0, 0.2, 0.1], [0.9, 0.3, 0.1], [0.1, 0.2, 1.0]]
    keys = GalleryKeys(["a", "b", "c"], ["/g/a.jpg", "/g/b.jpg", "/g/c.jpg"], groups=["ann", "ann", "bo"])
    model = _toy(coords, feats, leave_one_out=True, gallery_keys=keys, k=3)
    pred = model.predict(_img(feats[0]), top_k=3, image_ids=["a"])
    lat, lon = pred.topk_lat[0].tolist(), pred.topk_lon[0].tolist()
    assert (lat[0], lon[0]) == coords[2]  # the only photo not by ann
    assert all(math.isnan(v) for v in lat[1:] + lon[1:])
    assert (pred.lat.item(), pred.lon.item()) == pytest.approx(coords[2], abs=1e-9)
    assert pred.extras["self_match"] == [None]
    from geotag.engine.predict import prediction_rows

    (row,) = prediction_rows(pred, model)
    assert [(c["lat"], c["lon"]) for c in row["topk"]] == [coords[2]]
