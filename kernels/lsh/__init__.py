"""LSH attention (Reformer, Kitaev et al. 2020), causal, on shared query-keys.

Each hashing round r puts every token in a bucket (:func:`lsh_buckets`: random rotations of the
shared query-key). Within a round, a token's *rank* is the number of earlier tokens of its
bucket, and the bucket's tokens, in time order, are cut into chunks of ``chunk_size``. Query i
sees key j when, in that round::

    bucket(j) == bucket(i),  j <= i,  rank(j) >= (rank(i) // chunk_size - 1) * chunk_size

that is, the earlier tokens of its bucket in its own chunk and the chunk before it (at most
``2 * chunk_size - 1`` keys and itself). Its own key scores ``SELF_SCORE`` (far below any real
score): with shared query-keys q_i . k_i would dominate, so a token attends to itself only when
nothing else is in reach. Each round gives a softmax output and its log-normaliser; rounds are
combined by those normalisers, ``sum_r softmax_r(lse_r) * out_r``: the softmax over the union of
the rounds' keys, a key found in several rounds counted once per round.

Where this differs from Reformer: its chunks are cut from the sorted sequence across bucket
boundaries, so which keys a query sees depends on how many *later* tokens hash to lower buckets:
a future token can change a past output. Chunks cut within each bucket depend on earlier tokens
only, so the op is causal and ``step`` reproduces ``forward`` exactly.

Tensors: ``q, k, v`` (batch, heads, L, head_dim), ``buckets`` (batch, heads, n_hashes, L) int64.

Backends (``backend=``, else ``HYBRIDS_LSH_ATTENTION_BACKEND``, else ``"chunked"``):

- ``"reference"`` (:mod:`.reference`): the dense (L, L) mask of the rule, ranks by counting.
  O(L^2) memory; the ground truth for tests.
- ``"chunked"`` (:mod:`.chunked`): sorts each round by bucket and scores blocks of
  ``chunk_size`` queries against the 3 * chunk_size sorted keys that can hold their keys:
  O(L * chunk_size) memory, no (L, L) tensor.

Softmax runs in float32 for float16/bfloat16 inputs; the output has ``q``'s dtype.
"""

from __future__ import annotations

import torch

from hybrids.kernels.dispatch import Backend, Op
from hybrids.kernels.lsh.common import SELF_SCORE, bucket_ranks, lsh_buckets
from hybrids.kernels.lsh.step import lsh_attention_step

_PACKAGE = "hybrids.kernels.lsh"

LSH_ATTENTION = Op(
    "lsh_attention",
    (
        Backend("reference", f"{_PACKAGE}.reference:lsh_attention_reference", priority=0, automatic=()),
        Backend("chunked", f"{_PACKAGE}.chunked:lsh_attention_chunked", priority=10),
    ),
)
BACKENDS = LSH_ATTENTION.names
BACKEND_ENV = LSH_ATTENTION.env


def lsh_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    buckets: torch.Tensor,
    chunk_size: int,
    scale: float | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Causal LSH attention (module docstring): (batch, heads, L, head_dim) -> the same shape.

    q, k, v: (batch, heads, L, head_dim). buckets: (batch, heads, n_hashes, L) int64, e.g. from
    :func:`lsh_buckets`. chunk_size: tokens per chunk of a bucket. scale: multiplies q k^T,
    ``head_dim ** -0.5`` by default.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not t.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor, got {t.dtype}")
        if t.ndim != 4 or t.shape != q.shape:
            raise ValueError(f"{name}: expected (batch, heads, L, head_dim) = {tuple(q.shape)}, got {tuple(t.shape)}")
    if buckets.dtype != torch.int64:
        raise TypeError(f"buckets: expected int64 bucket ids, got {buckets.dtype}")
    b, h, length, _ = q.shape
    if buckets.ndim != 4 or (buckets.shape[0], buckets.shape[1], buckets.shape[3]) != (b, h, length) or not buckets.shape[2]:
        raise ValueError(f"buckets: expected (batch={b}, heads={h}, n_hashes >= 1, L={length}), got {tuple(buckets.shape)}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size: must be a positive int, got {chunk_size!r}")
    backend = LSH_ATTENTION.select(q.device, q.dtype, backend)
    if q.numel() == 0:
        return q.clone()
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    # A chunk longer than the sequence is the whole sequence: every rank is below L, so the rule
    # (rank(i) // c - 1) * c <= rank(j) holds for c = L as for any c >= L; capping it keeps the
    # chunked backend from padding to chunk_size.
    chunk_size = min(chunk_size, max(length, 1))
    return LSH_ATTENTION.function(backend)(q, k, v, buckets, chunk_size, scale)


__all__ = [
    "BACKENDS",
    "BACKEND_ENV",
    "LSH_ATTENTION",
    "SELF_SCORE",
    "bucket_ranks",
    "lsh_attention",
    "lsh_attention_step",
    "lsh_buckets",
]
