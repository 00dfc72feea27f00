"""Reformer's LSH attention (Kitaev et al. 2020) as a mixer, on the kernel ``hybrids.kernels.lsh``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hybrids.kernels import apply_rotary, rotary_cos_sin
from hybrids.kernels.lsh import BACKENDS, bucket_ranks, lsh_attention, lsh_attention_step, lsh_buckets
from hybrids.mixers.attention import resolve_head_dim
from hybrids.mixers.base import Mixer
from hybrids.mixers.state_size import StateSize
from hybrids.parts.kv_cache import KVCache


class LSHAttention(Mixer):
    """Causal attention within buckets of a locality-sensitive hash of shared query-keys.

    Each head projects a token to one vector, its query; its key is the same vector normalised
    to unit length (Reformer's shared QK: a token's query and key hash alike, so that queries and
    the keys they would score highest land in the same bucket). ``n_hashes`` rounds of random
    rotations put every token in one of ``n_buckets`` buckets per round; in each round a query
    attends to the earlier tokens of its bucket in its chunk of ``chunk_size`` and the chunk
    before, and never to itself unless it is alone; the rounds are combined by their
    log-normalisers. The exact rule, and where it differs from Reformer (chunks cut within each
    bucket, so that the mixer is causal), are in :mod:`hybrids.kernels.lsh`.

    Args:
        d_model: model width.
        heads: attention heads.
        head_dim: width of a head; defaults to ``d_model // heads``.
        n_buckets: buckets per hashing round (even).
        n_hashes: hashing rounds.
        chunk_size: tokens per chunk of a bucket; a query sees at most ``2 * chunk_size - 1``
            keys per round.
        rotary: rotary positions on queries and keys after hashing (buckets are by content; the
            scores see relative position).
        rotary_base: RoPE base frequency.
        bias: biases in the projections.
        seed: seed of the random rotations. They are drawn once and kept as a buffer (saved in
            checkpoints), not redrawn every forward as in Reformer, so that a trained model
            decodes with the buckets it was trained with and ``step`` reproduces ``forward``.
        backend: kernel backend, ``"chunked"`` (O(L * chunk_size) memory) or ``"reference"``
            (dense (L, L) mask); ``None`` lets the kernel choose.

    Decoding state: an :class:`LSHCache`, every token's key and value and its bucket and rank
    per round (integers, not counted as state). ``state_size`` counts the
    keys and values, ``2 * heads * head_dim * L``, like full attention: the step keeps all keys
    although the rule only reads, per round and bucket, the latest ``2 * chunk_size - 1``.
    """

    def __init__(
        self,
        d_model: int,
        heads: int = 4,
        head_dim: int | None = None,
        n_buckets: int = 16,
        n_hashes: int = 2,
        chunk_size: int = 32,
        rotary: bool = True,
        rotary_base: float = 10000.0,
        bias: bool = False,
        seed: int = 0,
        backend: str | None = None,
    ) -> None:
        super().__init__(d_model)
        for name, value in (("heads", heads), ("n_hashes", n_hashes), ("chunk_size", chunk_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: must be a positive int, got {value!r}")
        if isinstance(n_buckets, bool) or not isinstance(n_buckets, int) or n_buckets < 2 or n_buckets % 2:
            raise ValueError(f"n_buckets: must be an even int >= 2 (buckets come in +/- pairs), got {n_buckets!r}")
        head_dim = resolve_head_dim(d_model, heads, head_dim, rotary)
        if backend is not None and backend not in BACKENDS:
            raise ValueError(f"backend: unknown {backend!r}; use one of {BACKENDS} or None")
        self.heads, self.head_dim = heads, head_dim
        self.n_buckets, self.n_hashes, self.chunk_size = n_buckets, n_hashes, chunk_size
        self.rotary, self.rotary_base, self.backend = rotary, rotary_base, backend
        self.qk_proj = nn.Linear(d_model, heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(d_model, heads * head_dim, bias=bias)
        self.out_proj = nn.Linear(heads * head_dim, d_model, bias=bias)
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("rotations", torch.randn(n_hashes, head_dim, n_buckets // 2, generator=generator))

    def _project(self, x: torch.Tensor, start: int):
        """x (B, L, d_model) -> q, k, v (B, H, L, hd) (q and k rotated from ``start``) and buckets
        (B, H, R, L)."""
        b, length, _ = x.shape
        q = self.qk_proj(x).view(b, length, self.heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, length, self.heads, self.head_dim).transpose(1, 2)
        k = F.normalize(q, dim=-1)
        # Hashing is not differentiable, and runs in float32 or wider: under autocast a near-tie of
        # the argmax could otherwise fall differently in forward and in step.
        buckets = lsh_buckets(k.detach().to(torch.promote_types(k.dtype, torch.float32)), self.rotations)
        if self.rotary:
            positions = torch.arange(start, start + length, device=x.device)
            cos, sin = rotary_cos_sin(positions, self.head_dim, self.rotary_base, dtype=q.dtype)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        return q, k, v, buckets

    def _merge(self, y: torch.Tensor) -> torch.Tensor:  # (B, H, L, hd) -> (B, L, d_model)
        b, _, length, _ = y.shape
        return self.out_proj(y.transpose(1, 2).reshape(b, length, self.heads * self.head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v, buckets = self._project(x, start=0)
        return self._merge(lsh_attention(q, k, v, buckets, self.chunk_size, backend=self.backend))

    def init_state(self, batch_size: int, max_len: int | None = None) -> "LSHCache":
        """An empty cache for ``batch_size`` sequences (``max_len`` preallocates, as in Attention)."""
        return LSHCache(batch_size, self.heads, self.head_dim, self.n_hashes, self.n_buckets, capacity=max_len or 0, **self._factory())

    def step(self, x: torch.Tensor, state: "LSHCache") -> tuple[torch.Tensor, "LSHCache"]:
        q, k, v, bucket = self._project(x[:, None, :], start=state.position)  # (B, H, 1, hd), (B, H, R, 1)
        state.append(k, v)
        state.append_buckets(bucket)
        keys, values = state.live()  # (B, H, t + 1, hd)
        y = lsh_attention_step(q[:, :, 0], keys, values, state.buckets, state.ranks, self.chunk_size)
        return self._merge(y[:, :, None])[:, 0], state

    def prefill(self, x: torch.Tensor, state: "LSHCache | None" = None) -> tuple[torch.Tensor, "LSHCache"]:
        """From an empty state: the parallel kernel, then the state after the prompt. From a
        non-empty state: token by token (chunked prefill is not a fast path here)."""
        if state is not None and state.position > 0:
            return super().prefill(x, state)
        b, length, _ = x.shape
        state = self.init_state(b, max_len=length) if state is None else state
        q, k, v, buckets = self._project(x, start=0)
        y = self._merge(lsh_attention(q, k, v, buckets, self.chunk_size, backend=self.backend))
        state.append(k, v)
        state.append_buckets(buckets)
        return y, state

    state_size_rules = (StateSize(
        "2 * heads * head_dim * L",
        "K and V of every token (and int64 buckets and ranks, not counted; the rule reads the last "
        "2 * chunk_size - 1 keys of a bucket)"),)


class LSHCache(KVCache):
    """The decode state of :class:`LSHAttention`: a KV cache of every token, plus each token's
    bucket and rank in it per round, and the tokens per bucket so far (int64, not state
    elements: they are bookkeeping of a few bytes per token, and ``state_size`` counts what
    attention reads, the keys and values).

    Attributes:
        buckets, ranks: (batch, heads, n_hashes, t), every cached token's bucket and the number
            of earlier tokens of that bucket.
        counts: (batch, heads, n_hashes, n_buckets), tokens per bucket so far.
    """

    def __init__(self, batch_size: int, heads: int, head_dim: int, n_hashes: int, n_buckets: int, **kwargs) -> None:
        super().__init__(batch_size, heads, head_dim, **kwargs)
        ints = {"device": self._k.device, "dtype": torch.int64}
        self.buckets = torch.zeros(batch_size, heads, n_hashes, 0, **ints)
        self.ranks = torch.zeros(batch_size, heads, n_hashes, 0, **ints)
        self.counts = torch.zeros(batch_size, heads, n_hashes, n_buckets, **ints)

    def append_buckets(self, buckets: torch.Tensor) -> None:
        """Record the buckets (batch, heads, n_hashes, n) of the n tokens just appended. The
        tensors are replaced, never written in place, so a :meth:`clone` may share them."""
        ranks, counts = bucket_ranks(buckets, self.counts.shape[-1])
        self.ranks = torch.cat([self.ranks, ranks + self.counts.gather(-1, buckets)], dim=-1)
        self.buckets = torch.cat([self.buckets, buckets], dim=-1)
        self.counts = self.counts + counts
