"""A Hugging Face checkpoint folder on disk: ``config.json`` and the weights, in one safetensors
file, several (``model.safetensors.index.json``), or a pickled ``pytorch_model.bin`` (loaded with
``weights_only``). Nothing is downloaded: a folder is what ``save_pretrained`` or
``huggingface-cli download`` left on disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

CONFIG = "config.json"
SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLED = "pytorch_model.bin"


class FolderError(ValueError):
    """A folder that is not a readable Hugging Face checkpoint; the message says what is missing."""


def read_config(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / CONFIG
    if not path.is_file():
        raise FolderError(f"{folder}: no {CONFIG}; give the folder that save_pretrained (or a download) wrote")
    try:
        config = json.loads(path.read_text(), object_hook=_special_floats)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FolderError(f"{path}: not readable JSON ({err})") from err
    if not isinstance(config, dict) or "model_type" not in config:
        raise FolderError(f"{path}: no model_type; is it a transformers model's config?")
    return config


def _special_floats(obj: dict[str, Any]) -> Any:
    """transformers 5 writes floats JSON has no literal for (inf, nan) as ``{"__float__":
    "Infinity"}``; read them back as floats."""
    if len(obj) == 1 and "__float__" in obj:
        return float(obj["__float__"])
    return obj


def read_weights(folder: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint by its transformers name, on the CPU, in its stored dtype."""
    folder = Path(folder)
    if (folder / SAFETENSORS).is_file():
        return _safetensors(folder / SAFETENSORS)
    if (folder / SAFETENSORS_INDEX).is_file():
        index = json.loads((folder / SAFETENSORS_INDEX).read_text())
        weights: dict[str, torch.Tensor] = {}
        for shard in sorted(set(index.get("weight_map", {}).values())):
            weights.update(_safetensors(folder / shard))
        return weights
    if (folder / PICKLED).is_file():
        return torch.load(folder / PICKLED, map_location="cpu", weights_only=True)
    raise FolderError(f"{folder}: no weights ({SAFETENSORS}, {SAFETENSORS_INDEX} or {PICKLED})")


def _safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path), device="cpu")
