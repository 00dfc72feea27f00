"""Sparse causal attention (Longformer / BigBird style) on the kernel ``hybrids.kernels.sparse``."""

from __future__ import annotations

import math

import torch

from hybrids.kernels import at_least_float32
from hybrids.kernels.sparse import BACKENDS, SparsePattern, sparse_attention
from hybrids.mixers.attention import Attention
from hybrids.mixers.state_size import StateSize
from hybrids.parts.kv_cache import KVCache


class SparseAttention(Attention):
    """Causal self-attention restricted to a sparse pattern: a sliding window (optionally dilated),
    global tokens and BigBird random key blocks; ``step`` decodes with a cache of only the keys the
    pattern can still use.

    Query ``i`` sees key ``j <= i`` when ``i - j < window * dilation`` and ``(i - j) % dilation ==
    0`` (the window), or ``j < global_tokens`` (every query sees the global keys), or
    ``i < global_tokens`` (a global query sees every earlier key), or ``j`` lies in one of the
    ``random_blocks`` key blocks drawn for the query's block (see
    :class:`hybrids.kernels.sparse.SparsePattern`). ``window=None`` is full causal
    attention, the same function as :class:`Attention`.

    Args:
        d_model: model width.
        heads, kv_heads, head_dim, rotary, rotary_base, bias, rotary_dim, out_bias: as :class:`Attention`; the
            projections are Attention's (``q_proj``, ``kv_proj``, ``out_proj``), so checkpoints
            look alike and weights load across the two classes.
        window: keys per query in the sliding window (the query itself included); ``None`` for
            full attention.
        dilation: gap between window keys (Longformer's dilated window); span
            ``(window - 1) * dilation + 1``.
        global_tokens: the first ``global_tokens`` positions are global: they see and are seen by
            every position.
        random_blocks: key blocks of ``block_size`` positions drawn at random for each query block
            (BigBird), among blocks at or before it.
        block_size: size of the random blocks.
        dropout: must be 0. The sparse kernels have no attention-weight dropout, and dropping the
            mixer's output would duplicate the residual dropout of the block
            (``LanguageModel(dropout=...)``), so ``dropout > 0`` is refused rather than silently
            meaning something else than it does in :class:`Attention`.
        backend: kernel backend, ``"reference"``, ``"banded"``, ``"masked_sdpa"`` or ``"flex"``;
            ``None`` lets the kernel choose (on CPU ``masked_sdpa`` up to L = 256 and ``banded``
            beyond, ``flex`` on CUDA, or the environment variable
            ``HYBRIDS_SPARSE_ATTENTION_BACKEND``). ``flex`` cannot train on CPU.
        seed: seed of the random-block draw (the same for every layer built with it).

    Decoding state (``prefill``, ``step``): a :class:`~hybrids.parts.kv_cache.KVCache`, per sequence,
    in tokens of ``2 * kv_heads * head_dim`` elements:

    - window and global tokens only (``random_blocks=0``): the K/V of the global tokens seen so
      far, ``min(L, global_tokens)``, plus a ring of the latest non-global tokens,
      ``min(L - global_tokens, (window - 1) * dilation + 1)``: a key is overwritten when it can no
      longer be in any later query's window (``KVCache(keep_first=global_tokens,
      keep_last=window_span)``, preallocated up to that bound and never beyond). The state is
      bounded by ``global_tokens + (window - 1) * dilation + 1`` tokens whatever L, and never
      exceeds the ``L`` tokens of full attention. Keys of the ring outside the current query's
      dilation residue are masked.
    - ``random_blocks > 0`` or ``window=None``: the K/V of every token, as :class:`Attention`. A
      later query block may draw any earlier key block, so no key can ever be dropped: the state
      grows with L (a cache that doubles when full). Each step masks the keys with the exact
      pattern row of its query (:meth:`SparsePattern.allowed` with the random-block draw, which
      depends only on the query's block, not on L).

    ``state_size(L)`` is exactly that count; ``state.position`` (a Python int) counts the tokens
    seen.
    """

    def __init__(
        self,
        d_model: int,
        heads: int = 4,
        kv_heads: int | None = None,
        head_dim: int | None = None,
        window: int | None = 64,
        dilation: int = 1,
        global_tokens: int = 0,
        random_blocks: int = 0,
        block_size: int = SparsePattern.block_size,
        rotary: bool = True,
        rotary_base: float = 10000.0,
        bias: bool = False,
        dropout: float = 0.0,
        backend: str | None = None,
        seed: int = 0,
        rotary_dim: int | None = None,
        out_bias: bool | None = None,
    ) -> None:
        if not isinstance(heads, int) or heads <= 0:
            raise ValueError(f"heads: must be a positive int, got {heads!r}")
        if kv_heads is not None and (not isinstance(kv_heads, int) or kv_heads <= 0):
            raise ValueError(f"kv_heads: must be a positive int (or None for kv_heads=heads), got {kv_heads!r}")
        if head_dim is not None and (not isinstance(head_dim, int) or head_dim <= 0):
            raise ValueError(f"head_dim: must be a positive int (or None for d_model // heads), got {head_dim!r}")
        if dropout != 0:
            raise ValueError(
                f"dropout: SparseAttention has no attention-weight dropout (the sparse kernels do not "
                f"support it), got {dropout}; set dropout=0.0 and use the model's residual dropout "
                "(LanguageModel dropout) instead"
            )
        if backend is not None and backend not in BACKENDS:
            raise ValueError(
                f"backend: unknown {backend!r}; use one of {', '.join(BACKENDS)}, or None to let the kernel choose"
            )
        # SparsePattern validates window, dilation, global_tokens, random_blocks, block_size and
        # seed with messages that start with the argument's name.
        pattern = SparsePattern(window, dilation, global_tokens, random_blocks, block_size, causal=True, seed=seed)
        super().__init__(d_model, heads, kv_heads, head_dim, rotary, rotary_base, bias, dropout=0.0,
                         rotary_dim=rotary_dim, out_bias=out_bias)
        self.pattern = pattern
        self.window, self.dilation, self.global_tokens = window, dilation, global_tokens
        self.random_blocks, self.block_size, self.backend, self.seed = random_blocks, block_size, backend, seed

    @property
    def keeps_every_key(self) -> bool:
        """Whether ``step`` must cache every token (full attention or random blocks)."""
        return self.window is None or self.random_blocks > 0

    @property
    def window_span(self) -> int | None:
        """Positions from the oldest to the newest key of a window: (window - 1) * dilation + 1."""
        return None if self.window is None else (self.window - 1) * self.dilation + 1

    def extra_repr(self) -> str:
        return (
            f"heads={self.heads}, kv_heads={self.kv_heads}, head_dim={self.head_dim}, window={self.window}, "
            f"dilation={self.dilation}, global_tokens={self.global_tokens}, random_blocks={self.random_blocks}, "
            f"block_size={self.block_size}, rotary={self.rotary}"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._project(x, start=0)  # (B, H, L, hd), (B, Hkv, L, hd)
        y = sparse_attention(q, k, v, self.pattern, backend=self.backend)  # (B, H, L, hd)
        b, _, length, _ = y.shape
        return self.out_proj(y.transpose(1, 2).reshape(b, length, self.heads * self.head_dim))

    # -- recurrent form -------------------------------------------------------------------------

    def init_state(self, batch_size: int, max_len: int | None = None) -> KVCache:
        """An empty cache for ``batch_size`` sequences; ``max_len`` allocates for that many tokens
        at once (clipped to the window's bound), else the cache grows by doubling."""
        if self.keeps_every_key:
            return KVCache(batch_size, self.kv_heads, self.head_dim, capacity=max_len or 0, **self._factory())
        return KVCache(
            batch_size, self.kv_heads, self.head_dim, capacity=max_len or 0,
            keep_first=self.global_tokens, keep_last=self.window_span, **self._factory(),
        )

    def step(self, x: torch.Tensor, state: KVCache) -> tuple[torch.Tensor, KVCache]:
        t = state.position
        q, k, v = self._project(x[:, None, :], start=t)  # (B, H, 1, hd), (B, Hkv, 1, hd)
        state.append(k, v)  # in place; a ring overwrites the key that left every later window
        keys, values = state.live()  # (B, Hkv, n, hd), slot order
        mask = None
        if self.window is None:
            pass  # full causal attention: every cached key
        elif self.keeps_every_key:
            # The exact pattern row of query t (the cache keeps every key, slot = position). The
            # random draw of t's block depends only on the blocks up to it, so the table of the
            # first (t // block_size + 1) blocks suffices (and is cached by the kernel, once per
            # block).
            length = (t // self.block_size + 1) * self.block_size
            lookup = self.pattern.random_lookup(length, x.device)
            query, keys_seen = torch.tensor(t, device=x.device), torch.arange(t + 1, device=x.device)
            mask = self.pattern.allowed(query, keys_seen, lookup)
        elif self.dilation > 1:
            # The cache holds the global keys (all visible) and the last window_span positions;
            # of those, the window has the ones whose lag t - p is a multiple of the dilation. A
            # global query (t < global_tokens) has only global keys cached: all visible.
            positions = state.slot_positions()  # (n,)
            mask = (positions < self.global_tokens) | ((t - positions) % self.dilation == 0)
        # (dilation 1 without random blocks: every cached key is in the window or global.)
        return self._attend_one(q, keys, values, mask), state

    def prefill(self, x: torch.Tensor, state: KVCache | None = None) -> tuple[torch.Tensor, KVCache]:
        """x (B, L, d_model) through the sparse kernel -> (B, L, d_model) and the cache after it.

        From an empty state this is ``forward`` keeping what ``step`` needs (the cache's
        ``append`` keeps the global tokens and the last window span, or every key). Continuing
        from a state (chunked prefill) is exact and parallel too, see :meth:`_continue`.
        """
        b, length, _ = x.shape
        cache = self.init_state(b, max_len=length) if state is None else state
        start = cache.position
        q, k, v = self._project(x, start=start)  # (B, H, L, hd), (B, Hkv, L, hd), rotary from start
        if start == 0:
            y = sparse_attention(q, k, v, self.pattern, backend=self.backend)  # (B, H, L, hd)
            cache.append(k, v)
        elif self.window is None:
            # Full causal attention: the chunk's queries over every cached key and its own, with
            # the causal mask aligned bottom-right (Attention.prefill).
            cache.append(k, v)
            keys, values = cache.live()  # (B, Hkv, start + L, hd)
            rows = torch.arange(start, start + length, device=x.device)
            mask = torch.arange(start + length, device=x.device)[None, :] <= rows[:, None]  # (L, start + L)
            return self._attend(q, keys, values, causal=False, mask=mask), cache
        else:
            y = self._continue(q, k, v, cache)
            cache.append(k, v)
        return self.out_proj(y.transpose(1, 2).reshape(b, length, self.heads * self.head_dim)), cache

    def _continue(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """The chunk's queries q (B, H, L, hd) at positions start.. over the cached keys and the
        chunk's own k, v (B, Hkv, L, hd), under the pattern, through the sparse kernel.

        The kernel takes one sequence from position 0, so the cached keys go in front of the chunk
        in position order, n of them, with n dummy (zero) queries whose outputs are dropped:

        - window and globals: the cache holds the global keys (positions 0..G-1) and the last
          window span before the chunk. If nothing has left the ring yet, the sequence is exactly
          positions 0..start+L-1. Otherwise the ring keys and the chunk are contiguous in position
          and sit after the G globals: every index is its position minus the same shift, so the
          window rule (on index differences) is the true one; the globals are seen by every query
          whatever the window says, and no chunk query is global (its position is past the
          globals). The chunk's queries therefore see exactly their pattern rows, at a cost of
          at most G + span extra rows.
        - random blocks: the cache holds every key, so the sequence is exactly positions
          0..start+L-1 and the pattern (block boundaries, draws) is the true one; the ``start``
          dummy rows make each chunk cost O(start + L) rows of the kernel instead of O(L), still
          linear and far cheaper than stepping (each step attends over every cached key).
        """
        kept_k, kept_v = cache.ordered()  # (B, Hkv, n, hd), increasing positions
        n = kept_k.shape[2]
        b, heads, _, hd = q.shape
        queries = torch.cat((q.new_zeros(b, heads, n, hd), q), dim=2)  # (B, H, n + L, hd)
        keys = torch.cat((kept_k.to(k.dtype), k), dim=2)  # (B, Hkv, n + L, hd)
        values = torch.cat((kept_v.to(v.dtype), v), dim=2)
        return sparse_attention(queries, keys, values, self.pattern, backend=self.backend)[:, :, n:]

    def _attend_one(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """One query per sequence over n cached keys: q (B, H, 1, hd), k and v (B, Hkv, n, hd),
        mask (n,) bool or None (every key) -> (B, d_model). Softmax in float32 at least, as the
        kernel does."""
        b = q.shape[0]
        group = self.heads // self.kv_heads
        work = at_least_float32(q.dtype)
        qg = q.to(work).view(b, self.kv_heads, group, self.head_dim)  # (B, Hkv, group, hd)
        scores = qg @ k.to(work).transpose(-1, -2) * self.head_dim**-0.5  # (B, Hkv, group, n)
        if mask is not None:
            scores = scores.masked_fill(~mask, -math.inf)
        y = (scores.softmax(dim=-1) @ v.to(work)).to(q.dtype)  # (B, Hkv, group, hd)
        return self.out_proj(y.reshape(b, self.heads * self.head_dim))

    state_size_rules = (
        StateSize("2 * kv_heads * head_dim * (min(L, global_tokens) + min(L - min(L, global_tokens), window_span))",
                  "K and V of the global tokens and of the last window span, (window - 1) * dilation + 1",
                  when="not keeps_every_key"),
        StateSize("2 * kv_heads * head_dim * L",
                  "K and V of every token (no window, or random blocks: a later query block may draw any "
                  "earlier key block)", when="keeps_every_key"),
    )
