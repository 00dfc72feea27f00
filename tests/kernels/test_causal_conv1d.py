"""causal_conv1d and causal_conv1d_update against a direct per-tap sum."""

import importlib
import sys

import pytest
import torch
import torch.nn.functional as F

from hybrids.kernels import causal_conv1d, causal_conv1d_update
from hybrids.kernels import BackendUnavailable
from hybrids.kernels.conv.extension import package
from helpers import relative_rms

module = importlib.import_module("hybrids.kernels.conv")

ACTIVATIONS = [None, "silu", "swish"]
needs_cpp = pytest.mark.skipif(
    module.CAUSAL_CONV1D.backend("cpu").available("cpu") is not None, reason="no C++ compiler here"
)


def per_tap(x, weight, bias=None, activation=None):
    """out[t] = bias + sum_k weight[:, k] * x[t - (width - 1) + k], zeros before the start."""
    batch, dim, length = x.shape
    width = weight.shape[1]
    out = torch.zeros_like(x) if bias is None else bias[None, :, None].expand(batch, dim, length).clone()
    for k in range(width):
        lag = width - 1 - k
        shifted = torch.zeros_like(x)
        if lag < length:
            shifted[:, :, lag:] = x[:, :, : length - lag]
        out = out + weight[None, :, k, None] * shifted
    return out if activation is None else F.silu(out)


def case_id(batch, dim, width, length):
    return f"B{batch}-D{dim}-W{width}-L{length}"


CASES = [(2, 5, w, length) for w in (1, 2, 3, 4) for length in (1, 3, 17)]


