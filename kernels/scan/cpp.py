"""The ``"cpu"`` backend of :func:`hybrids.kernels.scan`: compiled C++ loops.

``csrc/selective_scan.cpp`` runs the recurrence for one (batch, channel) pair per OpenMP
iteration with the d_state axis vectorised. The forward keeps the state only at chunk
boundaries, every ``CHUNK`` steps: (batch, dim, L / CHUNK, d_state). The backward recomputes one
chunk of states at a time and runs the adjoint recurrence backwards through it, so no
(batch, dim, L, d_state) tensor exists in either direction. dB and dC sum over the channels of a
group, which different threads own: each thread accumulates into its own copy, summed after.
An initial state is where the forward loop starts (zeros without one); the adjoint the backward
carries past the first step, ``exp(delta[0] A) g[0]``, is its gradient.
"""

from __future__ import annotations

import ctypes

import torch

from hybrids.kernels import cpp_build
from hybrids.kernels.scan.common import gated_scan

# Steps between saved states. The backward's per-chunk buffer is 2 * CHUNK * d_state values
# (8 KiB at d_state 16 in float32): it stays in L1 while the adjoint loop walks back over it.
CHUNK = 32


def selective_scan_cpu(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, initial_state=None):
    return gated_scan(
        _scan, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, initial_state=initial_state
    )


def _scan(u, delta, A, B, C, h0=None):
    # (batch, G, L, N): the d_state values of one step side by side, for the inner loop. The
    # transposes are ordinary torch operations, so autograd (and the compiler) handle their part.
    y, last, _ = torch.ops.hybrids.cpu_scan(u, delta, A, B.transpose(2, 3), C.transpose(2, 3), h0)
    return y, last


# The kernels are torch custom operators (torch.library), not autograd.Functions around ctypes
# calls: torch.compile treats an operator as one opaque node with a known output shape (the fake
# implementations below) and compiles the code around it, where a ctypes call would end its graph
# (a graph break at every call, both ways: Mamba gained only 1.2x from compiling before).


@torch.library.custom_op("hybrids::cpu_scan", mutates_args=(), device_types="cpu")
def _cpu_scan(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, Bt: torch.Tensor, Ct: torch.Tensor, h0: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(u, delta (batch, dim, L), A (dim, N), Bt, Ct (batch, G, L, N), h0 (batch, dim, N) or None)
    -> y (batch, dim, L), last state (batch, dim, N), the states at chunk boundaries (batch, dim,
    L / CHUNK, N), which the backward starts from."""
    batch, dim, length = u.shape
    groups, d_state = Bt.shape[1], A.shape[1]
    u, delta, A, Bt, Ct, h0 = cpp_build.contiguous(u, delta, A, Bt, Ct, h0)
    y = torch.empty_like(u)
    last = u.new_empty(batch, dim, d_state)
    checkpoints = u.new_empty(batch, dim, -(-length // CHUNK), d_state)
    cpp_build.function("selective_scan", "scan_forward", u.dtype)(
        *map(cpp_build.pointer, (u, delta, A, Bt, Ct, h0, y, last, checkpoints)),
        *map(ctypes.c_int64, (batch, dim, groups, length, d_state, CHUNK)),
        ctypes.c_int(torch.get_num_threads()),
    )
    return y, last, checkpoints


# Fakes give the shapes and the (contiguous) layout the kernels return, for the compiler.
@_cpu_scan.register_fake
def _(u, delta, A, Bt, Ct, h0):
    batch, dim, length = u.shape
    d_state = A.shape[1]
    return u.new_empty(u.shape), u.new_empty(batch, dim, d_state), u.new_empty(batch, dim, -(-length // CHUNK), d_state)


@torch.library.custom_op("hybrids::cpu_scan_backward", mutates_args=(), device_types="cpu")
def _cpu_scan_backward(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, Bt: torch.Tensor, Ct: torch.Tensor,
    checkpoints: torch.Tensor, dy: torch.Tensor, dlast: torch.Tensor, need_dh0: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of u, delta, A, Bt, Ct and h0 (an empty tensor unless ``need_dh0``)."""
    batch, dim, length = u.shape
    groups, d_state = Bt.shape[1], A.shape[1]
    threads = torch.get_num_threads()
    u, delta, A, Bt, Ct, checkpoints, dy, dlast = cpp_build.contiguous(u, delta, A, Bt, Ct, checkpoints, dy, dlast)
    du, ddelta = torch.empty_like(u), torch.empty_like(u)
    dA_part = u.new_empty(batch, dim, d_state)
    dh0 = u.new_empty(batch, dim, d_state) if need_dh0 else None
    # dB and dC sum over the channels of a group, which different threads own: one copy each.
    dB_part = u.new_zeros(threads, batch, groups, length, d_state)
    dC_part = u.new_zeros(threads, batch, groups, length, d_state)
    cpp_build.function("selective_scan", "scan_backward", u.dtype)(
        *map(cpp_build.pointer, (u, delta, A, Bt, Ct, checkpoints, dy, dlast, du, ddelta, dA_part, dh0, dB_part, dC_part)),
        *map(ctypes.c_int64, (batch, dim, groups, length, d_state, CHUNK)),
        ctypes.c_int(threads),
    )
    return du, ddelta, dA_part.sum(0), dB_part.sum(0), dC_part.sum(0), dh0 if need_dh0 else u.new_empty(0)


@_cpu_scan_backward.register_fake
def _(u, delta, A, Bt, Ct, checkpoints, dy, dlast, need_dh0):
    batch, dim, _ = u.shape
    dh0 = u.new_empty(batch, dim, A.shape[1]) if need_dh0 else u.new_empty(0)
    return u.new_empty(u.shape), u.new_empty(u.shape), A.new_empty(A.shape), Bt.new_empty(Bt.shape), Ct.new_empty(Ct.shape), dh0


def _scan_setup(ctx, inputs, output):
    u, delta, A, Bt, Ct, h0 = inputs
    ctx.save_for_backward(u, delta, A, Bt, Ct, output[2])
    ctx.need_dh0 = h0 is not None and ctx.needs_input_grad[5]


def _scan_backward(ctx, dy, dlast, dcheckpoints):
    u, delta, A, Bt, Ct, checkpoints = ctx.saved_tensors
    du, ddelta, dA, dBt, dCt, dh0 = torch.ops.hybrids.cpu_scan_backward(
        u, delta, A, Bt, Ct, checkpoints, dy, dlast, ctx.need_dh0)
    return du, ddelta, dA, dBt, dCt, dh0 if ctx.need_dh0 else None


_cpu_scan.register_autograd(_scan_backward, setup_context=_scan_setup)
