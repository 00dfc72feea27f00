"""The stack options that checkpoints from elsewhere need (docs/model.md): the gated GELU MLPs and
their biases, the RMSNorms' epsilon, the embedding scale and logit soft-capping, on every path
to logits (forward, prefill, step, training's labelled positions)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hybrids.errors import ConfigError
from hybrids.model import HybridLM, StackConfig
from hybrids.model.blocks import MLP

MIXERS = {"R": {"class_path": "hybrids.mixers.RGLRU", "init_args": {"d_rnn": 16}},
          "A": {"class_path": "hybrids.mixers.Attention", "init_args": {"heads": 2}}}


def stack(**options):
    torch.manual_seed(0)
    return HybridLM(StackConfig(vocab_size=23, d_model=16, n_layers=2, pattern="RA", mixers=MIXERS, **options)).double()


@pytest.mark.parametrize("kind, act", [("geglu", F.gelu), ("geglu_tanh", lambda h: F.gelu(h, approximate="tanh")),
                                       ("swiglu", F.silu)])
def test_gated_mlps_are_act_of_the_gate_times_the_up_half(kind, act):
    mlp = MLP(8, 5, kind, bias=True).double()
    x = torch.randn(3, 8, dtype=torch.float64)
    gate, up = (x @ mlp.up.weight.T + mlp.up.bias).chunk(2, dim=-1)
    torch.testing.assert_close(mlp(x), (act(gate) * up) @ mlp.down.weight.T + mlp.down.bias)
    assert MLP(8, 5, kind).up.bias is None


def test_soft_cap_bounds_every_path_to_logits():
    model = stack(logit_soft_cap=0.5)
    plain = stack()
    tokens = torch.randint(0, 23, (2, 9))
    with torch.no_grad():
        logits = model(tokens)
        torch.testing.assert_close(logits, 0.5 * torch.tanh(plain(tokens) / 0.5))
        assert logits.abs().max() < 0.5
        prefilled, states = model.prefill(tokens[:, :5])
        torch.testing.assert_close(prefilled, logits[:, :5])
        stepped, _ = model.step(tokens[:, 5], states)
        torch.testing.assert_close(stepped, logits[:, 5])
        torch.testing.assert_close(model.logits(model.features(tokens)), logits)


def test_embed_scale_scales_the_input_only():
    model = stack(embed_scale=3.0)
    untied = stack(tie_embeddings=False)
    untied.load_state_dict({**model.state_dict(), "embedding.weight": 3.0 * model.embedding.weight,
                            "head.weight": model.embedding.weight})
    tokens = torch.randint(0, 23, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), untied(tokens))
        _, states = model.prefill(tokens[:, :4])
        torch.testing.assert_close(model.step(tokens[:, 4], states)[0], model(tokens[:, :5])[:, -1])


def test_norm_eps_reaches_every_norm():
    model = stack(norm_eps=1e-3, mlp_expand=1.0)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.RMSNorm)]
    assert len(norms) == 5 and all(n.eps == 1e-3 for n in norms)


@pytest.mark.parametrize("field, value", [("embed_scale", 0.0), ("logit_soft_cap", float("inf")),
                                          ("norm_eps", 1.5), ("mlp_bias", 1), ("mlp", "reglu")])
def test_bad_values_are_refused_by_name(field, value):
    with pytest.raises(ConfigError, match=field):
        StackConfig(vocab_size=5, **{field: value})
