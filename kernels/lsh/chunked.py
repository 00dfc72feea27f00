"""The ``"chunked"`` backend of LSH attention: sort each round by bucket, attend block by block.

Sorting a round's tokens by (bucket, position) puts every bucket's tokens together in time order.
A query of rank ``r`` in its bucket sees the keys of ranks ``(r // c - 1) * c .. r`` of its
bucket (itself and at most ``2 * chunk_size - 1`` others), which sit right before it in the
sorted order. So the
sorted sequence is cut into blocks of ``c`` queries and block ``g`` is scored against the keys
of sorted blocks ``g - 2 .. g`` (3c keys, masked by bucket and rank): scores are
(B, H, R, L / c, c, 3c), never (L, L), and memory is O(L * c) per head and round.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from hybrids.kernels.dtypes import at_least_float32
from hybrids.kernels.lsh.common import SELF_SCORE


def _ranks_in_sorted_order(sorted_buckets: torch.Tensor) -> torch.Tensor:
    """(…, L) buckets in sorted order -> each token's rank within its bucket (earlier tokens of
    the same bucket): its sorted index minus the sorted index where its bucket starts."""
    length = sorted_buckets.shape[-1]
    index = torch.arange(length, device=sorted_buckets.device).expand_as(sorted_buckets)
    starts = torch.ones_like(sorted_buckets, dtype=torch.bool)
    starts[..., 1:] = sorted_buckets[..., 1:] != sorted_buckets[..., :-1]
    first = torch.where(starts, index, torch.zeros_like(index)).cummax(dim=-1).values
    return index - first


def lsh_attention_chunked(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, buckets: torch.Tensor, chunk_size: int, scale: float
) -> torch.Tensor:
    """q, k, v (B, H, L, hd), buckets (B, H, R, L) -> (B, H, L, hd) in O(L * chunk_size) memory."""
    work = at_least_float32(q.dtype)
    batch, heads, length, head_dim = q.shape
    rounds, c = buckets.shape[2], chunk_size
    order = torch.sort(buckets, dim=-1, stable=True).indices  # (B, H, R, L): sorted -> original
    sorted_buckets = buckets.gather(-1, order)
    ranks = _ranks_in_sorted_order(sorted_buckets)

    def sort(t: torch.Tensor) -> torch.Tensor:  # (B, H, L, hd) -> (B, H, R, L, hd), each round's order
        t = t.to(work)[:, :, None].expand(batch, heads, rounds, length, head_dim)
        return t.gather(3, order[..., None].expand(batch, heads, rounds, length, head_dim))

    blocks = math.ceil(length / c)
    tail = blocks * c - length
    # Queries: (B, H, R, blocks, c, hd). Keys: 2c of padding in front, then windows of 3c keys
    # with stride c, so window g holds sorted keys (g - 2) c .. (g + 1) c - 1.
    queries = F.pad(sort(q), (0, 0, 0, tail)).view(batch, heads, rounds, blocks, c, head_dim)

    def windows(t: torch.Tensor, fill: float | int) -> torch.Tensor:  # (..., L[, hd]) -> (..., blocks, 3c[, hd])
        if t.ndim == 5:
            padded = F.pad(t, (0, 0, 2 * c, tail), value=fill)
            return padded.unfold(3, 3 * c, c).transpose(-1, -2)
        return F.pad(t, (2 * c, tail), value=fill).unfold(3, 3 * c, c)

    keys, values = windows(sort(k), 0.0), windows(sort(v), 0.0)  # (B, H, R, blocks, 3c, hd)
    # Padding gets bucket -1 (no real token's) and rank -1.
    key_buckets, key_ranks = windows(sorted_buckets, -1), windows(ranks, -1)  # (B, H, R, blocks, 3c)
    query_buckets = F.pad(sorted_buckets, (0, tail), value=-1).view(batch, heads, rounds, blocks, c)
    query_ranks = F.pad(ranks, (0, tail), value=-1).view(batch, heads, rounds, blocks, c)

    lowest = (torch.div(query_ranks, c, rounding_mode="floor") - 1) * c
    kb, kr = key_buckets[..., None, :], key_ranks[..., None, :]  # (..., 1, 3c)
    qb, qr = query_buckets[..., :, None], query_ranks[..., :, None]  # (..., c, 1)
    allowed = (kb == qb) & (kr <= qr) & (kr >= lowest[..., :, None])  # (B, H, R, blocks, c, 3c)
    own = (kb == qb) & (kr == qr)  # the query's own key (padding rows match themselves: harmless)

    scores = queries @ keys.transpose(-1, -2) * scale  # (B, H, R, blocks, c, 3c)
    scores = scores.masked_fill(own, SELF_SCORE).masked_fill(~allowed, -math.inf)
    lse = scores.logsumexp(-1)  # (B, H, R, blocks, c)
    out = scores.softmax(-1) @ values  # (B, H, R, blocks, c, hd)

    # Back to time order: sorted position s held token order[s].
    out = out.reshape(batch, heads, rounds, blocks * c, head_dim)[..., :length, :]
    lse = lse.reshape(batch, heads, rounds, blocks * c)[..., :length]
    inverse = order.argsort(dim=-1)
    out = out.gather(3, inverse[..., None].expand(batch, heads, rounds, length, head_dim))
    lse = lse.gather(-1, inverse)
    weights = lse.softmax(dim=2)[..., None]  # (B, H, R, L, 1): rounds by their share of the mass
    return (weights * out).sum(2).to(q.dtype)
