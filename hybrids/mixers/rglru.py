"""The recurrent block of Griffin and Hawk (De et al. 2024, "Griffin: Mixing Gated Linear
Recurrences with Local Attention for Efficient Language Models"), with its Real-Gated Linear
Recurrent Unit (RG-LRU), run on the selective-scan kernel.

The block, for x (batch, L, d_model), two branches of width d_rnn::

    x, gate = in_proj(x).chunk(2)            # Griffin's two Linear layers, fused
    x       = conv1d(x)                      # causal depthwise, width d_conv (4), no activation
    h       = rg_lru(x)
    out     = out_proj(gelu(gate) * h)

The RG-LRU, per channel, with ``a = sigmoid(Lambda)`` learned per channel and ``c = 8``::

    r_t = sigmoid(W_a x_t + b_a)                       # recurrence gate
    i_t = sigmoid(W_x x_t + b_x)                       # input gate
    log a_t = -c * r_t * softplus(-Lambda)             # i.e. a_t = a ** (c * r_t)
    h_t = a_t * h_{t-1} + sqrt(1 - a_t^2) * (i_t * x_t)

``Lambda`` starts so that ``a ** c`` is uniform in [a_min, a_max] = [0.9, 0.999], as in the
paper. The gate weights ``W_a, W_x`` are block-diagonal with ``heads`` blocks, as in Griffin;
``heads=1`` (the default) makes them dense, which costs 2 d_rnn^2 weights instead of
2 d_rnn^2 / heads and is affordable at this zoo's widths. Griffin's reference code also replaces
``sqrt(1 - a_t^2)`` by 1 at the first token of a sequence; this block follows the paper's
equation at every token.

Two kernels run the recurrence. On CPU (unless ``scan_backend`` is given) it is
:func:`hybrids.kernels.linear_recurrence`, ``h_t = a_t h_{t-1} + x_t`` on the (batch, L, d_rnn)
activations as they are, with ``a_t = exp(log a_t)`` and ``x_t = sqrt(1 - a_t^2) i_t x_t``
exactly as in the paper: its compiled loop is about 10x faster than the selective scan's for
these shapes, which made this block the slowest of the CPU sweeps. Elsewhere (CUDA, which that
op does not serve) it runs on ``hybrids.kernels.scan`` unchanged, with ``d_state = 1``,
``A = -1``, ``B = C = 1`` (one group) and no ``D`` or ``z`` (the GeLU gate is applied outside)::

    delta_t = c * r_t * softplus(-Lambda)             exp(delta_t * A) = a_t
    u_t     = sqrt(1 - a_t^2) * i_t * x_t / delta_t   delta_t * B * u_t = the RG-LRU's input term

``sqrt(1 - a_t^2)`` is computed as ``sqrt(-expm1(2 log a_t))``, exact for small steps. On the
selective scan the division needs ``delta_t > 0``: it is floored at ``DELTA_FLOOR = 1e-6``, and
so is ``-log a_t`` on the recurrence path (the same function on both; there the floor also keeps
the slope of ``sqrt(1 - a_t^2)`` finite), which is reached only when ``r_t * softplus(-Lambda) < 1.25e-7`` (at initialisation
``softplus(-Lambda) >= 1.25e-4``, so ``r_t < 1e-3``). Where the floor acts, the decay is
``a_t = exp(-1e-6)`` instead of a value still closer to 1 (the state forgets at most a fraction
1e-6 per step more than asked, e^-1 over a million steps), the input scale is
``sqrt(1 - exp(-2e-6)) ~ 1.4e-3`` instead of a smaller one, and the gradient through ``delta``
to ``r_t`` and ``Lambda`` is zero. ``u_t`` is then at most ~1400 times the gated input, well
inside float32. Both paths compute the same function (tested).

``prefill`` runs the parallel path with the kernels' initial and final states (the conv's last
inputs, the scan's state). ``step`` uses ``causal_conv1d_update`` and ``selective_state_update``
with the same reparametrisation, so decoding runs the scan's own one-step kernel. The state per
sequence is ``h`` (d_rnn) in float32 (or wider) and the last ``d_conv - 1`` inputs of the
convolution: ``state_size = d_rnn * (1 + d_conv - 1) = d_rnn * d_conv``, whatever the sequence
length.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hybrids.kernels import (
    BackendUnavailable,
    at_least_float32,
    causal_conv1d,
    causal_conv1d_update,
    linear_recurrence,
    selective_scan,
    selective_state_update,
)
from hybrids.kernels.recurrence import LINEAR_RECURRENCE
from hybrids.kernels.scan import BACKENDS as SCAN_BACKENDS
from hybrids.mixers.base import Mixer, State
from hybrids.mixers.state_size import StateSize

# Least step of the scan reparametrisation (module docstring).
DELTA_FLOOR = 1e-6


class BlockDiagonalLinear(nn.Module):
    """``heads`` independent (width/heads -> width/heads) linear maps side by side, plus a bias."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads, self.block = heads, width // heads
        bound = 1 / math.sqrt(self.block)  # nn.Linear's default scale for fan-in = block
        self.weight = nn.Parameter(torch.empty(heads, self.block, self.block).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., width) -> (..., width)
        blocks = x.unflatten(-1, (self.heads, self.block))
        return torch.einsum("...hi,hij->...hj", blocks, self.weight).flatten(-2) + self.bias


