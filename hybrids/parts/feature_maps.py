"""Feature maps that linearise attention: ``phi`` such that ``phi(q) . phi(k)`` is (or estimates)
the weight attention gives key k for query q, so that causal attention becomes a linear
recurrence over a (features, V) state (:mod:`hybrids.kernels.linear`).

Every map takes (..., dim) to (..., out_dim) and carries its own scaling, so the kernel runs with
``scale=1``:

- ``"identity"``: ``phi(x) = x / dim^(1/4)``: the kernel is the softmax logit ``q.k / sqrt(dim)``
  itself (plain linear attention; RetNet's and GLA's choice). Not positive: normalising by
  ``phi(q) . z`` would divide by numbers near zero, so mixers pair it with an output norm.
- ``"elu"``: ``phi(x) = elu(x) + 1`` (Katharopoulos et al. 2020, "Transformers are RNNs"): a
  positive kernel, normalised.
- ``"favor"``: Performer's FAVOR+ positive orthogonal random features (Choromanski et al. 2021):
  with ``x' = x / dim^(1/4)`` and rows ``w_i`` of a random (m, dim) projection,
  ``phi(x) = exp(W x' - |x'|^2 / 2) / sqrt(m)`` estimates ``exp(q.k / sqrt(dim))``, the softmax
  kernel, without bias; its error falls as ``1 / sqrt(m)``. The rows are drawn in blocks of
  ``dim`` orthogonal directions (QR of a Gaussian matrix) with chi-distributed norms, so each row
  is still marginally Gaussian but the estimate has lower variance than i.i.d. rows. The
  projection is fixed (a buffer, saved with the model) unless ``redraw`` asks the mixer to draw a
  new one before every training forward, as Performer does to avoid fitting one draw.
  No max-subtraction is applied: ``w.x' - |x'|^2/2 <= |w|^2/2`` bounds every feature by
  ``exp(|w|^2 / 2)``, ~exp(dim / 2) for typical rows, finite in float32 for head dims up to ~128,
  and a shift that depended on the sequence would break the equality of ``forward`` and ``step``.
- ``"taylor"``: Based's second-order Taylor expansion (Arora et al. 2024, "Simple linear
  attention language models balance the recall-throughput tradeoff"):
  ``phi(x) = [1, x', vec(x' x'^T) / sqrt(2)]`` with ``x' = x / dim^(1/4)``, so that
  ``phi(q) . phi(k) = 1 + s + s^2 / 2`` with ``s = q.k / sqrt(dim)``: exactly the first three
  terms of ``exp(s)``, positive for every s (its least value is 1/2). ``out_dim = 1 + dim +
  dim^2``, which is why Based projects q and k to a small ``dim`` (16) first. That closed form is
  its ``kernel_scores``: the scores of a quadratic (attention-like) pass cost ``dim``, not
  ``out_dim``, multiply-adds per pair.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

FEATURE_MAPS = ("identity", "elu", "favor", "taylor")


class FeatureMap(nn.Module):
    """Base of the maps: ``dim`` in, ``out_dim`` out; ``positive`` if every kernel value is > 0
    (then normalising by ``phi(q) . sum phi(k)`` is safe)."""

    positive = True

    def __init__(self, dim: int) -> None:
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
            raise ValueError(f"dim: must be a positive int, got {dim!r}")
        self.dim = dim

    @property
    def out_dim(self) -> int:
        return self.dim

    def keys(self, x: torch.Tensor) -> torch.Tensor:
        """The map of the keys, ``forward(x)``; a map may lay it out as the transpose of a
        (..., out_dim, L) tensor, the order in which the kernel's ``q k^T`` reads it (so that its
        gradient arrives in the features' own order, not transposed into a copy)."""
        return self(x)

    def kernel_scores(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor | None:
        """``phi(q) phi(k)^T`` (..., Lq, Lk) from the unmapped q (..., Lq, dim) and k (..., Lk,
        dim) in closed form, without forming the features; None where the map has none."""
        return None

    def extra_repr(self) -> str:
        return f"dim={self.dim}, out_dim={self.out_dim}"


class IdentityMap(FeatureMap):
    positive = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.dim**-0.25


class EluPlusOne(FeatureMap):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.elu(x) + 1


def orthogonal_gaussian_rows(rows: int, dim: int, generator: torch.Generator | None = None,
                             orthogonal: bool = True) -> torch.Tensor:
    """(rows, dim) float64: each row marginally N(0, I_dim); with ``orthogonal``, the rows come in
    blocks of ``dim`` mutually orthogonal directions with chi(dim)-distributed norms."""
    if not orthogonal:
        return torch.randn(rows, dim, generator=generator, dtype=torch.float64)
    blocks = []
    for _ in range(math.ceil(rows / dim)):
        q, r = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
        q = q * torch.sign(torch.diagonal(r))  # a Haar-distributed rotation, not QR's sign convention
        blocks.append(q.T)
    directions = torch.cat(blocks)[:rows]
    norms = torch.randn(rows, dim, generator=generator, dtype=torch.float64).norm(dim=1, keepdim=True)
    return directions * norms


class FavorPlus(FeatureMap):
    """Performer's positive random features (module docstring).

    Args:
        dim: input dimension (the head's q/k width).
        num_features: m; default ``round(dim * ln(dim))`` (at least dim), the paper's Theta(d log d).
        orthogonal: orthogonal blocks (FAVOR+) rather than i.i.d. Gaussian rows.
        redraw: the owning mixer calls :meth:`redraw_` before every training forward.
        seed: seed of the first draw (None: torch's global generator).
    """

    def __init__(self, dim: int, num_features: int | None = None, orthogonal: bool = True, redraw: bool = False,
                 seed: int | None = None) -> None:
        super().__init__(dim)
        m = max(dim, round(dim * math.log(dim))) if num_features is None else num_features
        if isinstance(m, bool) or not isinstance(m, int) or m <= 0:
            raise ValueError(f"num_features: must be a positive int or None, got {num_features!r}")
        self.num_features, self.orthogonal, self.redraw = m, orthogonal, redraw
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        self.register_buffer("projection", orthogonal_gaussian_rows(m, dim, generator, orthogonal).float())

    @property
    def out_dim(self) -> int:
        return self.num_features

    @torch.no_grad()
    def redraw_(self, generator: torch.Generator | None = None) -> None:
        """A new projection in place (same shape, device and dtype)."""
        rows = orthogonal_gaussian_rows(self.num_features, self.dim, generator, self.orthogonal)
        self.projection.copy_(rows.to(self.projection.device, self.projection.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # exp(W x' - |x'|^2 / 2 - ln(m) / 2), x' = x / dim^(1/4), as one matrix product of
        # [x, |x|^2, 1] (..., dim + 2) with [W / dim^(1/4), -1 / (2 sqrt(dim)), -ln(m) / 2] and one
        # exp: the (..., m) tensors see no scaling, subtraction or product of their own (each a
        # pass over the largest tensors of a Performer layer, forward and backward).
        weights, augmented = self._augmented(x)
        return torch.exp(augmented @ weights.T)  # (..., m)

    def keys(self, x: torch.Tensor) -> torch.Tensor:
        # exp(weights [x, |x|^2, 1]^T): (..., m, L) in memory, handed on transposed. The kernel's
        # scores q k^T then read it as stored, and the gradient of k^T comes back in this order:
        # features in (..., L, m) order got a (..., m, L) gradient, transposed into a copy of the
        # layer's largest tensor (5 ms of a 170 ms step at width 128).
        weights, augmented = self._augmented(x)
        return torch.exp(weights @ augmented.transpose(-1, -2)).transpose(-1, -2)  # (..., L, m)

    def _augmented(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.num_features
        weights = torch.cat([
            self.projection.to(x.dtype) * self.dim**-0.25,
            x.new_full((m, 1), -0.5 * self.dim**-0.5),
            x.new_full((m, 1), -0.5 * math.log(m)),
        ], dim=1)  # (m, dim + 2)
        augmented = torch.cat([x, (x * x).sum(-1, keepdim=True), torch.ones_like(x[..., :1])], dim=-1)
        return weights, augmented


class TaylorExp(FeatureMap):
    @property
    def out_dim(self) -> int:
        return 1 + self.dim + self.dim**2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.dim**-0.25
        second = (x[..., :, None] * x[..., None, :]).flatten(-2) * 0.5**0.5  # (..., dim^2)
        return torch.cat([torch.ones_like(x[..., :1]), x, second], dim=-1)

    def kernel_scores(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        s = (q @ k.transpose(-1, -2)) * self.dim**-0.5
        return 1 + s + 0.5 * s * s


def build_feature_map(name: str, dim: int, num_features: int | None = None, redraw: bool = False,
                      seed: int | None = None) -> FeatureMap:
    """The map called ``name`` (one of FEATURE_MAPS) on inputs of width ``dim``."""
    if name == "identity":
        return IdentityMap(dim)
    if name == "elu":
        return EluPlusOne(dim)
    if name == "favor":
        return FavorPlus(dim, num_features, redraw=redraw, seed=seed)
    if name == "taylor":
        return TaylorExp(dim)
    raise ValueError(f"feature_map: unknown {name!r}; use one of {FEATURE_MAPS}")
