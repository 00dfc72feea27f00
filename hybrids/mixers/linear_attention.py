"""Linearised attention: causal attention whose weight is a kernel ``phi(q) . phi(k)`` that
factorises, run as a linear recurrence over a (features, V) state per head on
``hybrids.kernels.linear_attention``. One mixer covers three published designs and RetNet:

- linear attention (Katharopoulos et al. 2020): ``feature_map="elu"``, normalised;
- Performer (Choromanski et al. 2021): ``feature_map="favor"``, positive random features that
  estimate the softmax kernel, normalised;
- the linear half of Based (Arora et al. 2024): ``feature_map="taylor"`` with q/k projected to
  ``feature_dim=16``, normalised (configs/based.yaml adds the sliding window and short conv);
- RetNet's retention (Sun et al. 2023): ``feature_map="identity", decay="retnet"``: a fixed
  decay per head, ``gamma_h = 1 - 2^(-5 - h)``, queries and keys rotated by their position
  (``rotary``, on by default for RetNet: the paper's ``Q_n = X_n W_Q e^{i n theta}``,
  ``K_m = X_m W_K e^{-i m theta}``, so a score depends on ``n - m``), no normaliser, a per-head RMS
  norm on the output and a swish output gate;
- gated linear attention, GLA (Yang et al. 2024): ``feature_map="identity", decay="gla"``: a
  data-dependent decay per key dimension, ``log alpha_t = logsigmoid(x_t W_1 W_2 + b) / tau``
  through a low-rank projection (rank ``gate_rank`` = 16, ``tau = gate_temperature`` = 16), so
  every row of the state forgets at its own input-dependent rate; no normaliser, head RMS norm,
  swish output gate (configs/gla.yaml).

For x (batch, L, d_model), heads H, q/k width f = feature_dim, feature width F = the map's
out_dim, value width P = d_model / H::

    q, k = phi(q_proj(x)), phi(k_proj(x))          # (batch, H, L, F)
    q, k = rotate(q, t), rotate(k, t)              # with rotary: by the position t (RoPE pairs)
    v    = v_proj(x)                               # (batch, H, L, P)
    S_t  = gamma * S_{t-1} + k_t v_t^T              # (F, P) per head; gamma = 1 without decay,
                                                   # diag(alpha_t) (F values) for GLA
    o_t  = q_t^T S_t                               # scale 1: the map carries its own scaling
    o_t  = o_t / (q_t^T z_t + eps)                 # normalise: z_t = gamma z_{t-1} + k_t
    y    = o_proj(gate * norm(o))                  # norm, gate optional

The normaliser runs in the same kernel call: ``v`` gets a column of ones, whose output column is
``q_t^T z_t``. So the recurrent state is (F, P + 1) per head with normalisation, (F, P) without:
``state_size = H * F * (P + normalize)``, whatever the sequence length.

``forward`` and ``prefill`` run the chunked kernel (with the state in and out for prefill);
``step`` runs :func:`hybrids.kernels.linear_attention_step`. A FAVOR+ map with ``redraw`` draws a
new projection before every forward in training mode; in eval mode it is fixed, so decoding and
the parallel pass agree.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from hybrids.kernels import apply_rotary, at_least_float32, linear_attention, linear_attention_step, rotary_cos_sin
from hybrids.kernels.linear import BACKEND_ENV as LINEAR_BACKEND_ENV
from hybrids.kernels.linear import BACKENDS as LINEAR_BACKENDS
from hybrids.mixers.base import Mixer, State
from hybrids.mixers.state_size import StateSize
from hybrids.parts.feature_maps import FEATURE_MAPS, FeatureMap, build_feature_map

# A forward from a zero state up to this length, with a map that has closed-form scores (Based's
# Taylor map) and no decay, runs as masked attention on those scores: L^2 (f + V) multiply-adds
# per head against the chunked kernel's L (64 (F + V) + 2 F V), with F = 1 + f + f^2 = 273 for
# f = 16, so the quadratic form stays cheaper up to L of several hundred. At 256 its (L, L)
# scores are 256 KiB per sequence and head in float32.
QUADRATIC_MAX_LENGTH = 256

DECAYS = (None, "retnet", "gla")


def retnet_log_decays(heads: int) -> torch.Tensor:
    """log gamma_h for RetNet's fixed per-head decays gamma_h = 1 - 2^(-5 - h), h = 0 .. heads-1."""
    return torch.log1p(-(2.0 ** (-5.0 - torch.arange(heads, dtype=torch.float64)))).float()


