"""The ``"torch"`` backend of the causal convolution: one multiply-add per tap, forward and a
hand-written backward, plus the decode step :func:`causal_conv1d_update_torch`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable


def work_dtype(x: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The arithmetic runs in the wider of the input's and the weight's dtypes."""
    return torch.promote_types(x.dtype, weight.dtype)


def activate(y: torch.Tensor, activation: str | None) -> torch.Tensor:
    return y if activation is None else F.silu(y)


def taps(window: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The convolution of ``window`` (batch, dim, width - 1 + n) without padding: (batch, dim, n).

    One multiply-add per tap. This is what ``F.conv1d(..., groups=dim)`` computes, but on the
    2-core development machine (torch 2.13+cpu, shared with other jobs) the depthwise
    ``conv1d`` took 10-100x longer in float64 and, with 2 threads under load, 40-70 ms for a
    forward that the taps do in about 1 ms (best of 15, batch 64, dim 128, L 64); single-threaded
    the two were within 2x of each other either way.
    """
    width = weight.shape[1]
    n = window.shape[2] - (width - 1)
    out = window[:, :, width - 1 :] * weight[:, width - 1, None]  # the current input's tap
    for k in range(width - 1):
        out = torch.addcmul(out, window[:, :, k : k + n], weight[:, k, None])
    return out if bias is None else out + bias[:, None]


class _CausalTaps(torch.autograd.Function):
    """The causal convolution by taps over ``history`` = (initial_states, x), with a hand-written
    backward, also by taps.

    Autograd through :func:`taps` would allocate a zero-filled input-sized gradient per tap
    (slice backward) and sum them; here each gradient is one pass of ``width`` multiply-adds.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, initial_states):
        # (batch, dim, width - 1 + L): the inputs before the start are the initial states, or 0.
        if initial_states is None:
            padded = F.pad(x, (weight.shape[1] - 1, 0))
        else:
            padded = torch.cat((initial_states, x), dim=2)
        ctx.save_for_backward(padded, weight)
        ctx.has_bias = bias is not None
        return taps(padded, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        padded, weight = ctx.saved_tensors
        width, length = weight.shape[1], grad.shape[2]
        grad_x = grad_weight = grad_bias = grad_init = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[3]:
            # padded[p] reaches out[p - k] through tap k (when 0 <= p - k < L): correlate the
            # output gradient, zero-padded on both sides, with the taps.
            span = width - 1 + length
            grad_pad = F.pad(grad, (width - 1, width - 1))
            grad_padded = grad_pad[:, :, : span] * weight[:, width - 1, None]
            for k in range(width - 1):
                start = width - 1 - k
                grad_padded = torch.addcmul(grad_padded, grad_pad[:, :, start : start + span], weight[:, k, None])
            grad_x = grad_padded[:, :, width - 1 :] if ctx.needs_input_grad[0] else None
            grad_init = grad_padded[:, :, : width - 1] if ctx.needs_input_grad[3] else None
        if ctx.needs_input_grad[1]:
            grad_weight = torch.stack([(grad * padded[:, :, k : k + length]).sum((0, 2)) for k in range(width)], dim=1)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum((0, 2))
        return grad_x, grad_weight, grad_bias, grad_init


def causal_conv1d_torch(x, weight, bias, activation, initial_states=None):
    """x (batch, dim, L) -> (batch, dim, L); ``initial_states`` (batch, dim, width - 1) or None."""
    work = work_dtype(x, weight)
    init = None if initial_states is None else initial_states.to(work)
    y = _CausalTaps.apply(x.to(work), weight.to(work), None if bias is None else bias.to(work), init)
    return activate(y, activation).to(x.dtype)


def causal_conv1d_update_torch(x, conv_state, weight, bias, activation):
    """Decode step: x (batch, dim) or (batch, dim, seqlen); ``conv_state`` updated in place."""
    work = work_dtype(x, weight)
    width, state_len = weight.shape[1], conv_state.shape[2]
    tokens = x if x.ndim == 3 else x[:, :, None]  # (batch, dim, seqlen)
    seqlen = tokens.shape[2]
    history = torch.cat((conv_state.to(work), tokens.to(work)), dim=2)  # (batch, dim, state_len + seqlen)
    # Keep the newest state_len inputs (slicing from the end: a [-0:] slice would keep them all).
    conv_state.copy_(history[:, :, history.shape[2] - state_len :])
    window = history[:, :, history.shape[2] - (width - 1 + seqlen) :]  # exactly what seqlen outputs read
    y = activate(taps(window, weight.to(work), None if bias is None else bias.to(work)), activation)
    return (y if x.ndim == 3 else y[:, :, 0]).to(x.dtype)
