"""Hugging Face transformers checkpoints in the zoo (the ``[hf]`` extra's packages are needed
for safetensors files; building the zoo's model needs nothing of transformers).

``load_hf(folder)`` reads a local checkpoint folder (``config.json`` and its weights) of a
supported family and returns the zoo's :class:`~hybrids.model.HybridLM` with its weights;
``stack_and_weights(folder)`` returns the :class:`~hybrids.model.StackConfig` and the renamed
weights without building it. Families, by their ``model_type``: :data:`FAMILIES`.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import torch

from hybrids.hf import bamba, falcon_mamba, jamba, mamba, mamba2, recurrent_gemma
from hybrids.hf.folder import FolderError, read_config, read_weights
from hybrids.hf.names import ConversionError
from hybrids.model.config import StackConfig

FAMILIES: dict[str, ModuleType] = {
    "mamba": mamba, "falcon_mamba": falcon_mamba, "mamba2": mamba2, "recurrent_gemma": recurrent_gemma, "bamba": bamba,
    "jamba": jamba,
}

__all__ = ["FAMILIES", "ConversionError", "FolderError", "load_hf", "stack_and_weights"]


def _family(config: dict) -> ModuleType:
    model_type = config["model_type"]
    if model_type not in FAMILIES:
        raise ConversionError(f"model_type {model_type!r} is not one the zoo converts (it does: {sorted(FAMILIES)})")
    return FAMILIES[model_type]


def stack_and_weights(folder: str | Path) -> tuple[StackConfig, dict[str, torch.Tensor]]:
    """The checkpoint in ``folder`` as the zoo's stack config and state dict (zoo names)."""
    config = read_config(folder)
    family = _family(config)
    try:
        return family.stack_config(config), family.weights(config, read_weights(folder))
    except KeyError as err:  # a key the family cannot do without (no default in transformers either)
        raise ConversionError(f"{err.args[0]}: missing from config.json, which {config['model_type']} needs") from None


def load_hf(folder: str | Path, dtype: torch.dtype = torch.float32):
    """The checkpoint in ``folder`` as a :class:`~hybrids.model.HybridLM` in ``dtype``, in eval mode."""
    from hybrids.model import HybridLM

    stack, weights = stack_and_weights(folder)
    model = HybridLM(stack)
    model.load_state_dict({k: v.to(dtype) for k, v in weights.items()}, strict=True)
    return model.to(dtype).eval()
