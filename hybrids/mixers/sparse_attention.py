"""Sparse causal attention (Longformer / BigBird style) on the kernel ``hybrids.kernels.sparse``."""

from __future__ import annotations

import math

import torch

from hybrids.kernels import at_least_float32
from hybrids.kernels.sparse import BACKENDS, SparsePattern, sparse_attention
from hybrids.mixers.attention import Attention
from hybrids.mixers.base import State


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
        heads, kv_heads, head_dim, rotary, rotary_base, bias: as :class:`Attention`; the
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
        backend: kernel backend, ``"reference"``, ``"banded"`` or ``"flex"``; ``None`` lets the
            kernel choose (``banded`` on CPU, ``flex`` on CUDA, or the environment variable
            ``HYBRIDS_SPARSE_ATTENTION_BACKEND``). ``flex`` cannot train on CPU.
        seed: seed of the random-block draw (the same for every layer built with it).

    Decoding state (``step``), per sequence, in tokens of ``2 * kv_heads * head_dim`` elements:

    - window and global tokens only (``random_blocks=0``): the K/V of the global tokens seen so
      far, ``min(L, global_tokens)``, plus a sliding buffer of the latest non-global tokens,
      ``min(L - global_tokens, (window - 1) * dilation + 1)``: the oldest key leaves the buffer
      when it can no longer be in any later query's window. The state is bounded by
      ``global_tokens + (window - 1) * dilation + 1`` tokens whatever L, and never exceeds the
      ``L`` tokens of full attention. Keys of the buffer outside the current query's dilation
      residue are masked.
    - ``random_blocks > 0`` or ``window=None``: the K/V of every token, as :class:`Attention`. A
      later query block may draw any earlier key block, so no key can ever be dropped: the state
      grows with L. Each step masks the keys with the exact pattern row of its query
      (:meth:`SparsePattern.allowed` with the random-block draw, which depends only on the
      query's block, not on L).

    ``state_size(L)`` is exactly that count; ``state["position"]`` (a Python int) counts the tokens
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
        super().__init__(d_model, heads, kv_heads, head_dim, rotary, rotary_base, bias, dropout=0.0)
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

    def init_state(self, batch_size: int) -> State:
        empty = torch.empty(batch_size, self.kv_heads, 0, self.head_dim, **self._factory())
        state: State = {"k": empty, "v": empty.clone(), "position": 0}
        if not self.keeps_every_key:
            state["global_k"], state["global_v"] = empty.clone(), empty.clone()
        return state

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        t = state["position"]
        q, k, v = self._project(x[:, None, :], start=t)  # (B, H, 1, hd), (B, Hkv, 1, hd)
        if self.keeps_every_key:
            keys = torch.cat((state["k"], k), dim=2)
            values = torch.cat((state["v"], v), dim=2)
            mask = None
            if self.window is not None:
                # The exact pattern row of query t. The random draw of t's block depends only on
                # the blocks up to it, so the table of the first (t // block_size + 1) blocks
                # suffices (and is cached by the kernel, once per block).
                length = (t // self.block_size + 1) * self.block_size
                lookup = self.pattern.random_lookup(length, x.device)
                query, keys_seen = torch.tensor(t, device=x.device), torch.arange(t + 1, device=x.device)
                mask = self.pattern.allowed(query, keys_seen, lookup)
            y = self._attend_one(q, keys, values, mask)
            return y, {"k": keys, "v": values, "position": t + 1}

        global_k, global_v = state["global_k"], state["global_v"]
        recent_k, recent_v = state["k"], state["v"]
        if t < self.global_tokens:
            # A global token: cached for good. A global query sees every earlier key, and all of
            # them are global keys.
            global_k, global_v = torch.cat((global_k, k), dim=2), torch.cat((global_v, v), dim=2)
            y = self._attend_one(q, global_k, global_v, None)
        else:
            # Slide the buffer of recent non-global tokens: the oldest leaves once it is
            # window_span positions behind, out of reach of every later query.
            oldest_kept = max(0, recent_k.shape[2] - (self.window_span - 1))
            recent_k = torch.cat((recent_k[:, :, oldest_kept:], k), dim=2)
            recent_v = torch.cat((recent_v[:, :, oldest_kept:], v), dim=2)
            # Buffer slot s holds position t - lag, lag = n - 1 - s < window * dilation: in the
            # window exactly when the lag is a multiple of the dilation. Global keys all count.
            n = recent_k.shape[2]
            lag = torch.arange(n - 1, -1, -1, device=x.device)
            in_window = lag % self.dilation == 0
            mask = torch.cat((torch.ones(global_k.shape[2], dtype=torch.bool, device=x.device), in_window))
            keys, values = torch.cat((global_k, recent_k), dim=2), torch.cat((global_v, recent_v), dim=2)
            y = self._attend_one(q, keys, values, mask)
        return y, {"k": recent_k, "v": recent_v, "global_k": global_k, "global_v": global_v, "position": t + 1}

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

    def state_size(self, seq_len: int) -> int:
        per_token = 2 * self.kv_heads * self.head_dim
        if self.keeps_every_key:
            return per_token * seq_len
        global_part = min(seq_len, self.global_tokens)
        return per_token * (global_part + min(seq_len - global_part, self.window_span))
