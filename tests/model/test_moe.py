"""The mixture-of-experts channel mixer (hybrids.model.moe): routing against a per-token loop,
the dense limit, the load-balancing loss, and a stack that trains with it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hybrids.errors import ConfigError
from hybrids.model import HybridLM, StackConfig
from hybrids.model.moe import MoE, MoEConfig


def per_token(moe: MoE, x: torch.Tensor) -> torch.Tensor:
    """The definition, one token at a time."""
    out = []
    for token in x.reshape(-1, x.shape[-1]):
        probs = F.softmax(moe.router(token).float(), -1)
        weights, chosen = torch.topk(probs, moe.top_k)
        if moe.normalize:
            weights = weights / weights.sum()
        y = torch.zeros_like(token)
        for w, e in zip(weights, chosen):
            gate, up = (moe.up[e] @ token).chunk(2)
            y = y + w.to(token.dtype) * (moe.down[e] @ (F.silu(gate) * up))
        out.append(y)
    return torch.stack(out).reshape(x.shape)


@pytest.mark.parametrize("top_k, normalize", [(1, False), (2, False), (2, True)])
def test_routing_equals_the_per_token_definition(top_k, normalize):
    torch.manual_seed(0)
    moe = MoE(8, 6, experts=4, top_k=top_k, normalize=normalize).double()
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    torch.testing.assert_close(moe(x), per_token(moe, x))


def test_all_experts_normalised_is_the_probability_weighted_mixture():
    torch.manual_seed(1)
    moe = MoE(8, 6, experts=3, top_k=3, normalize=True).double()
    x = torch.randn(4, 8, dtype=torch.float64)
    probs = F.softmax(moe.router(x), -1)
    dense = sum(probs[:, e, None] * (F.silu((x @ moe.up[e].T).chunk(2, -1)[0]) * (x @ moe.up[e].T).chunk(2, -1)[1]) @ moe.down[e].T
                for e in range(3))
    torch.testing.assert_close(moe(x), dense)


def test_load_balancing_loss():
    moe = MoE(4, 3, experts=4, top_k=2).double()
    with torch.no_grad():
        moe.router.weight.zero_()  # uniform probabilities: P_e = 1/4; top-k ties pick experts 0 and 1
    moe(torch.randn(10, 4, dtype=torch.float64))
    # f = (1, 1, 0, 0) slots per token, P = 1/4 each: E * sum f P = 4 * 2 / 4 = 2 = top_k.
    torch.testing.assert_close(moe.aux_loss, torch.tensor(2.0, dtype=torch.float64))
    torch.manual_seed(2)
    moe = MoE(4, 3, experts=4, top_k=2).double()
    x = torch.randn(50, 4, dtype=torch.float64, requires_grad=True)
    moe(x)
    probs = F.softmax(moe.router(x), -1)
    share = torch.bincount(torch.topk(probs, 2).indices.flatten(), minlength=4).double() / 50
    torch.testing.assert_close(moe.aux_loss, 4 * (share * probs.mean(0)).sum())
    moe.aux_loss.backward()
    assert moe.router.weight.grad.abs().sum() > 0, "the loss trains the router"


def stack(**moe):
    mixers = {"A": {"class_path": "hybrids.mixers.Attention", "init_args": {"heads": 2}}}
    return HybridLM(StackConfig(vocab_size=19, d_model=8, n_layers=4, pattern="A", mixers=mixers, mlp_expand=1.0,
                                moe={"experts": 4, "top_k": 2, "period": 2, "offset": 1, **moe})).double()


def test_a_stack_puts_experts_where_period_and_offset_say_and_decodes_the_same():
    torch.manual_seed(3)
    model = stack()
    assert [type(b.mlp).__name__ for b in model.blocks] == ["MLP", "MoE", "MLP", "MoE"]
    tokens = torch.randint(0, 19, (2, 7))
    with torch.no_grad():
        logits = model(tokens)
        aux = model.moe_aux_loss()
        assert aux is not None and 1.0 <= float(aux) <= 8.0
        _, states = model.prefill(tokens[:, :6])
        torch.testing.assert_close(model.step(tokens[:, 6], states)[0], logits[:, 6])


@pytest.mark.parametrize("moe, key", [({"experts": 2, "top_k": 3}, "moe.top_k"), ({"offset": 9}, "moe"),
                                       ({"experts": 0}, "moe.experts"), ({"capacity": 2}, "moe.capacity")])
def test_refusals_name_the_field(moe, key):
    with pytest.raises(ConfigError) as err:
        StackConfig(vocab_size=5, n_layers=4, moe=moe)
    assert err.value.key == key
    with pytest.raises(ConfigError, match="mlp_expand"):
        StackConfig(vocab_size=5, mlp_expand=0, moe={})
    with pytest.raises(ConfigError, match="mlp_bias"):
        StackConfig(vocab_size=5, mlp_bias=True, moe={})
    with pytest.raises(ConfigError, match="reversible"):
        StackConfig(vocab_size=5, reversible=True, moe={})
    assert MoEConfig().applies_to(0) and not MoEConfig(period=2, offset=1).applies_to(2)


def test_the_training_loss_adds_the_weighted_load_balancing_loss():
    import warnings

    from hybrids.train.module import LanguageModel

    torch.manual_seed(4)
    mixers = {"A": {"class_path": "hybrids.mixers.Attention", "init_args": {"heads": 2}}}
    lm = LanguageModel(stack=dict(vocab_size=19, d_model=8, n_layers=2, pattern="A", mixers=mixers, mlp_expand=1.0,
                                  moe={"experts": 4, "top_k": 2, "aux_loss": 0.5})).double()
    batch = (torch.randint(0, 19, (2, 6)), torch.randint(0, 19, (2, 6)))
    task = lm._shared_step(batch, "train")
    aux = lm.model.moe_aux_loss()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log outside a Trainer
        total = lm.training_step(batch, 0)
    torch.testing.assert_close(total, task + 0.5 * aux)
