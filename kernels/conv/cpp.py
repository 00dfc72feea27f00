"""The ``"cpu"`` backend of the causal convolution: ``csrc/causal_conv1d.cpp`` through ctypes.

One (batch, channel) row per OpenMP iteration, the time axis vectorised, the SiLU fused into the
same pass (forward and backward), so a Mamba block's conv is one call each way instead of a
multiply-add per tap plus an activation, each with its own full-size temporaries. The backward
recomputes the pre-activation from the saved input instead of storing it.
"""

from __future__ import annotations

import ctypes

import torch

from hybrids.kernels import cpp_build
from hybrids.kernels.conv.taps import work_dtype


def causal_conv1d_cpu(x, weight, bias, activation, initial_states=None):
    """x (batch, dim, L) -> (batch, dim, L); ``initial_states`` (batch, dim, width - 1) or None."""
    work = work_dtype(x, weight)
    if work not in (torch.float32, torch.float64):
        work = torch.float32  # half-precision inputs and weights: computed in float32
    init = None if initial_states is None else initial_states.to(work)
    silu = activation is not None
    y = torch.ops.hybrids.cpu_causal_conv1d(x.to(work), weight.to(work), None if bias is None else bias.to(work), init, silu)
    return y.to(x.dtype)


# A torch custom operator, not an autograd.Function around a ctypes call, so that torch.compile
# compiles the code around it instead of breaking its graph here (kernels/scan/cpp.py says more).


@torch.library.custom_op("hybrids::cpu_causal_conv1d", mutates_args=(), device_types="cpu")
def _cpu_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, init: torch.Tensor | None,
              silu: bool) -> torch.Tensor:
    """x (batch, dim, L), weight (dim, width), bias (dim,) or None, init (batch, dim, width - 1)
    or None -> (batch, dim, L)."""
    x, weight, bias, init = cpp_build.contiguous(x, weight, bias, init)
    batch, dim, length = x.shape
    out = torch.empty_like(x)
    cpp_build.function("causal_conv1d", "conv_forward", x.dtype)(
        *map(cpp_build.pointer, (x, init, weight, bias)), ctypes.c_int(int(silu)), cpp_build.pointer(out),
        *map(ctypes.c_int64, (batch, dim, length, weight.shape[1])), ctypes.c_int(torch.get_num_threads()),
    )
    return out


@_cpu_conv.register_fake
def _(x, weight, bias, init, silu):
    return x.new_empty(x.shape)


@torch.library.custom_op("hybrids::cpu_causal_conv1d_backward", mutates_args=(), device_types="cpu")
def _cpu_conv_backward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, init: torch.Tensor | None,
                       silu: bool, dout: torch.Tensor, need_dinit: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of x, weight, bias and init (empty tensors for an absent bias, or init when not
    ``need_dinit``)."""
    x, weight, bias, init, dout = cpp_build.contiguous(x, weight, bias, init, dout)
    batch, dim, length = x.shape
    width = weight.shape[1]
    dx = torch.empty_like(x)
    dinit = torch.empty_like(init) if init is not None and need_dinit else None
    dw_part = x.new_empty(batch, dim, width)
    dbias_part = x.new_empty(batch, dim) if bias is not None else None
    cpp_build.function("causal_conv1d", "conv_backward", x.dtype)(
        *map(cpp_build.pointer, (x, init, weight, bias)), ctypes.c_int(int(silu)),
        *map(cpp_build.pointer, (dout, dx, dinit, dw_part, dbias_part)),
        *map(ctypes.c_int64, (batch, dim, length, width)), ctypes.c_int(torch.get_num_threads()),
    )
    # An operator's outputs may not alias one another: a fresh empty tensor for each absent one.
    return (dx, dw_part.sum(0), dbias_part.sum(0) if dbias_part is not None else x.new_empty(0),
            dinit if dinit is not None else x.new_empty(0))


@_cpu_conv_backward.register_fake
def _(x, weight, bias, init, silu, dout, need_dinit):
    return (x.new_empty(x.shape), weight.new_empty(weight.shape), bias.new_empty(bias.shape) if bias is not None else x.new_empty(0),
            init.new_empty(init.shape) if init is not None and need_dinit else x.new_empty(0))


def _conv_setup(ctx, inputs, output):
    x, weight, bias, init, silu = inputs
    ctx.save_for_backward(x, weight, bias, init)
    ctx.silu = silu
    ctx.has_bias, ctx.need_dinit = bias is not None, init is not None and ctx.needs_input_grad[3]


def _conv_backward(ctx, dout):
    x, weight, bias, init = ctx.saved_tensors
    dx, dweight, dbias, dinit = torch.ops.hybrids.cpu_causal_conv1d_backward(x, weight, bias, init, ctx.silu, dout,
                                                                             ctx.need_dinit)
    return dx, dweight, dbias if ctx.has_bias else None, dinit if ctx.need_dinit else None, None


_cpu_conv.register_autograd(_conv_backward, setup_context=_conv_setup)
