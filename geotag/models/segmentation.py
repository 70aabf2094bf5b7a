"""Semantic segmentation providers: an RGB batch in, an ADE20K 150-class label map out, rendered as the
3-channel colour image TransLocator's second branch sees.

TransLocator (Pramanick et al., ECCV 2022) fed its segmentation branch colour-rendered ADE20K maps
(their released `*_seg_images_PNG` archives, drawn with the CSAIL `color150` palette, which is
`ADE20K_PALETTE` below). Three providers:

- `SegFormerProvider`: a transformers SegFormer fine-tuned on ADE20K, from the Hugging Face hub
  (default `nvidia/segformer-b0-finetuned-ade-512-512`: the cache first, a download only when the hub
  answers) or from a local `save_pretrained` folder. It segments the crop the model sees, upsampled to
  the segmenter's input size.
- `DiskSegmentation`: precomputed PNG maps in one folder (`--seg-dir`), looked up by image, so maps can
  be made once from full-resolution photos (closest to the paper, which segmented offline).
- anything else that implements `SegmentationProvider.labels`.

Precomputed maps (`DiskSegmentation`): the file for a photo is `<image_id>.png` (geotag's content hash,
stable under renames) and, failing that, `<file stem>.png` (the photo's name without its extension; two
photos with the same stem in different folders would share a map, so prefer image ids for large
collections). A map must describe the upright photo (EXIF orientation applied) and have its aspect
ratio; any resolution works, it is resized with nearest-neighbour and centre-cropped exactly like the
photo. A single-channel PNG (mode L, P or I;16) holds 0-based ADE20K class indices (0 = wall, as
SegFormer and mmseg predict); values >= 150 mean unlabelled and render black. An RGB PNG is taken as an
already rendered colour map (the format TransLocator released) and used as is.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from geotag.errors import ImageError, InputError, WeightsError
from geotag.io.weights import read_json, read_tensors

log = logging.getLogger(__name__)

DEFAULT_SEGFORMER = "nvidia/segformer-b0-finetuned-ade-512-512"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NUM_CLASSES = 150
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")

ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence",
    "desk", "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column",
    "signboard", "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator",
    "grandstand", "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway",
    "river", "bridge", "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier", "awning",
    "streetlight", "booth", "television receiver", "airplane", "dirt track", "apparel", "pole", "land",
    "bannister", "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship", "fountain",
    "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool", "barrel", "basket",
    "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name",
    "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood",
    "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor",
    "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)  # fmt: skip

_PALETTE_HEX = (
    "787878 b47878 06e6e6 503232 04c803 787850 8c8c8c cc05ff e6e6e6 04fa07 e005ff ebff07 "
    "96053d 787846 08ff33 ff0652 8fff8c ccff04 ff3307 cc4603 0066c8 3de6fa ff0633 0b66ff "
    "ff0747 ff09e0 0907e6 dcdcdc ff095c 7009ff 08ffd6 07ffe0 ffb806 0aff47 ff290a 07ffff "
    "e0ff08 6608ff ff3d06 ffc207 ff7a08 00ff14 ff0829 ff0599 0633ff eb0cff a09614 00a3ff "
    "8c8c8c fa0a0f 14ff00 1fff00 ff1f00 ffe000 99ff00 0000ff ff4700 00ebff 00adff 1f00ff "
    "0bc8c8 ff5200 00fff5 003dff 00ff70 00ff85 ff0000 ffa300 ff6600 c2ff00 008fff 33ff00 "
    "0052ff 00ff29 00ffad 0a00ff adff00 00ff99 ff5c00 ff00ff ff00f5 ff0066 ffad00 ff0014 "
    "ffb8b8 001fff 00ff3d 0047ff ff00cc 00ffc2 00ff52 000aff 0070ff 3300ff 00c2ff 007aff "
    "00ffa3 ff9900 00ff0a ff7000 8fff00 5200ff a3ff00 ffeb00 08b8aa 8500ff 00ff5c b800ff "
    "ff001f 00b8ff 00d6ff ff0070 5cff00 00e0ff 70e0ff 46b8a0 a300ff 9900ff 47ff00 ff00a3 "
    "ffcc00 ff008f 00ffeb 85ff00 ff00eb f500ff ff007a fff500 0abed4 d6ff00 00ccff 1400ff "
    "ffff00 0099ff 0029ff 00ffcc 2900ff 29ff00 ad00ff 00f5ff 4700ff 7a00ff 00ffb8 005cff "
    "b8ff00 0085ff ffd600 19c2c2 66ff00 5c00ff"
)
ADE20K_PALETTE = np.array(
    [[int(h[k : k + 2], 16) for k in (0, 2, 4)] for h in _PALETTE_HEX.split()], np.uint8
)
"""(150, 3) uint8: the standard ADE20K palette (CSAIL color150, as in mmseg); row k colours class k."""


def render_labels(labels: torch.Tensor) -> torch.Tensor:
    """(B, H, W) integer labels -> (B, 3, H, W) float colour image in [0, 1]; labels outside 0..149 are
    black."""
    palette = torch.zeros(NUM_CLASSES + 1, 3, dtype=torch.float32, device=labels.device)
    palette[:NUM_CLASSES] = torch.from_numpy(ADE20K_PALETTE).to(labels.device).float() / 255
    index = labels.long()
    index = torch.where((index >= 0) & (index < NUM_CLASSES), index, NUM_CLASSES)
    return palette[index].permute(0, 3, 1, 2).contiguous()


class SegmentationProvider(nn.Module):
    """Turns RGB batches into ADE20K label maps. An nn.Module, so `.to(device)` moves its weights along
    with the model that owns it; its weights are never part of that model's checkpoint."""

    name: str = ""
    needs_keys: bool = False  # True: maps are looked up per image (image ids / paths), not computed

    def labels(self, rgb: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float RGB in [0, 1] -> (B, H, W) int64 class indices 0..149."""
        raise NotImplementedError

    def colour(self, rgb: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> the rendered colour map, (B, 3, H, W) in [0, 1]."""
        return render_labels(self.labels(rgb))

    def train(self, mode: bool = True) -> SegmentationProvider:
        """Always in eval mode: a frozen segmenter must not run dropout / drop-path while its owner
        trains."""
        return super().train(False)


class SegFormerProvider(SegmentationProvider):
    """A transformers `SegformerForSemanticSegmentation` with 150 ADE20K labels.

    The image is resized to size x size (bilinear) and normalised as SegformerImageProcessor does; the
    logits (1/4 resolution) are upsampled back to the input size before the argmax.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        size: int = 512,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        name: str = "",
    ) -> None:
        super().__init__()
        labels = getattr(model.config, "num_labels", None)
        if labels != NUM_CLASSES:
            raise WeightsError(
                f"segmenter {name or 'model'} has {labels} labels; an ADE20K 150-class model is needed"
            )
        self.model = model.eval().requires_grad_(False)
        self.size = int(size)
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.name = name or "SegFormer"

    @torch.no_grad()
    def labels(self, rgb: torch.Tensor) -> torch.Tensor:
        h, w = rgb.shape[-2:]
        x = F.interpolate(rgb.float(), size=(self.size, self.size), mode="bilinear", align_corners=False)
        x = (x - self.mean) / self.std
        logits = self.model(pixel_values=x).logits
        logits = F.interpolate(logits.float(), size=(h, w), mode="bilinear", align_corners=False)
        return logits.argmax(dim=1)

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """`save_pretrained` folder plus the preprocessing this provider applies."""
        folder = Path(folder)
        with quiet_transformers():
            self.model.save_pretrained(folder)
        size = {"height": self.size, "width": self.size}
        extra = {"do_reduce_labels": True}
        return write_processor_config(folder, size, self.mean, self.std, "SegformerImageProcessor", extra)


def write_processor_config(
    folder: Path,
    size: dict[str, int],
    mean: torch.Tensor,
    std: torch.Tensor,
    processor_type: str,
    extra: dict[str, Any] | None = None,
) -> Path:
    """preprocessor_config.json as transformers writes it, for the normalisation a provider applies."""
    processor = {
        "size": size,
        "image_mean": mean.flatten().tolist(),
        "image_std": std.flatten().tolist(),
        **(extra or {}),
        "image_processor_type": processor_type,
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(processor, indent=2))
    return folder


def load_segformer(
    source: str | os.PathLike[str] = DEFAULT_SEGFORMER, *, size: int | None = None
) -> SegFormerProvider:
    """A SegFormer from a local folder, or from a hub id: HF cache, then a download when the hub answers.

    Offline with nothing cached, fails at once with one WeightsError line saying what to download.
    """
    path = Path(source)
    if path.is_dir():
        return _from_folder(path, size, name=str(path))
    if path.exists() or not _looks_like_repo_id(str(source)):
        raise WeightsError(f"segmenter {source}: not a folder with a SegFormer config.json and weights")
    repo = str(source)
    folder = _cached_snapshot(repo) or _download(repo)
    if folder is None:
        raise WeightsError(missing_segmenter_message(repo))
    return _from_folder(folder, size, name=repo)


def missing_segmenter_message(repo: str = DEFAULT_SEGFORMER) -> str:
    return (
        f"no weights for the segmenter {repo} (not in the Hugging Face cache, hub unreachable or "
        f"HF_HUB_OFFLINE set): run `hf download {repo}`, or give a local SegFormer folder, or precomputed "
        "ADE20K maps with --seg-dir FOLDER"
    )


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """No transformers progress bars on stderr while we load or save (the CLI has its own)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _looks_like_repo_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "/", "~"))


