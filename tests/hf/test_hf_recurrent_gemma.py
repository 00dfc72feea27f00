"""Hugging Face's RecurrentGemma (Griffin) in the zoo: logits and greedy decoding equal to
transformers' on tiny random models (hf_parity), past the attention window and through both
block types; and what has no counterpart refused by name."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import transformers

from hybrids.hf import ConversionError, load_hf, stack_and_weights
from hf_parity import assert_parity, save_perturbed


def tiny_recurrent_gemma(tmp_path, **overrides):
    torch.manual_seed(0)
    config = transformers.RecurrentGemmaConfig(**{
        "vocab_size": 59, "hidden_size": 32, "num_hidden_layers": 3, "intermediate_size": 48,
        "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 8, "lru_width": 32,
        "attention_window_size": 8, "conv1d_width": 4, **overrides})
    return save_perturbed(transformers.RecurrentGemmaForCausalLM(config), tmp_path, scale=0.5)


@pytest.mark.parametrize("overrides", [
    {},
    {"block_types": ["attention", "recurrent"], "num_hidden_layers": 4, "tie_word_embeddings": False,
     "num_key_value_heads": 2, "logits_soft_cap": 5.0, "lru_width": 16},
])
def test_logits_and_greedy_continuation_match_transformers(tmp_path, overrides):
    # Against transformers in float64: its float32 RG-LRU computes sqrt(1 - a^2) as
    # sqrt(1 - exp(2 log a)), which loses most digits as a -> 1 (its float32 logits are 2.7e-4
    # relative from its own float64 ones on the first model here; the zoo's float32, which
    # computes sqrt(-expm1(2 log a)), 1.3e-6).
    theirs = tiny_recurrent_gemma(tmp_path, **overrides).double()
    assert_parity(theirs, tmp_path, vocab_size=59)


def test_transformers_float32_is_the_less_exact_side(tmp_path):
    theirs = tiny_recurrent_gemma(tmp_path)
    exact = copy.deepcopy(theirs).double()
    ours = load_hf(tmp_path)
    tokens = torch.randint(0, 59, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        truth = exact(tokens).logits
        scale = float(truth.abs().max())
        their_error = float((theirs(tokens).logits.double() - truth).abs().max()) / scale
        our_error = float((ours(tokens).double() - truth).abs().max()) / scale
    assert our_error < 1e-5 < their_error, (our_error, their_error)


def test_the_stack(tmp_path):
    tiny_recurrent_gemma(tmp_path)
    stack, weights = stack_and_weights(tmp_path)
    assert stack.pattern == "RRA" and stack.mlp == "geglu_tanh" and stack.mlp_bias and stack.mlp_expand == 0.75
    assert stack.embed_scale == 5.65625 and stack.logit_soft_cap == 30.0 and stack.norm_eps == 1e-6
    attention = stack.mixers["A"]["init_args"]
    assert attention["window"] == 8 and attention["rotary_dim"] == 4 and attention["kv_heads"] == 1
    assert stack.mixers["R"]["init_args"]["unscaled_first_input"] is True


@pytest.mark.parametrize("change, message", [
    ({"block_types": ["recurrent", "mlp"]}, "block_types"),
    ({"hidden_activation": "relu"}, "hidden_activation"),
])
def test_refusals_name_the_part(tmp_path, change, message):
    tiny_recurrent_gemma(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(ConversionError, match=message):
        stack_and_weights(tmp_path)


def test_bfloat16_norm_weights_keep_their_digits(tmp_path):
    # transformers computes 1 + weight in float32: the zoo's folded weight must too, not in bfloat16.
    theirs = tiny_recurrent_gemma(tmp_path / "f32")
    theirs.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    _, weights = stack_and_weights(tmp_path / "bf16")
    stored = theirs.model.final_norm.weight.detach()
    torch.testing.assert_close(weights["norm.weight"], 1 + stored.float(), rtol=0, atol=0)
    assert weights["norm.weight"].dtype == torch.float32


def test_defaults_of_keys_a_config_leaves_out_are_transformers(tmp_path):
    tiny_recurrent_gemma(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    for key in ("logits_soft_cap", "lru_width"):
        config.pop(key, None)
    (tmp_path / "config.json").write_text(json.dumps({**config}))
    stack, _ = stack_and_weights(tmp_path)
    assert stack.logit_soft_cap == 30.0 and stack.mixers["R"]["init_args"]["d_rnn"] == 32
    del config["attention_window_size"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConversionError, match="attention_window_size: missing from config.json"):
        stack_and_weights(tmp_path)
