"""The ``"cpu"`` backend of the causal convolution: ``csrc/causal_conv1d.cpp`` through ctypes.

One (batch, channel) row per OpenMP iteration, the time axis vectorised, the SiLU fused into the
same pass (forward and backward), so a Mamba block's conv is one call each way instead of a
multiply-add per tap plus an activation, each with its own full-size temporaries. The backward
recomputes the pre-activation from the saved input instead of storing it.
"""

from __future__ import annotations

import ctypes

import torch
from torch.autograd.function import once_differentiable

from hybrids.kernels import cpp_build
from hybrids.kernels.conv.taps import work_dtype


def causal_conv1d_cpu(x, weight, bias, activation, initial_states=None):
    """x (batch, dim, L) -> (batch, dim, L); ``initial_states`` (batch, dim, width - 1) or None."""
    work = work_dtype(x, weight)
    if work not in (torch.float32, torch.float64):
        work = torch.float32  # half-precision inputs and weights: computed in float32
    init = None if initial_states is None else initial_states.to(work)
    silu = activation is not None
    y = _CppCausalConv.apply(x.to(work), weight.to(work), None if bias is None else bias.to(work), init, silu)
    return y.to(x.dtype)


class _CppCausalConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, init, silu):
        x, weight = x.contiguous(), weight.contiguous()
        bias = bias.contiguous() if bias is not None else None
        init = init.contiguous() if init is not None else None
        batch, dim, length = x.shape
        out = torch.empty_like(x)
        cpp_build.function("causal_conv1d", "conv_forward", x.dtype)(
            *map(cpp_build.pointer, (x, init, weight, bias)), ctypes.c_int(int(silu)), cpp_build.pointer(out),
            *map(ctypes.c_int64, (batch, dim, length, weight.shape[1])), ctypes.c_int(torch.get_num_threads()),
        )
        ctx.save_for_backward(x, weight, bias, init)
        ctx.silu = silu
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        x, weight, bias, init = ctx.saved_tensors
        batch, dim, length = x.shape
        width = weight.shape[1]
        dout = dout.contiguous()
        dx = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        dinit = torch.empty_like(init) if init is not None and ctx.needs_input_grad[3] else None
        dw_part = x.new_empty(batch, dim, width)
        dbias_part = x.new_empty(batch, dim) if bias is not None else None
        cpp_build.function("causal_conv1d", "conv_backward", x.dtype)(
            *map(cpp_build.pointer, (x, init, weight, bias)), ctypes.c_int(int(ctx.silu)),
            *map(cpp_build.pointer, (dout, dx, dinit, dw_part, dbias_part)),
            *map(ctypes.c_int64, (batch, dim, length, width)), ctypes.c_int(torch.get_num_threads()),
        )
        dbias = dbias_part.sum(0) if dbias_part is not None and ctx.needs_input_grad[2] else None
        return dx, dw_part.sum(0), dbias, dinit, None