class HeadRMSNorm(nn.Module):
    """RMS norm over each head's P channels, with a learned scale per channel: (..., H, P)."""

    def __init__(self, heads: int, head_dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(heads, head_dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        work = at_least_float32(x.dtype)
        y = x.to(work)
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.to(work)).to(x.dtype)


class LinearAttention(Mixer):
    """Kernelised causal attention (module docstring).

    Args:
        d_model: model width.
        heads: heads H (must divide d_model; values are d_model / H wide).
        feature_map: "identity", "elu", "favor" or "taylor" (:mod:`hybrids.parts.feature_maps`).
        feature_dim: width f of the q/k projections per head, before the map; default d_model / H
            (Based uses 16 with the Taylor map, whose features are 1 + f + f^2 wide).
        num_features: FAVOR+'s number of random features m (default round(f ln f)).
        redraw: FAVOR+ draws a new projection before every training forward.
        normalize: divide by ``q_t . z_t``; default: True for the positive maps (elu, favor,
            taylor), False for identity (where it is refused: the denominator can vanish).
        output_norm: per-head RMS norm on the output; default: on when not normalised.
        decay: None, "retnet" (fixed per-head decays 1 - 2^(-5 - h)) or "gla" (a decay per
            feature, from the input through a low-rank gate).
        gate_rank: GLA: rank of the decay's projection d_model -> gate_rank -> H * F.
        gate_temperature: GLA: tau, dividing the log-sigmoid (larger: decays nearer 1).
        gate: multiply the output by swish(g_proj(x)) before o_proj (RetNet's and GLA's gate).
        eps: added to the normaliser.
        bias: biases in the projections.
        kernel_backend: force a ``linear_attention`` backend; None lets the dispatcher choose.
        seed: seed of FAVOR+'s first projection (None: torch's global generator).
        rotary: rotate q and k by their position (rotary embeddings, ``hybrids.kernels.rotary``),
            RetNet's relative position; default: on for RetNet (``decay="retnet"`` with the
            identity map), off otherwise. Only
            with the identity map (a rotation would break a positive map's normaliser). The
            state then carries the position reached. Runs of RetNet made before this option
            (no rotation) are reproduced with ``rotary: false``.
        rotary_base: the rotation's base frequency.
    """

    def __init__(
        self,
        d_model: int,
        heads: int = 4,
        feature_map: str = "elu",
        feature_dim: int | None = None,
        num_features: int | None = None,
        redraw: bool = False,
        normalize: bool | None = None,
        output_norm: bool | None = None,
        decay: str | None = None,
        gate: bool = False,
        gate_rank: int = 16,
        gate_temperature: float = 16.0,
        eps: float = 1e-6,
        bias: bool = False,
        kernel_backend: str | None = None,
        seed: int | None = None,
        rotary: bool | None = None,
        rotary_base: float = 10000.0,
    ) -> None:
        super().__init__(d_model)
        if isinstance(heads, bool) or not isinstance(heads, int) or heads <= 0 or d_model % heads:
            raise ValueError(f"heads: must be a positive int dividing d_model={d_model}, got {heads!r}")
        if feature_map not in FEATURE_MAPS:
            raise ValueError(f"feature_map: unknown {feature_map!r}; use one of {FEATURE_MAPS}")
        feature_dim = d_model // heads if feature_dim is None else feature_dim
        if isinstance(feature_dim, bool) or not isinstance(feature_dim, int) or feature_dim <= 0:
            raise ValueError(f"feature_dim: must be a positive int or None (d_model / heads), got {feature_dim!r}")
        if decay not in DECAYS:
            raise ValueError(f"decay: unknown {decay!r}; use one of {DECAYS}")
        if kernel_backend is not None and kernel_backend not in LINEAR_BACKENDS:
            raise ValueError(f"kernel_backend: unknown {kernel_backend!r}; use one of {LINEAR_BACKENDS} or None")
        if not eps >= 0:
            raise ValueError(f"eps: must be >= 0, got {eps}")
        if isinstance(gate_rank, bool) or not isinstance(gate_rank, int) or gate_rank <= 0:
            raise ValueError(f"gate_rank: must be a positive int, got {gate_rank!r}")
        if not gate_temperature > 0:
            raise ValueError(f"gate_temperature: must be > 0, got {gate_temperature!r}")
        self.heads, self.head_dim, self.feature_dim = heads, d_model // heads, feature_dim
        self.feature_map = build_feature_map(feature_map, feature_dim, num_features, redraw=redraw, seed=seed)
        normalize = self.feature_map.positive if normalize is None else bool(normalize)
        if normalize and not self.feature_map.positive:
            raise ValueError(
                f"normalize: the {feature_map!r} map is not positive, so q.z can vanish or change sign; "
                "use normalize=False (with output_norm) or a positive map (elu, favor, taylor)"
            )
        self.normalize = normalize
        self.decay, self.eps, self.kernel_backend = decay, float(eps), kernel_backend
        rotary = (decay == "retnet" and feature_map == "identity") if rotary is None else rotary
        if not isinstance(rotary, bool):
            raise ValueError(f"rotary: must be true, false or null (on for decay='retnet'), got {rotary!r}")
        if rotary and feature_map != "identity":
            raise ValueError(f"rotary: rotates q and k, which only the identity map allows (a rotated {feature_map!r} "
                             "feature is no longer positive); use feature_map='identity' or rotary=false")
        if rotary and self.feature_dim % 2:
            raise ValueError(f"rotary: needs an even feature_dim (pairs rotate together), got {self.feature_dim}")
        self.rotary, self.rotary_base = rotary, float(rotary_base)
        if rotary:
            # Saved with the weights, so that a checkpoint says it was trained with the rotation:
            # one written before it existed lacks this key and is refused, not silently rotated.
            self.register_buffer("rotation_base", torch.tensor(self.rotary_base, dtype=torch.float64))

        self.q_proj = nn.Linear(d_model, heads * feature_dim, bias=bias)
        self.k_proj = nn.Linear(d_model, heads * feature_dim, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.g_proj = nn.Linear(d_model, d_model, bias=bias) if gate else None
        self.norm = HeadRMSNorm(heads, self.head_dim) if (not normalize if output_norm is None else output_norm) else None
        self.o_proj = nn.Linear(d_model, d_model, bias=bias)
        # RetNet's fixed decays (a buffer, or None) and GLA's low-rank decay projection (or None).
        self.register_buffer("log_decay", retnet_log_decays(heads) if decay == "retnet" else None)  # (H,)
        self.gk_proj = None
        if decay == "gla":
            self.gk_proj = nn.Sequential(
                nn.Linear(d_model, gate_rank, bias=False), nn.Linear(gate_rank, heads * self.features, bias=True)
            )
            self.gate_temperature = float(gate_temperature)

    @property
    def features(self) -> int:
        """F: the width of the feature map's output (the state's rows)."""
        return self.feature_map.out_dim

    # -- pieces shared by the parallel and the recurrent paths -----------------------------------

    def _qkv(self, x: torch.Tensor, start: int = 0, mapped: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, L, d_model) at positions ``start ..`` -> phi(q), phi(k) (B, H, L, F), rotated
        with ``rotary``, and v (B, H, L, P [+ 1 ones column]); q and k unmapped (B, H, L, f) if
        not ``mapped``."""
        batch, length, _ = x.shape
        q = self.q_proj(x).view(batch, length, self.heads, self.feature_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, length, self.heads, self.feature_dim).transpose(1, 2)
        if self.features > self.feature_dim:
            # In (B, H, L, f) order before a widening map: its (B, H, L, F) features then come out
            # in the order the kernel reads, instead of being copied there (4x the bytes for FAVOR+).
            q, k = q.contiguous(), k.contiguous()
        v = self.v_proj(x).view(batch, length, self.heads, self.head_dim).transpose(1, 2)
        if self.normalize:  # the normaliser's column: its output is q_t . z_t
            v = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)
        if not mapped:
            return q, k, v
        q, k = self.feature_map(q), self.feature_map.keys(k)
        if self.rotary:
            positions = torch.arange(start, start + length, device=x.device)
            cos, sin = rotary_cos_sin(positions, self.feature_dim, self.rotary_base, dtype=q.dtype)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        return q, k, v

    def _output(self, o: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Kernel output o (B, H, L, P [+ 1]) and the input x (B, L, d_model) -> (B, L, d_model)."""
        if self.normalize:
            o = o[..., :-1] / (o[..., -1:] + self.eps)
        o = o.transpose(1, 2)  # (B, L, H, P)
        if self.norm is not None:
            o = self.norm(o)
        o = o.flatten(-2).to(x.dtype)
        if self.g_proj is not None:
            o = o * F.silu(self.g_proj(x))
        return self.o_proj(o)

    def _log_decay(self, x: torch.Tensor) -> torch.Tensor | None:
        """x (B, L, d_model) -> the kernel's g: None, RetNet's per-head log-decay broadcast to
        (B, H, L), or GLA's (B, H, L, F) from the input, in at least float32."""
        work = at_least_float32(x.dtype)
        batch, length, _ = x.shape
        if self.gk_proj is not None:
            logits = self.gk_proj(x).view(batch, length, self.heads, self.features).transpose(1, 2)
            return F.logsigmoid(logits.to(work)) / self.gate_temperature
        if self.log_decay is None:
            return None
        return self.log_decay.to(work).view(1, self.heads, 1).expand(batch, self.heads, length)

    # -- parallel ------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and getattr(self.feature_map, "redraw", False):
            self.feature_map.redraw_()
        return self._parallel(x)

    def prefill(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """A prompt x (B, L, d_model) -> outputs and the state after it, from ``state`` (zero if
        None): the chunked kernel with its initial and final states, never ``step``."""
        return self._parallel(x, state, final_state=True)

    def quadratic_unavailable(self, length: int) -> str | None:
        """None if a forward over ``length`` positions from a zero state takes the quadratic form
        (``_quadratic``), else why not."""
        if self.feature_map.kernel_scores.__func__ is FeatureMap.kernel_scores:
            return f"the {type(self.feature_map).__name__} map has no closed-form kernel"
        if self.log_decay is not None or self.gk_proj is not None:
            return "a decay (the quadratic form here has none)"
        if self.kernel_backend is not None or os.environ.get(LINEAR_BACKEND_ENV):
            return "a kernel backend is forced (kernel_backend or the environment variable)"
        if length > QUADRATIC_MAX_LENGTH:
            return f"longer than QUADRATIC_MAX_LENGTH = {QUADRATIC_MAX_LENGTH}"
        return None

    def _quadratic(self, x: torch.Tensor) -> torch.Tensor:
        """The forward from a zero state as masked attention with the map's closed-form scores
        ``phi(q) phi(k)^T`` (B, H, L, L), the features never formed: what the kernel computes, at
        ``feature_dim`` instead of ``features`` multiply-adds per pair of positions."""
        q, k, v = self._qkv(x, mapped=False)
        work = at_least_float32(x.dtype)
        scores = self.feature_map.kernel_scores(q.to(work), k.to(work))
        causal = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool, device=x.device).tril()
        return self._output(scores.masked_fill(~causal, 0.0) @ v.to(work), x)

    def _parallel(self, x: torch.Tensor, state: State | None = None, final_state: bool = False):
        if state is None and not final_state and self.quadratic_unavailable(x.shape[1]) is None:
            return self._quadratic(x)
        start = 0 if state is None else state.get("position", 0)
        q, k, v = self._qkv(x, start)
        g = self._log_decay(x)
        kwargs = {} if self.kernel_backend is None else {"backend": self.kernel_backend}
        s0 = None if state is None else state["S"]
        out = linear_attention(q, k, v, g, scale=1.0, initial_state=s0, output_final_state=final_state, **kwargs)
        if not final_state:
            return self._output(out, x)
        o, s = out
        new_state = {"S": s.to(at_least_float32(self._factory()["dtype"]))}
        if self.rotary:
            new_state["position"] = start + x.shape[1]
        return self._output(o, x), new_state

    # -- recurrent -----------------------------------------------------------------------------

    def init_state(self, batch_size: int) -> State:
        factory = self._factory()
        width = self.head_dim + int(self.normalize)
        state = {"S": torch.zeros(batch_size, self.heads, self.features, width, device=factory["device"],
                                  dtype=at_least_float32(factory["dtype"]))}
        if self.rotary:
            state["position"] = 0  # tokens seen: the next token's rotation
        return state

    def reset_state(self, state: State, first: torch.Tensor) -> State:
        """``state`` with the sequences where ``first`` (batch,) is True emptied (a document
        boundary in segment mode). The position is shared and left as it is: with an empty state,
        retention depends only on distances between positions, so a document may start anywhere."""
        if not bool(first.any()):
            return state
        where = first.to(state["S"].device).view(-1, 1, 1, 1)
        return {**state, "S": torch.where(where, torch.zeros_like(state["S"]), state["S"])}

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        s = state["S"].clone()  # updated in place by the step kernel; the caller's stays valid
        position = state.get("position", 0)
        q, k, v = self._qkv(x[:, None], position)  # (B, H, 1, .)
        g = self._log_decay(x[:, None])
        g = None if g is None else g[:, :, 0]  # (B, H) or (B, H, F)
        o = linear_attention_step(q[:, :, 0], k[:, :, 0], v[:, :, 0], g, s, scale=1.0)  # (B, H, P [+ 1])
        new_state = {"S": s, "position": position + 1} if self.rotary else {"S": s}
        return self._output(o[:, :, None], x[:, None])[:, 0], new_state

    state_size_rules = (
        StateSize("heads * features * (head_dim + 1)",
                  "(features, head_dim) state and the normaliser's key sum per head", when="normalize"),
        StateSize("heads * features * head_dim", "(features, head_dim) state per head", when="not normalize"),
    )
