"""BaseConv (Arora et al. 2023, "Zoology", section 4): a linear projection gating a long
convolution, the simplest gated convolution that the paper proves can simulate any other.

For x (batch, L, d_model)::

    y = (x W + b_1) . (h * x + b_2)          # h: (d_model, L) causal kernel, * per channel

with ``h`` either implicit (Hyena's filter network, :class:`~hybrids.parts.implicit_filter.ImplicitFilter`,
defined at any length) or explicit (``l_max`` taps stored as a parameter,
:class:`~hybrids.parts.long_conv.ExplicitFilter`; a longer sequence is refused). There is no
output projection: the gate's output is the mixer's. zoology's code adds the input to the output
inside the mixer as well; here the block's residual does that once.

For the short gated convolution of Based and zoology's BaseConv with ``kernel_size=3`` (the
layers that alternate with the long ones in zoology's Fig. 2), use
:class:`~hybrids.mixers.short_conv.ShortConv`.

Decode state: the kernel is as long as the sequence and not distilled into a recurrence, so
decoding keeps every input so far, ``d_model * L`` numbers after L tokens (O(L) work per step).
"""

from __future__ import annotations

import torch
from torch import nn

from hybrids.mixers.base import Mixer, State
from hybrids.mixers.state_size import StateSize
from hybrids.parts.implicit_filter import ImplicitFilter, check_filter_fits
from hybrids.parts.long_conv import DecodeKernel, ExplicitFilter, long_conv, long_conv_step

FILTERS = ("implicit", "explicit")


class BaseConv(Mixer):
    """BaseConv (module docstring).

    Args:
        d_model: model width.
        l_max: implicit filter: the length over which its positions run from t = 0 to 1;
            explicit filter: its number of taps, the longest sequence it takes.
        filter: ``"implicit"`` or ``"explicit"``.
        filter_order, emb_dim, filter_depth, frequency, modulate: the implicit filter's network
            and window (as :class:`~hybrids.mixers.hyena.Hyena`'s).
        bias: the projection's bias b_1 (the convolution's b_2 is always there).
    """

    def __init__(
        self,
        d_model: int,
        l_max: int,
        filter: str = "implicit",
        filter_order: int = 64,
        emb_dim: int = 3,
        filter_depth: int = 2,
        frequency: float = 1.0,
        modulate: bool = True,
        bias: bool = True,
    ) -> None:
        super().__init__(d_model)
        if filter not in FILTERS:
            raise ValueError(f"filter: must be one of {FILTERS}, got {filter!r}")
        self.l_max, self.filter_kind = l_max, filter
        self.proj = nn.Linear(d_model, d_model, bias=bias)
        if filter == "implicit":
            check_filter_fits({"emb_dim": emb_dim, "filter_order": filter_order, "filter_depth": filter_depth},
                              {"emb_dim": 3, "filter_order": 64, "filter_depth": 2},
                              d_model, emb_dim, filter_order, filter_depth)
            self.filter = ImplicitFilter(d_model, l_max, emb_dim=emb_dim, width=filter_order, depth=filter_depth,
                                         frequency=frequency, modulate=modulate)
        else:
            self.filter = ExplicitFilter(d_model, l_max)
        self.conv_bias = nn.Parameter(torch.zeros(d_model))
        self._decode_kernel = DecodeKernel()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._parallel(x)

    def prefill(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        self._decode_kernel.reset()  # a decoding session starts: read the weights as they are now
        return self._parallel(x, state, final_state=True)

    def _parallel(self, x: torch.Tensor, state: State | None = None, final_state: bool = False):
        u = x.transpose(1, 2)  # (B, d, L)
        history = None if state is None else state["history"]
        before = 0 if history is None else history.shape[-1]
        conv = long_conv(u, self.filter(before + x.shape[1]), None, history)
        y = self.proj(x) * (conv.transpose(1, 2) + self.conv_bias)
        if not final_state:
            return y
        dtype = self._factory()["dtype"]
        kept = u.to(dtype) if history is None else torch.cat((history.to(dtype), u.to(dtype)), dim=-1)
        return y, {"history": kept.clone(memory_format=torch.contiguous_format)}

    def init_state(self, batch_size: int) -> State:
        self._decode_kernel.reset()  # a decoding session starts: read the weights as they are now
        return {"history": torch.zeros(batch_size, self.d_model, 0, **self._factory())}

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        # Decoding reads the filter without gradients (as the SSMs' step does): train with forward.
        history = torch.cat((state["history"], x.to(state["history"].dtype)[..., None]), dim=-1)
        kernel = self._decode_kernel.get(self.filter, history.shape[-1])
        conv = long_conv_step(history, kernel, None).to(x.dtype)
        return self.proj(x) * (conv + self.conv_bias), {"history": history}

    state_size_rules = (StateSize("d_model * L", "every input so far (the filter is as long as the sequence: "
                                                 "no recurrence)"),)
