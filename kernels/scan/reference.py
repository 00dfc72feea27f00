"""The ``"reference"`` backend of the selective scan: the recurrence step by step in plain
PyTorch, differentiated by autograd. It materialises (batch, dim, L, d_state) tensors: the
ground truth of the tests, not a path for training."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hybrids.kernels.dtypes import at_least_float32
from hybrids.kernels.scan.common import grouped


def selective_scan_reference(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, return_last_state=False,
    initial_state=None,
):
    """The recurrence step by step from ``initial_state`` (zeros if None), autograd for gradients."""
    dtype_in, work = u.dtype, at_least_float32(u.dtype)
    u, delta, A = u.to(work), delta.to(work), A.to(work)
    if delta_bias is not None:
        delta = delta + delta_bias.to(work)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    batch, dim, length = u.shape
    # Each channel reads its group's B and C: (batch, groups, N, L) -> (batch, dim, N, L).
    B = grouped(B).to(work).repeat_interleave(dim // grouped(B).shape[1], dim=1)
    C = grouped(C).to(work).repeat_interleave(dim // grouped(C).shape[1], dim=1)
    decay = torch.exp(delta[:, :, :, None] * A[:, None, :])  # (batch, dim, L, N)
    drive = (delta * u)[:, :, :, None] * B.transpose(2, 3)  # (batch, dim, L, N)
    h = u.new_zeros(batch, dim, A.shape[1]) if initial_state is None else initial_state.to(work)
    ys = []
    # unbind, not decay[:, :, t]: autograd turns each indexing into a zero-filled
    # (batch, dim, L, N) gradient, which made the backward ~200x slower.
    for decay_t, drive_t, c_t in zip(decay.unbind(2), drive.unbind(2), C.unbind(3)):
        h = decay_t * h + drive_t
        ys.append((h * c_t).sum(-1))  # (batch, dim)
    y = torch.stack(ys, dim=2) if ys else u.new_zeros(batch, dim, 0)
    if D is not None:
        y = y + u * D.to(work)[:, None]
    if z is not None:
        y = y * F.silu(z.to(work))
    out = y.to(dtype_in)
    return (out, h) if return_last_state else out
