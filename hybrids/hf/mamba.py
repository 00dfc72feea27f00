"""Mamba (``MambaForCausalLM``, model_type "mamba") in the zoo's terms: a stack of Mamba mixers
with no MLP, RMSNorms of the checkpoint's epsilon, tied or untied head.

transformers' Mamba block is ``x + mixer(rmsnorm(x))``, its model ``rmsnorm(blocks(embed))`` then
the head: the zoo's :class:`~hybrids.model.HybridLM` with ``mlp_expand: 0``. The mixer's weights
carry mamba_ssm's names, as the zoo's :class:`~hybrids.mixers.Mamba` does.
"""

from __future__ import annotations

from typing import Any

import torch

from hybrids.hf.names import NameMap, backbone_names, unsupported
from hybrids.model.config import StackConfig



def mixer_weights(config: dict[str, Any]) -> list[str]:
    """The names of a Mamba mixer's weights (mamba_ssm's, transformers' and the zoo's alike)."""
    names = ["A_log", "D", "conv1d.weight", "in_proj.weight", "x_proj.weight", "dt_proj.weight", "dt_proj.bias",
             "out_proj.weight"]
    if config.get("use_conv_bias", True):
        names.append("conv1d.bias")
    if config.get("use_bias", False):
        names += ["in_proj.bias", "out_proj.bias"]
    return names


def stack_config(config: dict[str, Any]) -> StackConfig:
    """The transformers config (config.json's dict) as a StackConfig; options the zoo's Mamba has
    no counterpart for are refused by name."""
    unsupported(config, hidden_act=("silu",))
    mixer = {
        "d_state": config["state_size"],
        "d_conv": config["conv_kernel"],
        "expand": config["expand"],
        "dt_rank": config["time_step_rank"],
        "conv_bias": bool(config.get("use_conv_bias", True)),
        "bias": bool(config.get("use_bias", False)),
    }
    return StackConfig(
        vocab_size=config["vocab_size"],
        d_model=config["hidden_size"],
        n_layers=config["num_hidden_layers"],
        pattern="M",
        mixers={"M": {"class_path": "hybrids.mixers.Mamba", "init_args": mixer}},
        mlp_expand=0,
        tie_embeddings=bool(config.get("tie_word_embeddings", True)),
        norm_eps=float(config.get("layer_norm_epsilon", 1e-5)),
    )


def names(config: dict[str, Any]) -> NameMap:
    """transformers' weight names -> the zoo's, for every layer."""
    return backbone_names(config, mixer_weights(config))


def weights(config: dict[str, Any], hf_weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return names(config).to_zoo(hf_weights)
