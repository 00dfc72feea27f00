"""Reversible residual stacks (hybrids/model/reversible.py): the memory-saving backward pass gives the
gradients of ordinary autograd over the same couplings, rebuilds each block's input from its
output, keeps activation memory flat in depth, and the recurrent form (prefill, step) computes
the same function."""

from __future__ import annotations

import pytest
import torch

from hybrids import HybridLM, LanguageModel
from hybrids.errors import ConfigError
from hybrids.model.reversible import ReversibleBlock, _RandomState

MIXERS = {
    "A": {"class_path": "hybrids.mixers.Attention", "init_args": {"heads": 2}},
    "M": {"class_path": "hybrids.mixers.Mamba", "init_args": {"d_state": 4}},
    "S": {"class_path": "hybrids.mixers.S4D", "init_args": {"d_state": 8}},
    "R": {"class_path": "hybrids.mixers.RGLRU", "init_args": {}},
    "P": {"class_path": "hybrids.mixers.LinearAttention", "init_args": {"heads": 2, "feature_map": "favor", "num_features": 8, "seed": 0}},
    "D": {"class_path": "hybrids.mixers.S4", "init_args": {"d_state": 8}},
}


def _model(pattern: str, mlp_expand: float, dropout: float = 0.0, n_layers: int = 4, **kwargs) -> HybridLM:
    torch.manual_seed(0)
    return HybridLM(vocab_size=11, d_model=16, n_layers=n_layers, pattern=pattern, mixers=MIXERS,
                    mlp_expand=mlp_expand, dropout=dropout, reversible=True, **kwargs)


def _plain_features(model: HybridLM, tokens: torch.Tensor) -> torch.Tensor:
    """The same couplings under ordinary autograd (every activation kept)."""
    x = model._enter(model.embedding(tokens))
    for block in model.blocks:
        x = block(x)
    return model._leave(x)


def _gradients(model: HybridLM, tokens: torch.Tensor, weight: torch.Tensor, features) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # the same dropout masks in both passes
    (features(tokens) * weight).sum().backward()
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("pattern, mlp_expand, dropout", [
    ("AM", 2, 0.0),
    ("AM", 0, 0.0),  # no MLP: the streams swap at every block
    ("SRPA", 2, 0.2),  # dropout: the backward pass must redraw the forward pass's masks
    ("MA", 0, 0.2),
    ("DA", 2, 0.0),  # S4 (DPLR): its inference cache must stay out of a training forward
])
def test_gradients_equal_ordinary_autograd_in_float64(pattern, mlp_expand, dropout):
    model = _model(pattern, mlp_expand, dropout).double().train()
    tokens = torch.randint(0, 11, (2, 12), generator=torch.Generator().manual_seed(2))
    weight = torch.randn(2, 12, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    reversible = _gradients(model, tokens, weight, model.features)
    ordinary = _gradients(model, tokens, weight, lambda t: _plain_features(model, t))
    assert len(reversible) == len(ordinary) and all(g.abs().sum() > 0 for g in ordinary[:3])
    for name_param, a, b in zip(model.named_parameters(), reversible, ordinary):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6, msg=lambda m, n=name_param[0]: f"{n}: {m}")
    if dropout:  # the masks matter: another seed gives other gradients
        torch.manual_seed(5)
        model.zero_grad(set_to_none=True)
        (model.features(tokens) * weight).sum().backward()
        assert not torch.allclose(next(model.parameters()).grad, reversible[0])


@pytest.mark.parametrize("mlp_expand", [2, 0])
def test_a_block_rebuilds_its_input_from_its_output(mlp_expand):
    model = _model("AM", mlp_expand).double()
    block = model.blocks[1]
    assert isinstance(block, ReversibleBlock)
    x = torch.randn(2, 7, 32, dtype=torch.float64)
    random_f = _RandomState(x.device)
    with torch.no_grad():
        y = block(x)
    rebuilt, _ = block.backward_pass(y, torch.ones_like(y), random_f, random_f)
    torch.testing.assert_close(rebuilt, x, atol=1e-12, rtol=0)


