"""What every backend of LSH attention shares: the self score and the hash."""

from __future__ import annotations

import torch

# Score of a query against its own key. With shared query-keys, q_i . k_i is the largest score a
# query can have, so Reformer keeps a token from attending to itself unless nothing else is in
# reach: a finite score far below any real one (not -inf, so that a token alone in its chunk
# still has one key). -5e4 fits float16 (max 65504) and makes exp(score - real) underflow to 0.
SELF_SCORE = -5.0e4


def lsh_buckets(x: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Angular LSH (Andoni et al. 2015, as in Reformer): x (B, H, L, hd) and random rotations
    (R, hd, n_buckets // 2) -> buckets (B, H, R, L), int64 in [0, n_buckets).

    Round r projects x on its n_buckets / 2 random directions and picks the largest of the
    projections and their negations: vectors at a small angle share a bucket with high
    probability. Scale-free, so normalised and raw vectors hash alike.
    """
    if x.ndim != 4:
        raise ValueError(f"x: expected (batch, heads, L, head_dim), got shape {tuple(x.shape)}")
    if rotations.ndim != 3 or rotations.shape[1] != x.shape[-1]:
        raise ValueError(
            f"rotations: expected (n_hashes, head_dim={x.shape[-1]}, n_buckets // 2), got {tuple(rotations.shape)}"
        )
    projected = torch.einsum("bhld,rdn->bhrln", x, rotations.to(x.dtype))  # (B, H, R, L, n_buckets / 2)
    return torch.cat([projected, -projected], dim=-1).argmax(dim=-1)


def bucket_ranks(buckets: torch.Tensor, n_buckets: int) -> tuple[torch.Tensor, torch.Tensor]:
    """buckets (…, L) -> (ranks (…, L): earlier tokens of each token's bucket, counts
    (…, n_buckets): tokens per bucket), in time order: the decode state after a prompt."""
    one_hot = torch.nn.functional.one_hot(buckets, n_buckets)  # (…, L, n_buckets)
    seen = one_hot.cumsum(dim=-2) - one_hot  # tokens of each bucket before each position
    return seen.gather(-1, buckets[..., None])[..., 0], one_hot.sum(dim=-2)
