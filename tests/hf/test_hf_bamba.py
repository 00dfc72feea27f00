"""Hugging Face's Bamba (Mamba-2 + attention + SwiGLU MLPs) in the zoo: logits and greedy
decoding equal to transformers' on tiny random models (hf_parity); refusals by name."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from hybrids.hf import ConversionError, stack_and_weights
from hf_parity import assert_parity, save_perturbed


def tiny_bamba(tmp_path, **overrides):
    torch.manual_seed(0)
    config = transformers.BambaConfig(**{
        "vocab_size": 57, "hidden_size": 32, "num_hidden_layers": 3, "intermediate_size": 48,
        "num_attention_heads": 4, "num_key_value_heads": 2, "attn_layer_indices": [1], "mamba_n_heads": 4,
        "mamba_d_head": 16, "mamba_n_groups": 2, "mamba_d_state": 8, "mamba_chunk_size": 16, **overrides})
    return save_perturbed(transformers.BambaForCausalLM(config), tmp_path)


@pytest.mark.parametrize("overrides", [
    {},
    {"attn_layer_indices": [0, 2], "tie_word_embeddings": True, "attention_bias": True, "mlp_bias": True,
     "mamba_proj_bias": True, "mamba_conv_bias": False, "num_key_value_heads": 1, "mamba_n_groups": 1},
])
def test_logits_and_greedy_continuation_match_transformers(tmp_path, overrides):
    assert_parity(tiny_bamba(tmp_path, **overrides), tmp_path, vocab_size=57)


def test_the_stack(tmp_path):
    tiny_bamba(tmp_path)
    stack, _ = stack_and_weights(tmp_path)
    assert stack.pattern == "MAM" and stack.mlp == "swiglu" and stack.mlp_expand == 1.5
    assert stack.mixers["A"]["init_args"]["rotary_dim"] == 4 and stack.mixers["M"]["init_args"]["ngroups"] == 2


@pytest.mark.parametrize("change, message", [
    ({"attn_layer_indices": [5]}, "attn_layer_indices: \\[5\\]"),
    ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 2.0}}, "rope_type: 'yarn'"),
    ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "rope_scaling: 'linear'"),
])
def test_refusals_name_the_part(tmp_path, change, message):
    tiny_bamba(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(ConversionError, match=message):
        stack_and_weights(tmp_path)