def test_a_training_forward_without_gradients_builds_no_inference_cache():
    """The reversible forward runs under no_grad in training mode; S4's cache of the precomputed
    system is for inference (eval mode) only, where the parameters do not change between calls."""
    model = _model("D", 2, n_layers=2).train()
    model(torch.randint(0, 11, (2, 12))).sum().backward()
    assert all(getattr(b.mixer, "_precomputed_cache", None) is None for b in model.blocks)
    with torch.no_grad():
        model.eval()(torch.randint(0, 11, (2, 12)))
    assert all(getattr(b.mixer, "_precomputed_cache", None) is not None for b in model.blocks)


def test_backward_leaves_the_callers_random_stream_alone():
    model = _model("AM", 2, dropout=0.3).train()
    tokens = torch.randint(0, 11, (2, 9))

    def draw_after(features):
        torch.manual_seed(7)
        features(tokens).sum().backward()
        return torch.rand(4)

    torch.testing.assert_close(draw_after(model.features), draw_after(lambda t: _plain_features(model, t)))


def _saved_bytes(model: HybridLM, tokens: torch.Tensor) -> int:
    """Bytes of the tensors autograd keeps for the backward pass (what activation memory is)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(tokens).logsumexp(-1).sum()
    loss.backward()
    return sum(seen.values())


def test_activation_memory_stays_flat_in_depth():
    tokens = torch.randint(0, 11, (4, 64))
    saved = {}
    for reversible in (False, True):
        for depth in (2, 8):
            torch.manual_seed(0)
            model = HybridLM(vocab_size=11, d_model=32, n_layers=depth, pattern="AM", mixers=MIXERS, reversible=reversible)
            saved[reversible, depth] = _saved_bytes(model, tokens)
    assert saved[False, 8] > 3 * saved[False, 2], saved  # an ordinary stack keeps every block's activations
    assert saved[True, 8] == saved[True, 2], saved  # a reversible one keeps its output, head and embedding only
    assert saved[True, 8] < saved[False, 8] / 4, saved


@pytest.mark.parametrize("pattern, mlp_expand", [("AM", 2), ("SR", 0)])
def test_prefill_and_step_compute_the_forward_function(pattern, mlp_expand):
    model = _model(pattern, mlp_expand).double().eval()
    tokens = torch.randint(0, 11, (2, 10))
    with torch.no_grad():
        logits = model(tokens)
        prefilled, states = model.prefill(tokens[:, :6])
        torch.testing.assert_close(prefilled, logits[:, :6], atol=1e-10, rtol=0)
        stepped = []
        for t in range(6, 10):
            out, states = model.step(tokens[:, t], states)
            stepped.append(out)
    torch.testing.assert_close(torch.stack(stepped, 1), logits[:, 6:], atol=1e-10, rtol=0)


def test_same_parameters_as_the_ordinary_stack_and_a_checked_flag():
    ordinary = HybridLM(vocab_size=11, d_model=16, n_layers=3, pattern="AM", mixers=MIXERS)
    reversible = _model("AM", 2.0, n_layers=3)
    assert [n for n, _ in ordinary.named_parameters()] == [n for n, _ in reversible.named_parameters()]
    reversible.load_state_dict(ordinary.state_dict())  # same names and shapes
    with pytest.raises(ConfigError, match="reversible"):
        HybridLM(vocab_size=11, reversible="yes")


def test_a_reversible_language_model_learns():
    """Through the Lightning module's training step: the loss falls on a fixed batch."""
    torch.manual_seed(0)
    module = LanguageModel(stack=dict(vocab_size=11, d_model=32, n_layers=4, pattern="AM", mixers=MIXERS, mlp_expand=2, reversible=True), optim=dict(lr=3e-3, warmup_steps=1))
    optimiser = torch.optim.AdamW(module.parameters(), lr=3e-3)
    tokens = torch.randint(0, 11, (8, 16))
    losses = []
    for _ in range(30):
        logits = module(tokens[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 11), tokens[:, 1:].reshape(-1))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
