"""The C++ CPU kernels are torch custom operators (torch.library): their schemas, fake (shape)
implementations and autograd registrations pass torch.library.opcheck, and torch.compile traces a
Mamba layer through them without a graph break, matching eager in outputs and gradients."""

from __future__ import annotations

import pytest
import torch

from hybrids.kernels import cpp_build
import hybrids.kernels.conv.cpp  # noqa: F401  (registers the operators)
import hybrids.kernels.linear.cpp  # noqa: F401
import hybrids.kernels.recurrence.cpp  # noqa: F401
import hybrids.kernels.scan.cpp  # noqa: F401

pytestmark = pytest.mark.skipif(cpp_build.unavailable_reason() is not None, reason="no C++ compiler here")


def _scan_inputs(h0: bool):
    g = torch.Generator().manual_seed(0)
    batch, dim, length, groups, d_state = 2, 4, 40, 2, 3
    r = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    u, delta = r(batch, dim, length), torch.rand(batch, dim, length, generator=g, dtype=torch.float64)
    A = -torch.rand(dim, d_state, generator=g, dtype=torch.float64)
    Bt, Ct = r(batch, groups, length, d_state), r(batch, groups, length, d_state)
    tensors = [u, delta, A, Bt, Ct, r(batch, dim, d_state) if h0 else None]
    return [t.requires_grad_() if t is not None else None for t in tensors]


@pytest.mark.parametrize("h0", [False, True])
def test_opcheck_selective_scan(h0):
    torch.library.opcheck(torch.ops.hybrids.cpu_scan.default, _scan_inputs(h0))


@pytest.mark.parametrize("bias, init, silu", [(True, True, True), (False, False, False)])
def test_opcheck_causal_conv1d(bias, init, silu):
    g = torch.Generator().manual_seed(1)
    x, w = torch.randn(2, 3, 9, generator=g, dtype=torch.float64), torch.randn(3, 4, generator=g, dtype=torch.float64)
    b = torch.randn(3, generator=g, dtype=torch.float64) if bias else None
    i = torch.randn(2, 3, 3, generator=g, dtype=torch.float64) if init else None
    args = [t.requires_grad_() if t is not None else None for t in (x, w, b, i)]
    torch.library.opcheck(torch.ops.hybrids.cpu_causal_conv1d.default, [*args, silu])


@pytest.mark.parametrize("h0", [False, True])
def test_opcheck_linear_recurrence(h0):
    g = torch.Generator().manual_seed(2)
    a = torch.rand(2, 7, 3, generator=g, dtype=torch.float64).requires_grad_()
    x = torch.randn(2, 7, 3, generator=g, dtype=torch.float64).requires_grad_()
    start = torch.randn(2, 3, generator=g, dtype=torch.float64).requires_grad_() if h0 else None
    torch.library.opcheck(torch.ops.hybrids.cpu_linear_recurrence.default, [a, x, start])


@pytest.mark.parametrize("decay", [None, 3, 4])
@pytest.mark.parametrize("h0", [False, True])
def test_opcheck_linear_attention(decay, h0):
    g = torch.Generator().manual_seed(3)
    r = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_()  # noqa: E731
    q, k, v = r(2, 2, 37, 3), r(2, 2, 37, 3), r(2, 2, 37, 4)
    log_decay = None if decay is None else (-torch.rand((2, 2, 37, 3)[:decay], generator=g, dtype=torch.float64)).requires_grad_()
    torch.library.opcheck(torch.ops.hybrids.cpu_linear_attention.default, [q, k, v, log_decay, r(2, 2, 3, 4) if h0 else None, 0.5])


def test_a_mamba_layer_compiles_without_graph_breaks_and_matches_eager():
    from hybrids.mixers import Mamba

    torch.manual_seed(0)
    layer = Mamba(d_model=16, d_state=4, d_conv=4, expand=2, dt_rank=4)
    x = torch.randn(2, 24, 16, requires_grad=True)
    layer(x)  # the backends' modules imported eagerly, as a first training step does

    def loss_and_grads(fn):
        out = fn(x)
        grads = torch.autograd.grad(out.square().sum(), [x, *layer.parameters()])
        return out.detach(), grads

    torch._dynamo.reset()
    compiled = torch.compile(layer, fullgraph=True, )  # fullgraph: a graph break raises
    eager_out, eager_grads = loss_and_grads(layer)
    out, grads = loss_and_grads(compiled)
    torch.testing.assert_close(out, eager_out)
    for got, want in zip(grads, eager_grads):
        torch.testing.assert_close(got, want)