@pytest.mark.parametrize("batch,dim,width,length", CASES, ids=[case_id(*c) for c in CASES])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("backend", ["torch", pytest.param("cpu", marks=needs_cpp)])
def test_matches_per_tap_sum_with_gradients(batch, dim, width, length, activation, with_bias, backend):
    x = torch.randn(batch, dim, length, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(dim, width, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(dim, dtype=torch.float64, requires_grad=True) if with_bias else None
    leaves = [t for t in (x, weight, bias) if t is not None]
    grad_out = torch.randn(batch, dim, length, dtype=torch.float64)

    out = causal_conv1d(x, weight, bias, activation, backend=backend)
    grads = torch.autograd.grad(out, leaves, grad_out)
    expected = per_tap(x, weight, bias, activation)
    expected_grads = torch.autograd.grad(expected, leaves, grad_out)

    assert out.shape == x.shape and out.dtype == x.dtype
    assert relative_rms(out, expected) < 1e-12
    for g, e in zip(grads, expected_grads):
        assert relative_rms(g, e) < 1e-12


STATE_CASES = [(w, length) for w in (1, 2, 4) for length in (1, 2, 3, 9)]


@pytest.mark.parametrize("width,length", STATE_CASES, ids=[f"W{w}-L{n}" for w, n in STATE_CASES])
@pytest.mark.parametrize("backend", ["torch", "reference", pytest.param("cpu", marks=needs_cpp)])
def test_initial_and_final_states_continue_the_sequence(width, length, backend):
    """Convolving a sequence in two pieces, the first piece's final states passed as the second's
    initial states, equals convolving it whole; outputs, final states and every gradient
    (initial states included) against the per-tap sum over the concatenated history."""
    batch, dim = 2, 3
    history = torch.randn(batch, dim, width - 1 + length, dtype=torch.float64)
    init = history[:, :, : width - 1].clone().requires_grad_()
    x = history[:, :, width - 1 :].clone().requires_grad_()
    weight = torch.randn(dim, width, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(dim, dtype=torch.float64, requires_grad=True)
    out, final = causal_conv1d(x, weight, bias, "silu", backend=backend, initial_states=init, return_final_states=True)
    assert final.shape == (batch, dim, width - 1)
    full = torch.cat((init, x), dim=2)
    expected = per_tap(full, weight, bias, "silu")[:, :, width - 1 :]
    assert relative_rms(out, expected) < 1e-12
    torch.testing.assert_close(final, full[:, :, full.shape[2] - (width - 1) :], rtol=0, atol=0)
    grad_out, grad_final = torch.randn_like(out), torch.randn_like(final)
    leaves = (init, x, weight, bias)
    grads = torch.autograd.grad((out * grad_out).sum() + (final * grad_final).sum(), leaves, allow_unused=True)
    want = torch.autograd.grad(
        (expected * grad_out).sum() + (full[:, :, full.shape[2] - (width - 1) :] * grad_final).sum(), leaves,
        allow_unused=True,
    )
    for name, g, e in zip(("initial_states", "x", "weight", "bias"), grads, want):
        if e is None:  # width 1: no initial states to differentiate
            assert g is None or not g.any(), name
            continue
        assert relative_rms(g, e) < 1e-12, name

    # In pieces: the first part's final states start the second part.
    cut = length // 2
    first, mid = causal_conv1d(x[:, :, :cut], weight, bias, "silu", backend=backend, initial_states=init,
                               return_final_states=True)
    second, end = causal_conv1d(x[:, :, cut:], weight, bias, "silu", backend=backend, initial_states=mid,
                                return_final_states=True)
    torch.testing.assert_close(torch.cat((first, second), dim=2), out, rtol=0, atol=1e-13)
    torch.testing.assert_close(end, final, rtol=0, atol=0)


def test_final_states_without_initial_states_are_zero_padded():
    x = torch.randn(1, 2, 2)
    _, final = causal_conv1d(x, torch.randn(2, 4), return_final_states=True)
    torch.testing.assert_close(final, torch.cat((torch.zeros(1, 2, 1), x), dim=2))


def test_bad_initial_states_name_the_argument():
    x, w = torch.randn(2, 3, 5), torch.randn(3, 4)
    with pytest.raises(ValueError, match="^initial_states: expected \\(batch=2, dim=3, width - 1=3\\)"):
        causal_conv1d(x, w, initial_states=torch.zeros(2, 3, 4))
    with pytest.raises(TypeError, match="^initial_states: expected a floating-point tensor"):
        causal_conv1d(x, w, initial_states=torch.zeros(2, 3, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="^x: expected a floating-point tensor"):
        causal_conv1d(x.long(), w)


@pytest.mark.parametrize("shape", [(0, 3, 5), (2, 3, 0), (0, 3, 0)])
def test_empty_inputs_give_empty_outputs_and_gradients(shape):
    x = torch.randn(*shape, requires_grad=True)
    w = torch.randn(3, 4, requires_grad=True)
    out, final = causal_conv1d(x, w, return_final_states=True)
    assert out.shape == shape and final.shape == (shape[0], 3, 3)
    out.sum().backward()
    assert x.grad.shape == shape and torch.equal(w.grad, torch.zeros_like(w))


def test_float32_and_mixed_dtypes_keep_x_dtype():
    x = torch.randn(2, 4, 11)
    weight = torch.randn(4, 3)
    out = causal_conv1d(x, weight, activation="silu")
    assert out.dtype == torch.float32
    assert relative_rms(out.double(), per_tap(x.double(), weight.double(), activation="silu")) < 1e-6
    half = causal_conv1d(x.bfloat16(), weight)  # float32 weight, bfloat16 input
    assert half.dtype == torch.bfloat16
    assert relative_rms(half.double(), per_tap(x.bfloat16().double(), weight.double())) < 1e-2


def test_equals_nn_conv1d_cut_to_length():
    conv = torch.nn.Conv1d(6, 6, 4, groups=6, padding=3).double()
    x = torch.randn(2, 6, 9, dtype=torch.float64)
    torch.testing.assert_close(causal_conv1d(x, conv.weight[:, 0, :], conv.bias), conv(x)[..., :9], rtol=0, atol=1e-13)


@pytest.mark.parametrize("width", [1, 2, 3, 4])
@pytest.mark.parametrize("extra", [0, 1, 3], ids=["state_len=width-1", "state_len=width", "state_len=width+2"])
@pytest.mark.parametrize("activation", [None, "silu"])
def test_update_step_by_step_equals_full_conv(width, extra, activation):
    batch, dim, length = 2, 5, 9
    x = torch.randn(batch, dim, length, dtype=torch.float64)
    weight = torch.randn(dim, width, dtype=torch.float64)
    bias = torch.randn(dim, dtype=torch.float64)
    state_len = width - 1 + extra
    state = torch.zeros(batch, dim, state_len, dtype=torch.float64)
    state_before = state
    steps = [causal_conv1d_update(x[:, :, t], state, weight, bias, activation) for t in range(length)]
    assert state is state_before  # updated in place, never replaced
    assert all(s.shape == (batch, dim) for s in steps)
    torch.testing.assert_close(torch.stack(steps, dim=2), causal_conv1d(x, weight, bias, activation), rtol=0, atol=1e-13)
    # The state holds the last state_len inputs (zeros where the sequence was shorter).
    padded = F.pad(x, (state_len, 0))
    torch.testing.assert_close(state, padded[:, :, padded.shape[2] - state_len :], rtol=0, atol=0)


@pytest.mark.parametrize("width", [1, 3, 4])
def test_update_in_chunks_equals_full_conv(width):
    batch, dim, length = 2, 3, 10
    x = torch.randn(batch, dim, length, dtype=torch.float64)
    weight = torch.randn(dim, width, dtype=torch.float64)
    state = torch.zeros(batch, dim, width, dtype=torch.float64)
    chunks = [causal_conv1d_update(x[:, :, a:b], state, weight, activation="silu") for a, b in ((0, 4), (4, 5), (5, 10))]
    torch.testing.assert_close(torch.cat(chunks, dim=2), causal_conv1d(x, weight, activation="silu"), rtol=0, atol=1e-13)


def test_update_keeps_x_dtype_and_state_dtype():
    x = torch.randn(2, 4, dtype=torch.bfloat16)
    state = torch.zeros(2, 4, 3)
    out = causal_conv1d_update(x, state, torch.randn(4, 4), torch.randn(4))
    assert out.dtype == torch.bfloat16 and state.dtype == torch.float32
    torch.testing.assert_close(state[:, :, -1], x.float())


BAD = {
    "x-ndim": (lambda: causal_conv1d(torch.randn(2, 3), torch.randn(3, 2)), "x:"),
    "weight-dim": (lambda: causal_conv1d(torch.randn(2, 3, 5), torch.randn(4, 2)), "weight:"),
    "weight-conv1d-shape": (lambda: causal_conv1d(torch.randn(2, 3, 5), torch.randn(3, 1, 2)), "[:, 0, :]"),
    "weight-width-0": (lambda: causal_conv1d(torch.randn(2, 3, 5), torch.randn(3, 0)), "weight:"),
    "bias": (lambda: causal_conv1d(torch.randn(2, 3, 5), torch.randn(3, 2), torch.randn(4)), "bias:"),
    "activation": (lambda: causal_conv1d(torch.randn(2, 3, 5), torch.randn(3, 2), activation="relu"), "activation:"),
    "backend": (lambda: causal_conv1d(torch.randn(2, 3, 5), torch.randn(3, 2), backend="cuda"), "backend:"),
    "update-x": (lambda: causal_conv1d_update(torch.randn(2), torch.zeros(2, 3, 3), torch.randn(3, 4)), "x:"),
    "update-state-short": (
        lambda: causal_conv1d_update(torch.randn(2, 3), torch.zeros(2, 3, 2), torch.randn(3, 4)),
        "conv_state:",
    ),
    "update-state-batch": (
        lambda: causal_conv1d_update(torch.randn(2, 3), torch.zeros(1, 3, 3), torch.randn(3, 4)),
        "conv_state:",
    ),
}


@pytest.mark.parametrize("name", BAD)
def test_bad_arguments_name_the_argument(name):
    call, message = BAD[name]
    with pytest.raises(ValueError) as info:
        call()
    assert message in str(info.value)


def test_unknown_backend_in_environment(monkeypatch):
    monkeypatch.setenv(module.BACKEND_ENV, "fast")
    with pytest.raises(ValueError, match=module.BACKEND_ENV):
        causal_conv1d(torch.randn(1, 2, 3), torch.randn(2, 2))


def test_environment_forces_torch(monkeypatch):
    monkeypatch.setenv(module.BACKEND_ENV, "torch")
    x, w = torch.randn(1, 2, 5), torch.randn(2, 3)
    torch.testing.assert_close(causal_conv1d(x, w), per_tap(x, w))


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_forced_extension_that_cannot_run_says_how_to_get_it(how, monkeypatch):
    x, w = torch.randn(1, 2, 5), torch.randn(2, 3)
    kwargs = {"backend": "extension"} if how == "argument" else {}
    if how == "environment":
        monkeypatch.setenv(module.BACKEND_ENV, "extension")
    with pytest.raises(BackendUnavailable) as info:
        causal_conv1d(x, w, **kwargs)
    message = str(info.value)
    if package() is None:
        assert "pip install -e '.[cuda]'" in message
    else:
        assert "CUDA" in message


def test_default_backend_on_cpu_is_cpp_else_torch_without_importing_the_package(monkeypatch):
    from hybrids.kernels import cpp_build

    monkeypatch.delenv(module.BACKEND_ENV, raising=False)
    imported = "causal_conv1d" in sys.modules
    expected = "cpu" if cpp_build.unavailable_reason("causal_conv1d") is None else "torch"
    assert module.CAUSAL_CONV1D.select("cpu", torch.float32, width=2) == expected
    monkeypatch.setenv(cpp_build.DISABLE_ENV, "1")
    assert module.CAUSAL_CONV1D.select("cpu", torch.float32, width=2) == "torch"
    assert ("causal_conv1d" in sys.modules) == imported


@needs_cpp
def test_cpp_backend_in_float32_and_half_inputs():
    x = torch.randn(3, 6, 40)
    weight, bias = torch.randn(6, 4), torch.randn(6)
    for activation in ACTIVATIONS:
        expected = per_tap(x.double(), weight.double(), bias.double(), activation)
        out = causal_conv1d(x, weight, bias, activation, backend="cpu")
        assert out.dtype == torch.float32 and relative_rms(out.double(), expected) < 1e-6
        half = causal_conv1d(x.half(), weight.half(), bias.half(), activation, backend="cpu")
        assert half.dtype == torch.float16 and relative_rms(half.double(), expected) < 2e-3
