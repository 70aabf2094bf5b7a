"""Scene labels the way GeoEstimation made them for MP-16: a Places365 classifier and its hierarchy.

GeoEstimation (Mueller-Budack et al., ECCV 2018) labelled every training photo with a Places365 CNN and
folded its 365 probabilities into the Places365 scene hierarchy: S3 (indoor / natural / urban, the
scene head of TransLocator and GeoDecoder) and S16 (the 16 level-2 groups). A category can sit under
several groups; its row of the hierarchy is normalised to sum 1, so the folded scores are again
probabilities. The hierarchy ships as `places365_hierarchy.json` (its source and licence are inside).

The classifier is a CSAIL Places365-Standard ResNet (torchvision layout, 365 classes, ImageNet
normalisation). Its weights come from a local file (`--classifier PATH`: CSAIL's `resnet50_places365.pth.tar`
or `resnet18_places365.pth.tar`, a plain state dict, or safetensors) or from a Hugging Face hub repo
that holds such a file (the HF cache first, a download only when the hub answers). Nothing here
touches photos: the engine gives it normalised batches.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch
from torch import nn

from geotag.errors import WeightsError
from geotag.io.weights import read_package_json
from geotag.models.base import Preprocess
from geotag.models.segmentation import IMAGENET_MEAN, IMAGENET_STD, _looks_like_repo_id

log = logging.getLogger(__name__)

DEFAULT_PLACES365 = "CepiPerez/Places365"
"""A hub mirror of CSAIL's `resnet50_places365.pth.tar` (places2.csail.mit.edu/models_places365/)."""
PLACES365_FILE = "resnet50_places365.pth.tar"
NUM_CLASSES = 365
INPUT_SIZE = 256  # GeoEstimation's scene_classification.py feeds 256 x 256
ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
WEIGHT_SUFFIXES = (".pth.tar", ".pth", ".safetensors", ".bin")
S3_NAMES = ("indoor", "natural", "urban")  # the sheet's indoor / outdoor, natural / outdoor, man-made


@dataclass(frozen=True)
class Hierarchy:
    """The Places365 scene hierarchy: 365 category names and their 0/1 memberships."""

    categories: tuple[str, ...]  # '/a/airfield', ... in the classifier's output order
    level1: torch.Tensor  # (365, 3) float 0/1: indoor, outdoor natural, outdoor man-made
    level2: torch.Tensor  # (365, 16) float 0/1
    level2_names: tuple[str, ...]

    @property
    def to_s3(self) -> torch.Tensor:
        """(365, 3): level-1 rows normalised to sum 1 (GeoEstimation's fold for S3)."""
        return _row_normalised(self.level1)

    @property
    def to_s16(self) -> torch.Tensor:
        """(365, 16): level-2 rows normalised to sum 1."""
        return _row_normalised(self.level2)

    @property
    def names(self) -> tuple[str, ...]:
        """Readable category names: '/a/airfield' -> 'airfield', '/b/bus_station/indoor' ->
        'bus_station/indoor' (as CSAIL's demo prints them)."""
        return tuple(c[3:] for c in self.categories)


@cache
def hierarchy() -> Hierarchy:
    """The shipped hierarchy (geotag/models/places365_hierarchy.json), read once."""
    data = read_package_json("geotag.models", "places365_hierarchy.json")
    rows = data["categories"]
    level1 = torch.tensor([[int(c) for c in r[1]] for r in rows], dtype=torch.float32)
    level2 = torch.tensor([[int(c) for c in r[2]] for r in rows], dtype=torch.float32)
    return Hierarchy(tuple(r[0] for r in rows), level1, level2, tuple(data["level2"]))


def _row_normalised(m: torch.Tensor) -> torch.Tensor:
    return m / m.sum(dim=1, keepdim=True).clamp_min(1)


@dataclass
class SceneScores:
    """One batch's scene probabilities, on the CPU."""

    p365: torch.Tensor  # (B, 365)
    p16: torch.Tensor  # (B, 16)
    p3: torch.Tensor  # (B, 3): indoor, natural, urban


