"""FFT convolution against direct summation, the direct sum against its definition written as a
loop, and which of the two the CPU takes."""

import pytest
import torch

from hybrids.kernels.ssm import FFT_CONV, direct_conv, fft_conv
from hybrids.kernels.ssm.fftconv import DIRECT_MAX_LENGTH


def loop_conv(u, k, D=None, bidirectional=False):
    """y[b, h, t] = sum_{s <= t} k[h, t - s] u[b, h, s] (+ sum_{s > t} k1[h, s - t - 1] u[b, h, s]) + D[h] u[b, h, t]."""
    batch, H, L = u.shape
    y = torch.zeros_like(u)
    causal = k[0] if bidirectional else k
    for b in range(batch):
        for h in range(H):
            for t in range(L):
                total = sum(causal[h, t - s] * u[b, h, s] for s in range(t + 1))
                if bidirectional:
                    total = total + sum(k[1][h, s - t - 1] * u[b, h, s] for s in range(t + 1, L))
                y[b, h, t] = total + (D[h] * u[b, h, t] if D is not None else 0)
    return y


@pytest.mark.parametrize("bidirectional", [False, True], ids=["causal", "bidirectional"])
def test_direct_conv_is_its_definition(bidirectional):
    torch.manual_seed(0)
    u = torch.randn(2, 3, 9, dtype=torch.float64)
    k = torch.randn(2, 3, 9, dtype=torch.float64) if bidirectional else torch.randn(3, 9, dtype=torch.float64)
    D = torch.randn(3, dtype=torch.float64)
    torch.testing.assert_close(direct_conv(u, k, D, bidirectional), loop_conv(u, k, D, bidirectional), rtol=1e-12, atol=1e-12)


def test_the_cpu_takes_the_direct_sum_for_short_sequences_and_the_fft_beyond(monkeypatch):
    monkeypatch.delenv(FFT_CONV.env, raising=False)
    assert FFT_CONV.select("cpu", None, length=1) == "direct"
    assert FFT_CONV.select("cpu", None, length=DIRECT_MAX_LENGTH) == "direct"
    assert FFT_CONV.select("cpu", None, length=DIRECT_MAX_LENGTH + 1) == "fft"
    assert FFT_CONV.select("cuda", None, length=8) == "fft"


@pytest.mark.parametrize("length", [1, 7, 64, 127])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["causal", "bidirectional"])
def test_fft_conv_matches_direct(length, bidirectional):
    torch.manual_seed(length)
    u = torch.randn(2, 3, length, dtype=torch.float64)
    k = torch.randn(2, 3, length, dtype=torch.float64) if bidirectional else torch.randn(3, length, dtype=torch.float64)
    D = torch.randn(3, dtype=torch.float64)
    expected = direct_conv(u, k, D, bidirectional)
    torch.testing.assert_close(fft_conv(u, k, D, bidirectional, backend="fft"), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", ["fft", "direct"])
def test_causal_fft_conv_is_causal_and_shift_equivariant(backend):
    u = torch.zeros(1, 1, 16, dtype=torch.float64)
    u[..., 5] = 1.0
    k = torch.randn(1, 16, dtype=torch.float64)
    y = fft_conv(u, k, backend=backend)
    torch.testing.assert_close(y[..., :5], torch.zeros(1, 1, 5, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(y[0, 0, 5:], k[0, :11], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", ["fft", "direct"])
def test_bidirectional_reaches_the_future(backend):
    u = torch.zeros(1, 1, 8, dtype=torch.float64)
    u[..., 6] = 1.0
    k = torch.randn(2, 1, 8, dtype=torch.float64)
    y = fft_conv(u, k, bidirectional=True, backend=backend)
    # y[t] for t < 6 sees u[6] through k[1][6 - t - 1].
    torch.testing.assert_close(y[0, 0, :6], k[1, 0, :6].flip(0), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["causal", "bidirectional"])
def test_gradients_match_direct_and_the_definition(bidirectional):
    torch.manual_seed(1)
    u = torch.randn(2, 3, 9, dtype=torch.float64, requires_grad=True)
    shape = (2, 3, 9) if bidirectional else (3, 9)
    k = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    D = torch.randn(3, dtype=torch.float64, requires_grad=True)
    loss = lambda y: (y * torch.linspace(-1, 1, 9, dtype=torch.float64)).square().sum()  # noqa: E731
    want = torch.autograd.grad(loss(loop_conv(u, k, D, bidirectional)), (u, k, D))
    for backend in ("fft", "direct"):
        got = torch.autograd.grad(loss(fft_conv(u, k, D, bidirectional, backend=backend)), (u, k, D))
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-9)


def test_the_direct_sum_stays_in_float32_under_autocast():
    torch.manual_seed(2)
    u, k = torch.randn(2, 3, 64), torch.randn(3, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = direct_conv(u, k)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, fft_conv(u, k, backend="fft"), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["fft", "direct"])
def test_low_precision_inputs_keep_their_dtype(backend):
    u = torch.randn(1, 2, 32, dtype=torch.bfloat16)
    k = torch.randn(2, 32)
    y = fft_conv(u, k, backend=backend)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), loop_conv(u.float(), k), rtol=2e-2, atol=2e-2)


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match=r"^k: expected \(H, L\) = \(2, 8\)"):
        fft_conv(torch.randn(1, 2, 8), torch.randn(2, 9))


@pytest.mark.parametrize("backend", ["fft", "direct"])
@pytest.mark.parametrize("shape", [(0, 3, 8), (2, 3, 0), (0, 3, 0)], ids=["batch0", "L0", "both0"])
def test_empty_inputs_give_empty_outputs(shape, backend):
    u = torch.randn(*shape, requires_grad=True)
    y = fft_conv(u, torch.randn(3, shape[-1]), torch.randn(3), backend=backend)
    assert y.shape == shape and y.dtype == u.dtype
    y.sum().backward()
    assert u.grad.shape == shape
