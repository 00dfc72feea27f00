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
from torch.autograd.function import once_differentiable

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
    return _CppScan.apply(u, delta, A, B, C, h0)


class _CppScan(torch.autograd.Function):
    """(u, delta, A, B (batch, G, N, L), C, h0 (batch, dim, N) or None) -> y (batch, dim, L),
    last state (batch, dim, N)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, h0=None):
        batch, dim, length = u.shape
        groups, d_state = B.shape[1], A.shape[1]
        u, delta, A = u.contiguous(), delta.contiguous(), A.contiguous()
        h0 = h0.contiguous() if h0 is not None else None
        # (batch, G, L, N): the d_state values of one step side by side, for the inner loop.
        Bt, Ct = B.transpose(2, 3).contiguous(), C.transpose(2, 3).contiguous()
        y = torch.empty_like(u)
        last = u.new_empty(batch, dim, d_state)
        n_chunks = -(-length // CHUNK)
        checkpoints = u.new_empty(batch, dim, n_chunks, d_state)
        forward = cpp_build.function("selective_scan", "scan_forward", u.dtype)
        forward(
            *map(cpp_build.pointer, (u, delta, A, Bt, Ct, h0, y, last, checkpoints)),
            *map(ctypes.c_int64, (batch, dim, groups, length, d_state, CHUNK)),
            ctypes.c_int(torch.get_num_threads()),
        )
        ctx.save_for_backward(u, delta, A, Bt, Ct, checkpoints)
        return y, last

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, dlast):
        u, delta, A, Bt, Ct, checkpoints = ctx.saved_tensors
        batch, dim, length = u.shape
        groups, d_state = Bt.shape[1], A.shape[1]
        threads = torch.get_num_threads()
        dy = dy.contiguous() if dy is not None else torch.zeros_like(u)
        dlast = dlast.contiguous() if dlast is not None else None
        du, ddelta = torch.empty_like(u), torch.empty_like(u)
        dA_part = u.new_empty(batch, dim, d_state)
        dh0 = u.new_empty(batch, dim, d_state) if ctx.needs_input_grad[5] else None
        dB_part = u.new_zeros(threads, batch, groups, length, d_state)
        dC_part = u.new_zeros(threads, batch, groups, length, d_state)
        backward = cpp_build.function("selective_scan", "scan_backward", u.dtype)
        backward(
            *map(cpp_build.pointer, (u, delta, A, Bt, Ct, checkpoints, dy, dlast, du, ddelta, dA_part, dh0, dB_part, dC_part)),
            *map(ctypes.c_int64, (batch, dim, groups, length, d_state, CHUNK)),
            ctypes.c_int(threads),
        )
        dB = dB_part.sum(0).transpose(2, 3)
        dC = dC_part.sum(0).transpose(2, 3)
        return du, ddelta, dA_part.sum(0), dB, dC, dh0
