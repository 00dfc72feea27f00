"""The fused CPU Mamba block (hybrids.kernels.mamba_block) against the block written with the
reference kernels: outputs and the gradients of every input, in float64 (to rounding) and float32,
at shapes that reach each code path of csrc/mamba_inner.cpp: full vector blocks of channels and the
channels past them, d_state 16 (fixed at compile time) and others, lengths across and inside one
checkpoint chunk, conv widths 1 to 4, with and without the conv's bias. Also: the operators pass
torch.library.opcheck, and steps far into softplus's tails stay accurate."""

from __future__ import annotations

import pytest
import torch

from helpers import relative_rms
from hybrids.kernels import cpp_build
from hybrids.kernels.mamba_block import cpu_unavailable, mamba2_block_cpu, mamba_block_cpu
from hybrids.kernels.mamba_block.cpp import CHUNK
from hybrids.kernels.mamba_block.reference import mamba2_block_reference, mamba_block_reference

pytestmark = pytest.mark.skipif(cpp_build.unavailable_reason("mamba_inner") is not None, reason="no C++ compiler here")


def block_inputs(batch, length, dim, d_state, rank, width, dtype, bias=True, dt_shift=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=dtype) * scale).requires_grad_()

    A = (-(torch.rand(dim, d_state, generator=g, dtype=dtype) * 2 + 0.1)).requires_grad_()
    return [
        r(batch, length, 2 * dim),  # xz
        r(dim, width, scale=0.5),  # conv weight
        r(dim) if bias else None,  # conv bias
        r(rank + 2 * d_state, dim, scale=dim**-0.5),  # x_proj weight
        r(dim, rank, scale=rank**-0.5),  # dt_proj weight
        (torch.randn(dim, generator=g, dtype=dtype) * 0.5 + dt_shift).requires_grad_(),  # dt bias
        A,
        r(dim),  # D
    ]


NAMES = ["xz", "conv_weight", "conv_bias", "x_proj_weight", "dt_proj_weight", "dt_bias", "A", "D"]
NAMES2 = ["zxbcdt", "conv_weight", "conv_bias", "dt_bias", "A", "D"]


def compare(inputs, out_tol, grad_tol, fused=mamba_block_cpu, reference=mamba_block_reference, names=NAMES):
    y = fused(*inputs)
    ref = reference(*inputs)
    assert y.shape == ref.shape and y.dtype == ref.dtype
    assert relative_rms(y, ref) < out_tol
    dy = torch.randn_like(y)
    present = [t for t in inputs if isinstance(t, torch.Tensor)]
    grads = torch.autograd.grad(y, present, dy)
    ref_grads = torch.autograd.grad(ref, present, dy)
    names = [n for n, t in zip(names, inputs) if t is not None]
    for name, a, b in zip(names, grads, ref_grads):
        assert a.shape == b.shape, name
        assert relative_rms(a, b) < grad_tol, name


SHAPES = {
    # (batch, L, dim, d_state, dt_rank, d_conv)
    "full-blocks": (2, 40, 32, 16, 4, 4),  # two blocks of 16 float32 lanes / four of 8 float64
    "tail-channels": (2, 37, 21, 16, 3, 4),  # a full block and channels past it
    "narrow": (3, 33, 5, 16, 2, 3),  # only channels past the last full block
    "runtime-d-state": (2, 35, 20, 5, 2, 4),  # d_state not 16: the loops over a run-time N
    "one-chunk": (2, CHUNK, 16, 16, 2, 4),
    "inside-a-chunk": (1, 3, 16, 16, 1, 4),  # shorter than the conv's history
    "one-step": (2, 1, 17, 16, 2, 2),
    "width-one": (2, 20, 16, 8, 2, 1),
}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("bias", [True, False])
def test_float64_equals_the_reference(shape, bias):
    compare(block_inputs(*SHAPES[shape], torch.float64, bias=bias), 1e-12, 1e-11)


@pytest.mark.parametrize("shape", ["full-blocks", "tail-channels", "runtime-d-state"])
def test_float32_equals_the_reference(shape):
    # The C++ exp, log1p and sigmoid are polynomial approximations accurate to float's rounding.
    compare(block_inputs(*SHAPES[shape], torch.float32), 1e-5, 1e-4)


@pytest.mark.parametrize("dt_shift", [-30.0, -8.0, 8.0, 25.0])
def test_steps_far_into_softplus_s_tails(dt_shift):
    """Step arguments around -30 (softplus ~ e^x, a relative accuracy test), +8, and past torch's
    threshold of 20 (softplus(x) = x): float32 outputs and gradients stay close to the float64
    reference's."""
    inputs = block_inputs(2, 24, 16, 16, 2, 4, torch.float64, dt_shift=dt_shift)
    ref = mamba_block_reference(*inputs)
    single = [t.detach().float().requires_grad_() if t is not None else None for t in inputs]
    y = mamba_block_cpu(*single)
    assert relative_rms(y.double(), ref) < 1e-5
    dy = torch.randn_like(ref)
    present = [(a, b) for a, b in zip(inputs, single) if b is not None]
    ref_grads = torch.autograd.grad(ref, [a for a, _ in present], dy)
    grads = torch.autograd.grad(y, [b for _, b in present], dy.float())
    for name, a, b in zip(NAMES, grads, ref_grads):
        assert relative_rms(a.double(), b, floor=1e-30) < 1e-4, name


