"""A mixture-of-experts channel mixer (Shazeer et al. 2017; Switch Transformer's load-balancing
loss, Fedus et al. 2021; Jamba's MoE layers): a router sends each token to ``top_k`` of
``experts`` gated MLPs and sums their outputs, weighted by the router's softmax probabilities.

For x (..., d_model), with E experts of hidden width h::

    p        = softmax(router(x))                     # (..., E), in float32 or wider
    w, e     = topk(p, top_k)                         # the chosen experts and their weights
    w        = w / w.sum() if normalize else w        # Jamba leaves them unnormalised
    out      = sum_j w_j * MLP_{e_j}(x)               # MLP_e: (act(x G_e) * (x U_e)) D_e

Every expert is computed on the tokens routed to it only (no capacity limit, no token dropped).
The load-balancing loss of the last forward, ``E * sum_e f_e P_e`` with ``f_e`` the fraction of
routing slots given to expert ``e`` (they sum to ``top_k``) and ``P_e`` the mean probability the
router gives it, is kept on the module (``aux_loss``): ``top_k`` when the routing is balanced,
up to ``E * top_k`` when one expert takes every token. The training loss adds it, averaged over
the MoE layers and times ``aux_loss`` of :class:`MoEConfig` (hybrids.train.module).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hybrids.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class MoEConfig:
    """Where and how a stack uses experts (``StackConfig.moe``).

    experts: experts per MoE layer. top_k: experts each token goes to. period, offset: the
    blocks ``offset, offset + period, ...`` get an MoE in place of their MLP (Jamba: 2 and 1).
    aux_loss: the weight of the load-balancing loss in the training loss (0 leaves it out).
    normalize: renormalise the chosen experts' weights to sum to 1 (Mixtral does; Jamba not).
    """

    experts: int = 8
    top_k: int = 2
    period: int = 1
    offset: int = 0
    aux_loss: float = 0.01
    normalize: bool = False

    def __post_init__(self) -> None:
        for name in ("experts", "top_k", "period"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(name, f"must be a positive integer, got {value!r}")
        if self.top_k > self.experts:
            raise ConfigError("top_k", f"must be at most experts={self.experts}, got {self.top_k}")
        if isinstance(self.offset, bool) or not isinstance(self.offset, int) or self.offset < 0:
            raise ConfigError("offset", f"must be an integer >= 0, got {self.offset!r}")
        if isinstance(self.aux_loss, bool) or not isinstance(self.aux_loss, (int, float)) or not self.aux_loss >= 0:
            raise ConfigError("aux_loss", f"must be a number >= 0, got {self.aux_loss!r}")
        if not isinstance(self.normalize, bool):
            raise ConfigError("normalize", f"must be true or false, got {self.normalize!r}")

    @classmethod
    def of(cls, spec: Mapping[str, Any]) -> MoEConfig:
        unknown = sorted(set(spec) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(unknown[0], f"not a field of moe; the fields: {[f.name for f in dataclasses.fields(cls)]}")
        return cls(**spec)

    def applies_to(self, layer: int) -> bool:
        return layer >= self.offset and (layer - self.offset) % self.period == 0


class MoE(nn.Module):
    """``experts`` gated MLPs of hidden width ``hidden`` behind a top-``top_k`` router (module
    docstring). ``kind`` is the gate's activation, as :class:`~hybrids.model.blocks.MLP`'s gated
    kinds; the experts' weights are stacked: ``up`` (E, 2 hidden, d_model), gate rows first, and
    ``down`` (E, d_model, hidden)."""

    def __init__(self, d_model: int, hidden: int, experts: int, top_k: int, kind: str = "swiglu",
                 normalize: bool = False) -> None:
        super().__init__()
        from hybrids.model.blocks import GATES

        if kind not in GATES:
            raise ValueError(f"mlp: experts are gated MLPs ({sorted(GATES)}), got {kind!r}")
        self.experts, self.top_k, self.kind, self.normalize = experts, top_k, kind, normalize
        self._act = GATES[kind]
        self.router = nn.Linear(d_model, experts, bias=False)
        self.up = nn.Parameter(torch.empty(experts, 2 * hidden, d_model).uniform_(-d_model**-0.5, d_model**-0.5))
        self.down = nn.Parameter(torch.empty(experts, d_model, hidden).uniform_(-hidden**-0.5, hidden**-0.5))
        self.aux_loss: torch.Tensor | None = None

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (N, d_model) -> router probabilities (N, E) in float32 or wider, the chosen experts' weights
        (N, top_k) in x's dtype and their indices (N, top_k)."""
        probs = F.softmax(self.router(x).to(torch.promote_types(x.dtype, torch.float32)), dim=-1)
        weights, chosen = torch.topk(probs, self.top_k, dim=-1)
        if self.normalize:
            weights = weights / weights.sum(-1, keepdim=True)
        return probs, weights.to(x.dtype), chosen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])  # (N, d_model)
        probs, weights, chosen = self.route(flat)
        out = torch.zeros_like(flat)
        for expert in torch.unique(chosen).tolist():
            token, slot = torch.where(chosen == expert)
            gate, up = F.linear(flat[token], self.up[expert]).chunk(2, dim=-1)
            y = F.linear(self._act(gate) * up, self.down[expert])
            out.index_add_(0, token, y * weights[token, slot, None])
        # f_e: the share of the N * top_k routing slots given to e; P_e: its mean probability.
        share = torch.bincount(chosen.flatten(), minlength=self.experts).float() / max(flat.shape[0], 1)
        self.aux_loss = self.experts * (share * probs.mean(0)).sum() if flat.shape[0] else None
        return out.reshape(shape)
