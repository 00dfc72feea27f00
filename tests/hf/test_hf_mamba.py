"""Hugging Face's Mamba in the zoo: a tiny random MambaForCausalLM saved with save_pretrained,
loaded by hybrids.hf, gives the same logits (float32, 1e-5 relative) and the same greedy
continuation through the zoo's prefill + step path. transformers is the outside oracle for the
zoo's Mamba mixer here."""

from __future__ import annotations

import json

import pytest
import torch
import transformers  # the test extra installs it (and the [hf] extra)

from hybrids.hf import ConversionError, FolderError, stack_and_weights
from hf_parity import assert_parity, save_perturbed


def tiny_mamba(tmp_path, seed=0, **overrides):
    torch.manual_seed(seed)
    config = transformers.MambaConfig(**{
        "vocab_size": 61, "hidden_size": 24, "state_size": 5, "num_hidden_layers": 2, "expand": 2,
        "conv_kernel": 4, "time_step_rank": 3, **overrides})
    return save_perturbed(transformers.MambaForCausalLM(config), tmp_path, seed)


@pytest.mark.parametrize("overrides", [{}, {"tie_word_embeddings": False, "use_bias": True},
                                       {"use_conv_bias": False, "conv_kernel": 3, "layer_norm_epsilon": 1e-3}])
def test_logits_and_greedy_continuation_match_transformers(tmp_path, overrides):
    assert_parity(tiny_mamba(tmp_path, **overrides), tmp_path, vocab_size=61)


def test_the_stack_is_the_zoo_s_mamba_without_mlp(tmp_path):
    tiny_mamba(tmp_path, layer_norm_epsilon=1e-4)
    stack, weights = stack_and_weights(tmp_path)
    assert stack.pattern == "M" and stack.mlp_expand == 0 and stack.n_layers == 2 and stack.norm_eps == 1e-4
    assert stack.mixers["M"]["init_args"] == {"d_state": 5, "d_conv": 4, "expand": 2, "dt_rank": 3,
                                              "conv_bias": True, "bias": False}
    assert weights["head.weight"] is weights["embedding.weight"]


def test_refusals_name_the_part(tmp_path):
    with pytest.raises(FolderError, match="config.json"):
        stack_and_weights(tmp_path)
    tiny_mamba(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "hidden_act": "gelu"}))
    with pytest.raises(ConversionError, match="hidden_act: 'gelu'"):
        stack_and_weights(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
    with pytest.raises(ConversionError, match="model_type 'llama'"):
        stack_and_weights(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 1}))
    with pytest.raises(ConversionError, match="not converted .*backbone.layers.1"):
        stack_and_weights(tmp_path)


def tiny_falcon_mamba(tmp_path, **overrides):
    torch.manual_seed(0)
    config = transformers.FalconMambaConfig(**{
        "vocab_size": 61, "hidden_size": 24, "state_size": 5, "num_hidden_layers": 2, "expand": 2,
        "conv_kernel": 4, "time_step_rank": 3, **overrides})
    return save_perturbed(transformers.FalconMambaForCausalLM(config), tmp_path)


@pytest.mark.parametrize("overrides", [{}, {"mixer_rms_eps": 1e-3, "tie_word_embeddings": False}])
def test_falcon_mamba_matches_transformers(tmp_path, overrides):
    ours = assert_parity(tiny_falcon_mamba(tmp_path, **overrides), tmp_path, vocab_size=61)
    mixer = ours.blocks[0].mixer
    assert mixer.ssm_input_norm_eps == overrides.get("mixer_rms_eps", 1e-6)
    assert mixer.cpu_block_unavailable(torch.zeros(1, 2, 2 * mixer.d_inner), torch.zeros(1)).startswith("ssm_input_norm_eps")