# The gate branch's activation: Griffin's GeLU, exact or in its tanh approximation (RecurrentGemma's).
GATE_ACTIVATIONS = {"gelu": F.gelu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh")}


class RGLRU(Mixer):
    """Griffin's recurrent block with the RG-LRU (module docstring).

    Args:
        d_model: model width.
        d_rnn: width of the recurrence; default ``round(4 * d_model / 3)``, Hawk's and Griffin's
            choice, which gives the block about the parameters of an attention layer.
        d_conv: width of the causal depthwise convolution (4 in Griffin).
        heads: blocks of the block-diagonal gate weights (must divide d_rnn); 1 = dense gates.
        c: the fixed scale of the recurrence gate's exponent (8 in Griffin).
        a_min, a_max: ``a ** c`` starts uniform in [a_min, a_max].
        bias: biases in in_proj and out_proj (Griffin's linear layers have them).
        gate_activation: the gate branch's ``"gelu"`` (exact) or ``"gelu_tanh"`` (its tanh
            approximation: RecurrentGemma's).
        delta_floor: the floor of ``-log a_t`` (module docstring; ``DELTA_FLOOR`` by default). A
            checkpoint trained without one (RecurrentGemma's) computes the same function only
            with a negligible floor (its converter sets 1e-30): gates driving ``-log a_t`` below
            1e-6 occur there. Training with such a floor loses the floor's protection of the
            gradients near ``a_t = 1``.
        unscaled_first_input: leave a sequence's first input unscaled by ``sqrt(1 - a_t^2)``, as
            Griffin's reference code and RecurrentGemma do (the paper's equation scales every
            token). The state then counts the tokens seen (``position``), so that prefill and
            step know which token is the first.
        scan_backend: run the recurrence on the selective scan with this backend; None runs it
            on ``linear_recurrence`` where that op has a backend (CPU), else on the selective
            scan with the dispatcher's choice.
    """

    def __init__(
        self,
        d_model: int,
        d_rnn: int | None = None,
        d_conv: int = 4,
        heads: int = 1,
        c: float = 8.0,
        a_min: float = 0.9,
        a_max: float = 0.999,
        bias: bool = True,
        scan_backend: str | None = None,
        gate_activation: str = "gelu",
        unscaled_first_input: bool = False,
        delta_floor: float = DELTA_FLOOR,
    ) -> None:
        super().__init__(d_model)
        d_rnn = round(4 * d_model / 3) if d_rnn is None else d_rnn
        if not isinstance(d_rnn, int) or isinstance(d_rnn, bool) or d_rnn <= 0:
            raise ValueError(f"d_rnn: must be a positive int (or None for round(4 * d_model / 3)), got {d_rnn!r}")
        if not isinstance(d_conv, int) or d_conv <= 0:
            raise ValueError(f"d_conv: must be a positive int (4 in Griffin), got {d_conv!r}")
        if not isinstance(heads, int) or heads <= 0 or d_rnn % heads:
            raise ValueError(f"heads: must be a positive int dividing d_rnn={d_rnn}, got {heads!r}")
        if not c > 0:
            raise ValueError(f"c: must be positive (8 in Griffin), got {c}")
        if not 0 < a_min <= a_max < 1:
            raise ValueError(f"a_min: need 0 < a_min <= a_max < 1, got a_min={a_min}, a_max={a_max}")
        if scan_backend is not None and scan_backend not in SCAN_BACKENDS:
            raise ValueError(f"scan_backend: unknown {scan_backend!r}; use one of {SCAN_BACKENDS} or None")
        if gate_activation not in GATE_ACTIVATIONS:
            raise ValueError(f"gate_activation: unknown {gate_activation!r}; use one of {tuple(GATE_ACTIVATIONS)}")
        if not isinstance(unscaled_first_input, bool):
            raise ValueError(f"unscaled_first_input: must be true or false, got {unscaled_first_input!r}")
        self.d_rnn, self.d_conv, self.heads, self.c = d_rnn, d_conv, heads, float(c)
        self.scan_backend = scan_backend
        if isinstance(delta_floor, bool) or not isinstance(delta_floor, (int, float)) or not 0 < delta_floor <= 1e-3:
            raise ValueError(f"delta_floor: must be in (0, 1e-3], got {delta_floor!r}")
        self.gate_activation, self.unscaled_first_input = gate_activation, unscaled_first_input
        self.delta_floor = float(delta_floor)
        self._act = GATE_ACTIVATIONS[gate_activation]

        self.in_proj = nn.Linear(d_model, 2 * d_rnn, bias=bias)  # (recurrent branch, gate branch)
        self.conv1d = nn.Conv1d(d_rnn, d_rnn, d_conv, groups=d_rnn, padding=d_conv - 1)
        self.gate_a = BlockDiagonalLinear(d_rnn, heads)  # recurrence gate r
        self.gate_x = BlockDiagonalLinear(d_rnn, heads)  # input gate i
        # a ** c ~ U[a_min, a_max]  =>  a = U ** (1 / c),  Lambda = logit(a).
        a = (torch.rand(d_rnn, dtype=torch.float64) * (a_max - a_min) + a_min) ** (1 / c)
        self.Lambda = nn.Parameter((torch.log(a) - torch.log1p(-a)).float())
        self.Lambda._no_weight_decay = True
        self.out_proj = nn.Linear(d_rnn, d_model, bias=bias)

    # -- the RG-LRU as scan inputs ------------------------------------------------------------------

    def _gates(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Conv output x (..., d_rnn) -> the gates (r, i), each (..., d_rnn), from one matrix
        product for both (the two block-diagonal maps side by side: one call instead of two)."""
        weight = torch.cat((self.gate_a.weight, self.gate_x.weight), dim=-1)  # (heads, block, 2 block)
        if self.heads == 1:
            both = F.linear(x, weight[0].t(), torch.cat((self.gate_a.bias, self.gate_x.bias)))
            r, i = both.chunk(2, dim=-1)
        else:
            both = torch.einsum("...hi,hij->...hj", x.unflatten(-1, (self.heads, -1)), weight)
            block = self.d_rnn // self.heads
            r = both[..., :block].flatten(-2) + self.gate_a.bias
            i = both[..., block:].flatten(-2) + self.gate_x.bias
        return torch.sigmoid(r), torch.sigmoid(i)

    def _input_scale(self, delta: torch.Tensor, first: bool) -> torch.Tensor:
        """``sqrt(1 - a_t^2)`` from ``delta = -log a_t`` (..., [L,] d_rnn); with
        ``unscaled_first_input``, 1 where ``first`` marks the rows' first token a sequence's
        first (the L axis' first entry, or the whole row of a single step)."""
        scale = torch.sqrt(-torch.expm1(-2 * delta))
        if not (first and self.unscaled_first_input):
            return scale
        if scale.dim() == 2:  # one step (B, d_rnn)
            return torch.ones_like(scale)
        return torch.cat([torch.ones_like(scale[:, :1]), scale[:, 1:]], dim=1)

    def _recurrence_inputs(self, x: torch.Tensor, first: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Conv output x (B, L, d_rnn) -> (a_t, the input term sqrt(1 - a_t^2) i_t x_t) of
        ``h_t = a_t h_{t-1} + ...``, float32 or wider, same shape."""
        r, i = self._gates(x)
        work = at_least_float32(x.dtype)
        # -log a_t floored at DELTA_FLOOR, as delta is on the selective-scan path: the same
        # function on both paths (and in step), and no infinite slope of sqrt(1 - a_t^2) at
        # a_t = 1, which a gate r_t rounding to 0 (float16) would otherwise turn into NaN gradients.
        delta = (self.c * r.to(work) * F.softplus(-self.Lambda.to(work))).clamp(min=self.delta_floor)
        return (-delta).exp(), self._input_scale(delta, first) * i.to(work) * x.to(work)

    def _uses_recurrence(self, device: torch.device, dtype: torch.dtype) -> bool:
        """Whether the parallel path runs on ``linear_recurrence`` (module docstring): where its
        compiled backend would be chosen, or where the environment forces one of its backends
        (which then runs, or says why it cannot)."""
        if self.scan_backend is not None:
            return False
        if LINEAR_RECURRENCE.forced()[0] is not None:
            return True
        try:
            return LINEAR_RECURRENCE.automatic(torch.device(device).type, at_least_float32(dtype)) == "cpu"
        except BackendUnavailable:
            return False

    def _scan_inputs(self, x: torch.Tensor, first: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Conv output x (B, [L,] d_rnn) -> (u, delta) of the selective scan, float32 or wider."""
        r, i = self._gates(x)
        work = at_least_float32(x.dtype)
        # -log a = softplus(-Lambda) > 0;  delta = -log a_t = c r_t softplus(-Lambda).
        delta = (self.c * r.to(work) * F.softplus(-self.Lambda.to(work))).clamp(min=self.delta_floor)
        return self._input_scale(delta, first) * i.to(work) * x.to(work) / delta, delta

    def _unit(self, batch: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A = -1 (d_rnn, 1) and the all-ones B = C for ``batch`` sequences."""
        A = -torch.ones(self.d_rnn, 1, dtype=like.dtype, device=like.device)
        return A, torch.ones(batch, 1, dtype=like.dtype, device=like.device)

    # -- parallel ------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._parallel(x)

    def prefill(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """A prompt x (B, L, d_model) -> outputs (B, L, d_model) and the state after it, from
        ``state`` (zero if None): the parallel conv and scan over the prompt with the kernels'
        initial and final states, never ``step``. Chunked prefill, each call from the last one's
        state, equals one call over the whole."""
        return self._parallel(x, state, final_state=True)

    def _parallel(self, x: torch.Tensor, state: State | None = None, final_state: bool = False):
        """The block over x (B, L, d_model) in parallel -> (B, L, d_model) [and the state after
        it]. ``state`` (None: zero) gives the conv's last d_conv - 1 inputs and the scan's h as
        the kernels' initial states; ``final_state`` asks the kernels for theirs."""
        batch, length, _ = x.shape
        start = 0 if state is None else state.get("position", 0)  # tokens seen (counted where needed)
        rec, gate = self.in_proj(x).chunk(2, dim=-1)  # (B, L, d_rnn) each
        rec = rec.transpose(1, 2)  # (B, d_rnn, L)
        weight = self.conv1d.weight[:, 0, :]  # (d_rnn, d_conv)
        conv0 = None if state is None else state["conv"].to(rec.dtype)  # (B, d_rnn, d_conv - 1)
        out = causal_conv1d(rec, weight, self.conv1d.bias, initial_states=conv0, return_final_states=final_state)
        rec, conv = out if final_state else (out, None)  # (B, d_rnn, L), its last d_conv - 1 inputs
        if self._uses_recurrence(x.device, x.dtype):
            a, inputs = self._recurrence_inputs(rec.transpose(1, 2), start == 0)  # (B, L, d_rnn) each
            h0 = None if state is None else state["h"]
            out = linear_recurrence(a, inputs, initial_state=h0, return_last_state=final_state)
            h_seq, h_last = out if final_state else (out, None)  # (B, L, d_rnn) [, (B, d_rnn)]
            y = self.out_proj(self._act(gate) * h_seq.to(gate.dtype))
            return y if not final_state else (y, self._state_after(conv, h_last, start + length))
        u, delta = self._scan_inputs(rec.transpose(1, 2), start == 0)  # (B, L, d_rnn)
        A, ones = self._unit(batch, u)
        BC = ones[:, :, None, None].expand(batch, 1, 1, length)  # (B, groups=1, d_state=1, L)
        kwargs = {} if self.scan_backend is None else {"backend": self.scan_backend}
        # h (B, d_rnn) is the scan's state with d_state = 1: (B, d_rnn, 1). Only a given state
        # goes to the scan, so that a prefill from zero runs on any backend.
        h0 = None if state is None else state["h"][:, :, None]
        out = selective_scan(
            u.transpose(1, 2), delta.transpose(1, 2), A, BC, BC, return_last_state=final_state, initial_state=h0,
            **kwargs,
        )  # (B, d_rnn, L) [, (B, d_rnn, 1)]
        h_seq, h_last = out if final_state else (out, None)
        y = self.out_proj(self._act(gate) * h_seq.transpose(1, 2).to(gate.dtype))
        return y if not final_state else (y, self._state_after(conv, h_last[:, :, 0], start + length))

    def _state_after(self, conv: torch.Tensor, h: torch.Tensor, position: int) -> State:
        """The state in init_state's dtypes: the conv tail (B, d_rnn, d_conv - 1) in the
        parameters' dtype (a copy, not a view that keeps the whole prompt alive), h (B, d_rnn)
        in float32 or wider, and with ``unscaled_first_input`` the tokens seen."""
        dtype = self._factory()["dtype"]
        conv = conv.to(dtype).clone(memory_format=torch.contiguous_format)
        state = {"conv": conv, "h": h.to(at_least_float32(dtype))}
        if self.unscaled_first_input:
            state["position"] = position
        return state

    # -- recurrent -----------------------------------------------------------------------------

    def init_state(self, batch_size: int) -> State:
        factory = self._factory()
        h_dtype = at_least_float32(factory["dtype"])
        state = {
            "conv": torch.zeros(batch_size, self.d_rnn, self.d_conv - 1, **factory),
            "h": torch.zeros(batch_size, self.d_rnn, device=factory["device"], dtype=h_dtype),
        }
        if self.unscaled_first_input:
            state["position"] = 0  # tokens seen: the first is left unscaled
        return state

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        # The kernels update states in place: work on copies, so the caller's state stays valid.
        conv, h = state["conv"].clone(), state["h"].clone()
        rec, gate = self.in_proj(x).chunk(2, dim=-1)  # (B, d_rnn) each
        rec = causal_conv1d_update(rec, conv, self.conv1d.weight[:, 0, :], self.conv1d.bias)
        position = state.get("position", 0)
        u, delta = self._scan_inputs(rec, position == 0)
        A, ones = self._unit(x.shape[0], u)
        y = selective_state_update(h[:, :, None], u, delta, A, ones, ones)  # writes h through the view
        new_state = {"conv": conv, "h": h}
        if self.unscaled_first_input:
            new_state["position"] = position + 1
        return self.out_proj(self._act(gate) * y.to(gate.dtype)), new_state

    state_size_rules = (StateSize("d_rnn + d_rnn * (d_conv - 1)",
                                  "RG-LRU state (d_rnn), conv inputs (d_rnn, d_conv - 1)"),)
