"""Run settings as plain dataclasses: the CLI fills them, the engines read them; no global state."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class PredictConfig:
    """Everything `geotag predict` needs; defaults are what a user gets with no options."""

    paths: list[Path]
    out: Path
    model: str = "geoclip"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    batch_size: int | None = None  # None: chosen from the device
    top_k: int = 5
    workers: int | None = None  # decoding processes; None: chosen from the cores
    resume: bool = False
    backbone_weights: Path | None = None
    gallery: Path | None = None
    allow_untrained: bool = False
    amp: bool = True  # bf16 autocast on CUDA; CPU always runs float32
    draft: bool = True  # JPEG draft-mode decoding (see geotag.io.decode)
    checkpoint_rows: int = 4096  # rows per finished part file; what a kill can cost at most
    progress: bool = False
    seed: int = 0
    extra_metadata: dict[str, str] = field(default_factory=dict)
