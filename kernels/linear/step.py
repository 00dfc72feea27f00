"""One decoding step of linear attention: the recurrence of :mod:`hybrids.kernels.linear` for a
single token, with the state kept by the caller and updated in place (as
``selective_state_update`` and ``causal_conv1d_update`` do)::

    state = exp(g) * state + k v^T          (g: a scalar per head scales all of the state,
    o     = scale * q^T state                one per key dimension scales its rows)

Shapes: ``q, k`` (batch, heads, K); ``v`` (batch, heads, V); ``g`` None, (batch, heads) or
(batch, heads, K); ``state`` (batch, heads, K, V). Returns ``o`` (batch, heads, V) in ``q``'s
dtype. The arithmetic runs in float32 (float64 if ``q`` or ``state`` is float64); ``state``
keeps its own dtype (keep it in float32 for half-precision models, as the parallel op returns
it). Stepping L tokens from a state gives ``linear_attention`` of them, started from that state,
and its final state.
"""

from __future__ import annotations

import torch

from hybrids.kernels.dtypes import at_least_float32
from hybrids.kernels.linear.common import check_step_arguments, resolve_scale


def linear_attention_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None,
    state: torch.Tensor,
    scale: float | None = None,
) -> torch.Tensor:
    """One token (module docstring): ``state`` updated in place, ``o`` (batch, heads, V) returned."""
    check_step_arguments(q, k, v, g, state, scale)
    scale = resolve_scale(scale, q.shape[-1])
    work = at_least_float32(torch.promote_types(q.dtype, state.dtype))
    new = state.to(work)
    if g is not None:
        decay = g.to(work).exp()
        new = new * (decay[..., None, None] if g.ndim == 2 else decay[..., None])
    new = new + k.to(work)[..., :, None] * v.to(work)[..., None, :]
    state.copy_(new)
    o = scale * (q.to(work)[..., None, :] @ new).squeeze(-2)
    return o.to(q.dtype)
