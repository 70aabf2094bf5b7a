"""Memory and speed options of `geotag train`: gradient checkpointing and torch.compile of the backbones.

Both act on the task's `layered_modules` (the timm / HF backbones) in place, so parameter names and
checkpoints are unchanged: timm's `set_grad_checkpointing`, Hugging Face's `gradient_checkpointing_enable`,
and `nn.Module.compile` (which compiles the module's forward, keeping its state_dict keys).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from geotag.config import TrainConfig
from geotag.errors import InputError


def apply(model: nn.Module, backbones: Sequence[nn.Module], cfg: TrainConfig) -> list[str]:
    """Apply --grad-checkpointing / --compile; returns what was done (one line each)."""
    done: list[str] = []
    if cfg.grad_checkpointing:
        n = sum(enable_grad_checkpointing(m) for m in (backbones or [model]))
        if not n:
            raise InputError(f"--grad-checkpointing: the {cfg.model} backbone does not support it")
        done.append(f"gradient checkpointing on {n} module(s)")
    if cfg.compile:
        for m in backbones or [model]:
            m.compile()
        done.append(f"torch.compile on {len(backbones or [model])} module(s)")
    return done


def enable_grad_checkpointing(module: nn.Module) -> int:
    """Turn recomputation on in every submodule that offers it; returns how many did."""
    n = 0
    for m in module.modules():
        if hasattr(m, "set_grad_checkpointing"):  # timm
            m.set_grad_checkpointing(True)
            n += 1
        elif hasattr(m, "gradient_checkpointing_enable") and getattr(m, "supports_gradient_checkpointing", 0):
            m.gradient_checkpointing_enable()  # Hugging Face transformers
            n += 1
    return n
