"""The ``"reference"`` backend of linear attention: the recurrence step by step in plain
PyTorch, differentiated by autograd. A Python loop over the L positions keeps one (K, V) state
per head, and autograd keeps every one of them for the backward, (batch, heads, L, K, V) in all:
the ground truth of the tests, not a path for training."""

from __future__ import annotations

import torch

from hybrids.kernels.dtypes import at_least_float32
from hybrids.kernels.linear.common import empty_output, resolve_scale


def linear_attention_reference(q, k, v, g=None, scale=None, initial_state=None, output_final_state=False):
    """``S_t = exp(g_t) * S_{t-1} + k_t v_t^T``, ``o_t = scale * q_t^T S_t``, one t at a time."""
    dtype_in, work = q.dtype, at_least_float32(q.dtype)
    batch, heads, length, dk = q.shape
    dv = v.shape[-1]
    scale = resolve_scale(scale, dk)
    q, k, v = q.to(work), k.to(work), v.to(work)
    state = q.new_zeros(batch, heads, dk, dv) if initial_state is None else initial_state.to(work)
    if g is None:
        decays = [None] * length
    else:
        # A scalar decay scales the whole state, a vector one scales its rows (one per key dim).
        decay = g.to(work).exp()
        decays = (decay[..., None, None] if g.ndim == 3 else decay[..., None]).unbind(2)
    outs = []
    # unbind, not q[:, :, t]: autograd turns each indexing into a zero-filled full-size gradient.
    for q_t, k_t, v_t, a_t in zip(q.unbind(2), k.unbind(2), v.unbind(2), decays):
        if a_t is not None:
            state = a_t * state
        state = state + k_t[..., :, None] * v_t[..., None, :]  # (batch, heads, K, V)
        outs.append(scale * (q_t[..., None, :] @ state).squeeze(-2))  # (batch, heads, V)
    o = torch.stack(outs, dim=2) if outs else empty_output(q, k, v)
    o = o.to(dtype_in)
    return (o, state) if output_final_state else o
