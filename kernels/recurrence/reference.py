"""The ``"reference"`` backend of the linear recurrence: a loop over time, autograd for the
gradients. The ground truth of the tests; O(L) small operations, not a path for training."""

from __future__ import annotations

import torch

from hybrids.kernels.dtypes import at_least_float32


def linear_recurrence_reference(a: torch.Tensor, x: torch.Tensor, initial_state: torch.Tensor | None) -> torch.Tensor:
    dtype_in, work = x.dtype, at_least_float32(x.dtype)
    a, x = a.to(work), x.to(work)
    h = initial_state.to(work) if initial_state is not None else x.new_zeros(x.shape[0], x.shape[2])
    states = []
    for t in range(x.shape[1]):
        h = a[:, t] * h + x[:, t]  # (batch, dim)
        states.append(h)
    out = torch.stack(states, dim=1) if states else x.new_zeros(x.shape)
    return out.to(dtype_in)
