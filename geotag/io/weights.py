"""Reading weight and config files for the models: the one place model code goes to disk.

Model modules (nn.Modules, tasks, segmentation providers) read no files themselves (GUIDE section 2;
tests/test_layers.py checks it): they call these, so how a file is opened, and that nothing is ever
unpickled (safetensors, or torch.load with weights_only=True), lives in one place.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import torch


def read_torch_file(path: Path, *, mmap: bool = False) -> Any:
    """A torch file's tensors (a state dict or a tensor) read with weights_only=True: nothing unpickled."""
    return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file, on the CPU."""
    from safetensors.torch import load_file

    return load_file(str(path), device="cpu")


def read_safetensors_with_metadata(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A safetensors file's tensors and its string metadata (empty when it has none)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as fh:
        meta = dict(fh.metadata() or {})
        return {k: fh.get_tensor(k) for k in fh.keys()}, meta  # noqa: SIM118 - safe_open has no __iter__


def read_tensors(path: Path, keys: Sequence[str]) -> dict[str, torch.Tensor]:
    """Only `keys` of a safetensors or torch checkpoint (a big file is memory-mapped, not read whole)."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            return {k: fh.get_tensor(k) for k in keys}
    state = read_torch_file(path, mmap=True)
    return {k: state[k] for k in keys}


def read_json(path: Path) -> Any:
    """A small JSON file shipped beside weights (an HF config.json, preprocessor_config.json)."""
    return json.loads(Path(path).read_text())


def read_package_json(package: str, name: str) -> Any:
    """A JSON data file shipped inside a geotag package (importlib.resources: works from a wheel)."""
    return json.loads(resources.files(package).joinpath(name).read_text())
