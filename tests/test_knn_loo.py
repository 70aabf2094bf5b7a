"""Leave-one-out kNN leaves the query out by identity (image id / path), never by a similarity
threshold, and --exclude-same leaves out the query's whole group (e.g. its author)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from geotag.errors import InputError
from geotag.io.embeddings import read_gallery_groups
from geotag.models.backbones import PooledBackbone
from geotag.models.base import Preprocess
from geotag.models.knn import GalleryKeys, KNNGeoModel

COORDS = [(43.4673, 11.8850), (40.4470, -3.7250), (40.4475, -3.7255), (-33.85, 151.2)]
FEATS = [[1.0, 0.2, 0.1], [0.9, 0.3, 0.1], [0.9, 0.3, 0.1], [0.1, 0.2, 1.0]]
IDS = ["arezzo", "madrid-1", "madrid-2", "sydney"]
PATHS = ["/g/arezzo.jpg", "/g/madrid-1.jpg", "/g/madrid-2.jpg", "/g/sydney.jpg"]


class Fixed(nn.Module):
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.mean(dim=(2, 3))


def _model(groups: list[str | None] | None = None, **kw: object) -> KNNGeoModel:
    backbone = PooledBackbone("toy", Fixed(), 3, "toy weights", pooled=True)
    emb = nn.functional.normalize(torch.tensor(FEATS), dim=1)
    return KNNGeoModel(
        backbone,
        Preprocess(8, (0.0,) * 3, (1.0,) * 3),
        torch.tensor(COORDS, dtype=torch.float64),
        emb,
        k=2,
        leave_one_out=True,
        gallery_keys=GalleryKeys(IDS, PATHS, groups),
        **kw,  # type: ignore[arg-type]
    )


def _query(rgb: list[float]) -> torch.Tensor:
    return nn.functional.normalize(torch.tensor([rgb]), dim=1)


def test_the_query_is_left_out_even_when_its_features_differ() -> None:
    """Another decoding (predict --no-draft) gives features at cosine ~0.99 to the gallery's copy:
    a 0.999 threshold let the photo find itself; identity does not."""
    near_copy = _query([1.0, 0.2, 0.1]) + torch.tensor([[0.0, 0.05, -0.03]])
    cos = float(nn.functional.cosine_similarity(near_copy, _query(FEATS[0])))
    assert 0.99 < cos < 0.999
    pred = _model().predict_features(near_copy / near_copy.norm(), 2, image_ids=["arezzo"])
    assert pred.topk_lat[0].tolist() != pytest.approx([COORDS[0][0]] * 2)
    assert COORDS[0][0] not in pred.topk_lat[0].tolist()


def test_a_different_photo_with_identical_features_is_kept() -> None:
    """madrid-1 and madrid-2 have the same features; the query madrid-1 still uses madrid-2."""
    pred = _model().predict_features(_query(FEATS[1]), 2, image_ids=["madrid-1"])
    assert pred.topk_lat[0, 0].item() == COORDS[2][0]


def test_the_query_is_found_by_path_when_it_has_no_id() -> None:
    pred = _model().predict_features(_query(FEATS[0]), 2, image_ids=[None], paths=["/g/./arezzo.jpg"])
    assert COORDS[0][0] not in pred.topk_lat[0].tolist()


def test_exclude_same_leaves_out_the_whole_group() -> None:
    """Both Madrid photos are one author's: the query madrid-1 may not use madrid-2 either."""
    pred = _model(groups=[None, "ana", "ana", "bo"]).predict_features(
        _query(FEATS[1]), 2, image_ids=["madrid-1"]
    )
    assert COORDS[1][0] not in pred.topk_lat[0].tolist() and COORDS[2][0] not in pred.topk_lat[0].tolist()


def test_loo_without_query_keys_is_refused() -> None:
    with pytest.raises(InputError, match="image id or path"):
        _model().predict_features(_query(FEATS[0]), 2)


def test_groups_read_from_a_manifest(tmp_path: Path) -> None:
    manifest = tmp_path / "truth.csv"
    manifest.write_text(
        "IMG_ID,LAT,LON,AUTHOR\narezzo.jpg,1,2,cy\nmadrid-1.jpg,3,4,ana\nmadrid-2.jpg,3,4,ana\n"
    )
    assert read_gallery_groups(manifest, "author", IDS, PATHS) == ["cy", "ana", "ana", None]
    with pytest.raises(InputError, match="needs a"):
        read_gallery_groups(manifest, "camera", IDS, PATHS)


def test_benchmark_leaves_authors_out_for_knn_loo(tmp_path: Path) -> None:
    from geotag.config import PredictConfig
    from geotag.engine.benchmark import leave_authors_out

    manifest = tmp_path / "im2gps3k_places365.csv"
    manifest.write_text("IMG_ID,AUTHOR,LAT,LON\na.jpg,ana,1,2\n")
    cfg = PredictConfig(paths=[tmp_path], out=tmp_path / "o.parquet", model="knn-loo", truth=manifest)
    assert leave_authors_out(cfg).exclude_same == "AUTHOR"
    other = PredictConfig(paths=[tmp_path], out=tmp_path / "o.parquet", model="knn", truth=manifest)
    assert leave_authors_out(other).exclude_same is None
    (tmp_path / "plain.csv").write_text("path,lat,lon\na.jpg,1,2\n")
    plain = PredictConfig(
        paths=[tmp_path], out=tmp_path / "o.parquet", model="knn-loo", truth=tmp_path / "plain.csv"
    )
    assert leave_authors_out(plain).exclude_same is None
