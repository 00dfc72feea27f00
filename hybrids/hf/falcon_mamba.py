"""Falcon-Mamba (``FalconMambaForCausalLM``, model_type "falcon_mamba"): Mamba whose mixer
RMS-normalises the low-rank step, B and C (no weights; epsilon ``mixer_rms_eps``) right after
``x_proj``, the zoo's Mamba with ``ssm_input_norm_eps``. Everything else, weights included, as
:mod:`hybrids.hf.mamba` (the norms' dummy weights are not saved)."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from hybrids.hf import mamba
from hybrids.model.config import StackConfig


def stack_config(config: dict[str, Any]) -> StackConfig:
    stack = mamba.stack_config(config)
    spec = stack.mixers["M"]
    mixer = {**spec, "init_args": {**spec["init_args"], "ssm_input_norm_eps": float(config.get("mixer_rms_eps", 1e-6))}}
    return dataclasses.replace(stack, mixers={"M": mixer})


def weights(config: dict[str, Any], hf_weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return mamba.weights(config, hf_weights)
