"""The ``"reference"`` backend of LSH attention: the dense (L, L) mask of the bucket rule and a
masked softmax per hashing round. O(L^2) memory; the ground truth of tests."""

from __future__ import annotations

import math

import torch

from hybrids.kernels.dtypes import at_least_float32
from hybrids.kernels.lsh.common import SELF_SCORE


def lsh_attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, buckets: torch.Tensor, chunk_size: int, scale: float
) -> torch.Tensor:
    """q, k, v (B, H, L, hd), buckets (B, H, R, L) -> (B, H, L, hd), written from the rule itself:
    ranks by counting, the mask as an (L, L) boolean per round."""
    work = at_least_float32(q.dtype)
    length = q.shape[-2]
    same = buckets[..., :, None] == buckets[..., None, :]  # (B, H, R, L, L): j shares i's bucket
    earlier = torch.ones(length, length, dtype=torch.bool, device=q.device).tril(-1)  # j < i
    rank = (same & earlier).sum(-1)  # (B, H, R, L): earlier tokens of the same bucket
    lowest = (torch.div(rank, chunk_size, rounding_mode="floor") - 1) * chunk_size  # first rank seen
    allowed = same & (earlier | torch.eye(length, dtype=torch.bool, device=q.device))
    allowed = allowed & (rank[..., None, :] >= lowest[..., :, None])
    scores = (q.to(work) @ k.to(work).transpose(-1, -2) * scale)[:, :, None]  # (B, H, 1, L, L)
    diagonal = torch.eye(length, dtype=torch.bool, device=q.device)
    scores = scores.masked_fill(diagonal, SELF_SCORE).expand(allowed.shape)
    scores = scores.masked_fill(~allowed, -math.inf)
    lse = scores.logsumexp(-1)  # (B, H, R, L)
    rounds = scores.softmax(-1) @ v.to(work)[:, :, None]  # (B, H, R, L, hd)
    weights = lse.softmax(dim=2)[..., None]  # each round by its share of the total mass
    return (weights * rounds).sum(2).to(q.dtype)
