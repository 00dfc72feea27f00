"""Depthwise causal 1-D convolution, with the contract of the causal-conv1d package (Tri Dao).

For every batch ``b``, channel ``d`` and position ``t``, with ``width = weight.shape[1]``::

    out[b, d, t] = act(bias[d] + sum_k weight[d, k] * x[b, d, t - (width - 1) + k])

where inputs before the start are zero, so ``out[t]`` reads ``x[t - width + 1 .. t]`` only (the
last tap, ``weight[:, -1]``, multiplies the current input). ``act`` is the identity
(``activation=None``) or SiLU (``"silu"`` / ``"swish"``). This is ``nn.Conv1d(dim, dim, width,
groups=dim, padding=width - 1)`` cut to the first L outputs, with the weight as ``(dim, width)``.

- ``causal_conv1d(x, weight, bias=None, activation=None)``: ``x`` (batch, dim, L) -> (batch,
  dim, L).
- ``causal_conv1d_update(x, conv_state, weight, bias=None, activation=None)``: decoding. ``x``
  is one token (batch, dim) or a few (batch, dim, seqlen); ``conv_state`` (batch, dim,
  state_len) with ``state_len >= width - 1`` holds the latest inputs, oldest first. The new
  inputs are appended and ``conv_state`` keeps the last ``state_len`` of them, updated in place;
  the output has ``x``'s shape. Stepping a sequence through a zero state gives
  ``causal_conv1d`` of it.

Outputs have ``x``'s dtype; the arithmetic runs in the wider of ``x``'s and ``weight``'s dtypes.

Backends (``backend=`` argument, else the ``HYBRIDS_CAUSAL_CONV1D_BACKEND`` environment variable,
else the default):

- ``"torch"``: plain PyTorch on a left-padded input, one multiply-add per tap (the sum that
  ``F.conv1d(..., groups=dim)`` computes, faster here: see ``_taps``), with a hand-written
  backward by taps too. Any device, dtype and width.
- ``"extension"``: the causal-conv1d package's CUDA kernels (``pip install -e '.[cuda]'`` on a
  CUDA machine). CUDA tensors, widths 2 to 4, float32/float16/bfloat16 only.

``backend=None``: ``"extension"`` where it is installed and can take the arguments, else
``"torch"``.
"""

from __future__ import annotations

import functools
import os

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from hybrids.kernels.selective_scan import BackendUnavailable

BACKENDS = ("torch", "extension")
BACKEND_ENV = "HYBRIDS_CAUSAL_CONV1D_BACKEND"
ACTIVATIONS = (None, "silu", "swish")
INSTALL_HINT = "install it with `pip install -e '.[cuda]'` on a CUDA machine"

