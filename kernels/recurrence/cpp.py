"""The ``"cpu"`` backend of the linear recurrence: ``csrc/linear_recurrence.cpp`` through ctypes.

The forward keeps every state (it is the output, (batch, L, dim)); the backward reads it for
``da[t] = g[t] h[t-1]`` and runs the adjoint recurrence backwards, so nothing is recomputed.
"""

from __future__ import annotations

import ctypes

import torch

from hybrids.kernels import cpp_build
from hybrids.kernels.dtypes import at_least_float32


def linear_recurrence_cpu(a: torch.Tensor, x: torch.Tensor, initial_state: torch.Tensor | None) -> torch.Tensor:
    work = at_least_float32(x.dtype)
    h0 = initial_state.to(work) if initial_state is not None else None
    return torch.ops.hybrids.cpu_linear_recurrence(a.to(work), x.to(work), h0).to(x.dtype)


# A torch custom operator, not an autograd.Function around a ctypes call, so that torch.compile
# compiles the code around it instead of breaking its graph here (kernels/scan/cpp.py says more).


@torch.library.custom_op("hybrids::cpu_linear_recurrence", mutates_args=(), device_types="cpu")
def _cpu_recurrence(a: torch.Tensor, x: torch.Tensor, h0: torch.Tensor | None) -> torch.Tensor:
    """(a, x (batch, L, dim), h0 (batch, dim) or None) -> h (batch, L, dim)."""
    a, x, h0 = cpp_build.contiguous(a, x, h0)
    batch, length, dim = x.shape
    h = torch.empty_like(x)
    cpp_build.function("linear_recurrence", "recurrence_forward", x.dtype)(
        *map(cpp_build.pointer, (a, x, h0, h)), *map(ctypes.c_int64, (batch, length, dim)), ctypes.c_int(torch.get_num_threads())
    )
    return h


@_cpu_recurrence.register_fake
def _(a, x, h0):
    return x.new_empty(x.shape)


@torch.library.custom_op("hybrids::cpu_linear_recurrence_backward", mutates_args=(), device_types="cpu")
def _cpu_recurrence_backward(a: torch.Tensor, h: torch.Tensor, h0: torch.Tensor | None, dh: torch.Tensor,
                             need_dh0: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of a, x and h0 (an empty tensor unless ``need_dh0``), from the states ``h``."""
    a, h, h0, dh = cpp_build.contiguous(a, h, h0, dh)
    batch, length, dim = h.shape
    da, dx = torch.empty_like(h), torch.empty_like(h)
    dh0 = torch.empty_like(h0) if h0 is not None and need_dh0 else None
    cpp_build.function("linear_recurrence", "recurrence_backward", h.dtype)(
        *map(cpp_build.pointer, (a, h, h0, dh, None, da, dx, dh0)), *map(ctypes.c_int64, (batch, length, dim)),
        ctypes.c_int(torch.get_num_threads()),
    )
    return da, dx, dh0 if dh0 is not None else h.new_empty(0)


@_cpu_recurrence_backward.register_fake
def _(a, h, h0, dh, need_dh0):
    return h.new_empty(h.shape), h.new_empty(h.shape), h0.new_empty(h0.shape) if h0 is not None and need_dh0 else h.new_empty(0)


def _recurrence_setup(ctx, inputs, output):
    a, x, h0 = inputs
    ctx.save_for_backward(a, output, h0)
    ctx.need_dh0 = h0 is not None and ctx.needs_input_grad[2]


def _recurrence_backward(ctx, dh):
    a, h, h0 = ctx.saved_tensors
    da, dx, dh0 = torch.ops.hybrids.cpu_linear_recurrence_backward(a, h, h0, dh, ctx.need_dh0)
    return da, dx, dh0 if ctx.need_dh0 else None


_cpu_recurrence.register_autograd(_recurrence_backward, setup_context=_recurrence_setup)
