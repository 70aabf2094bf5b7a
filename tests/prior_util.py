"""Tiny, seeded instances of every model that predicts from a distribution, with a batch of images, for
the prior tests (tests/test_prior.py). Imports nothing of models/prior.py, so the same builders run on
the code from before priors existed (the bit-for-bit comparison in the report of issue 26)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from geotag.geo.cells import PartitionSpec, build_cells
from geotag.models.backbones import PooledBackbone
from geotag.models.base import GeoModel, Preprocess
from geotag.models.experts import GROUPS, CropSettings, DirectedExperts, Expert, ExpertsConfig
from geotag.models.geoclip import GeoCLIP
from geotag.models.geoclip_lite import GeoCLIPLite
from geotag.models.knn import KNNGeoModel
from geotag.models.segmentation import Detection, InstanceSegmenter

SPECS = (PartitionSpec("coarse", 2, 60), PartitionSpec("middle", 2, 25), PartitionSpec("fine", 2, 10))
PRE = Preprocess(32, (0.0,) * 3, (1.0,) * 3)


class MeanColour(nn.Module):
    """A backbone whose feature is the image's mean colour, optionally projected to `dim`."""

    def __init__(self, dim: int = 3) -> None:
        super().__init__()
        self.proj = nn.Linear(3, dim) if dim != 3 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.mean(dim=(2, 3)))


def images(n: int = 4, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Photos of distinct mean colours (so no two have near-identical features), with some texture."""
    g = torch.Generator().manual_seed(seed)
    return 0.8 * torch.rand(n, 3, 1, 1, generator=g) + 0.2 * torch.rand(n, 3, size, size, generator=g)


def world(n: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    return torch.from_numpy(np.stack([lat, rng.uniform(-180, 180, n)], axis=1))


def geoclip() -> GeoModel:
    torch.manual_seed(0)
    model = GeoCLIP(PooledBackbone("toy", MeanColour(768), 768, "toy", pooled=True), PRE, world(3000, 1))
    model.prepare()
    return model.eval()


def geoclip_lite() -> GeoModel:
    torch.manual_seed(1)
    model = GeoCLIPLite(PooledBackbone("toy", MeanColour(3), 3, "toy", pooled=True), PRE, world(2000, 2))
    model.prepare()
    return model.eval()


def knn() -> GeoModel:
    torch.manual_seed(2)
    feats = nn.functional.normalize(torch.randn(500, 16), dim=1)  # no gallery entry is a copy of a photo
    backbone = PooledBackbone("toy", MeanColour(16), 16, "toy", pooled=True)
    return KNNGeoModel(backbone, PRE, world(500, 3), feats).eval()


def _cells():
    rng = np.random.default_rng(0)
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, 400)))
    return build_cells(lat, rng.uniform(-180, 180, 400), SPECS)


def translocator() -> GeoModel:
    from geotag.models.translocator import BackboneConfig, build_translocator

    torch.manual_seed(0)
    tiny = BackboneConfig(overrides={"embed_dim": 32, "depth": 1, "num_heads": 2})
    return build_translocator(_cells(), "vit", backbone=tiny, img_size=32, allow_untrained=True).eval()


def geodecoder() -> GeoModel:
    from geotag.models.geodecoder import build_geodecoder
    from geotag.models.translocator import BackboneConfig

    torch.manual_seed(0)
    tiny = BackboneConfig(
        "vit_base_patch16_224", "none", overrides={"embed_dim": 32, "depth": 1, "num_heads": 2}
    )
    return build_geodecoder(
        _cells(), "vit-b16", backbone=tiny, img_size=32, allow_untrained=True,
        independent_layers=1, dependent_layers=1,
    ).eval()  # fmt: skip


class WholeFrame(InstanceSegmenter):
    """Finds nothing: every photo is judged whole."""

    labels = ("car",)
    name = "none"

    def detect(self, rgb: torch.Tensor) -> list[list[Detection]]:
        return [[] for _ in range(rgb.shape[0])]


COUNTRY_POINTS = ((46.7, 2.6), (44.7, 11.1), (0.5, 37.9), (-25.0, 134.0), (39.0, -98.0))


def experts() -> GeoModel:
    torch.manual_seed(0)
    config = ExpertsConfig(
        countries=("FR", "IT", "KE", "AU", "US"),
        points=COUNTRY_POINTS,
        expert="vit-b16",
        crop_size=8,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        crops=CropSettings(
            segmenter=None, min_score=0.1, max_crops=8, min_area=0.0, context=0.0, image_size=32
        ),
    )
    made = {g: Expert(MeanColour(3), 3, len(config.countries), config.mean, config.std) for g in GROUPS}
    return DirectedExperts(config, made, WholeFrame()).eval()


BUILDERS: dict[str, Callable[[], GeoModel]] = {
    "geoclip": geoclip,
    "geoclip-lite": geoclip_lite,
    "knn": knn,
    "translocator": translocator,
    "geodecoder": geodecoder,
    "experts": experts,
}
TOP_K = 5


def outputs(model: GeoModel, **kw: object) -> dict[str, torch.Tensor]:
    """Every tensor of a prediction on the seeded batch, by field name."""
    with torch.no_grad():
        pred = model.predict(images(), TOP_K, **kw)
    return {k: v for k, v in vars(pred).items() if isinstance(v, torch.Tensor)}
