"""The residual block: pre-norm -> mixer -> residual, then (optionally) pre-norm -> MLP -> residual."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hybrids.mixers.base import State, prefill_by_steps

MLP_KINDS = ("swiglu", "gelu", "geglu", "geglu_tanh")
# The gated kinds: ``act(x W_gate) * (x W_up)``, both halves from one ``up`` projection (gate first).
GATES = {"swiglu": F.silu, "geglu": F.gelu, "geglu_tanh": lambda h: F.gelu(h, approximate="tanh")}


class MLP(nn.Module):
    """Channel mixer of width ``hidden``: gated, ``(act(x W_gate) * (x W_up)) W_down`` with SiLU
    (``swiglu``), GELU (``geglu``) or GELU's tanh approximation (``geglu_tanh``: Gemma's and
    RecurrentGemma's), or a plain GELU MLP (``gelu``). ``bias`` adds biases to its projections
    (RecurrentGemma's have them)."""

    def __init__(self, d_model: int, hidden: int, kind: str = "swiglu", bias: bool = False) -> None:
        super().__init__()
        if kind not in MLP_KINDS:
            raise ValueError(f"mlp: unknown kind {kind!r}; choose one of {MLP_KINDS}")
        self.kind = kind
        self.up = nn.Linear(d_model, 2 * hidden if kind in GATES else hidden, bias=bias)
        self.down = nn.Linear(hidden, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up(x)
        if self.kind in GATES:
            gate, value = h.chunk(2, dim=-1)
            h = GATES[self.kind](gate) * value
        else:
            h = F.gelu(h)
        return self.down(h)


class Block(nn.Module):
    """``x + mixer(norm(x))`` then ``x + mlp(norm(x))``; ``mlp=None`` leaves the MLP out;
    ``norm_eps`` is the RMSNorms' epsilon (None: torch's default).

    ``step`` runs the same computation for one token through the mixer's recurrent form.
    """

    def __init__(
        self, d_model: int, mixer: nn.Module, mlp: nn.Module | None = None, dropout: float = 0.0,
        norm_eps: float | None = None,
    ) -> None:
        super().__init__()
        self.mixer_norm = nn.RMSNorm(d_model, eps=norm_eps)
        self.mixer = mixer
        self.mlp_norm = nn.RMSNorm(d_model, eps=norm_eps) if mlp is not None else None
        self.mlp = mlp
        self.dropout = nn.Dropout(dropout)

    def _mlp_residual(self, x: torch.Tensor) -> torch.Tensor:
        if self.mlp is None:
            return x
        return x + self.dropout(self.mlp(self.mlp_norm(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.mixer(self.mixer_norm(x)))
        return self._mlp_residual(x)

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        y, state = self.mixer.step(self.mixer_norm(x), state)
        return self._mlp_residual(x + self.dropout(y)), state

    def prefill(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """The block over a prompt x (batch, L, d_model) in parallel, and the mixer's state after it."""
        prefill = getattr(self.mixer, "prefill", None)
        h = self.mixer_norm(x)
        y, state = prefill(h, state) if prefill is not None else prefill_by_steps(self.mixer, h, state)
        return self._mlp_residual(x + self.dropout(y)), state
