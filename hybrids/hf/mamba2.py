"""Mamba-2 (``Mamba2ForCausalLM``, model_type "mamba2") in the zoo's terms: a stack of Mamba-2
mixers with no MLP, as :mod:`hybrids.hf.mamba` for Mamba.

The mixer's weights carry mamba_ssm's names on both sides (``in_proj`` packing z, xBC and dt;
``conv1d`` over xBC; ``dt_bias``, ``A_log``, ``D`` per head; the gated RMSNorm ``norm`` per
group of ``intermediate_size / n_groups`` channels; ``out_proj``).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from hybrids.hf.names import ConversionError, NameMap, backbone_names, unsupported
from hybrids.model.config import StackConfig


def mixer_weights(config: dict[str, Any]) -> list[str]:
    names = ["dt_bias", "A_log", "D", "conv1d.weight", "in_proj.weight", "norm.weight", "out_proj.weight"]
    if config.get("use_conv_bias", True):
        names.append("conv1d.bias")
    if config.get("use_bias", False):
        names += ["in_proj.bias", "out_proj.bias"]
    return names


def check_time_step_limit(config: dict[str, Any]) -> None:
    """Refuse a clamp on the steps (the zoo's Mamba2 has none): only [0, inf] converts."""
    limit = config.get("time_step_limit", (0.0, math.inf))
    if limit is not None and (float(limit[0]) != 0.0 or float(limit[1]) != math.inf):
        raise ConversionError(f"time_step_limit: {list(limit)} has no counterpart in the zoo's Mamba2 "
                              "(its steps are not clamped; supported: [0.0, inf])")


def stack_config(config: dict[str, Any]) -> StackConfig:
    unsupported(config, hidden_act=("silu",))
    check_time_step_limit(config)
    d_inner = int(config["expand"] * config["hidden_size"])
    heads, head_dim = config["num_heads"], config["head_dim"]
    if heads * head_dim != d_inner:
        raise ConversionError(f"num_heads: {heads} heads of head_dim {head_dim} do not fill intermediate_size "
                              f"= expand * hidden_size = {d_inner}")
    mixer = {
        "d_state": config["state_size"],
        "d_conv": config["conv_kernel"],
        "expand": config["expand"],
        "headdim": head_dim,
        "ngroups": config.get("n_groups", 8),  # transformers' defaults, for keys a config leaves out
        "conv_bias": bool(config.get("use_conv_bias", True)),
        "bias": bool(config.get("use_bias", False)),
        "norm_eps": float(config.get("layer_norm_epsilon", 1e-5)),
    }
    return StackConfig(
        vocab_size=config["vocab_size"],
        d_model=config["hidden_size"],
        n_layers=config["num_hidden_layers"],
        pattern="M",
        mixers={"M": {"class_path": "hybrids.mixers.Mamba2", "init_args": mixer}},
        mlp_expand=0,
        tie_embeddings=bool(config.get("tie_word_embeddings", False)),
        norm_eps=float(config.get("layer_norm_epsilon", 1e-5)),
    )


def names(config: dict[str, Any]) -> NameMap:
    return backbone_names({"tie_word_embeddings": False, **config}, mixer_weights(config))


def weights(config: dict[str, Any], hf_weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return names(config).to_zoo(hf_weights)
