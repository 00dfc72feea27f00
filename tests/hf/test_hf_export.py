"""The zoo's stacks exported to the transformers format (hybrids.hf.export): AutoModelForCausalLM
loads them, with logits equal and greedy decoding identical; stacks no architecture expresses
are refused by name; an exported model imports back to the same weights."""

from __future__ import annotations

import pytest
import torch
import transformers

from hybrids.hf import ConversionError, load_hf
from hybrids.hf.export import export_hf
from hybrids.model import HybridLM, StackConfig
from hf_parity import assert_parity

MAMBA = {"class_path": "hybrids.mixers.Mamba", "init_args": {"d_state": 4, "dt_rank": 2}}
RG_LRU = {"class_path": "hybrids.mixers.RGLRU", "init_args": {"d_rnn": 16, "heads": 2}}
MAMBA2 = {"class_path": "hybrids.mixers.Mamba2", "init_args": {"d_state": 8, "headdim": 8, "ngroups": 2, "norm_eps": 1e-5}}


def zoo(mixer, **options):
    torch.manual_seed(0)
    model = HybridLM(StackConfig(vocab_size=41, d_model=16, n_layers=2, pattern="M", mixers={"M": mixer},
                                 mlp_expand=0, **options))
    with torch.no_grad():  # away from the initialisation's special values
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("mixer, options", [
    (MAMBA, {"norm_eps": 1e-5}),
    (MAMBA, {"tie_embeddings": False}),  # norm_eps None: torch's float32 epsilon, written out
    ({**MAMBA, "init_args": {**MAMBA["init_args"], "ssm_input_norm_eps": 1e-3}}, {"norm_eps": 1e-5}),
    (MAMBA2, {"norm_eps": 1e-5}),
])
def test_exported_stacks_load_in_transformers_with_equal_logits(tmp_path, mixer, options):
    ours = zoo(mixer, **options)
    export_hf(ours, tmp_path)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert_parity(theirs, tmp_path, vocab_size=41)  # their model vs the zoo's loaded back from the folder
    back = load_hf(tmp_path)
    for name, tensor in ours.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name


@pytest.mark.parametrize("stack, message", [
    (dict(pattern="MA", mixers={"M": MAMBA, "A": {"class_path": "hybrids.mixers.Attention", "init_args": {"heads": 2}}},
          mlp_expand=0), "SwiGLU MLPs"),
    (dict(pattern="MS", mixers={"M": MAMBA, "S": {"class_path": "hybrids.mixers.S4D", "init_args": {}}}, mlp_expand=0),
     "hybrids.mixers.S4D"),
    (dict(pattern="M", mixers={"M": MAMBA}, mlp_expand=2), "mlp_expand"),
    (dict(pattern="M", mixers={"M": MAMBA}, mlp_expand=0, logit_soft_cap=5.0), "logit_soft_cap"),
    (dict(pattern="M", mixers={"M": MAMBA2}, mlp_expand=0, norm_eps=1e-6), "one epsilon"),
    (dict(pattern="R", mixers={"R": RG_LRU}, mlp="geglu_tanh", mlp_bias=True, logit_soft_cap=30.0, embed_scale=4.0),
     "gate_activation"),
    (dict(pattern="R", mixers={"R": {**RG_LRU, "init_args": {**RG_LRU["init_args"], "gate_activation": "gelu_tanh",
                                                              "unscaled_first_input": True}}},
          mlp="geglu_tanh", mlp_bias=True, logit_soft_cap=30.0, embed_scale=4.0), "delta_floor"),
])
def test_stacks_without_a_counterpart_are_refused_by_name(tmp_path, stack, message):
    model = HybridLM(StackConfig(vocab_size=41, d_model=16, n_layers=2, **stack))
    with pytest.raises(ConversionError, match=message):
        export_hf(model, tmp_path)
    assert not (tmp_path / "config.json").exists()


@pytest.mark.parametrize("family", ["bamba", "jamba", "jamba-dense", "recurrent_gemma"])
def test_hybrids_round_trip_through_the_zoo(tmp_path, family):
    """A tiny transformers hybrid imported into the zoo and exported again: transformers loads
    the export with logits equal and greedy decoding identical."""
    if family == "bamba":
        from test_hf_bamba import tiny_bamba as tiny
    elif family.startswith("jamba"):
        from test_hf_jamba import tiny_jamba

        def tiny(folder):  # Mamba + attention with (jamba) or without (jamba-dense) experts
            return tiny_jamba(folder, **({"num_experts": 1} if family == "jamba-dense" else {}))
    else:
        from test_hf_recurrent_gemma import tiny_recurrent_gemma as tiny
    tiny(tmp_path / "original")
    ours = load_hf(tmp_path / "original")
    export_hf(ours, tmp_path / "exported")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "exported").eval()
    assert type(theirs).__name__ == {"bamba": "BambaForCausalLM", "jamba": "JambaForCausalLM",
                                     "jamba-dense": "JambaForCausalLM",
                                     "recurrent_gemma": "RecurrentGemmaForCausalLM"}[family]
    # RecurrentGemma against transformers in float64 (its float32 RG-LRU is the less exact side).
    assert_parity(theirs.double() if family == "recurrent_gemma" else theirs, tmp_path / "exported", vocab_size=53)


def test_export_refuses_reversible_and_mixed_settings_and_coerces_integral_expand(tmp_path):
    with pytest.raises(ConversionError, match="reversible"):
        export_hf(HybridLM(StackConfig(vocab_size=41, d_model=16, n_layers=2, pattern="M", mixers={"M": MAMBA},
                                       mlp_expand=0, reversible=True)), tmp_path)
    other = {**MAMBA, "init_args": {**MAMBA["init_args"], "d_state": 8}}
    with pytest.raises(ConversionError, match="different settings"):
        export_hf(HybridLM(StackConfig(vocab_size=41, d_model=16, n_layers=2, pattern="MN",
                                       mixers={"M": MAMBA, "N": other}, mlp_expand=0)), tmp_path)
    fractional = {**MAMBA, "init_args": {**MAMBA["init_args"], "expand": 1.5}}
    with pytest.raises(ConversionError, match="expand: 1.5"):
        export_hf(zoo(fractional, norm_eps=1e-5), tmp_path)
    assert not (tmp_path / "config.json").exists()
    floating = {**MAMBA, "init_args": {**MAMBA["init_args"], "expand": 2.0}}  # as YAML's 2.0 arrives
    export_hf(zoo(floating, norm_eps=1e-5), tmp_path)
    assert transformers.AutoModelForCausalLM.from_pretrained(tmp_path).config.expand == 2