# What the package's CUDA kernels accept.
_EXTENSION_WIDTHS = (2, 3, 4)
_EXTENSION_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def causal_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Depthwise causal convolution (module docstring): x (batch, dim, L) -> (batch, dim, L)."""
    if x.ndim != 3:
        raise ValueError(f"x: expected (batch, dim, L), got shape {tuple(x.shape)}")
    _check_weights(x.shape[1], weight, bias, activation)
    if _resolve_backend(backend, x, weight) == "extension":
        fn = _extension()[0]
        return fn(x, weight.contiguous(), None if bias is None else bias.contiguous(), activation=activation)
    return _causal_conv1d_torch(x, weight, bias, activation)


def causal_conv1d_update(
    x: torch.Tensor,
    conv_state: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """One or a few decoding steps (module docstring); ``conv_state`` is updated in place."""
    if x.ndim not in (2, 3):
        raise ValueError(f"x: expected (batch, dim) or (batch, dim, seqlen), got shape {tuple(x.shape)}")
    batch, dim = x.shape[:2]
    _check_weights(dim, weight, bias, activation)
    width = weight.shape[1]
    if conv_state.ndim != 3 or conv_state.shape[:2] != (batch, dim) or conv_state.shape[2] < width - 1:
        raise ValueError(
            f"conv_state: expected (batch={batch}, dim={dim}, state_len) with state_len >= width - 1 = "
            f"{width - 1}, got {tuple(conv_state.shape)}"
        )
    if _resolve_backend(backend, x, weight) == "extension":
        fn = _extension()[1]
        return fn(x, conv_state, weight.contiguous(), None if bias is None else bias.contiguous(), activation=activation)
    return _causal_conv1d_update_torch(x, conv_state, weight, bias, activation)


# --------------------------------------------------------------------------------------------
# PyTorch


def _work_dtype(x: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, weight.dtype)


def _activate(y: torch.Tensor, activation: str | None) -> torch.Tensor:
    return y if activation is None else F.silu(y)


def _taps(window: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
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
    """The causal convolution by taps with a hand-written backward, also by taps.

    Autograd through ``_taps`` would allocate a zero-filled input-sized gradient per tap (slice
    backward) and sum them; here each gradient is one pass of ``width`` multiply-adds.
    """

    @staticmethod
    def forward(ctx, x, weight, bias):
        padded = F.pad(x, (weight.shape[1] - 1, 0))  # (batch, dim, width - 1 + L)
        ctx.save_for_backward(padded, weight)
        ctx.has_bias = bias is not None
        return _taps(padded, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        padded, weight = ctx.saved_tensors
        width, length = weight.shape[1], grad.shape[2]
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            # x[s] reaches out[s + width - 1 - k] through tap k (if that is < L): correlate the
            # output gradient, zero-padded on the right, with the taps in reverse.
            grad_padded = F.pad(grad, (0, width - 1))
            grad_x = grad * weight[:, width - 1, None]
            for k in range(width - 1):
                lag = width - 1 - k
                grad_x = torch.addcmul(grad_x, grad_padded[:, :, lag : lag + length], weight[:, k, None])
        if ctx.needs_input_grad[1]:
            grad_weight = torch.stack(
                [(grad * padded[:, :, k : k + length]).sum((0, 2)) for k in range(width)], dim=1
            )
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum((0, 2))
        return grad_x, grad_weight, grad_bias


def _causal_conv1d_torch(x, weight, bias, activation):
    work = _work_dtype(x, weight)
    y = _CausalTaps.apply(x.to(work), weight.to(work), None if bias is None else bias.to(work))  # (batch, dim, L)
    return _activate(y, activation).to(x.dtype)


def _causal_conv1d_update_torch(x, conv_state, weight, bias, activation):
    work = _work_dtype(x, weight)
    width, state_len = weight.shape[1], conv_state.shape[2]
    tokens = x if x.ndim == 3 else x[:, :, None]  # (batch, dim, seqlen)
    seqlen = tokens.shape[2]
    history = torch.cat((conv_state.to(work), tokens.to(work)), dim=2)  # (batch, dim, state_len + seqlen)
    # Keep the newest state_len inputs (slicing from the end: a [-0:] slice would keep them all).
    conv_state.copy_(history[:, :, history.shape[2] - state_len :])
    window = history[:, :, history.shape[2] - (width - 1 + seqlen) :]  # exactly what seqlen outputs read
    y = _activate(_taps(window, weight.to(work), None if bias is None else bias.to(work)), activation)
    return (y if x.ndim == 3 else y[:, :, 0]).to(x.dtype)


# --------------------------------------------------------------------------------------------
# checks and dispatch


def _check_weights(dim: int, weight, bias, activation) -> None:
    if weight.ndim != 2 or weight.shape[0] != dim or weight.shape[1] < 1:
        hint = "; an nn.Conv1d weight (dim, 1, width) needs [:, 0, :]" if weight.ndim == 3 else ""
        raise ValueError(f"weight: expected (dim={dim}, width >= 1), got shape {tuple(weight.shape)}{hint}")
    if bias is not None and tuple(bias.shape) != (dim,):
        raise ValueError(f"bias: expected (dim={dim},), got shape {tuple(bias.shape)}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: unknown {activation!r}; use None, 'silu' or 'swish'")


@functools.cache
def _extension():
    """The package's (causal_conv1d_fn, causal_conv1d_update), or None where it is not installed."""
    try:
        from causal_conv1d import causal_conv1d_fn, causal_conv1d_update as update_fn
    except ImportError:
        return None
    return causal_conv1d_fn, update_fn


def unavailable_reason(backend: str, x: torch.Tensor, weight: torch.Tensor) -> str | None:
    """None if ``backend`` can take these tensors, else why not and how to fix it."""
    if backend == "torch":
        return None
    if _extension() is None:
        return f"the causal-conv1d package is not installed: {INSTALL_HINT}"
    if not x.is_cuda:
        return f"the causal-conv1d package's kernels need CUDA tensors, got {x.device}; use backend 'torch'"
    if weight.shape[1] not in _EXTENSION_WIDTHS:
        return f"the causal-conv1d package supports widths 2 to 4, got {weight.shape[1]}; use backend 'torch'"
    if x.dtype not in _EXTENSION_DTYPES:
        return f"the causal-conv1d package supports float32/float16/bfloat16, got {x.dtype}; use backend 'torch'"
    return None


def _resolve_backend(backend: str | None, x: torch.Tensor, weight: torch.Tensor) -> str:
    if backend is None:
        forced = os.environ.get(BACKEND_ENV)
        if not forced:
            # The import is tried on CUDA tensors only: a CPU run never loads the package.
            return "extension" if x.is_cuda and unavailable_reason("extension", x, weight) is None else "torch"
        if forced not in BACKENDS:
            raise ValueError(f"{BACKEND_ENV}: unknown backend {forced!r}; valid: {', '.join(BACKENDS)}")
        backend = forced
    elif backend not in BACKENDS:
        raise ValueError(f"backend: unknown {backend!r}; valid: {', '.join(BACKENDS)} (or None)")
    why_not = unavailable_reason(backend, x, weight)
    if why_not:
        raise BackendUnavailable(f"causal_conv1d backend {backend!r} cannot run here: {why_not}")
    return backend
