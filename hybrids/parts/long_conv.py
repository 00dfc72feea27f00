"""Causal convolutions whose kernel is as long as the sequence: what Hyena and BaseConv share.

Per channel c, with kernel ``h`` (channels, L) and the skip weight ``D`` (channels,)::

    y[c, t] = sum_{s <= t} h[c, t - s] u[c, s] + D[c] u[c, t]

Training runs it through ``hybrids.kernels.fft_conv``: the FFT (O(L log L)), or on the CPU for
sequences of at most 128 the direct sum, which is faster there. Such a filter has
no recurrent form unless it is distilled into one, so decoding keeps the whole history of the
convolution's inputs: the state after L tokens is ``channels * L`` numbers, like attention's
cache, and each step costs O(L). ``long_conv`` continues from a history in parallel (a chunked
prefill convolves the history and the chunk together and keeps the chunk's outputs);
``long_conv_step`` adds one token.
"""

from __future__ import annotations

import torch
from torch import nn

from hybrids.kernels import fft_conv


def long_conv(u: torch.Tensor, kernel: torch.Tensor, D: torch.Tensor | None,
              history: torch.Tensor | None = None) -> torch.Tensor:
    """u (batch, channels, L) after ``history`` (batch, channels, T) or nothing -> y (batch,
    channels, L). ``kernel`` (channels, >= T + L): its first T + L taps are used."""
    before = 0 if history is None else history.shape[-1]
    if before:
        u = torch.cat((history.to(u.dtype), u), dim=-1)
    length = u.shape[-1]
    y = fft_conv(u, kernel[:, :length], D)
    return y[..., before:] if before else y


def long_conv_step(history: torch.Tensor, kernel: torch.Tensor, D: torch.Tensor | None) -> torch.Tensor:
    """The output at the last position of ``history`` (batch, channels, T), the current input
    included: (batch, channels). ``kernel`` (channels, >= T)."""
    length = history.shape[-1]
    taps = kernel[:, :length].flip(-1).to(history.dtype)  # taps[:, s] multiplies the input at s
    y = (history * taps).sum(-1)
    if D is not None:
        y = y + D.to(history.dtype) * history[..., -1]
    return y


class ExplicitFilter(nn.Module):
    """A kernel stored tap by tap: ``weight`` (channels, l_max), N(0, 1 / l_max) at
    initialisation (so that a sum over l_max taps keeps its input's scale). Sequences longer
    than ``l_max`` have no kernel: asking for one is a ValueError."""

    def __init__(self, channels: int, l_max: int) -> None:
        super().__init__()
        if isinstance(l_max, bool) or not isinstance(l_max, int) or l_max < 1:
            raise ValueError(f"l_max: must be a positive integer (the filter's taps), got {l_max!r}")
        self.l_max = l_max
        self.weight = nn.Parameter(torch.randn(channels, l_max) / l_max**0.5)

    def forward(self, length: int) -> torch.Tensor:
        if length > self.l_max:
            raise ValueError(f"x: {length} tokens need a kernel of {length} taps; this explicit filter has "
                             f"l_max={self.l_max} (raise l_max, or use the implicit filter, defined at any length)")
        return self.weight[:, :length]


class DecodeKernel:
    """A filter's taps for decoding, computed without gradients and extended by doubling as the
    sequence grows (the first m taps never change with the length asked for).
    ``get(filter, length)`` -> (channels, >= length), where ``filter(n)`` gives the first n taps
    and ``filter.l_max`` caps the doubling of an explicit filter.

    The taps are recomputed when a parameter is replaced or updated through autograd's view
    (its ``_version``), and always after :meth:`reset`, which the mixers call at the start of
    every decoding session (``init_state``, ``prefill``): an in-place update through ``.data``
    leaves no trace, so a cache kept across sessions could serve old weights."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._key: tuple | None = None
        self._kernel: torch.Tensor | None = None

    def get(self, filter: nn.Module, length: int) -> torch.Tensor:
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in filter.parameters())
        if self._key != key or self._kernel is None or self._kernel.shape[-1] < length:
            have = 0 if self._kernel is None or self._key != key else self._kernel.shape[-1]
            size = max(length, 2 * have, 16)
            if isinstance(filter, ExplicitFilter):
                size = max(length, min(size, filter.l_max))  # past l_max: the filter's own error
            with torch.no_grad():
                self._kernel = filter(size)
            self._key = key
        return self._kernel
