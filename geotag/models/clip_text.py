"""CLIP's text tower, for GeoCLIP text queries ("we qualitatively demonstrate geo-localization using a
text query by leveraging CLIP backbone of our image encoder", Vivanco Cepeda et al. 2023).

The tower is transformers' `CLIPTextModelWithProjection` (the reference implementation, not a copy):
its `text_embeds` are CLIP's projected text features, in the space the image tower projects into, so
GeoCLIP's image MLP maps them to the GPS-encoder space. This module builds the tower from a config and a
state dict; it reads no files (engine/query.py finds and reads the checkpoint and tokenizer).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from geotag.errors import WeightsError

TEXT_PREFIXES = ("text_model.", "text_projection.")


def text_config_from_hf(hf_config: dict[str, Any]) -> dict[str, Any]:
    """A CLIPTextConfig dict from an HF `CLIPModel` config (text_config + projection_dim) or from a
    `CLIPTextModelWithProjection` config."""
    if "text_config" in hf_config:
        config = dict(hf_config["text_config"] or {})
        if "projection_dim" in hf_config:
            config["projection_dim"] = hf_config["projection_dim"]
        return config
    return dict(hf_config)


def text_state(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The text tower's tensors of a full CLIP (or text-only) state dict, any key prefix removed."""
    out = {}
    for key, value in state_dict.items():
        for marker in TEXT_PREFIXES:
            at = key.find(marker)
            if at >= 0 and (at == 0 or key[at - 1] == "."):
                out[key[at:]] = value
                break
    return out


class ClipTextTower(nn.Module):
    """Token ids -> CLIP projected text features (B, projection_dim), float32."""

    def __init__(self, config: dict[str, Any], state_dict: dict[str, torch.Tensor], source: str = "") -> None:
        super().__init__()
        from transformers import CLIPTextConfig, CLIPTextModelWithProjection

        keys = {k: v for k, v in config.items() if not k.startswith("_") and k not in ("architectures",)}
        self.model = CLIPTextModelWithProjection(CLIPTextConfig(**keys))
        state = text_state(state_dict)
        if not state:
            raise WeightsError(f"{source or 'checkpoint'} holds no CLIP text tower (text_model.* keys)")
        expected = set(self.model.state_dict())
        missing = sorted(k for k in expected - set(state) if not k.endswith("position_ids"))
        unexpected = sorted(set(state) - expected)
        if missing or unexpected:
            sample = ", ".join((missing or unexpected)[:3])
            raise WeightsError(f"{source or 'checkpoint'}: text tower weights do not fit ({sample})")
        try:
            self.model.load_state_dict(state, strict=False)
        except RuntimeError as exc:
            raise WeightsError(f"{source or 'checkpoint'}: text tower weights do not fit ({exc})") from exc
        self.projection_dim = int(self.model.config.projection_dim)
        self.eval().requires_grad_(False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        return out.text_embeds.float()
