"""Hugging Face's Mamba-2 in the zoo: logits and greedy decoding equal to transformers' on tiny
random models (hf_parity), with one and two groups, chunked over several of transformers'
chunks, tied and untied heads, biases; and what has no counterpart refused by name."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from hybrids.hf import ConversionError, stack_and_weights
from hf_parity import assert_parity, save_perturbed


def tiny_mamba2(tmp_path, **overrides):
    torch.manual_seed(0)
    config = transformers.Mamba2Config(**{
        "vocab_size": 53, "hidden_size": 32, "state_size": 8, "num_hidden_layers": 2, "expand": 2,
        "conv_kernel": 4, "head_dim": 16, "num_heads": 4, "n_groups": 2, "chunk_size": 16, **overrides})
    return save_perturbed(transformers.Mamba2ForCausalLM(config), tmp_path)


@pytest.mark.parametrize("overrides", [
    {},
    {"n_groups": 1, "tie_word_embeddings": True, "layer_norm_epsilon": 1e-3},
    {"use_bias": True, "use_conv_bias": False, "conv_kernel": 2, "head_dim": 8, "num_heads": 8, "n_groups": 4},
])
def test_logits_and_greedy_continuation_match_transformers(tmp_path, overrides):
    assert_parity(tiny_mamba2(tmp_path, **overrides), tmp_path, vocab_size=53)


def test_the_stack_is_the_zoo_s_mamba2_without_mlp(tmp_path):
    tiny_mamba2(tmp_path)
    stack, weights = stack_and_weights(tmp_path)
    assert stack.pattern == "M" and stack.mlp_expand == 0 and not stack.tie_embeddings
    assert stack.mixers["M"]["class_path"] == "hybrids.mixers.Mamba2"
    assert stack.mixers["M"]["init_args"] == {"d_state": 8, "d_conv": 4, "expand": 2, "headdim": 16, "ngroups": 2,
                                              "conv_bias": True, "bias": False, "norm_eps": 1e-5}
    assert "head.weight" in weights and weights["head.weight"] is not weights["embedding.weight"]


@pytest.mark.parametrize("change, message", [
    ({"time_step_limit": [0.0, 0.1]}, "time_step_limit"),
    ({"num_heads": 2}, "num_heads: 2 heads of head_dim 16"),
])
def test_refusals_name_the_part(tmp_path, change, message):
    tiny_mamba2(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(ConversionError, match=message):
        stack_and_weights(tmp_path)
    assert config["time_step_limit"][1] == {"__float__": "Infinity"}, "how transformers 5 writes inf (read back as a float)"
