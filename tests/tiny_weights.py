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