@pytest.mark.parametrize("which", ["mamba", "mamba2"])
def test_results_do_not_depend_on_the_number_of_threads(which):
    """The forward splits (sequence, channel block) pairs and the backward sequences between
    threads, each with its own work space and parts summed afterwards: one thread and two agree
    (to the rounding of torch's own products between the kernels, which may split differently;
    a race would show as an error of order one)."""
    if which == "mamba":
        inputs, fused = block_inputs(5, 40, 24, 16, 2, 4, torch.float32), mamba_block_cpu
    else:
        inputs, fused = block2_inputs(5, 40, 4, 8, 16, 2, 4, torch.float32), mamba2_block_cpu
    present = [t for t in inputs if isinstance(t, torch.Tensor)]
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            y = fused(*inputs)
            results.append((y, *torch.autograd.grad(y.square().sum(), present)))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results):
        assert relative_rms(a, b) < 1e-6


def test_the_operators_check_dtypes_and_shapes():
    inputs = block_inputs(1, 5, 8, 4, 2, 4, torch.float64)
    with pytest.raises(TypeError, match="A: expected the input's dtype torch.float64"):
        mamba_block_cpu(*inputs[:6], inputs[6].float(), inputs[7])
    with pytest.raises(ValueError, match="D: expected shape"):
        mamba_block_cpu(*inputs[:7], inputs[7][:4])
    with pytest.raises(ValueError, match="2 \\* dim"):
        mamba_block_cpu(inputs[0][..., :15], *inputs[1:])
    inputs2 = block2_inputs(1, 5, 4, 4, 3, 2, 4, torch.float64)
    with pytest.raises(ValueError, match="do not make a Mamba-2 block"):
        mamba2_block_cpu(*inputs2[:6], 3)
    with pytest.raises(TypeError, match="dt_bias"):
        mamba2_block_cpu(inputs2[0], inputs2[1], inputs2[2], inputs2[3].float(), *inputs2[4:])


def test_availability_says_why_not():
    x = torch.zeros(1, 2, 8)
    assert cpu_unavailable(x, torch.zeros(4, 2)) is None
    assert "float32 or float64" in cpu_unavailable(x.half(), torch.zeros(4, 2).half())
    assert "all alike" in cpu_unavailable(x, torch.zeros(4, 2, dtype=torch.float64))


@pytest.mark.parametrize("bias", [True, False])
def test_opcheck(bias):
    from hybrids.kernels.mamba_block import cpp  # noqa: F401

    inputs = block_inputs(2, 21, 10, 3, 2, 3, torch.float64, bias=bias)
    torch.library.opcheck(torch.ops.hybrids.cpu_mamba_block.default, inputs)


# -- Mamba-2 ---------------------------------------------------------------------------------------


def block2_inputs(batch, length, heads, headdim, d_state, groups, width, dtype, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=dtype) * scale).requires_grad_()

    d_inner = heads * headdim
    conv_dim = d_inner + 2 * groups * d_state
    A = (-(torch.rand(heads, generator=g, dtype=dtype) * 3 + 0.1)).requires_grad_()
    return [r(batch, length, d_inner + conv_dim + heads), r(conv_dim, width, scale=0.5), r(conv_dim) if bias else None,
            r(heads, scale=0.5), A, r(heads), groups]


SHAPES2 = {
    # (batch, L, heads, headdim, d_state, groups, d_conv)
    "heads-of-16": (2, 40, 8, 16, 16, 1, 4),  # a head per float32 vector block
    "small-heads-two-groups": (2, 37, 4, 5, 16, 2, 4),  # blocks span heads; channels past the blocks
    "runtime-d-state": (2, 35, 3, 7, 5, 1, 3),
    "full-blocks-two-groups": (2, 37, 4, 16, 16, 2, 4),  # 32 channels a group: two float32 blocks each
    "d-state-64": (2, 33, 4, 8, 64, 1, 4),  # mamba_ssm's (and Mamba2's) default d_state
    "one-step": (1, 1, 2, 8, 16, 2, 4),
}


@pytest.mark.parametrize("shape", SHAPES2)
@pytest.mark.parametrize("bias", [True, False])
def test_mamba2_float64_equals_the_reference(shape, bias):
    compare(block2_inputs(*SHAPES2[shape], torch.float64, bias=bias), 1e-12, 1e-11, mamba2_block_cpu,
            mamba2_block_reference, NAMES2)


@pytest.mark.parametrize("shape", ["heads-of-16", "small-heads-two-groups", "full-blocks-two-groups", "d-state-64"])
def test_mamba2_float32_equals_the_reference(shape):
    compare(block2_inputs(*SHAPES2[shape], torch.float32), 1e-5, 1e-4, mamba2_block_cpu, mamba2_block_reference,
            NAMES2)


@pytest.mark.parametrize("bias", [True, False])
def test_mamba2_opcheck(bias):
    from hybrids.kernels.mamba_block import cpp  # noqa: F401

    inputs = block2_inputs(2, 21, 3, 4, 3, 1, 3, torch.float64, bias=bias)
    torch.library.opcheck(torch.ops.hybrids.cpu_mamba2_block.default, inputs)
