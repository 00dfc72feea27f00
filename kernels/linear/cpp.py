"""The ``"cpu"`` backend of :func:`hybrids.kernels.linear_attention`: the recurrence in compiled
C++ (``csrc/linear_attention.cpp``), a torch custom operator with its backward.

One (batch, head) pair per OpenMP iteration; the forward keeps the (K, V) state only at chunk
boundaries, every ``CHUNK`` steps, and the backward recomputes one chunk of states at a time, so
no (batch, heads, L, K, V) tensor exists in either direction. Where the chunked PyTorch form
spends most of a CPU step on its (C, C) score and decay matrices ((C, C, K) for a vector decay),
the recurrence does K * V multiply-adds per step and nothing else.
"""

from __future__ import annotations

import ctypes

import torch

from hybrids.kernels import cpp_build
from hybrids.kernels.dtypes import at_least_float32
from hybrids.kernels.linear.common import resolve_scale

# Steps between saved states; the backward's buffer holds CHUNK + 1 states of (K, V).
CHUNK = 32
_DECAY = {None: 0, 3: 1, 4: 2}  # g's number of dimensions -> the kernel's decay form


def linear_attention_cpu(q, k, v, g=None, scale=None, initial_state=None, output_final_state=False):
    """Linear attention (hybrids.kernels.linear) on the C++ recurrence; arguments checked and ``g``
    clamped by the caller; ``scale`` None is ``K ** -0.5``."""
    scale = resolve_scale(scale, q.shape[-1])
    work = at_least_float32(q.dtype)
    g = None if g is None else g.to(work)
    h0 = None if initial_state is None else initial_state.to(work)
    o, last, _ = torch.ops.hybrids.cpu_linear_attention(q.to(work), k.to(work), v.to(work), g, h0, float(scale))
    o = o.to(q.dtype)
    return (o, last) if output_final_state else o


def _decay_form(g: torch.Tensor | None) -> int:
    return _DECAY[None if g is None else g.ndim]


@torch.library.custom_op("hybrids::cpu_linear_attention", mutates_args=(), device_types="cpu")
def _cpu_linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor | None,
                          h0: torch.Tensor | None, scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k (B, H, L, K), v (B, H, L, V), g None or (B, H, L) or (B, H, L, K), h0 (B, H, K, V) or
    None -> o (B, H, L, V), the last state (B, H, K, V), the states at chunk starts."""
    batch, heads, length, dk = q.shape
    dv = v.shape[-1]
    q, k, v, g, h0 = cpp_build.contiguous(q, k, v, g, h0)
    o = q.new_empty(batch, heads, length, dv)
    last = q.new_empty(batch, heads, dk, dv)
    checkpoints = q.new_empty(batch, heads, -(-length // CHUNK), dk, dv)
    cpp_build.function("linear_attention", "linear_attention_forward", q.dtype)(
        *map(cpp_build.pointer, (q, k, v, g)), ctypes.c_int(_decay_form(g)), cpp_build.pointer(h0),
        ctypes.c_double(scale), *map(cpp_build.pointer, (o, last, checkpoints)),
        *map(ctypes.c_int64, (batch * heads, length, dk, dv, CHUNK)), ctypes.c_int(torch.get_num_threads()),
    )
    return o, last, checkpoints


@_cpu_linear_attention.register_fake
def _(q, k, v, g, h0, scale):
    batch, heads, length, dk = q.shape
    dv = v.shape[-1]
    return (q.new_empty(batch, heads, length, dv), q.new_empty(batch, heads, dk, dv),
            q.new_empty(batch, heads, -(-length // CHUNK), dk, dv))


@torch.library.custom_op("hybrids::cpu_linear_attention_backward", mutates_args=(), device_types="cpu")
def _cpu_linear_attention_backward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor | None, scale: float,
    checkpoints: torch.Tensor, do: torch.Tensor, dlast: torch.Tensor, need_dh0: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of q, k, v, g and h0 (empty tensors for no decay, or h0 unless ``need_dh0``)."""
    batch, heads, length, dk = q.shape
    dv = v.shape[-1]
    q, k, v, g, checkpoints, do, dlast = cpp_build.contiguous(q, k, v, g, checkpoints, do, dlast)
    dq, dk_, dv_ = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    dg = torch.empty_like(g) if g is not None else None
    dh0 = q.new_empty(batch, heads, dk, dv) if need_dh0 else None
    cpp_build.function("linear_attention", "linear_attention_backward", q.dtype)(
        *map(cpp_build.pointer, (q, k, v, g)), ctypes.c_int(_decay_form(g)), ctypes.c_double(scale),
        *map(cpp_build.pointer, (checkpoints, do, dlast, dq, dk_, dv_, dg, dh0)),
        *map(ctypes.c_int64, (batch * heads, length, dk, dv, CHUNK)), ctypes.c_int(torch.get_num_threads()),
    )
    # An operator's outputs may not alias one another: a fresh empty tensor for each absent one.
    return dq, dk_, dv_, dg if dg is not None else q.new_empty(0), dh0 if dh0 is not None else q.new_empty(0)


@_cpu_linear_attention_backward.register_fake
def _(q, k, v, g, scale, checkpoints, do, dlast, need_dh0):
    batch, heads, _, dk = q.shape
    return (q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape),
            g.new_empty(g.shape) if g is not None else q.new_empty(0),
            q.new_empty(batch, heads, dk, v.shape[-1]) if need_dh0 else q.new_empty(0))


def _setup(ctx, inputs, output):
    q, k, v, g, h0, scale = inputs
    ctx.save_for_backward(q, k, v, g, output[2])
    ctx.scale, ctx.has_g = scale, g is not None
    ctx.need_dh0 = h0 is not None and ctx.needs_input_grad[4]


def _backward(ctx, do, dlast, dcheckpoints):
    q, k, v, g, checkpoints = ctx.saved_tensors
    dq, dk, dv, dg, dh0 = torch.ops.hybrids.cpu_linear_attention_backward(
        q, k, v, g, ctx.scale, checkpoints, do, dlast, ctx.need_dh0)
    return dq, dk, dv, dg if ctx.has_g else None, dh0 if ctx.need_dh0 else None, None


_cpu_linear_attention.register_autograd(_backward, setup_context=_setup)
