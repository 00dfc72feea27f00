"""Hugging Face's Jamba (Mamba with normed dt, B, C + attention without positions + MoE MLPs) in
the zoo: logits and greedy decoding equal to transformers' on tiny random models (hf_parity)."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from hybrids.hf import ConversionError, stack_and_weights
from hf_parity import assert_parity, save_perturbed


def tiny_jamba(tmp_path, **overrides):
    torch.manual_seed(0)
    config = transformers.JambaConfig(**{
        "vocab_size": 53, "hidden_size": 32, "num_hidden_layers": 4, "intermediate_size": 48,
        "num_attention_heads": 4, "num_key_value_heads": 2, "num_experts": 4, "num_experts_per_tok": 2,
        "expert_layer_period": 2, "expert_layer_offset": 1, "attn_layer_period": 4, "attn_layer_offset": 2,
        "mamba_d_state": 8, "mamba_d_conv": 4, "mamba_expand": 2, "mamba_dt_rank": 4, **overrides})
    return save_perturbed(transformers.JambaForCausalLM(config), tmp_path)


@pytest.mark.parametrize("overrides", [
    {},
    {"num_experts_per_tok": 1, "attn_layer_period": 2, "attn_layer_offset": 0, "tie_word_embeddings": True,
     "num_key_value_heads": 1, "mamba_conv_bias": False, "mamba_proj_bias": True},
    {"num_experts": 1},  # no experts: dense MLPs everywhere
])
def test_logits_and_greedy_continuation_match_transformers(tmp_path, overrides):
    assert_parity(tiny_jamba(tmp_path, **overrides), tmp_path, vocab_size=53)


def test_the_stack(tmp_path):
    tiny_jamba(tmp_path)
    stack, _ = stack_and_weights(tmp_path)
    assert stack.pattern == "MMAM" and stack.mixers["A"]["init_args"]["rotary"] is False
    assert stack.moe == {"experts": 4, "top_k": 2, "period": 2, "offset": 1, "aux_loss": 0.001, "normalize": False}
    assert stack.mixers["M"]["init_args"]["ssm_input_norm_weights"] is True


def test_refusals_name_the_part(tmp_path):
    tiny_jamba(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "attn_layer_offset": 4}))
    with pytest.raises(ConversionError, match="attn_layer_offset: 4"):
        stack_and_weights(tmp_path)
