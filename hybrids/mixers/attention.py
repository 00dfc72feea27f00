"""Causal multi-head attention with optional grouped KV heads and rotary positions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hybrids.kernels import apply_rotary, rotary_cos_sin
from hybrids.mixers.base import Mixer
from hybrids.mixers.state_size import StateSize
from hybrids.parts.kv_cache import KVCache


def resolve_head_dim(d_model: int, heads: int, head_dim: int | None, rotary: bool) -> int:
    """The width of a head: ``head_dim``, or ``d_model // heads`` (which must divide); even when
    rotary positions are on. Shared by the attention mixers' constructors."""
    if head_dim is None:
        if d_model % heads:
            raise ValueError(
                f"heads: d_model={d_model} is not divisible by heads={heads}; pick heads that divide d_model, or set head_dim"
            )
        head_dim = d_model // heads
    if rotary and head_dim % 2:
        raise ValueError(f"head_dim: rotary positions need an even head_dim, got {head_dim}")
    return head_dim


class Attention(Mixer):
    """Full causal self-attention; ``prefill`` and ``step`` decode with a preallocated KV cache.

    Args:
        d_model: model width.
        heads: query heads.
        kv_heads: key/value heads (grouped-query attention); defaults to ``heads``.
        head_dim: width of a head; defaults to ``d_model // heads``.
        rotary: apply rotary position embeddings to queries and keys.
        rotary_base: RoPE base frequency.
        bias: biases in the projections.
        dropout: dropout on attention weights while training.
        rotary_dim: channels of each head that rotate (the first ones; RecurrentGemma rotates
            half); None rotates all ``head_dim``.
        out_bias: a bias in the output projection; None follows ``bias`` (RecurrentGemma has one
            there only).

    The recurrent state is a :class:`~hybrids.parts.kv_cache.KVCache` holding the K and V of every
    token seen, so ``state_size`` grows linearly: ``2 * kv_heads * head_dim * seq_len`` (the live
    part; the cache's spare capacity is not state). ``init_state(batch_size, max_len)`` allocates
    for ``max_len`` tokens at once; without it the cache doubles when full. ``step`` and
    ``prefill`` write into the cache in place and return it (``cache.clone()`` to branch).
    """

    def __init__(
        self,
        d_model: int,
        heads: int = 4,
        kv_heads: int | None = None,
        head_dim: int | None = None,
        rotary: bool = True,
        rotary_base: float = 10000.0,
        bias: bool = False,
        dropout: float = 0.0,
        rotary_dim: int | None = None,
        out_bias: bool | None = None,
    ) -> None:
        super().__init__(d_model)
        kv_heads = heads if kv_heads is None else kv_heads
        if heads <= 0 or kv_heads <= 0:
            raise ValueError(f"heads and kv_heads must be positive, got heads={heads}, kv_heads={kv_heads}")
        head_dim = resolve_head_dim(d_model, heads, head_dim, rotary)
        if heads % kv_heads:
            raise ValueError(f"kv_heads: heads={heads} is not divisible by kv_heads={kv_heads}")
        if rotary_dim is not None and (isinstance(rotary_dim, bool) or not isinstance(rotary_dim, int)
                                       or not 0 < rotary_dim <= head_dim or rotary_dim % 2 or not rotary):
            raise ValueError(f"rotary_dim: must be an even int in (0, head_dim={head_dim}], with rotary on (or None "
                             f"for all channels), got {rotary_dim!r}")
        rotary_dim = head_dim if rotary_dim is None else rotary_dim
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.rotary, self.rotary_base, self.dropout, self.rotary_dim = rotary, rotary_base, dropout, rotary_dim
        self.q_proj = nn.Linear(d_model, heads * head_dim, bias=bias)
        self.kv_proj = nn.Linear(d_model, 2 * kv_heads * head_dim, bias=bias)
        self.out_proj = nn.Linear(heads * head_dim, d_model, bias=bias if out_bias is None else out_bias)

    def _project(self, x: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, L, d_model) -> q (B, H, L, hd), k and v (B, Hkv, L, hd), rotated from ``start``."""
        b, length, _ = x.shape
        q = self.q_proj(x).view(b, length, self.heads, self.head_dim).transpose(1, 2)
        k, v = self.kv_proj(x).view(b, length, 2, self.kv_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if self.rotary:
            positions = torch.arange(start, start + length, device=x.device)
            # q's dtype, not x's: under autocast the projections run in bf16/fp16 while x is fp32.
            cos, sin = rotary_cos_sin(positions, self.rotary_dim, self.rotary_base, dtype=q.dtype)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        return q, k, v

    def _attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """q (B, H, Lq, hd) over k, v (B, Hkv, Lk, hd) -> (B, Lq, d_model); ``causal`` aligns the
        causal mask top-left (Lq == Lk), ``mask`` (Lq, Lk) bool marks the keys each query sees."""
        y = F.scaled_dot_product_attention(
            q,
            k.to(q.dtype),  # a cache keeps the parameters' dtype; under autocast q may be narrower
            v.to(q.dtype),
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=causal,
            enable_gqa=self.kv_heads != self.heads,
        )  # (B, H, Lq, hd)
        b, _, lq, _ = y.shape
        return self.out_proj(y.transpose(1, 2).reshape(b, lq, self.heads * self.head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._project(x, start=0)
        return self._attend(q, k, v, causal=True)

    def init_state(self, batch_size: int, max_len: int | None = None) -> KVCache:
        """An empty KV cache for ``batch_size`` sequences; ``max_len`` (tokens, prompt included)
        allocates it once for a decode of known length, else it grows by doubling."""
        return KVCache(batch_size, self.kv_heads, self.head_dim, capacity=max_len or 0, **self._factory())

    def step(self, x: torch.Tensor, state: KVCache) -> tuple[torch.Tensor, KVCache]:
        # Rotary position = tokens already cached; the new K/V are written in place.
        q, k, v = self._project(x[:, None, :], start=state.position)  # (B, H, 1, hd), (B, Hkv, 1, hd)
        state.append(k, v)
        keys, values = state.live()  # (B, Hkv, t + 1, hd), views of the buffers
        # One query attends to every cached key: no mask needed.
        return self._attend(q, keys, values, causal=False)[:, 0], state

    def prefill(self, x: torch.Tensor, state: KVCache | None = None) -> tuple[torch.Tensor, KVCache]:
        """x (B, L, d_model) in one pass -> (B, L, d_model) and the cache after it, continuing
        from ``state`` (chunked prefill) or from an empty cache sized for the prompt."""
        b, length, _ = x.shape
        cache = self.init_state(b, max_len=length) if state is None else state
        start = cache.position
        q, k, v = self._project(x, start=start)  # rotary positions start..start+L-1
        cache.append(k, v)
        if start == 0:  # the forward pass, keeping K/V
            return self._attend(q, k, v, causal=True), cache
        keys, values = cache.live()  # (B, Hkv, start + L, hd): cached keys, then the prompt's
        # Query i (absolute start + i) sees keys j <= start + i: the causal mask aligned to the
        # bottom-right corner, which is_causal (top-left) is not.
        rows = torch.arange(start, start + length, device=x.device)
        mask = torch.arange(start + length, device=x.device)[None, :] <= rows[:, None]  # (L, start + L)
        return self._attend(q, keys, values, causal=False, mask=mask), cache

    state_size_rules = (StateSize("2 * kv_heads * head_dim * L", "K and V of every token"),)
