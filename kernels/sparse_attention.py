"""Sparse attention: sliding windows (optionally dilated), global tokens and BigBird-style random
key blocks, as in Longformer (Beltagy et al. 2020) and BigBird (Zaheer et al. 2020).

A :class:`SparsePattern` says which keys each query may see; :func:`sparse_attention` computes
``softmax(q k^T * scale + mask) v`` restricted to them, on tensors shaped like
``scaled_dot_product_attention``'s: ``q`` (batch, heads, L, head_dim), ``k, v`` (batch, kv_heads,
L, head_dim) with ``heads % kv_heads == 0`` (grouped-query attention: query head ``h`` reads
key/value head ``h // (heads // kv_heads)``).

Backends (``backend=`` argument, else the ``HYBRIDS_SPARSE_ATTENTION_BACKEND`` environment
variable, else ``"flex"`` on CUDA and ``"banded"`` elsewhere):

- ``"reference"``: the dense (L, L) mask of :meth:`SparsePattern.dense_mask` and a masked softmax.
  O(L^2) memory; the ground truth for tests.
- ``"banded"``: pure PyTorch, forward and a hand-written backward, never forms an (L, L)
  tensor. The keys a query sees are split into disjoint sets, each attended with its own
  natural tiling: the window band (a dilation of d turned into d interleaved undilated bands),
  the global keys, and the random key blocks. Each set gives a partial softmax (its output and
  log-normaliser) and the partials are merged exactly by their log-sum-exp weights. The
  backward recomputes probabilities chunk by chunk, as FlashAttention does, so memory is the
  inputs and outputs, O(batch * heads * L * head_dim); boolean masks shared by batch and heads
  (cached per pattern, L and device), L * (window + 63 + global_tokens + random_blocks *
  block_size) entries, the window counted twice if non-causal; and one chunk of about a
  million scores. Memory is thus O(L * (window + global_tokens + random_blocks * block_size)),
  and time that times head_dim: no L^2 term. ``window=None`` (full attention) is handed to
  ``scaled_dot_product_attention``, whose fused CPU kernel is exact and does not materialise
  the scores either.
- ``"flex"``: ``torch.nn.attention.flex_attention`` with a ``BlockMask`` built from the same
  rule, cached per (pattern, L, device), and ``torch.compile``-d on CUDA. On CPU (torch 2.13)
  FlexAttention runs only uncompiled and only forward: it materialises the (L, L) scores and
  has no backward, so ``"flex"`` on CPU with inputs that require grad raises
  ``NotImplementedError``; use ``"banded"`` to train on CPU.

Softmax runs in float32 for float16/bfloat16 inputs (float64 stays float64); the output has
``q``'s dtype.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F

try:
    from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention
except ImportError:  # torch < 2.5
    BlockMask = create_block_mask = flex_attention = None

BACKENDS = ("reference", "banded", "flex")
BACKEND_ENV = "HYBRIDS_SPARSE_ATTENTION_BACKEND"

# Query tile of the banded path, in positions of one residue class. A tile of Bq queries reads
# Bq + window - 1 keys, so scores per query cost (Bq + window - 1) / window of the exact band,
# while each tile gathers its own copy of those keys and values, and small tiles make small
# matrix products: on CPU, Bq = 32, 64 and 128 measured alike at window 256.
_BAND_TILE = 64
# Tiles are processed in chunks of about this many scores (summed over batch and heads), 4 MiB
# in float32: 2^19 to 2^21 measured alike on CPU.
_CHUNK_SCORES = 1 << 20
# Block masks kept by the flex backend, oldest forgotten first.
_BLOCK_MASK_CACHE_SIZE = 16


@dataclass(frozen=True)
class SparsePattern:
    """Which keys each query may attend to.

    Causal (``causal=True``) query ``i`` sees key ``j <= i`` when any of these holds:

    - window: ``i - j < window * dilation`` and ``(i - j) % dilation == 0`` (``window=None``:
      every ``j <= i``, full causal attention);
    - global: ``i < global_tokens`` (a global query sees every earlier key) or
      ``j < global_tokens`` (every query sees the global keys);
    - random: ``j`` lies in one of the ``random_blocks`` key blocks drawn for the query's block
      (blocks of ``block_size`` positions; key blocks at or before the query block).

    Non-causal (``causal=False``, encoders): the window is symmetric, ``|i - j| < window *
    dilation`` with ``|i - j| % dilation == 0``; global queries see every key and every query sees
    the global keys; random key blocks are drawn among all blocks. The diagonal always lies in
    the window, so every query sees at least itself.

    Random blocks come from a ``torch.Generator`` seeded with ``seed``, one query block after
    the other, so they are deterministic, and in causal mode the blocks of a prefix do not depend
    on the length: ``dense_mask(n)`` is the leading (n, n) corner of ``dense_mask(L)``, as a
    decoder needs.
    """

    window: int | None
    dilation: int = 1
    global_tokens: int = 0
    random_blocks: int = 0
    block_size: int = 64
    causal: bool = True
    seed: int = 0

    def __post_init__(self):
        for name in ("dilation", "global_tokens", "random_blocks", "block_size", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{name}: must be an int, got {value!r}")
        if self.window is not None and (not isinstance(self.window, int) or isinstance(self.window, bool)):
            raise ValueError(f"window: must be an int or None (full attention), got {self.window!r}")
        if self.window is not None and self.window < 1:
            raise ValueError(f"window: must be positive (or None for full attention), got {self.window}")
        if self.dilation < 1:
            raise ValueError(f"dilation: must be positive, got {self.dilation}")
        if self.window is None and self.dilation != 1:
            raise ValueError(f"dilation: needs a window; window=None is full attention (got dilation={self.dilation})")
        if self.global_tokens < 0:
            raise ValueError(f"global_tokens: must be >= 0, got {self.global_tokens}")
        if self.random_blocks < 0:
            raise ValueError(f"random_blocks: must be >= 0, got {self.random_blocks}")
        if self.block_size < 1:
            raise ValueError(f"block_size: must be positive, got {self.block_size}")
        if not isinstance(self.causal, bool):
            raise ValueError(f"causal: must be a bool, got {self.causal!r}")

    def random_key_blocks(self, L: int) -> torch.Tensor:
        """The random key blocks of each query block: int64 (ceil(L / block_size), random_blocks).

        Row ``b`` lists, in increasing order, the distinct key blocks drawn uniformly for query
        block ``b`` (among blocks ``0..b`` if causal, all blocks otherwise); when fewer blocks
        exist than ``random_blocks``, all are taken and the row is padded with -1.
        """
        return _random_key_blocks(self, L).clone()

    def dense_mask(self, L: int, device: torch.device | str | None = None) -> torch.Tensor:
        """(L, L) bool, True where query ``i`` (row) may attend key ``j`` (column)."""
        pos = torch.arange(L, device=device)
        return self.allowed(pos[:, None], pos[None, :], self.random_lookup(L, device))

    def allowed(self, i: torch.Tensor, j: torch.Tensor, random_lookup: torch.Tensor | None = None) -> torch.Tensor:
        """The rule of the class docstring, elementwise on broadcastable query and key positions.

        ``random_lookup`` (n_blocks, n_blocks) bool marks the drawn (query block, key block) pairs
        (see :meth:`random_lookup`); the FlexAttention mask and :meth:`dense_mask` both call this.
        """
        ok = self.in_window(i, j)
        if self.global_tokens:
            ok = ok | (i < self.global_tokens) | (j < self.global_tokens)
        if random_lookup is not None:
            # Clamped because FlexAttention also evaluates the padding past L of its last block.
            last = random_lookup.shape[0] - 1
            ok = ok | random_lookup[(i // self.block_size).clamp(max=last), (j // self.block_size).clamp(max=last)]
        if self.causal:
            ok = ok & (j <= i)
        return ok

    def in_window(self, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """The window rule alone (including ``j <= i`` when causal), elementwise."""
        diff = i - j
        if not self.causal:
            diff = diff.abs()
        if self.window is None:
            return diff >= 0
        return (diff >= 0) & (diff < self.window * self.dilation) & (diff % self.dilation == 0)

    def random_lookup(self, L: int, device: torch.device | str | None = None) -> torch.Tensor | None:
        """(n_blocks, n_blocks) bool, True where the key block was drawn for the query block;
        None without random blocks."""
        if not self.random_blocks or L == 0:
            return None
        table = _random_key_blocks(self, L)
        lookup = torch.zeros(table.shape[0], table.shape[0] + 1, dtype=torch.bool)
        lookup.scatter_(1, table % (table.shape[0] + 1), True)  # -1 (no block) lands in the extra column
        return lookup[:, :-1].to(device)


@functools.lru_cache(maxsize=64)
def _random_key_blocks(pattern: SparsePattern, L: int) -> torch.Tensor:
    """Cached draw behind :meth:`SparsePattern.random_key_blocks` (callers must not modify it)."""
    n_blocks = -(-L // pattern.block_size)
    table = torch.full((n_blocks, pattern.random_blocks), -1, dtype=torch.long)
    generator = torch.Generator().manual_seed(pattern.seed)
    for block in range(n_blocks):
        # One draw per query block, in order: a causal block's draw depends only on the draws
        # before it, never on how many blocks follow.
        candidates = block + 1 if pattern.causal else n_blocks
        drawn = torch.randperm(candidates, generator=generator)[: pattern.random_blocks]
        table[block, : drawn.numel()] = drawn.sort().values
    return table


def sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pattern: SparsePattern,
    backend: str | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Attention restricted to ``pattern``: (batch, heads, L, head_dim) -> the same shape.

    q: (batch, heads, L, head_dim); k, v: (batch, kv_heads, L, head_dim), heads % kv_heads == 0.
    scale: multiplies ``q k^T``; ``head_dim ** -0.5`` by default.
    backend: ``"reference"``, ``"banded"`` or ``"flex"``; ``None`` reads
    ``HYBRIDS_SPARSE_ATTENTION_BACKEND``, else takes ``"flex"`` on CUDA and ``"banded"`` otherwise.
    """
    backend = _resolve_backend(backend, q)
    _check_shapes(q, k, v)
    if q.shape[-2] == 0:
        return q.clone()  # nothing to attend to; the backends' tilings assume L >= 1
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if backend == "reference":
        return sparse_attention_reference(q, k, v, pattern, scale)
    if backend == "banded":
        return sparse_attention_banded(q, k, v, pattern, scale)
    return sparse_attention_flex(q, k, v, pattern, scale)


