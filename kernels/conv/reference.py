"""The ``"reference"`` backend of the causal convolution: ``F.conv1d`` with ``groups=dim`` on the
input preceded by its initial states (or zeros), differentiated by autograd."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hybrids.kernels.conv.taps import activate, work_dtype


def causal_conv1d_reference(x, weight, bias, activation, initial_states=None):
    work = work_dtype(x, weight)
    dim, width = weight.shape
    if initial_states is None:
        history = F.pad(x.to(work), (width - 1, 0))
    else:
        history = torch.cat((initial_states.to(work), x.to(work)), dim=2)
    y = F.conv1d(history, weight.to(work)[:, None, :], None if bias is None else bias.to(work), groups=dim)
    return activate(y, activation).to(x.dtype)