class Places365Classifier(nn.Module):
    """A torchvision ResNet with 365 outputs plus the hierarchy folds (buffers, so `.to()` moves them)."""

    def __init__(self, arch: str = "resnet50", *, name: str = "") -> None:
        super().__init__()
        if arch not in ARCHS:
            raise WeightsError(
                f"Places365 classifier: unknown architecture {arch!r} (one of {', '.join(ARCHS)})"
            )
        import torchvision

        self.arch = arch
        self.net = getattr(torchvision.models, arch)(weights=None, num_classes=NUM_CLASSES)
        self.register_buffer("to_s3", hierarchy().to_s3, persistent=False)
        self.register_buffer("to_s16", hierarchy().to_s16, persistent=False)
        self.name = name or f"{arch} Places365 (random init)"
        self.eval().requires_grad_(False)

    def preprocess(self) -> Preprocess:
        return Preprocess(INPUT_SIZE, IMAGENET_MEAN, IMAGENET_STD, interpolation="bilinear")

    @torch.no_grad()
    def classify(self, x: torch.Tensor) -> SceneScores:
        """(B, 3, H, W) normalised float -> the three levels' probabilities."""
        p365 = self.net(x).float().softmax(dim=1)
        return SceneScores(p365.cpu(), (p365 @ self.to_s16).cpu(), (p365 @ self.to_s3).cpu())

    def train(self, mode: bool = True) -> Places365Classifier:
        """Always in eval mode (batch norm with its running statistics)."""
        return super().train(False)


def load_places365(source: str | Path | None = None) -> Places365Classifier:
    """The classifier from a local weights file, or a hub repo holding `resnet50_places365.pth.tar`
    (HF cache, then a download when the hub answers). Offline with nothing cached: one WeightsError line
    saying what to download."""
    source = str(source or DEFAULT_PLACES365)
    path = Path(source).expanduser()
    if path.is_dir():  # e.g. `hf download ... --local-dir DIR`
        found = sorted(p for p in path.iterdir() if p.name.endswith(WEIGHT_SUFFIXES))
        if len(found) != 1:
            raise WeightsError(
                f"Places365 classifier folder {path}: expected one {' / '.join(WEIGHT_SUFFIXES)} file"
            )
        path = found[0]
    if path.is_file():
        return from_state(read_weights(path), name=str(path))
    if path.exists() or not _looks_like_repo_id(source):
        raise WeightsError(f"Places365 classifier {source}: no such weights file (or hub repo id)")
    from geotag.models.hub import hub_file

    file = hub_file(source, PLACES365_FILE)
    if file is None:
        raise WeightsError(missing_places365_message(source))
    return from_state(read_weights(file), name=f"{source}/{PLACES365_FILE}")


def missing_places365_message(repo: str = DEFAULT_PLACES365) -> str:
    return (
        f"no weights for the Places365 classifier {repo} (not in the Hugging Face cache, hub unreachable or "
        f"HF_HUB_OFFLINE set): run `hf download {repo} {PLACES365_FILE}`, or pass --classifier PATH to "
        f"CSAIL's {PLACES365_FILE} (places2.csail.mit.edu/models_places365/)"
    )


def read_weights(path: Path) -> dict[str, object]:
    """A CSAIL checkpoint ({'arch', 'state_dict'}), a bare state dict or safetensors (weights_only)."""
    from geotag.models.clip_convert import read_state_dict

    try:
        return dict(read_state_dict(path))
    except WeightsError as exc:  # its words are the backbones'
        raise WeightsError(str(exc).replace("backbone weights", "Places365 weights", 1)) from exc


def from_state(checkpoint: Mapping[str, object], *, name: str) -> Places365Classifier:
    """Build the architecture the checkpoint names (or its keys imply) and load it strictly.

    CSAIL's files were saved from `nn.DataParallel`, so their keys start with `module.`; that prefix
    is dropped, as CSAIL's own demo does."""
    state = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state, Mapping):
        raise WeightsError(f"Places365 classifier {name}: no state dict inside")
    state = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    arch = str(checkpoint.get("arch") or _arch_of(state, name))
    fc = state.get("fc.weight")
    if fc is None or fc.shape[0] != NUM_CLASSES:
        got = "no fc layer" if fc is None else f"{fc.shape[0]} outputs"
        raise WeightsError(f"Places365 classifier {name}: {got}; a 365-class Places365 ResNet is needed")
    model = Places365Classifier(arch, name=name)
    try:
        model.net.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[:2]
        raise WeightsError(f"Places365 classifier {name} does not fit {arch}: {' '.join(first)}") from exc
    log.info("Places365 classifier %s (%s)", name, arch)
    return model


def _arch_of(state: Mapping[str, torch.Tensor], name: str) -> str:
    """ResNet depth from the keys: blocks per stage and bottleneck (conv3) or basic blocks."""
    blocks = [len({k.split(".")[1] for k in state if k.startswith(f"layer{i}.")}) for i in range(1, 5)]
    bottleneck = any(".conv3." in k for k in state)
    depth = {
        (2, 2, 2, 2, False): "resnet18",
        (3, 4, 6, 3, False): "resnet34",
        (3, 4, 6, 3, True): "resnet50",
        (3, 4, 23, 3, True): "resnet101",
        (3, 8, 36, 3, True): "resnet152",
    }.get((*blocks, bottleneck))
    if depth is None:
        raise WeightsError(f"Places365 classifier {name}: not a torchvision ResNet state dict")
    return depth