def _resolve_backend(backend: str | None, q: torch.Tensor) -> str:
    if backend is None:
        forced = os.environ.get(BACKEND_ENV)
        if forced:
            if forced not in BACKENDS:
                raise ValueError(f"{BACKEND_ENV}: unknown backend {forced!r}; valid: {', '.join(BACKENDS)}")
            return forced
        return "flex" if q.is_cuda else "banded"
    if backend not in BACKENDS:
        raise ValueError(f"backend: unknown {backend!r}; valid: {', '.join(BACKENDS)} (or None)")
    return backend


def _check_shapes(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if q.ndim != 4:
        raise ValueError(f"q: expected (batch, heads, L, head_dim), got shape {tuple(q.shape)}")
    if k.shape != v.shape:
        raise ValueError(f"v: shape {tuple(v.shape)} differs from k's {tuple(k.shape)}")
    batch, heads, length, head_dim = q.shape
    if k.ndim != 4 or (k.shape[0], k.shape[2], k.shape[3]) != (batch, length, head_dim):
        expected = f"(batch={batch}, kv_heads, L={length}, head_dim={head_dim})"
        raise ValueError(f"k: expected {expected}, got {tuple(k.shape)}")
    if heads % k.shape[1]:
        raise ValueError(f"k: heads={heads} is not a multiple of kv_heads={k.shape[1]}")


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for float16/bfloat16/float32, float64 for float64: the softmax's precision."""
    return torch.promote_types(dtype, torch.float32)


# --------------------------------------------------------------------------------------------
# reference


def sparse_attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: SparsePattern, scale: float
) -> torch.Tensor:
    """Dense masked softmax over the (L, L) mask: O(L^2) memory, for tests and small L."""
    work = _work_dtype(q.dtype)
    group = q.shape[1] // k.shape[1]
    k = k.to(work).repeat_interleave(group, dim=1)  # (batch, heads, L, head_dim)
    v = v.to(work).repeat_interleave(group, dim=1)
    scores = q.to(work) @ k.transpose(-1, -2) * scale  # (batch, heads, L, L)
    scores = scores.masked_fill(~pattern.dense_mask(q.shape[-2], q.device), -math.inf)
    return (scores.softmax(dim=-1) @ v).to(q.dtype)