def _from_folder(folder: Path, size: int | None, name: str) -> SegFormerProvider:
    if not (folder / "config.json").is_file() or not any((folder / f).is_file() for f in _WEIGHT_FILES):
        raise WeightsError(
            f"segmenter folder {folder} needs config.json and model.safetensors (or pytorch_model.bin)"
        )
    from transformers import SegformerForSemanticSegmentation

    try:
        with quiet_transformers():
            model = SegformerForSemanticSegmentation.from_pretrained(folder)
    except (OSError, ValueError, RuntimeError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise WeightsError(f"cannot load the segmenter from {folder}: {reason}") from exc
    mean, std, saved_size = IMAGENET_MEAN, IMAGENET_STD, 512
    processor = folder / "preprocessor_config.json"
    if processor.is_file():
        cfg = read_json(processor)
        mean = tuple(cfg.get("image_mean", mean))
        std = tuple(cfg.get("image_std", std))
        saved_size = int((cfg.get("size") or {}).get("height", saved_size))
    return SegFormerProvider(model, size=size or saved_size, mean=mean, std=std, name=name)


def _cached_snapshot(repo: str) -> Path | None:
    from geotag.models.hub import _cached

    config = _cached(repo, "config.json")
    if config is None:
        return None
    folder = config.parent
    return folder if any(_cached(repo, f) is not None for f in _WEIGHT_FILES) else None


def _download(repo: str) -> Path | None:
    from geotag.models.hub import hub_cache_dir, hub_offline, hub_reachable

    if hub_offline() or not hub_reachable():
        return None
    from huggingface_hub import snapshot_download

    try:
        patterns = ["config.json", "preprocessor_config.json", *_WEIGHT_FILES]
        return Path(snapshot_download(repo, allow_patterns=patterns, cache_dir=hub_cache_dir()))
    except Exception as exc:  # any hub/network failure means "no weights"; the caller says what to do
        log.warning("download of %s failed: %s", repo, exc)
        return None


class DiskSegmentation(SegmentationProvider):
    """Precomputed label or colour maps in one folder, found by image id, then by file stem."""

    needs_keys = True

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        super().__init__()
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise InputError(f"segmentation folder not found: {self.folder}")
        self.name = f"precomputed maps in {self.folder}"

    def labels(self, rgb: torch.Tensor) -> torch.Tensor:
        raise InputError("precomputed segmentation maps are looked up per image: pass image ids or paths")

    def find(self, image_id: str | None, path: str | os.PathLike[str] | None) -> Path:
        tried = []
        for stem in (image_id, Path(path).stem if path else None):
            if stem:
                candidate = self.folder / f"{stem}.png"
                if candidate.is_file():
                    return candidate
                tried.append(candidate.name)
        raise ImageError(
            f"no segmentation map for {path or image_id} in {self.folder} (looked for {', '.join(tried)})"
        )

    def load(
        self,
        image_ids: Sequence[str | None] | None,
        paths: Sequence[str | os.PathLike[str] | None] | None,
        size: int,
    ) -> torch.Tensor:
        """(B, 3, size, size) float colour maps in [0, 1], in the order of the given images."""
        if image_ids is None and paths is None:
            raise InputError("precomputed segmentation maps need the images' ids or paths")
        n = len(image_ids if image_ids is not None else paths)  # type: ignore[arg-type]
        ids = list(image_ids) if image_ids is not None else [None] * n
        files = list(paths) if paths is not None else [None] * n
        return torch.stack([load_map(self.find(i, p), size) for i, p in zip(ids, files, strict=True)])


def load_map(path: Path, size: int, box: tuple[float, float, float, float] | None = None) -> torch.Tensor:
    """One PNG map -> (3, size, size) float colour image in [0, 1], cropped like the photo (`box`: the
    training crop as fractions of the image, see io/seg_maps.read_map)."""
    from geotag.io.seg_maps import read_map

    kind, arr = read_map(path, size, box)
    if kind == "rgb":
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255
    return render_labels(torch.from_numpy(arr)[None])[0]


# ---------------------------------------------------------------------------------------------------
# Instance segmentation: the features the directed feature experts (experts.py) look at
#
# A provider finds instances in an RGB batch and returns, per image, its detections best first: a class
# name from the model's own label set, a score and a box. `Mask2FormerInstances` runs a transformers
# Mask2Former (a COCO-panoptic or ADE20K checkpoint: their "stuff" classes hold roads, terrain, buildings
# and vegetation, which box detectors trained on COCO things, such as torchvision's Mask R-CNN, never
# see). It is built from `Mask2FormerModel` plus the class head, not from
# `Mask2FormerForUniversalSegmentation`, whose constructor wants scipy for a training loss we never use;
# the checkpoint files are the same.

DEFAULT_INSTANCE_SEGMENTER = "facebook/mask2former-swin-large-coco-panoptic"


@dataclass(frozen=True)
class Detection:
    """One instance: `label` in the segmenter's label set, `score` in [0, 1], `box` (x0, y0, x1, y1) in
    pixels of the image it was found in (x1, y1 exclusive)."""

    label: str
    score: float
    box: tuple[float, float, float, float]


class InstanceSegmenter(nn.Module):
    """Finds instances in RGB batches. An nn.Module, so `.to(device)` moves it with its owner; always in
    eval mode; its weights are never part of the owner's checkpoint."""

    name: str = ""
    source: str = ""  # what a checkpoint records to find it again: a hub id or a folder
    labels: tuple[str, ...] = ()

    def detect(self, rgb: torch.Tensor) -> list[list[Detection]]:
        """(B, 3, H, W) float RGB in [0, 1] -> per image, its detections, best first."""
        raise NotImplementedError

    def train(self, mode: bool = True) -> InstanceSegmenter:
        return super().train(False)


class Mask2FormerInstances(InstanceSegmenter):
    """Mask2Former's instance inference: each query's best class (the "no object" class dropped) times
    the mean sigmoid of its mask inside the mask; queries scoring at least `min_score` become
    detections, their box the extent of the mask (found at the mask's 1/4 resolution, scaled up)."""

    def __init__(
        self,
        model: nn.Module,
        class_head: nn.Linear,
        *,
        size: int = 384,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        min_score: float = 0.5,
        mask_threshold: float = 0.5,
        name: str = "",
        source: str = "",
    ) -> None:
        super().__init__()
        id2label = getattr(model.config, "id2label", None) or {}
        if class_head.out_features != len(id2label) + 1:
            raise WeightsError(
                f"segmenter {name or 'model'}: {class_head.out_features} class outputs for "
                f"{len(id2label)} labels (+1 for no object expected)"
            )
        self.model = model.eval().requires_grad_(False)
        self.class_head = class_head.eval().requires_grad_(False)
        self.labels = tuple(str(id2label[i]) for i in range(len(id2label)))
        self.size, self.min_score, self.mask_threshold = int(size), float(min_score), float(mask_threshold)
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.name = name or "Mask2Former"
        self.source = source

    @classmethod
    def from_config(cls, config: object, **kwargs: Any) -> Mask2FormerInstances:
        """A randomly initialised model of a `Mask2FormerConfig` (tests, or before loading weights)."""
        from transformers import Mask2FormerModel

        model = Mask2FormerModel(config)
        head = nn.Linear(config.hidden_dim, config.num_labels + 1)  # type: ignore[attr-defined]
        return cls(model, head, **kwargs)

    @torch.no_grad()
    def detect(self, rgb: torch.Tensor) -> list[list[Detection]]:
        h, w = rgb.shape[-2:]
        x = F.interpolate(rgb.float(), size=(self.size, self.size), mode="bilinear", align_corners=False)
        out = self.model(pixel_values=(x - self.mean) / self.std, output_hidden_states=True)
        hidden = out.transformer_decoder_intermediate_states[-1].transpose(0, 1)  # (B, Q, C)
        probs = self.class_head(hidden).float().softmax(dim=-1)[..., :-1]
        class_score, label = probs.max(dim=-1)  # (B, Q)
        masks = out.masks_queries_logits[-1].float().sigmoid()  # (B, Q, h/4, w/4)
        binary = masks > self.mask_threshold
        inside = binary.sum(dim=(-1, -2))
        score = class_score * (masks * binary).sum(dim=(-1, -2)) / inside.clamp_min(1)
        rows, cols = binary.any(dim=-1), binary.any(dim=-2)  # (B, Q, mh), (B, Q, mw)
        mh, mw = rows.shape[-1], cols.shape[-1]
        y0 = rows.float().argmax(dim=-1)
        y1 = mh - rows.flip(-1).float().argmax(dim=-1)
        x0 = cols.float().argmax(dim=-1)
        x1 = mw - cols.flip(-1).float().argmax(dim=-1)
        boxes = torch.stack([x0 * (w / mw), y0 * (h / mh), x1 * (w / mw), y1 * (h / mh)], dim=-1)
        keep = (score >= self.min_score) & (inside > 0)
        found: list[list[Detection]] = []
        for b in range(rgb.shape[0]):
            idx = keep[b].nonzero().flatten()
            idx = idx[score[b, idx].argsort(descending=True)]
            found.append(
                [
                    Detection(self.labels[int(label[b, i])], float(score[b, i]), tuple(boxes[b, i].tolist()))  # type: ignore[arg-type]
                    for i in idx.tolist()
                ]
            )
        return found

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """A folder transformers' `Mask2FormerForUniversalSegmentation.from_pretrained` also reads:
        config.json, model.safetensors (`model.*`, `class_predictor.*`), preprocessor_config.json."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.model.config.architectures = ["Mask2FormerForUniversalSegmentation"]
        self.model.config.save_pretrained(folder)
        state = {f"model.{k}": v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        state.update(
            {f"class_predictor.{k}": v.detach().cpu() for k, v in self.class_head.state_dict().items()}
        )
        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
        size = {"shortest_edge": self.size}
        return write_processor_config(folder, size, self.mean, self.std, "Mask2FormerImageProcessor")


def load_instance_segmenter(
    source: str | os.PathLike[str] = DEFAULT_INSTANCE_SEGMENTER, *, min_score: float | None = None
) -> Mask2FormerInstances:
    """A Mask2Former from a local folder, or from a hub id: HF cache, then a download when the hub
    answers. Offline with nothing cached, fails at once with one WeightsError line saying what to do."""
    path = Path(source)
    if path.is_dir():
        return _mask2former_from_folder(path, str(path), min_score)
    if path.exists() or not _looks_like_repo_id(str(source)):
        raise WeightsError(f"segmenter {source}: not a folder with a Mask2Former config.json and weights")
    repo = str(source)
    folder = _cached_snapshot(repo) or _download(repo)
    if folder is None:
        raise WeightsError(
            f"no weights for the instance segmenter {repo} (not in the Hugging Face cache, hub unreachable "
            f"or HF_HUB_OFFLINE set): run `hf download {repo}`, or give a local Mask2Former folder"
        )
    return _mask2former_from_folder(folder, repo, min_score)


def _mask2former_from_folder(folder: Path, source: str, min_score: float | None) -> Mask2FormerInstances:
    weights = next((folder / f for f in _WEIGHT_FILES if (folder / f).is_file()), None)
    if not (folder / "config.json").is_file() or weights is None:
        raise WeightsError(
            f"segmenter folder {folder} needs config.json and model.safetensors (or pytorch_model.bin)"
        )
    from transformers import Mask2FormerModel
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    try:
        hf_logging.set_verbosity_error()  # its load report lists the class head as unexpected: it is ours
        with quiet_transformers():
            model, info = Mask2FormerModel.from_pretrained(folder, output_loading_info=True)  # model.*
        head_state = _read_tensors(weights, ("class_predictor.weight", "class_predictor.bias"))
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise WeightsError(f"cannot load the instance segmenter from {folder}: {reason}") from exc
    finally:
        hf_logging.set_verbosity(verbosity)
    if info.get("missing_keys"):
        missing = sorted(info["missing_keys"])
        raise WeightsError(f"instance segmenter {folder} lacks weights: {', '.join(missing[:3])}")
    head = nn.Linear(
        head_state["class_predictor.weight"].shape[1], head_state["class_predictor.weight"].shape[0]
    )
    head.load_state_dict({k.split(".", 1)[1]: v for k, v in head_state.items()})
    mean, std, size = IMAGENET_MEAN, IMAGENET_STD, 384
    processor = folder / "preprocessor_config.json"
    if processor.is_file():
        cfg = read_json(processor)
        mean, std = tuple(cfg.get("image_mean", mean)), tuple(cfg.get("image_std", std))
        raw = cfg.get("size") or {}
        size = (
            int(raw.get("shortest_edge") or raw.get("height") or size) if isinstance(raw, dict) else int(raw)
        )
    kwargs: dict[str, Any] = {"min_score": min_score} if min_score is not None else {}
    return Mask2FormerInstances(
        model, head, size=size, mean=mean, std=std, name=source, source=source, **kwargs
    )


def _read_tensors(file: Path, keys: Sequence[str]) -> dict[str, torch.Tensor]:
    """Only `keys` of a safetensors or torch checkpoint (the big one is not read twice)."""
    return read_tensors(file, keys)
