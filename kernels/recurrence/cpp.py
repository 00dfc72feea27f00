"""The ``"cpu"`` backend of the linear recurrence: ``csrc/linear_recurrence.cpp`` through ctypes.

The forward keeps every state (it is the output, (batch, L, dim)); the backward reads it for
``da[t] = g[t] h[t-1]`` and runs the adjoint recurrence backwards, so nothing is recomputed.
"""

from __future__ import annotations

import ctypes

import torch
from torch.autograd.function import once_differentiable

from hybrids.kernels import cpp_build
from hybrids.kernels.dtypes import at_least_float32


def linear_recurrence_cpu(a: torch.Tensor, x: torch.Tensor, initial_state: torch.Tensor | None) -> torch.Tensor:
    work = at_least_float32(x.dtype)
    h0 = initial_state.to(work) if initial_state is not None else None
    return _CppRecurrence.apply(a.to(work), x.to(work), h0).to(x.dtype)


class _CppRecurrence(torch.autograd.Function):
    """(a, x (batch, L, dim), h0 (batch, dim) or None) -> h (batch, L, dim)."""

    @staticmethod
    def forward(ctx, a, x, h0):
        a, x = a.contiguous(), x.contiguous()
        h0 = h0.contiguous() if h0 is not None else None
        batch, length, dim = x.shape
        h = torch.empty_like(x)
        cpp_build.function("linear_recurrence", "recurrence_forward", x.dtype)(
            *map(cpp_build.pointer, (a, x, h0, h)), *map(ctypes.c_int64, (batch, length, dim)), ctypes.c_int(torch.get_num_threads())
        )
        ctx.save_for_backward(a, h, h0)
        return h

    @staticmethod
    @once_differentiable
    def backward(ctx, dh):
        a, h, h0 = ctx.saved_tensors
        batch, length, dim = h.shape
        dh = dh.contiguous()
        da, dx = torch.empty_like(h), torch.empty_like(h)
        dh0 = torch.empty_like(h0) if h0 is not None and ctx.needs_input_grad[2] else None
        cpp_build.function("linear_recurrence", "recurrence_backward", h.dtype)(
            *map(cpp_build.pointer, (a, h, h0, dh, None, da, dx, dh0)), *map(ctypes.c_int64, (batch, length, dim)),
            ctypes.c_int(torch.get_num_threads()),
        )
        return da, dx, dh0
