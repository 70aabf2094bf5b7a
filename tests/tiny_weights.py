"""Tiny weight files written where a user's would be: a seeded random HF CLIP vision checkpoint and a
random GPS gallery CSV. One recipe shared by the tests and the bench scripts (which import it from here),
so every tiny tower has the same shape: 32 wide, 1 layer, 64 px, GeoCLIP's 768-d projection."""

from __future__ import annotations

import csv
from pathlib import Path


def save_tiny_hf_clip(folder: Path, hidden_size: int = 32, image_size: int = 64) -> Path:
    """A tiny HF CLIP vision checkpoint at `folder`, seeded (torch.manual_seed(0)) so runs agree."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    config = CLIPVisionConfig(
        hidden_size=hidden_size,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=16,
        projection_dim=768,
    )
    CLIPVisionModelWithProjection(config).save_pretrained(folder)
    return folder


def write_random_gallery(path: Path, n: int = 500, seed: int = 0) -> Path:
    """`n` seeded random points (lat in [-80, 80], lon in [-180, 180]) as a lat,lon CSV gallery."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    lat = (torch.rand(n, generator=gen) * 160 - 80).tolist()
    lon = (torch.rand(n, generator=gen) * 360 - 180).tolist()
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["lat", "lon"])
        writer.writerows(zip(lat, lon, strict=True))
    return path


def tiny_train_config(data: Path, out: Path, **kw: object):  # type: ignore[no-untyped-def]
    """A TrainConfig for a one-epoch CPU run of TransLocator's ViT row on `data`; `kw` overrides."""
    from geotag.config import TrainConfig

    settings: dict[str, object] = {
        "model": "translocator",
        "variant": "vit",
        "epochs": 1,
        "batch_size": 4,
        "workers": 0,
        "device": "cpu",
        "allow_untrained": True,
        "augment": False,
        "val_fraction": 0.0,
        "log_to": (),
        **kw,
    }
    return TrainConfig(data=[data], out=out, **settings)  # type: ignore[arg-type]


def tiny_translocator_task():  # type: ignore[no-untyped-def]
    """TransLocator's ViT row with a one-block 32-wide backbone on 32-pixel images: trains in seconds."""
    from geotag.models.tasks import TransLocatorTask
    from geotag.models.translocator import BackboneConfig

    backbone = BackboneConfig(
        arch="vit_tiny_patch16_224", tag="none", overrides={"embed_dim": 32, "depth": 1, "num_heads": 2}
    )
    return TransLocatorTask("vit", model_kwargs={"backbone": backbone, "img_size": 32}, cells_scale="auto")
