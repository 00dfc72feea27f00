"""The decode step of LSH attention: the newest token's query against every cached key, masked
by the bucket rule (the cache keeps all keys; a bounded cache would keep, per round and bucket,
only the last 2 * chunk_size - 1 keys)."""

from __future__ import annotations

import math

import torch

from hybrids.kernels.dtypes import at_least_float32
from hybrids.kernels.lsh.common import SELF_SCORE


def lsh_attention_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_buckets: torch.Tensor,
    key_ranks: torch.Tensor,
    chunk_size: int,
    scale: float | None = None,
) -> torch.Tensor:
    """One query per sequence and head against its cache, itself included as the last key.

    q: (B, H, hd), the newest token's query. k, v: (B, H, t, hd), the cached keys and values,
    the newest token's last. key_buckets, key_ranks: (B, H, R, t), every cached token's bucket
    and rank within it per round (the newest's last). Returns (B, H, hd).
    """
    work = at_least_float32(q.dtype)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    bucket, rank = key_buckets[..., -1:], key_ranks[..., -1:]  # (B, H, R, 1): the query's
    lowest = (torch.div(rank, chunk_size, rounding_mode="floor") - 1) * chunk_size
    allowed = (key_buckets == bucket) & (key_ranks >= lowest)  # (B, H, R, t); every key is <= now
    scores = torch.einsum("bhd,bhtd->bht", q.to(work), k.to(work)) * scale  # (B, H, t)
    scores = scores.clone()
    scores[..., -1] = SELF_SCORE
    scores = scores[:, :, None].expand(allowed.shape).masked_fill(~allowed, -math.inf)  # (B, H, R, t)
    lse = scores.logsumexp(-1)  # (B, H, R)
    rounds = torch.einsum("bhrt,bhtd->bhrd", scores.softmax(-1), v.to(work))
    return (lse.softmax(dim=-1)[..., None] * rounds).sum(2).to(q.dtype)
