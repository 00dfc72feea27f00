"""Rotary position embeddings (RoPE, Su et al. 2021) as pure tensor functions.

We use the "rotate half" layout: the head dimension is split into two halves that form the real
and imaginary parts of ``head_dim // 2`` complex numbers, each rotated by ``pos * theta_i`` with
``theta_i = base ** (-2 i / rotary_dim)``.
"""

from __future__ import annotations

import torch

from hybrids.kernels.dtypes import at_least_float32


def rotary_cos_sin(
    positions: torch.Tensor, rotary_dim: int, base: float = 10000.0, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables for integer ``positions`` of shape (L,): each (L, rotary_dim // 2).

    Angles are computed in float64 (float32 on MPS, which has no float64) so that large positions
    stay exact, and only then cast to ``dtype``.
    """
    if rotary_dim % 2:
        raise ValueError(f"rotary_dim must be even, got {rotary_dim}")
    # float64 where the device has it: a float32 angle pos * theta loses the position's low bits
    # beyond 2^24 tokens and the phase visibly before that (a stream carried across segments).
    work = at_least_float32(dtype) if positions.device.type == "mps" else torch.float64
    inv_freq = base ** (-torch.arange(0, rotary_dim, 2, device=positions.device, dtype=work) / rotary_dim)
    angles = positions.to(work)[:, None] * inv_freq[None, :]  # (L, rotary_dim/2)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` of shape (..., L, head_dim) by tables of shape (L, r/2), r <= head_dim.

    Only the first ``r = 2 * cos.shape[-1]`` channels are rotated (partial rotary); the rest pass
    through unchanged.
    """
    half = cos.shape[-1]
    x1, x2, rest = x[..., :half], x[..., half : 2 * half], x[..., 2 * half :]
    rotated = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    return torch.cat((rotated, rest), dim=-1) if rest.shape[-1] else rotated
