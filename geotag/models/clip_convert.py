"""CLIP vision towers as timm ViTs, and converters that load foreign CLIP checkpoints into them.

GeoCLIP's image encoder is OpenAI CLIP ViT-L/14. We run it as a timm `VisionTransformer` (one
backbone family for every model, timm's fused attention) and accept its weights in any common form:

- a timm state dict (`.safetensors`, `.pth`, `.bin`; what `timm/vit_large_patch14_clip_224.openai` holds),
- an OpenAI / OpenCLIP checkpoint (`visual.*` keys; timm's own filter converts it),
- a Hugging Face transformers CLIP folder or file (`CLIPModel` such as openai/clip-vit-large-patch14 or
  geolocal/StreetCLIP, or `CLIPVisionModelWithProjection`): `checkpoint_filter_fn` maps its keys.

OpenAI CLIP uses QuickGELU (HF `hidden_act="quick_gelu"`), so the matching timm variant is
`vit_large_patch14_clip_quickgelu_224`; the plain `vit_large_patch14_clip_224` uses exact GELU and
does not reproduce the released features. Files are read with safetensors or
`torch.load(weights_only=True)`: nothing is unpickled.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import timm
import torch
from timm.models.vision_transformer import VisionTransformer
from timm.models.vision_transformer import checkpoint_filter_fn as timm_filter_fn
from torch import nn

from geotag.errors import WeightsError
from geotag.io.weights import read_json, read_safetensors, read_torch_file
from geotag.models.base import Preprocess

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# HF activation name -> (timm architecture whose default act it is, timm act_layer name)
_ACTS = {
    "quick_gelu": ("vit_large_patch14_clip_quickgelu_224", "quick_gelu"),
    "gelu": ("vit_large_patch14_clip_224", "gelu"),
    "gelu_pytorch_tanh": ("vit_large_patch14_clip_224", "gelu_tanh"),
    "gelu_new": ("vit_large_patch14_clip_224", "gelu_tanh"),
}
# transformers' CLIPVisionConfig defaults: save_pretrained omits values equal to them
_HF_VISION_DEFAULTS = {"num_attention_heads": 12, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5}
_PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}
_HF_MARK = "vision_model.embeddings.class_embedding"
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")


@dataclass(frozen=True)
class ClipVisionConfig:
    """Shape of a CLIP vision tower; the defaults are OpenAI ViT-L/14 at 224 px (GeoCLIP's backbone)."""

    width: int = 1024
    layers: int = 24
    heads: int = 16
    mlp_dim: int = 4096
    patch_size: int = 14
    image_size: int = 224
    proj_dim: int | None = 768  # None: no projection, the tower returns its pooled width
    act: str = "quick_gelu"  # HF hidden_act name
    ln_eps: float = 1e-5

    @property
    def timm_arch(self) -> str:
        """The registered timm variant with this activation (its other dims are overridden)."""
        return _act(self.act)[0]


VIT_L14_OPENAI = ClipVisionConfig()


def _act(name: str) -> tuple[str, str]:
    if name not in _ACTS:
        raise WeightsError(f"unsupported CLIP activation {name!r}; supported: {', '.join(_ACTS)}")
    return _ACTS[name]


def create_clip_vit(cfg: ClipVisionConfig) -> VisionTransformer:
    """A randomly initialised timm CLIP ViT of this shape; the head is the CLIP projection (no bias use)."""
    arch, act_layer = _act(cfg.act)
    return timm.create_model(
        arch,
        pretrained=False,
        img_size=cfg.image_size,
        patch_size=cfg.patch_size,
        embed_dim=cfg.width,
        depth=cfg.layers,
        num_heads=cfg.heads,
        mlp_ratio=cfg.mlp_dim / cfg.width,
        num_classes=cfg.proj_dim or 0,
        act_layer=act_layer,
        norm_layer=partial(nn.LayerNorm, eps=cfg.ln_eps),
    )


def is_hf_clip(state_dict: dict[str, torch.Tensor]) -> bool:
    """True for transformers CLIP keys (`...vision_model.embeddings.class_embedding`), any prefix."""
    return any(k.endswith(_HF_MARK) for k in state_dict)


def _hf_prefix(state_dict: dict[str, torch.Tensor]) -> str:
    return next(k for k in state_dict if k.endswith(_HF_MARK))[: -len(_HF_MARK)]


def convert_hf_clip(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a transformers CLIP vision tower onto timm ViT keys (q/k/v concatenated into qkv).

    Keys may carry a prefix (e.g. `image_encoder.CLIP.` in a full GeoCLIP checkpoint); text-tower keys
    are dropped. `visual_projection.weight` becomes `head.weight` with a zero bias.
    """
    prefix = _hf_prefix(state_dict)
    vision = prefix + "vision_model."
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    unknown = []
    for key, value in state_dict.items():
        if key == prefix + "visual_projection.weight":
            out["head.weight"] = value
            out["head.bias"] = value.new_zeros(value.shape[0])
            continue
        if not key.startswith(vision):
            continue
        name = key[len(vision) :]
        if m := re.fullmatch(r"encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)", name):
            qkv.setdefault((m[1], m[3]), {})[m[2]] = value
        elif (mapped := _map_vision_key(name)) is not None:
            out[mapped] = _reshape(mapped, value)
        elif name != "embeddings.position_ids":
            unknown.append(key)
    if unknown:
        raise WeightsError(f"unexpected keys in HF CLIP checkpoint: {', '.join(unknown[:5])}")
    for (block, kind), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise WeightsError(f"HF CLIP checkpoint lacks q/k/v {kind} of layer {block}")
        out[f"blocks.{block}.attn.qkv.{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


_VISION_RULES = (
    (r"embeddings\.class_embedding", "cls_token"),
    (r"embeddings\.patch_embedding\.weight", "patch_embed.proj.weight"),
    (r"embeddings\.position_embedding\.weight", "pos_embed"),
    (r"pre_layrnorm\.(weight|bias)", r"norm_pre.\1"),
    (r"post_layernorm\.(weight|bias)", r"norm.\1"),
    (r"encoder\.layers\.(\d+)\.self_attn\.out_proj\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    (r"encoder\.layers\.(\d+)\.layer_norm([12])\.(weight|bias)", r"blocks.\1.norm\2.\3"),
    (r"encoder\.layers\.(\d+)\.mlp\.(fc[12])\.(weight|bias)", r"blocks.\1.mlp.\2.\3"),
)


def _map_vision_key(name: str) -> str | None:
    for pattern, repl in _VISION_RULES:
        if re.fullmatch(pattern, name):
            return re.sub(pattern, repl, name)
    return None


def _reshape(key: str, value: torch.Tensor) -> torch.Tensor:
    if key in ("cls_token", "pos_embed"):
        return value.reshape(1, -1, value.shape[-1])
    return value


def checkpoint_filter_fn(
    state_dict: dict[str, torch.Tensor], model: VisionTransformer
) -> dict[str, torch.Tensor]:
    """timm-style filter: convert HF CLIP keys; timm then handles OpenAI/OpenCLIP keys and pos-embed size."""
    for wrapper in ("model", "state_dict"):
        if isinstance(state_dict.get(wrapper), dict):
            state_dict = state_dict[wrapper]
    if is_hf_clip(state_dict):
        state_dict = convert_hf_clip(state_dict)
    state_dict = timm_filter_fn(state_dict, model)
    if isinstance(model.head, nn.Identity):
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("head.")}
    return state_dict


def load_backbone_state(model: VisionTransformer, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Filter and strictly load `state_dict` as float32; any mismatch becomes one WeightsError line.

    Tensors are assigned, not copied, so `model` may be built on the meta device: a ViT-L/14 then
    costs no random initialisation that the checkpoint would overwrite anyway.
    """
    try:
        converted = {
            k: v.float() if v.is_floating_point() else v
            for k, v in checkpoint_filter_fn(state_dict, model).items()
        }
        result = model.load_state_dict(converted, strict=False, assign=True)
    except (RuntimeError, ValueError, KeyError, IndexError) as exc:
        raise WeightsError(f"backbone weights {source} do not fit the CLIP tower: {_reason(exc)}") from exc
    problems = [f"missing {', '.join(result.missing_keys[:4])}"] if result.missing_keys else []
    if result.unexpected_keys:
        problems.append(f"unexpected {', '.join(result.unexpected_keys[:4])}")
    if problems:
        raise WeightsError(
            f"backbone weights {source} do not fit {type(model).__name__}: {'; '.join(problems)}"
        )


def _reason(exc: Exception) -> str:
    """The last non-empty line of an exception (torch puts the useful part last), or its type."""
    if isinstance(exc, pickle.UnpicklingError):
        return "holds objects other than tensors (refused by torch.load weights_only=True); use safetensors"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors (or a sharded index) or a torch file read with weights_only=True."""
    try:
        if path.name.endswith(".index.json"):
            shards = sorted(set(read_json(path)["weight_map"].values()))
            merged: dict[str, torch.Tensor] = {}
            for shard in shards:
                merged.update(read_state_dict(path.parent / shard))
            return merged
        if path.suffix == ".safetensors":
            return read_safetensors(path)
        loaded = read_torch_file(path)
    except Exception as exc:  # safetensors, unpickling (weights_only refusal), I/O: all mean "unusable file"
        raise WeightsError(f"cannot read backbone weights {path}: {_reason(exc)}") from exc
    if not isinstance(loaded, dict):
        raise WeightsError(f"backbone weights {path} hold a {type(loaded).__name__}, not a state dict")
    return loaded


@dataclass(frozen=True)
class ClipCheckpoint:
    """A CLIP vision checkpoint read from disk, with the tower shape and preprocessing it implies."""

    state_dict: dict[str, torch.Tensor]
    config: ClipVisionConfig | None  # None: unknown (a bare timm file); the caller supplies one
    preprocess: Preprocess | None
    name: str  # what the weights are, for the `weights` column


def find_weights_file(folder: Path) -> Path:
    """The weights file inside an HF-style folder (single file or sharded index)."""
    for name in _WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    found = sorted(p.name for p in folder.glob("*") if p.suffix in (".safetensors", ".bin", ".pth"))
    if len(found) == 1:
        return folder / found[0]
    raise WeightsError(f"no weights file in {folder} (expected one of {', '.join(_WEIGHT_FILES)})")


def read_clip_checkpoint(path: Path) -> ClipCheckpoint:
    """Read a folder or file; an HF folder's config.json (next to the file) gives the tower's shape."""
    path = Path(path).expanduser()
    if not path.exists():
        raise WeightsError(f"backbone weights not found: {path}")
    folder = path if path.is_dir() else path.parent
    state_dict = read_state_dict(find_weights_file(path) if path.is_dir() else path)
    config_file = folder / "config.json"
    if is_hf_clip(state_dict) and config_file.is_file():
        hf = read_json(config_file)
        config = config_from_hf(hf, state_dict)
        name = hf.get("_name_or_path") or str(path)
        return ClipCheckpoint(state_dict, config, preprocess_from_hf(folder, config), f"HF CLIP {name}")
    # without config.json the head count is unknown (it shapes no tensor): the caller's config decides
    return ClipCheckpoint(state_dict, None, None, f"HF CLIP {path}" if is_hf_clip(state_dict) else str(path))


def config_from_hf(hf_config: dict, state_dict: dict[str, torch.Tensor]) -> ClipVisionConfig:
    """Tower shape from the weights themselves; heads / activation / eps from config.json.

    Shapes come from tensors because a CLIPModel's projection size is the top-level `projection_dim`
    while its `vision_config` carries another, and save_pretrained omits default values.
    """
    vision = {**_HF_VISION_DEFAULTS, **hf_config.get("vision_config", hf_config)}
    prefix = _hf_prefix(state_dict)
    patch = state_dict[prefix + "vision_model.embeddings.patch_embedding.weight"]
    positions = state_dict[prefix + "vision_model.embeddings.position_embedding.weight"].shape[0]
    layer_re = re.compile(re.escape(prefix) + r"vision_model\.encoder\.layers\.(\d+)\.")
    head = state_dict.get(prefix + "visual_projection.weight")
    return ClipVisionConfig(
        width=patch.shape[0],
        layers=len({m[1] for k in state_dict if (m := layer_re.match(k))}),
        heads=int(vision["num_attention_heads"]),
        mlp_dim=state_dict[prefix + "vision_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
        patch_size=patch.shape[-1],
        image_size=round((positions - 1) ** 0.5) * patch.shape[-1],
        proj_dim=None if head is None else head.shape[0],
        act=str(vision["hidden_act"]),
        ln_eps=float(vision["layer_norm_eps"]),
    )


def preprocess_from_hf(folder: Path, config: ClipVisionConfig) -> Preprocess:
    """Preprocess from preprocessor_config.json when present, else OpenAI CLIP's at the tower's size."""
    default = Preprocess(config.image_size, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, "bicubic")
    file = folder / "preprocessor_config.json"
    if not file.is_file():
        return default
    proc = read_json(file)
    crop = proc.get("crop_size", config.image_size)
    size = crop.get("height", config.image_size) if isinstance(crop, dict) else int(crop)
    return Preprocess(
        input_size=int(size),
        mean=tuple(float(x) for x in proc.get("image_mean", OPENAI_CLIP_MEAN)),
        std=tuple(float(x) for x in proc.get("image_std", OPENAI_CLIP_STD)),
        interpolation=_PIL_RESAMPLE.get(proc.get("resample", 3), "bicubic"),
    )