# --------------------------------------------------------------------------------------------
# banded


def sparse_attention_banded(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: SparsePattern, scale: float
) -> torch.Tensor:
    """Sparse attention without any (L, L) tensor; see the module docstring.

    Every key a query may see belongs to exactly one part: the window band, else the global
    keys, else the random blocks (each part masks out what an earlier part already counts, so
    no key enters the softmax twice). Each part returns its own softmax output ``o_p`` and
    log-normaliser ``lse_p`` per query; the softmax over the union is then
    ``sum_p exp(lse_p - lse) o_p`` with ``lse = logsumexp_p lse_p``.
    """
    batch, heads, length, head_dim = q.shape
    kv_heads = k.shape[1]
    work = _work_dtype(q.dtype)
    if pattern.window is None:
        # Full attention: the global and random keys are all visible already.
        out = F.scaled_dot_product_attention(
            q.to(work), k.to(work), v.to(work), is_causal=pattern.causal, scale=scale, enable_gqa=heads != kv_heads
        )
        return out.to(q.dtype)

    # Query heads grouped under their key/value head: (batch, kv_heads, group, L, head_dim).
    qg = (q.to(work) * scale).reshape(batch, kv_heads, heads // kv_heads, length, head_dim)
    k, v = k.to(work), v.to(work)
    parts = [_band_part(qg, k, v, pattern)]
    if pattern.global_tokens:
        parts.append(_global_part(qg, k, v, pattern))
    if pattern.random_blocks:
        parts.append(_random_part(qg, k, v, pattern))
    if len(parts) == 1:
        out = parts[0][0]
    else:
        lse = torch.logsumexp(torch.stack([part_lse for _, part_lse in parts]), dim=0)
        out = sum(part_out * (part_lse - lse).exp().unsqueeze(-1) for part_out, part_lse in parts)
    if not pattern.causal and pattern.global_tokens:
        # Non-causal global queries see every key: their rows are plain full attention, one
        # tile of `rows` queries over all L keys.
        rows = min(pattern.global_tokens, length)
        every_key = torch.arange(length, device=q.device)[None, :]
        nothing_blocked = torch.zeros(1, 1, 1, dtype=torch.bool, device=q.device)
        full_rows, _ = _TileAttention.apply(qg[:, :, None, :, :rows], k, v, every_key, nothing_blocked)
        out = torch.cat((full_rows[:, :, 0], out[..., rows:, :]), dim=-2)
    return out.reshape(batch, heads, length, head_dim).to(q.dtype)


class _TileAttention(torch.autograd.Function):
    """Softmax attention of query tiles over gathered key sets, with a hand-written backward.

    q: (batch, kv_heads, tiles, group, rows, head_dim), already scaled: ``rows`` queries per
    tile for each of the ``group`` query heads that share a key/value head.
    k, v: (batch, kv_heads, N, head_dim), the key rows that ``index`` points into.
    index: (tiles, K) int64, the keys of each tile (any row for a slot that is blocked).
    blocked: (tiles, rows, K) bool, True where a query must not see its tile's key.
    Returns out (batch, kv_heads, tiles, group, rows, head_dim) and the log-normaliser lse
    (batch, kv_heads, tiles, group, rows).

    Tiles run in chunks of about _CHUNK_SCORES scores. The forward keeps only its inputs, the
    output and lse; the backward recomputes each chunk's probabilities from lse, as
    FlashAttention does, and scatter-adds the key and value gradients back through ``index``.
    Memory is therefore the inputs plus one chunk: neither the probabilities nor the gradient
    of a gathered key copy ever exist whole.

    Blocked scores are -inf. A query that sees no key of this set (a part may have none for
    it) would get 0 / 0; instead its row maximum is clamped to the most negative finite value
    and its normaliser floored at the smallest positive one, so it gets out = 0 and an lse at
    that most negative value, which the merge of parts weighs by exactly zero. (A finite fill
    value instead of -inf would avoid this, but exp of values below about -88 takes a slow path
    on CPU, several times slower than exp(-inf).)
    """

    @staticmethod
    def forward(ctx, q, k, v, index, blocked):
        out = torch.empty_like(q)
        lse = q.new_empty(q.shape[:-1])
        for chunk in _chunks(q, index):
            k_c, v_c = _gather(k, index[chunk]), _gather(v, index[chunk])  # (batch, kv_heads, tiles_c, K, head_dim)
            scores = _masked_scores(q[:, :, chunk], k_c, blocked[chunk])  # (batch, kv_heads, tiles_c, group * rows, K)
            row_max = scores.amax(dim=-1, keepdim=True).clamp_(min=torch.finfo(q.dtype).min)
            weights = scores.sub_(row_max).exp_()
            norm = weights.sum(dim=-1, keepdim=True).clamp_(min=torch.finfo(q.dtype).tiny)
            out[:, :, chunk] = (weights @ v_c).div_(norm).view(out[:, :, chunk].shape)
            lse[:, :, chunk] = (row_max + norm.log()).view(lse[:, :, chunk].shape)
        ctx.save_for_backward(q, k, v, index, blocked, out, lse)
        return out, lse

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out, grad_lse):
        q, k, v, index, blocked, out, lse = ctx.saved_tensors
        grad_q = torch.empty_like(q)
        grad_k, grad_v = torch.zeros_like(k), torch.zeros_like(v)
        # d lse / d score = p, so a score's gradient is p * (dp - delta), with dp = grad_out . v
        # and delta = grad_out . out - grad_lse for each query.
        delta = (grad_out * out).sum(dim=-1) - grad_lse
        for chunk in _chunks(q, index):
            # (batch, kv_heads, tiles_c, group * rows, head_dim), and the keys (..., K, head_dim).
            q_c, g_out = q[:, :, chunk].flatten(3, 4), grad_out[:, :, chunk].flatten(3, 4)
            k_c, v_c = _gather(k, index[chunk]), _gather(v, index[chunk])
            lse_c, delta_c = lse[:, :, chunk].flatten(3, 4), delta[:, :, chunk].flatten(3, 4)
            probs = _masked_scores(q[:, :, chunk], k_c, blocked[chunk]).sub_(lse_c[..., None]).exp_()
            grad_scores = (g_out @ v_c.transpose(-1, -2)).sub_(delta_c[..., None]).mul_(probs)
            grad_q[:, :, chunk] = (grad_scores @ k_c).view(grad_q[:, :, chunk].shape)
            # A key may serve several tiles (overlapping windows): index_add_ sums its parts.
            flat = index[chunk].flatten()
            grad_k.index_add_(2, flat, (grad_scores.transpose(-1, -2) @ q_c).flatten(2, 3))
            grad_v.index_add_(2, flat, (probs.transpose(-1, -2) @ g_out).flatten(2, 3))
        return grad_q, grad_k, grad_v, None, None


