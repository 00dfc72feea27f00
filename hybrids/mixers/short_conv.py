"""A gated short convolution: Based's ``BaseConv`` layer (Arora et al. 2024), the third part of
the Based block beside Taylor linear attention and sliding-window attention. It gives the stack
precise local token mixing (a shift by one is what forms key-value pairs in MQAR) at a fixed,
tiny state.

For x (batch, L, d_model), width d_inner = expand * d_model::

    y = out_proj( conv(in_proj(x)) * proj(x) )     # conv: causal depthwise, width d_conv (3)

The state per sequence is the conv's last ``d_conv - 1`` inputs: ``state_size = d_inner *
(d_conv - 1)``. ``forward``/``prefill`` run ``hybrids.kernels.causal_conv1d`` (with its initial
and final states for prefill), ``step`` runs ``causal_conv1d_update``.
"""

from __future__ import annotations

import torch
from torch import nn

from hybrids.kernels import causal_conv1d, causal_conv1d_update
from hybrids.mixers.base import Mixer, State
from hybrids.mixers.state_size import StateSize


class ShortConv(Mixer):
    """Gated short causal convolution (module docstring).

    Args:
        d_model: model width.
        d_conv: width of the causal depthwise convolution (3 in Based).
        expand: d_inner = expand * d_model.
        bias: biases in the projections.
    """

    def __init__(self, d_model: int, d_conv: int = 3, expand: float = 1, bias: bool = True) -> None:
        super().__init__(d_model)
        if isinstance(d_conv, bool) or not isinstance(d_conv, int) or d_conv <= 0:
            raise ValueError(f"d_conv: must be a positive int (3 in Based), got {d_conv!r}")
        d_inner = int(expand * d_model)
        if d_inner <= 0:
            raise ValueError(f"expand: expand * d_model must be at least 1, got expand={expand}")
        self.d_conv, self.d_inner = d_conv, d_inner
        self.in_proj = nn.Linear(d_model, d_inner, bias=bias)
        self.proj = nn.Linear(d_model, d_inner, bias=bias)
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1)
        self.out_proj = nn.Linear(d_inner, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._parallel(x)

    def prefill(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        return self._parallel(x, state, final_state=True)

    def _parallel(self, x: torch.Tensor, state: State | None = None, final_state: bool = False):
        u = self.in_proj(x).transpose(1, 2)  # (B, d_inner, L)
        conv0 = None if state is None else state["conv"].to(u.dtype)
        out = causal_conv1d(u, self.conv1d.weight[:, 0, :], self.conv1d.bias, initial_states=conv0,
                            return_final_states=final_state)
        u, conv = out if final_state else (out, None)
        y = self.out_proj(u.transpose(1, 2) * self.proj(x))
        if not final_state:
            return y
        conv = conv.to(self._factory()["dtype"]).clone(memory_format=torch.contiguous_format)
        return y, {"conv": conv}

    def init_state(self, batch_size: int) -> State:
        return {"conv": torch.zeros(batch_size, self.d_inner, self.d_conv - 1, **self._factory())}

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        conv = state["conv"].clone()
        u = causal_conv1d_update(self.in_proj(x), conv, self.conv1d.weight[:, 0, :], self.conv1d.bias)
        return self.out_proj(u * self.proj(x)), {"conv": conv}

    state_size_rules = (StateSize("d_inner * (d_conv - 1)", "conv inputs (d_inner, d_conv - 1)"),)
