"""Hyena (Poli et al. 2023): long convolutions with implicit filters, interleaved with
multiplicative gates, after a short convolution.

For x (batch, L, d_model) and ``order`` N (2 in the paper's experiments)::

    x_0, x_1, ..., x_(N-1), v = split(short_conv(in_proj(x)))      # N + 1 streams of d_model
    for i = 1 .. N-1:   v = h_i * (v . x_i) + D_i . (v . x_i)     # long causal convolution
    y = out_proj(v . x_0)

``short_conv`` is a causal depthwise convolution of ``short_filter`` taps over all N + 1 streams
(3 in Hyena); each ``h_i`` (d_model, L) comes from :class:`~hybrids.parts.implicit_filter.ImplicitFilter`
(one network makes the N - 1 filters) and ``D_i`` is its per-channel skip weight (Hyena's filter
bias). Training convolves through the FFT in O(L log L).

The decode state is honest about what such a filter needs: the filters are as long as the
sequence and are not distilled into a recurrence here, so decoding keeps the whole history of each
long convolution's inputs, ``(N - 1) * d_model * L`` numbers after L tokens (growing like
attention's cache, O(L) work per step), plus the short convolution's last ``short_filter - 1``
inputs.

Compared with the published code (HazyResearch/safari ``HyenaOperator``, zoology ``Hyena``): one
head, no dropout inside the operator, and the filter's differences listed in
:mod:`hybrids.parts.implicit_filter`.
"""

from __future__ import annotations

import torch
from torch import nn

from hybrids.kernels import causal_conv1d, causal_conv1d_update
from hybrids.mixers.base import Mixer, State
from hybrids.mixers.state_size import StateSize
from hybrids.parts.implicit_filter import ImplicitFilter, check_filter_fits
from hybrids.parts.long_conv import DecodeKernel, long_conv, long_conv_step


class Hyena(Mixer):
    """Hyena operator (module docstring).

    Args:
        d_model: model width.
        l_max: the training length: the filter's positions run from t = 0 to 1 over it (longer
            sequences still work, with t > 1).
        order: N: N - 1 long convolutions and N gates (2 in Hyena's experiments).
        filter_order: hidden width of the filter network (64).
        emb_dim: positional features of the filter (odd, >= 3; 3 in zoology, 5 in safari's recall runs).
        filter_depth: hidden Linear -> Sine layers of the filter network after the first (2).
        frequency: initial frequency of the filter's Sine activations (1).
        short_filter: taps of the short convolution (3).
        modulate, fast_decay_pct, slow_decay_pct, target: the filter's exponential window.
        bias: biases in the input and output projections.
    """

    def __init__(
        self,
        d_model: int,
        l_max: int,
        order: int = 2,
        filter_order: int = 64,
        emb_dim: int = 3,
        filter_depth: int = 2,
        frequency: float = 1.0,
        short_filter: int = 3,
        modulate: bool = True,
        fast_decay_pct: float = 0.3,
        slow_decay_pct: float = 1.5,
        target: float = 1e-2,
        bias: bool = True,
    ) -> None:
        super().__init__(d_model)
        if isinstance(order, bool) or not isinstance(order, int) or order < 2:
            raise ValueError(f"order: must be an integer >= 2 (order - 1 long convolutions), got {order!r}")
        check_filter_fits({"order": order, "emb_dim": emb_dim, "filter_order": filter_order, "filter_depth": filter_depth},
                          {"order": 2, "emb_dim": 3, "filter_order": 64, "filter_depth": 2},
                          (order - 1) * d_model, emb_dim, filter_order, filter_depth)
        self.order, self.short_filter, self.l_max = order, short_filter, l_max
        streams = (order + 1) * d_model
        self.in_proj = nn.Linear(d_model, streams, bias=bias)
        self.short_conv = nn.Conv1d(streams, streams, short_filter, groups=streams, padding=short_filter - 1)
        self.filter = ImplicitFilter((order - 1) * d_model, l_max, emb_dim=emb_dim, width=filter_order,
                                     depth=filter_depth, frequency=frequency, modulate=modulate,
                                     fast_decay_pct=fast_decay_pct, slow_decay_pct=slow_decay_pct, target=target)
        self.D = nn.Parameter(torch.randn(order - 1, d_model))
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        self._decode_kernel = DecodeKernel()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._parallel(x)

    def prefill(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        self._decode_kernel.reset()  # a decoding session starts: read the weights as they are now
        return self._parallel(x, state, final_state=True)

    def _streams(self, z: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(batch, (order + 1) d, ...) -> the gates x_0 .. x_(N-1) and v, each (batch, d, ...)."""
        *gates, v = z.split(self.d_model, dim=1)
        return gates, v

    def _parallel(self, x: torch.Tensor, state: State | None = None, final_state: bool = False):
        z = self.in_proj(x).transpose(1, 2)  # (B, (N+1) d, L)
        conv0 = None if state is None else state["conv"].to(z.dtype)
        out = causal_conv1d(z, self.short_conv.weight[:, 0, :], self.short_conv.bias, initial_states=conv0,
                            return_final_states=final_state)
        z, conv = out if final_state else (out, None)
        gates, v = self._streams(z)
        before = 0 if state is None else state["history"].shape[-1]
        kernel = self.filter(before + x.shape[1]).view(self.order - 1, self.d_model, -1)
        inputs = []
        for i in range(1, self.order):
            u = v * gates[i]  # (B, d, L): the i-th convolution's input
            inputs.append(u)
            history = None if state is None else state["history"][:, i - 1]
            v = long_conv(u, kernel[i - 1], self.D[i - 1], history)
        y = self.out_proj((v * gates[0]).transpose(1, 2))
        if not final_state:
            return y
        dtype = self._factory()["dtype"]
        history = torch.stack(inputs, dim=1).to(dtype)  # (B, N - 1, d, L)
        if before:
            history = torch.cat((state["history"].to(dtype), history), dim=-1)
        conv = conv.to(dtype).clone(memory_format=torch.contiguous_format)
        return y, {"conv": conv, "history": history}

    def init_state(self, batch_size: int) -> State:
        self._decode_kernel.reset()  # a decoding session starts: read the weights as they are now
        factory = self._factory()
        return {"conv": torch.zeros(batch_size, (self.order + 1) * self.d_model, self.short_filter - 1, **factory),
                "history": torch.zeros(batch_size, self.order - 1, self.d_model, 0, **factory)}

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        # Decoding reads the filter without gradients (as the SSMs' step does): train with forward.
        conv = state["conv"].clone()
        z = causal_conv1d_update(self.in_proj(x), conv, self.short_conv.weight[:, 0, :], self.short_conv.bias)
        gates, v = self._streams(z)  # each (B, d)
        length = state["history"].shape[-1] + 1
        kernel = self._decode_kernel.get(self.filter, length).view(self.order - 1, self.d_model, -1)
        histories = []
        for i in range(1, self.order):
            u = v * gates[i]
            history = torch.cat((state["history"][:, i - 1], u.to(state["history"].dtype)[..., None]), dim=-1)
            histories.append(history)
            v = long_conv_step(history, kernel[i - 1], self.D[i - 1]).to(x.dtype)
        return self.out_proj(v * gates[0]), {"conv": conv, "history": torch.stack(histories, dim=1)}

    state_size_rules = (StateSize(
        "(order - 1) * d_model * L + (order + 1) * d_model * (short_filter - 1)",
        "every long convolution's inputs so far (the filter is as long as the sequence: no recurrence), "
        "and the short convolution's last inputs"),)
