"""H3, Hyena and BaseConv against their definitions, written out with loops and sums (float64).

The shared contract (prefill, step, chunks, causality, state sizes) is tested for every mixer in
test_mixer_interface.py; here each mixer's parallel path is compared, outputs and gradients, with
its formula computed directly: the shift SSM as a sum over taps, the diagonal SSM as its
recurrence, the long convolutions as O(L^2) sums, the implicit filter from its definition.
"""

from __future__ import annotations

import math

import pytest
import torch

from hybrids.mixers import H3, BaseConv, Hyena
from hybrids.parts.implicit_filter import ImplicitFilter
from hybrids.parts.long_conv import ExplicitFilter

@pytest.fixture(autouse=True)
def float64_default():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def causal_sum(u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """y[b, c, t] = sum_{s <= t} h[c, t - s] u[b, c, s], by loops over t and s."""
    y = torch.zeros_like(u)
    for t in range(u.shape[-1]):
        for s in range(t + 1):
            y[..., t] = y[..., t] + h[:, t - s] * u[..., s]
    return y


def filter_by_definition(f: ImplicitFilter, length: int) -> torch.Tensor:
    """The implicit filter's taps from its docstring's formula, one position at a time."""
    bands = (f.emb_dim - 1) // 2
    freqs = [1e-4 + (bands - 1 - 1e-4) * b / max(bands - 1, 1) for b in range(bands)]
    rows = []
    for n in range(length):
        t = n / (f.l_max - 1)
        w = 2 * math.pi * n / f.l_max
        z = torch.tensor([t] + [math.cos(fb * w) for fb in freqs] + [-math.sin(fb * w) for fb in freqs])
        hidden = z
        for layer in f.ffn:
            hidden = layer(hidden)
        window = torch.exp(-f.decay * t) + f.shift if f.modulate else torch.ones(f.channels)
        rows.append(hidden * window)
    return torch.stack(rows, dim=1)  # (channels, length)


def perturbed(module: torch.nn.Module) -> torch.nn.Module:
    """Every parameter moved off its initialisation (zero biases would hide terms)."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return module


def compare(mixer: torch.nn.Module, reference, x: torch.Tensor) -> None:
    """Outputs equal, and gradients to the input and every parameter."""
    x1 = x.clone().requires_grad_(True)
    y = mixer(x1)
    weights = torch.randn_like(y)
    (y * weights).sum().backward()
    got = [x1.grad] + [p.grad.clone() for p in mixer.parameters()]
    mixer.zero_grad()
    x2 = x.clone().requires_grad_(True)
    y_ref = reference(x2)
    (y_ref * weights).sum().backward()
    want = [x2.grad] + [p.grad for p in mixer.parameters()]
    torch.testing.assert_close(y, y_ref, rtol=1e-9, atol=1e-10)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-8, atol=1e-9)


def test_implicit_filter_is_its_formula_and_longer_filters_extend_shorter_ones():
    torch.manual_seed(0)
    f = perturbed(ImplicitFilter(6, l_max=10, emb_dim=5, width=8, depth=2)).double()
    h = f(14)  # beyond l_max: t > 1, still defined
    torch.testing.assert_close(h, filter_by_definition(f, 14), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(f(5), h[:, :5], rtol=0, atol=0)
    # The window: channel 0 decays slowest (to 1e-2 at t = 1.5), the last fastest (at t = 0.3).
    torch.testing.assert_close(f.decay[[0, -1]], torch.tensor([math.log(100) / 1.5, math.log(100) / 0.3]))
    unmodulated = ImplicitFilter(6, l_max=10, modulate=False)
    assert torch.equal(unmodulated.decay, f.decay)


@pytest.mark.parametrize("head_dim, discretization", [(1, "bilinear"), (2, "zoh")])
def test_h3_is_shift_ssm_then_gated_diagonal_ssm(head_dim, discretization):
    torch.manual_seed(1)
    d, N, L = 4, 6, 9
    mixer = perturbed(H3(d, d_state=N, head_dim=head_dim, discretization=discretization)).double()
    H = d // head_dim

    def reference(x):
        q, k, v = mixer.q_proj(x), mixer.k_proj(x), mixer.v_proj(x)  # (B, L, d)
        taps = mixer.shift.weight[:, 0, :]  # (d, N): taps[:, -1] multiplies the current k
        shifted = torch.zeros_like(k)
        for t in range(L):
            for j in range(N):  # j tokens back
                if t - j >= 0:
                    shifted[:, t] = shifted[:, t] + taps[:, N - 1 - j] * k[:, t - j]
        Lambda, B, C, dt = mixer._system()
        if discretization == "bilinear":
            A_bar = (1 + dt[:, None] * Lambda / 2) / (1 - dt[:, None] * Lambda / 2)
            B_bar = dt[:, None] * B / (1 - dt[:, None] * Lambda / 2)
        else:
            A_bar = torch.exp(dt[:, None] * Lambda)
            B_bar = (A_bar - 1) / Lambda * B
        out = torch.zeros_like(q)
        for h in range(H):
            for i in range(head_dim):
                for j in range(head_dim):
                    state = torch.zeros(x.shape[0], N // 2, dtype=torch.complex128)
                    for t in range(L):
                        u = shifted[:, t, h * head_dim + i] * v[:, t, h * head_dim + j]  # (B,)
                        state = A_bar[h] * state + B_bar[h] * u[:, None]
                        s = 2 * (C[h] * state).sum(-1).real + mixer.D[h] * u
                        out[:, t, h * head_dim + j] = out[:, t, h * head_dim + j] + q[:, t, h * head_dim + i] * s
        return mixer.out_proj(out)

    compare(mixer, reference, torch.randn(2, L, d))


@pytest.mark.parametrize("order", [2, 3])
def test_hyena_is_gates_around_long_convolutions(order):
    torch.manual_seed(2)
    d, L = 3, 11
    mixer = perturbed(Hyena(d, l_max=8, order=order, filter_order=6, short_filter=3)).double()

    def reference(x):
        z = mixer.in_proj(x).transpose(1, 2)  # (B, (order + 1) d, L)
        taps = mixer.short_conv.weight[:, 0, :]  # (channels, 3), last tap: the current input
        short = mixer.short_conv.bias[None, :, None].expand_as(z).clone()
        for t in range(L):
            for j in range(3):  # j tokens back
                if t - j >= 0:
                    short[..., t] = short[..., t] + taps[:, 2 - j] * z[..., t - j]
        streams = short.split(d, dim=1)
        gates, v = streams[:-1], streams[-1]
        h = filter_by_definition(mixer.filter, L).view(order - 1, d, L)
        for i in range(1, order):
            u = v * gates[i]
            v = causal_sum(u, h[i - 1]) + mixer.D[i - 1][:, None] * u
        return mixer.out_proj((v * gates[0]).transpose(1, 2))

    compare(mixer, reference, torch.randn(2, L, d))


@pytest.mark.parametrize("filter", ["implicit", "explicit"])
def test_base_conv_is_a_projection_gating_a_long_convolution(filter):
    torch.manual_seed(3)
    d, L = 5, 10
    mixer = perturbed(BaseConv(d, l_max=12, filter=filter, filter_order=8)).double()

    def reference(x):
        h = filter_by_definition(mixer.filter, L) if filter == "implicit" else mixer.filter.weight[:, :L]
        conv = causal_sum(x.transpose(1, 2), h).transpose(1, 2)
        return mixer.proj(x) * (conv + mixer.conv_bias)

    compare(mixer, reference, torch.randn(2, L, d))


def test_an_explicit_filter_refuses_sequences_longer_than_its_taps():
    mixer = BaseConv(4, l_max=8, filter="explicit")
    mixer(torch.randn(1, 8, 4))
    with pytest.raises(ValueError, match=r"^x: 9 tokens need a kernel of 9 taps; this explicit filter has l_max=8"):
        mixer(torch.randn(1, 9, 4))
    state = mixer.init_state(1)
    for _ in range(8):
        _, state = mixer.step(torch.randn(1, 4), state)
    with pytest.raises(ValueError, match="l_max=8"):
        mixer.step(torch.randn(1, 4), state)
    with pytest.raises(ValueError, match=r"^l_max: must be a positive integer"):
        ExplicitFilter(4, 0)


@pytest.mark.parametrize("make, key", [
    (lambda: Hyena(8, l_max=1), "l_max"),
    (lambda: Hyena(8, l_max=16, order=1), "order"),
    (lambda: Hyena(8, l_max=16, emb_dim=4), "emb_dim"),
    (lambda: Hyena(8, l_max=16, filter_depth=-1), "filter_depth"),
    (lambda: Hyena(8, l_max=16, target=1.5), "target"),
    (lambda: BaseConv(8, l_max=16, filter="fft"), "filter"),
    # Filter networks larger than any memory, refused before a layer is built (depth 10^12 looped).
    (lambda: Hyena(8, l_max=16, filter_depth=10**12), "filter_depth"),
    (lambda: Hyena(8, l_max=16, order=10**12), "order"),
    (lambda: BaseConv(8, l_max=16, filter_order=10**9), "filter_order"),
    (lambda: Hyena(8, l_max=16, frequency=float("nan")), "frequency"),
    (lambda: H3(8, d_state=5), "d_state"),
    (lambda: H3(8, head_dim=3), "head_dim"),
    (lambda: H3(8, init="hippo"), "init"),
])
def test_bad_arguments_are_keyed(make, key):
    with pytest.raises(ValueError, match=rf"^{key}: "):
        make()


def test_decoding_keeps_the_whole_history_of_a_long_filter_and_a_fixed_state_for_h3():
    torch.manual_seed(4)
    x = torch.randn(1, 20, 8)
    for mixer, grows in ((Hyena(8, l_max=16), True), (BaseConv(8, l_max=16), True), (H3(8, d_state=4), False)):
        sizes = []
        state = mixer.init_state(1)
        for t in range(20):
            _, state = mixer.step(x[:, t], state)
            sizes.append(sum(v.numel() * (2 if v.is_complex() else 1) for v in state.values()))
        assert (sizes[-1] > sizes[0]) == grows, type(mixer).__name__
        assert sizes[-1] == mixer.state_size(20)


@pytest.mark.parametrize("make", [lambda: Hyena(6, l_max=8, filter_order=8), lambda: BaseConv(6, l_max=8, filter_order=8)])
def test_decoding_after_a_weight_update_reads_the_new_filter(make):
    # The decode taps are cached; an update through .data leaves no version trace, so each decoding
    # session (init_state, prefill) must read the weights afresh.
    torch.manual_seed(5)
    mixer = make()
    x = torch.randn(1, 5, 6)

    def run():
        state = mixer.init_state(1)
        outs = []
        for t in range(5):
            y, state = mixer.step(x[:, t], state)
            outs.append(y)
        return torch.stack(outs, 1)

    before = run()
    with torch.no_grad():
        for p in mixer.filter.parameters():
            p.data.add_(0.5)
    after = run()
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, mixer(x), rtol=1e-4, atol=1e-5)
    _, state = mixer.prefill(x[:, :3])
    with torch.no_grad():
        for p in mixer.filter.parameters():
            p.data.mul_(0.5)
    _, state = mixer.prefill(x[:, 3:4], state)  # a new prefill reads the halved weights
    y, _ = mixer.step(x[:, 4], state)
    torch.testing.assert_close(y, mixer(x)[:, 4], rtol=1e-4, atol=1e-5)


def test_the_implicit_filter_keeps_positions_apart_in_bfloat16():
    torch.manual_seed(6)
    f = ImplicitFilter(4, l_max=1024).float()
    h32 = f(1024)
    h16 = f.to(torch.bfloat16)(1024)
    assert h16.dtype == torch.float32  # computed in float32 from the bfloat16 weights
    assert torch.allclose(h16, h32, atol=0.05, rtol=0.05)
    assert (h16[:, 1:] != h16[:, :-1]).any(dim=0).all(), "every position gets a tap of its own"
