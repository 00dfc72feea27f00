"""H3 (Fu et al. 2023, "Hungry Hungry Hippos"): two state-space models and multiplicative
gates, built so that a layer can remember a token and compare it with a later one.

For x (batch, L, d_model), heads of ``head_dim`` channels (H = d_model / head_dim heads)::

    q, k, v = x W_q, x W_k, x W_v
    k~   = shift_ssm(k)                      # per channel: causal conv of d_state taps
    kv   = k~_i v_j  per head (i, j < head_dim)           (batch, H, head_dim, head_dim, L)
    s    = diag_ssm(kv)                      # per head: an S4D SSM over each (i, j) entry
    o_j  = sum_i q_i s_ij  per head, then  y = o W_out

The shift SSM has A a shift matrix and B = e_1, so its kernel is its C: a learnt causal
depthwise convolution of ``d_state`` taps (the current token and the ``d_state - 1`` before it),
computed by ``hybrids.kernels.causal_conv1d``. The diagonal SSM is S4D (``init="lin"``, bilinear
discretisation by default, as H3), run by ``hybrids.kernels.diagonal_ssm`` (kernel + FFT in
training, its closed-form final state for prefill). With ``head_dim = 1`` this is
``y = (q . diag_ssm(shift_ssm(k) . v)) W_out``.

State (fixed size): the shift SSM's last ``d_state - 1`` inputs per channel and the diagonal
SSM's ``d_state / 2`` complex modes per head and (i, j) entry:
``d_model * (d_state - 1) + d_model * head_dim * d_state`` numbers.

Compared with HazyResearch/H3: the shift SSM's D term is left out (its kernel's first tap already
multiplies the current token), and the output channels keep the head-major order (the output
projection absorbs any order).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hybrids.kernels import causal_conv1d, causal_conv1d_update
from hybrids.kernels import widen as _wide
from hybrids.kernels.ssm import DISCRETISATIONS, diagonal_ssm, discretize_diagonal
from hybrids.kernels.ssm.hippo import DIAGONAL_INITS, diagonal_init
from hybrids.mixers.base import Mixer, State
from hybrids.mixers.s4 import REAL_FLOOR, as_complex, complex_parameter, no_weight_decay, stable_diagonal
from hybrids.mixers.state_size import StateSize


class H3(Mixer):
    """H3 layer (module docstring).

    Args:
        d_model: model width.
        d_state: taps of the shift SSM and state size N of the diagonal SSM (N / 2 complex
            modes); even. 64 in H3; zoology's Fig. 2 sets it to the sequence length.
        head_dim: channels per head (1 in H3's language models, 2 in zoology's MQAR runs).
        init: S4D initialisation of the diagonal SSM ("lin" in H3).
        discretization: "bilinear" (H3) or "zoh".
        dt_min, dt_max: range of the log-uniform initial step of the diagonal SSM.
        bias: biases in the projections.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        head_dim: int = 1,
        init: str = "lin",
        discretization: str = "bilinear",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        bias: bool = True,
    ) -> None:
        super().__init__(d_model)
        if d_state % 2:
            raise ValueError(f"d_state: must be even (N / 2 complex modes), got {d_state}")
        if d_model % head_dim:
            raise ValueError(f"head_dim: must divide d_model={d_model}, got {head_dim}")
        if init not in DIAGONAL_INITS:
            raise ValueError(f"init: unknown S4D initialisation {init!r}; use one of {DIAGONAL_INITS}")
        if discretization not in DISCRETISATIONS:
            raise ValueError(f"discretization: unknown {discretization!r}; use one of {DISCRETISATIONS}")
        if not dt_min <= dt_max:
            raise ValueError(f"dt_min: need dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        self.d_state, self.head_dim, self.heads = d_state, head_dim, d_model // head_dim
        self.init, self.discretization = init, discretization
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(d_model, d_model, bias=bias) for _ in range(3))
        # The shift SSM's C as the taps of a depthwise conv: weight[:, -1] multiplies the current k.
        self.shift = nn.Conv1d(d_model, d_model, d_state, groups=d_model, bias=False)
        H, modes = self.heads, d_state // 2
        Lambda, B = diagonal_init(init, d_state)  # (N2,) complex each
        self.log_neg_real = nn.Parameter(torch.log((-Lambda.real).clamp(min=REAL_FLOOR)).float().expand(H, -1).clone())
        self.imag = nn.Parameter(Lambda.imag.float().expand(H, -1).clone())
        self.B = complex_parameter(B.expand(H, -1))
        self.C = complex_parameter(torch.randn(H, modes, dtype=torch.complex128) * math.sqrt(0.5))
        log_dt = torch.rand(H) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.log_dt = nn.Parameter(log_dt)
        self.D = nn.Parameter(torch.randn(H))
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        no_weight_decay(self.log_neg_real, self.imag, self.B, self.log_dt)

    def _system(self):
        """(Lambda, B, C) (H, N2) complex and dt (H,)."""
        return (stable_diagonal(self.log_neg_real, self.imag), as_complex(self.B), as_complex(self.C),
                torch.exp(_wide(self.log_dt)))

    def _outer(self, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """k, v (B, d, ...) -> kv (B, head_dim, head_dim, H, ...): k_i v_j per head."""
        shape = (k.shape[0], self.heads, self.head_dim) + k.shape[2:]
        k, v = k.reshape(shape), v.reshape(shape)
        kv = k.unsqueeze(3) * v.unsqueeze(2)  # (B, H, i, j, ...)
        return kv.movedim(1, 3)

    def _contract(self, q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """q (B, d, ...), s (B, i, j, H, ...) -> o (B, d, ...): o[h, j] = sum_i q[h, i] s[i, j, h]."""
        q = q.reshape((q.shape[0], self.heads, self.head_dim) + q.shape[2:])
        o = (q.movedim(1, 2).unsqueeze(2) * s).sum(1)  # (B, j, H, ...)
        return o.movedim(1, 2).reshape((q.shape[0], self.d_model) + q.shape[3:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._parallel(x)

    def prefill(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        return self._parallel(x, state, final_state=True)

    def _parallel(self, x: torch.Tensor, state: State | None = None, final_state: bool = False):
        batch, length, _ = x.shape
        q, k, v = (proj(x).transpose(1, 2) for proj in (self.q_proj, self.k_proj, self.v_proj))  # (B, d, L)
        shift0 = None if state is None else state["shift"].to(k.dtype)
        out = causal_conv1d(k, self.shift.weight[:, 0, :], None, initial_states=shift0, return_final_states=final_state)
        k, shift = out if final_state else (out, None)
        hd, H = self.head_dim, self.heads
        u = self._outer(k, v).reshape(batch * hd * hd, H, length)  # every (i, j) entry a row of its own
        Lambda, B, C, dt = self._system()
        ssm0 = None if state is None else state["ssm"].reshape(batch * hd * hd, H, -1)
        out = diagonal_ssm(u, Lambda, B, C, dt, self.D, self.discretization, ssm0, final_state)
        s, ssm = out if final_state else (out, None)
        o = self._contract(q, s.reshape(batch, hd, hd, H, length))
        y = self.out_proj(o.transpose(1, 2))
        if not final_state:
            return y
        shift = shift.to(self._factory()["dtype"]).clone(memory_format=torch.contiguous_format)
        ssm = ssm.to(self._complex_dtype()).reshape(batch, hd, hd, H, -1).clone(memory_format=torch.contiguous_format)
        return y, {"shift": shift, "ssm": ssm}

    def _complex_dtype(self) -> torch.dtype:
        return torch.complex128 if self.D.dtype == torch.float64 else torch.complex64

    def init_state(self, batch_size: int) -> State:
        hd, device = self.head_dim, self.D.device
        return {"shift": torch.zeros(batch_size, self.d_model, self.d_state - 1, **self._factory()),
                "ssm": torch.zeros(batch_size, hd, hd, self.heads, self.d_state // 2, dtype=self._complex_dtype(),
                                   device=device)}

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)  # (B, d)
        shift = state["shift"].clone()
        k = causal_conv1d_update(k, shift, self.shift.weight[:, 0, :], None)
        Lambda, B, C, dt = self._system()
        A_bar, B_bar = discretize_diagonal(Lambda, B, dt, self.discretization)  # (H, N2)
        u = self._outer(k, v)  # (B, i, j, H)
        h = A_bar * state["ssm"] + B_bar * u[..., None].to(B_bar.dtype)  # (B, i, j, H, N2)
        s = 2 * (C * h).sum(-1).real.to(x.dtype) + self.D * u
        return self.out_proj(self._contract(q, s)), {"shift": shift, "ssm": h.to(self._complex_dtype())}

    # The complex modes count as two reals each.
    state_size_rules = (StateSize("d_model * (d_state - 1) + d_model * head_dim * d_state",
                                  "shift SSM: the last d_state - 1 inputs per channel; diagonal SSM: d_state / 2 "
                                  "complex modes per head and (i, j) entry of its head_dim x head_dim outer product"),)
