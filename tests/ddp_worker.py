"""Run by torchrun in tests/test_train_ddp.py: `geotag train`'s loop on a toy TransLocator (the CLI's
models are full size), so the data-parallel path is exercised exactly as `-m geotag train` runs it."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from geotag.config import TrainConfig
from geotag.engine.train import run_train
from geotag.models.tasks import TransLocatorTask

TINY_VIT = {"embed_dim": 32, "depth": 2, "num_heads": 2, "patch_size": 16}


def tiny_task() -> TransLocatorTask:
    from geotag.models.translocator import BackboneConfig

    backbone = BackboneConfig(arch="vit_tiny_patch16_224", tag="none", overrides=TINY_VIT)
    return TransLocatorTask("vit", model_kwargs={"backbone": backbone, "img_size": 32}, cells_scale="auto")


def config(photos: Path, out: Path, **kw: object) -> TrainConfig:
    settings: dict[str, object] = {
        "model": "translocator",
        "variant": "vit",
        "epochs": 2,
        "batch_size": 4,
        "accum": 2,
        "workers": 0,
        "device": "cpu",
        "allow_untrained": True,
        "freeze_backbone": False,
        "augment": True,
        "val_fraction": 0.2,
        "lr": 1e-3,
        "warmup_steps": 1,
        **kw,
    }
    return TrainConfig(data=[photos], out=out, **settings)  # type: ignore[arg-type]


if __name__ == "__main__":
    photos, out = Path(sys.argv[1]), Path(sys.argv[2])
    extra = {"max_steps": int(sys.argv[3])} if len(sys.argv) > 3 and sys.argv[3] != "-" else {}
    cfg = config(photos, out, **extra)
    if len(sys.argv) > 4 and sys.argv[4] == "resume":
        cfg = replace(cfg, resume=True)
    run_train(cfg, task=tiny_task())