def _gather(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Key rows of some tiles: x (b, h, N, d), index (t, K) -> (b, h, t, K, d).

    ``index_select`` on the flat index copies whole rows, a few times faster than advanced
    indexing ``x[:, :, index]`` on CPU.
    """
    return x.index_select(2, index.flatten()).view(*x.shape[:2], *index.shape, x.shape[-1])


def _masked_scores(q: torch.Tensor, k: torch.Tensor, blocked: torch.Tensor) -> torch.Tensor:
    """One chunk's scores: q (b, h, t, group, rows, d), k (b, h, t, K, d) -> (b, h, t, group * rows, K).

    The group's query heads share k, so they stack as rows of one matrix product.
    """
    b, h, t, group, rows, d = q.shape
    scores = q.reshape(b, h, t, group * rows, d) @ k.transpose(-1, -2)
    scores.view(b, h, t, group, rows, -1).masked_fill_(blocked[:, None], -math.inf)
    return scores


def _chunks(q: torch.Tensor, index: torch.Tensor) -> list[slice]:
    """Slices of the tiles, each about _CHUNK_SCORES scores (one tile at least)."""
    batch, kv_heads, tiles, group, rows, _ = q.shape
    per_tile = batch * kv_heads * group * rows * index.shape[1]
    step = max(1, _CHUNK_SCORES // per_tile)
    return [slice(start, min(start + step, tiles)) for start in range(0, tiles, step)]


# Each part below has a plan, the (index, blocked) pair of _TileAttention, which depends only on
# the pattern, the length and the device. Plans are cached, so a training loop builds them once.
# The global and random plans use int32 positions: there the rule is evaluated on tensors of
# the mask's full shape (L * K entries), and int64 would make each intermediate eight times
# the mask's size rather than four.


def _band_part(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: SparsePattern
) -> tuple[torch.Tensor, torch.Tensor]:
    """The window: out (batch, kv_heads, group, L, head_dim), lse (batch, kv_heads, group, L).

    q: (batch, kv_heads, group, L, head_dim); k, v: (batch, kv_heads, L, head_dim).

    With dilation d, query ``i`` sees only keys ``j = i - m d``: positions of the same residue
    ``r = i % d``. Each residue class ``p = t d + r`` is therefore an undilated sequence with
    window ``w``, and the d classes are laid side by side. Along ``t``, a tile of Bq queries
    ``[s, s + Bq)`` sees keys ``[s - w + 1, s + Bq)`` (up to ``s + Bq + w - 1`` if non-causal):
    K = Bq + w - 1 (or Bq + 2w - 2) consecutive keys. Scores: L K per head.
    """
    batch, kv_heads, group, length, head_dim = q.shape
    d = pattern.dilation
    n_tiles, tile, n_keys, back = _band_shape(pattern, length)

    # Queries: position p = (t * tile + u) * d + r -> tile (r, t), row u.
    q_tiles = F.pad(q, (0, 0, 0, n_tiles * tile * d - length))
    q_tiles = q_tiles.view(batch, kv_heads, group, n_tiles, tile, d, head_dim).permute(0, 1, 5, 3, 2, 4, 6)
    q_tiles = q_tiles.reshape(batch, kv_heads, d * n_tiles, group, tile, head_dim)

    # Keys: each residue class padded by `back` zeros before and up to n_keys after, classes
    # one after the other: row r * n_keys + back + t holds position t * d + r.
    def by_residue(x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (0, 0, back * d, (n_keys - back) * d - length))
        x = x.view(batch, kv_heads, n_keys, d, head_dim).transpose(2, 3)
        return x.reshape(batch, kv_heads, d * n_keys, head_dim)

    out, lse = _TileAttention.apply(q_tiles, by_residue(k), by_residue(v), *_band_plan(pattern, length, q.device))
    # Back to position order p = (t * tile + u) * d + r.
    out = out.view(batch, kv_heads, d, n_tiles, group, tile, head_dim).permute(0, 1, 4, 3, 5, 2, 6)
    lse = lse.view(batch, kv_heads, d, n_tiles, group, tile).permute(0, 1, 4, 3, 5, 2)
    out = out.reshape(batch, kv_heads, group, -1, head_dim)[..., :length, :]
    return out, lse.reshape(batch, kv_heads, group, -1)[..., :length]


def _band_shape(pattern: SparsePattern, length: int) -> tuple[int, int, int, int]:
    """Tiles per residue class, tile size, keys per residue class (padding included), and the
    keys a tile reads before its first query (window - 1)."""
    n = -(-length // pattern.dilation)  # positions per residue class
    back = min(pattern.window, n) - 1  # a longer window sees no more keys
    tile = min(_BAND_TILE, n)
    n_tiles = -(-n // tile)
    ahead = 0 if pattern.causal else back
    return n_tiles, tile, back + n_tiles * tile + ahead, back


@functools.lru_cache(maxsize=8)
def _band_plan(pattern: SparsePattern, length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """index (d * n_tiles, K), blocked (d * n_tiles, tile, K) of :func:`_band_part`."""
    d = pattern.dilation
    n_tiles, tile, n_keys, back = _band_shape(pattern, length)
    width = n_keys - (n_tiles - 1) * tile  # K = tile + back (+ back if non-causal)
    offsets = torch.arange(width, device=device)
    start = torch.arange(d, device=device)[:, None] * n_keys + torch.arange(n_tiles, device=device) * tile
    index = (start[:, :, None] + offsets).view(d * n_tiles, width)

    # Query t = s + u and key t' = s - back + m differ by u - m + back in every tile; keys
    # before position 0 or at or past L (padding) are always blocked.
    lag = torch.arange(tile, device=device)[:, None] - offsets + back  # (tile, K)
    band = (lag >= 0) & (lag <= back) if pattern.causal else lag.abs() <= back
    key_t = torch.arange(n_tiles, device=device)[:, None] * tile - back + offsets  # (n_tiles, K)
    key_pos = key_t * d + torch.arange(d, device=device)[:, None, None]  # (d, n_tiles, K)
    valid = (key_t >= 0) & (key_pos < length)
    return index, ~(band & valid[:, :, None, :]).view(d * n_tiles, tile, width)


def _global_part(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: SparsePattern
) -> tuple[torch.Tensor, torch.Tensor]:
    """The global keys ``j < global_tokens`` that the window does not already cover.

    Shapes as :func:`_band_part`. Tiles of _BAND_TILE queries all read the same keys: scores
    L * global_tokens per head.
    """
    batch, kv_heads, group, length, head_dim = q.shape
    tile = min(_BAND_TILE, length)
    n_tiles = -(-length // tile)
    q_tiles = F.pad(q, (0, 0, 0, n_tiles * tile - length)).view(batch, kv_heads, group, n_tiles, tile, head_dim)
    q_tiles = q_tiles.transpose(2, 3)  # (batch, kv_heads, n_tiles, group, tile, head_dim)
    out, lse = _TileAttention.apply(q_tiles, k, v, *_global_plan(pattern, length, q.device))
    out = out.transpose(2, 3).reshape(batch, kv_heads, group, -1, head_dim)[..., :length, :]
    return out, lse.transpose(2, 3).reshape(batch, kv_heads, group, -1)[..., :length]


@functools.lru_cache(maxsize=8)
def _global_plan(pattern: SparsePattern, length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """index (n_tiles, global_tokens), blocked (n_tiles, tile, global_tokens) of :func:`_global_part`."""
    tile = min(_BAND_TILE, length)
    n_tiles = -(-length // tile)
    index = torch.arange(min(pattern.global_tokens, length), dtype=torch.int32, device=device).expand(n_tiles, -1)
    i = torch.arange(n_tiles * tile, dtype=torch.int32, device=device).view(n_tiles, tile, 1)
    j = index[:, None, :]
    blocked = pattern.in_window(i, j)
    if pattern.causal:
        blocked |= j > i
    return index, blocked


def _random_part(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: SparsePattern
) -> tuple[torch.Tensor, torch.Tensor]:
    """The random key blocks, less the keys that the window or the global keys already count.

    Shapes as :func:`_band_part`. A tile is a query block, its keys the ``random_blocks``
    blocks drawn for it: scores L * random_blocks * block_size per head.
    """
    batch, kv_heads, group, length, head_dim = q.shape
    size = pattern.block_size
    n_blocks = -(-length // size)
    pad = n_blocks * size - length
    q_tiles = F.pad(q, (0, 0, 0, pad)).view(batch, kv_heads, group, n_blocks, size, head_dim)
    q_tiles = q_tiles.transpose(2, 3)  # (batch, kv_heads, n_blocks, group, block_size, head_dim)
    k, v = F.pad(k, (0, 0, 0, pad)), F.pad(v, (0, 0, 0, pad))
    out, lse = _TileAttention.apply(q_tiles, k, v, *_random_plan(pattern, length, q.device))
    out = out.transpose(2, 3).reshape(batch, kv_heads, group, -1, head_dim)[..., :length, :]
    return out, lse.transpose(2, 3).reshape(batch, kv_heads, group, -1)[..., :length]


@functools.lru_cache(maxsize=8)
def _random_plan(pattern: SparsePattern, length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """index (n_blocks, r * block_size), blocked (n_blocks, block_size, r * block_size) of
    :func:`_random_part`."""
    size = pattern.block_size
    table = _random_key_blocks(pattern, length).to(device, torch.int32)  # (n_blocks, r), -1 = none
    n_blocks, r = table.shape
    offsets = torch.arange(size, dtype=torch.int32, device=device)
    index = (table.clamp(min=0)[:, :, None] * size + offsets).view(n_blocks, r * size)
    i = torch.arange(n_blocks * size, dtype=torch.int32, device=device).view(n_blocks, size, 1)
    j = index[:, None, :]
    not_drawn = (table < 0).repeat_interleave(size, dim=1)[:, None, :]
    blocked = not_drawn | (j >= length) | (j < pattern.global_tokens) | pattern.in_window(i, j)
    if pattern.causal:
        blocked |= j > i
    return index, blocked


# --------------------------------------------------------------------------------------------
# flex

_block_masks: dict[tuple[SparsePattern, int, torch.device], BlockMask] = {}


def sparse_attention_flex(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: SparsePattern, scale: float
) -> torch.Tensor:
    """FlexAttention with a block mask of ``pattern`` (compiled on CUDA, eager forward on CPU)."""
    if flex_attention is None:
        raise RuntimeError(
            "backend='flex' needs torch.nn.attention.flex_attention (torch >= 2.5): "
            "pip install -U torch, or use backend='banded'"
        )
    if not q.is_cuda and torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        raise NotImplementedError(
            f"backend='flex' on {q.device.type}: FlexAttention has no backward off CUDA in torch "
            f"{torch.__version__}; use backend='banded' to train, or call under torch.no_grad()"
        )
    block_mask = _block_mask(pattern, q.shape[-2], q.device)
    gqa = q.shape[1] != k.shape[1]
    if q.is_cuda:
        # The compiled kernel keeps its softmax statistics in float32 itself.
        return _compiled(flex_attention)(q, k, v, block_mask=block_mask, scale=scale, enable_gqa=gqa)
    # Grad mode is off here, so detaching changes nothing but passes FlexAttention's CPU check,
    # which refuses any input that requires grad.
    work = _work_dtype(q.dtype)
    q_w, k_w, v_w = (t.detach().to(work) for t in (q, k, v))
    return flex_attention(q_w, k_w, v_w, block_mask=block_mask, scale=scale, enable_gqa=gqa).to(q.dtype)


def _block_mask(pattern: SparsePattern, length: int, device: torch.device) -> BlockMask:
    """The pattern's BlockMask for this length and device, built once and kept in a small cache.

    On CUDA the builder is compiled, which evaluates the mask block by block; uncompiled (on
    CPU, where FlexAttention is O(L^2) anyway) it first materialises the (L, L) mask.
    """
    key = (pattern, length, device)
    if key not in _block_masks:
        if len(_block_masks) >= _BLOCK_MASK_CACHE_SIZE:
            del _block_masks[next(iter(_block_masks))]  # dicts keep insertion order: the oldest
        lookup = pattern.random_lookup(length, device)

        def mask_mod(b, h, q_idx, kv_idx):
            return pattern.allowed(q_idx, kv_idx, lookup)

        build = _compiled(create_block_mask) if device.type == "cuda" else create_block_mask
        _block_masks[key] = build(mask_mod, None, None, length, length, device=device)
    return _block_masks[key]


@functools.cache
def _compiled(fn):
    """``torch.compile(fn)``, made once per function."""
    return torch.compile(fn, dynamic=False)
