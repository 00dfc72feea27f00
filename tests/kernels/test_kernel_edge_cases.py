"""Every public kernel on degenerate inputs (L = 0, batch 0) and on integer inputs.

Empty inputs give empty outputs of the right shapes, with gradients, in every backend that runs
here; integer tensors are refused with a TypeError naming the argument.
"""

import pytest
import torch

import hybrids.kernels as K

D, N, H, N2 = 3, 4, 3, 2
SHAPES = [(2, 0), (0, 5), (0, 0)]
IDS = ["L0", "batch0", "both0"]


def ssm_system():
    torch.manual_seed(0)
    Lambda = torch.complex(-torch.rand(H, N2), torch.randn(H, N2))
    B, C = torch.randn(H, N2, dtype=torch.cfloat), torch.randn(H, N2, dtype=torch.cfloat)
    P = torch.randn(1, H, N2, dtype=torch.cfloat)
    return Lambda, P, B, C, torch.rand(H) * 0.1


def backward_ok(out, *leaves):
    """Backward through the outputs reaches every leaf with a gradient of the leaf's shape."""
    outs = out if isinstance(out, (tuple, list)) else (out,)
    total = sum(o.real.sum() for o in outs)
    assert isinstance(total, torch.Tensor) and total.requires_grad, "the outputs are cut off from the inputs"
    grads = torch.autograd.grad(total, leaves, allow_unused=True)
    for leaf, grad in zip(leaves, grads):
        grad = torch.zeros_like(leaf) if grad is None else grad  # an empty input gets an empty or no gradient
        assert grad.shape == leaf.shape
    return grads


@pytest.mark.parametrize("batch, L", SHAPES, ids=IDS)
@pytest.mark.parametrize("backend", ["reference", "torch", "cpu"])
def test_selective_scan(batch, L, backend):
    u = torch.randn(batch, D, L, requires_grad=True)
    h0 = torch.randn(batch, D, N, requires_grad=True)
    out, last = K.selective_scan(u, torch.rand(batch, D, L), -torch.rand(D, N), torch.randn(batch, N, L),
                                 torch.randn(batch, N, L), torch.ones(D), torch.randn(batch, D, L),
                                 return_last_state=True, backend=backend, initial_state=h0)
    assert out.shape == (batch, D, L) and last.shape == (batch, D, N)
    _, grad_h0 = backward_ok((out, last), u, h0)
    if L == 0:
        torch.testing.assert_close(last, h0)  # nothing to scan: the state passes through ...
        torch.testing.assert_close(grad_h0, torch.ones_like(h0))  # ... and so does its gradient


@pytest.mark.parametrize("batch", [0, 2])
def test_decode_steps(batch):
    state = torch.zeros(batch, D, N)
    y = K.selective_state_update(state, torch.randn(batch, D), torch.rand(batch, D), -torch.rand(D, N),
                                 torch.randn(batch, N), torch.randn(batch, N))
    assert y.shape == (batch, D)
    y = K.causal_conv1d_update(torch.randn(batch, D), torch.zeros(batch, D, 3), torch.randn(D, 4))
    assert y.shape == (batch, D)


@pytest.mark.parametrize("batch, L", SHAPES, ids=IDS)
@pytest.mark.parametrize("backend", ["reference", "banded"])
def test_sparse_attention(batch, L, backend):
    q = torch.randn(batch, 2, L, 8, requires_grad=True)
    out = K.sparse_attention(q, q, q, K.SparsePattern(4), backend=backend)
    assert out.shape == q.shape
    backward_ok(out, q)


@pytest.mark.parametrize("batch, L", SHAPES, ids=IDS)
def test_ssm_kernels_and_ops(batch, L):
    Lambda, P, B, C, dt = ssm_system()
    assert K.diagonal_kernel(Lambda, B, C, dt, L).shape == (H, L)
    assert K.dplr_kernel(Lambda, P, B, C, dt, L).shape == (H, L)
    assert K.vandermonde(B, torch.exp(Lambda), L).shape == (H, L)
    assert K.cauchy(B, torch.randn(L, dtype=torch.cfloat), Lambda).shape == (H, L)
    u = torch.randn(batch, H, L, requires_grad=True)
    assert K.fft_conv(u, torch.randn(H, L), torch.randn(H)).shape == u.shape
    x0 = torch.randn(batch, H, N2, dtype=torch.cfloat, requires_grad=True)
    for backend in ("parallel", "recurrent"):
        y, state = K.diagonal_ssm(u, Lambda, B, C, dt, initial_state=x0, output_final_state=True, backend=backend)
        assert y.shape == u.shape and state.shape == (batch, H, N2)
        backward_ok((y, state), u, x0)
        y, state = K.dplr_ssm(u, Lambda, P, B, C, dt, max(L, 1), initial_state=x0, output_final_state=True,
                              backend=backend)
        assert y.shape == u.shape and state.shape == (batch, H, N2)
        backward_ok((y, state), u, x0)
    backward_ok(K.fft_conv(u, torch.randn(H, L)), u)


def test_integer_inputs_are_refused_naming_the_argument():
    Lambda, P, B, C, dt = ssm_system()
    ints = torch.ones(1, D, 5, dtype=torch.long)
    calls = {
        "u": lambda: K.selective_scan(ints, torch.rand(1, D, 5), -torch.rand(D, N), torch.randn(1, N, 5),
                                      torch.randn(1, N, 5)),
        "x": lambda: K.causal_conv1d(ints, torch.randn(D, 4)),
        "q": lambda: K.sparse_attention(torch.ones(1, 2, 5, 8, dtype=torch.long), torch.randn(1, 2, 5, 8),
                                        torch.randn(1, 2, 5, 8), K.SparsePattern(4)),
        "state": lambda: K.selective_state_update(torch.zeros(1, D, N, dtype=torch.long), torch.randn(1, D),
                                                  torch.rand(1, D), -torch.rand(D, N), torch.randn(1, N),
                                                  torch.randn(1, N)),
    }
    for argument, call in calls.items():
        with pytest.raises(TypeError, match=f"^{argument}: expected a floating-point tensor"):
            call()
    with pytest.raises(TypeError, match="^v: expected a complex or floating-point tensor"):
        K.vandermonde(torch.ones(H, N2, dtype=torch.long), torch.exp(Lambda), 5)
    with pytest.raises(TypeError, match="^z: expected a complex or floating-point tensor"):
        K.cauchy(B, torch.ones(5, dtype=torch.long), Lambda)
    with pytest.raises(ValueError, match="^B: expected"):
        K.selective_scan(torch.randn(1, D, 5), torch.rand(1, D, 5), -torch.rand(D, N), torch.randn(1, 0, N, 5),
                         torch.randn(1, N, 5))
    with pytest.raises(ValueError, match="^k: heads=2 is not a multiple of kv_heads=0"):
        K.sparse_attention(torch.randn(1, 2, 5, 8), torch.randn(1, 0, 5, 8), torch.randn(1, 0, 5, 8), K.SparsePattern(4))
    for call in (lambda: K.fft_conv(torch.ones(1, H, 5, dtype=torch.long), torch.randn(H, 5)),
                 lambda: K.diagonal_ssm(torch.ones(1, H, 5, dtype=torch.long), Lambda, B, C, dt),
                 lambda: K.dplr_ssm(torch.ones(1, H, 5, dtype=torch.long), Lambda, P, B, C, dt, 5)):
        with pytest.raises(TypeError, match="^u: expected a floating-point tensor"):
            call()
