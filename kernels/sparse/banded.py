"""The ``"banded"`` backend of sparse attention: pure PyTorch, forward and a hand-written
backward, never an (L, L) tensor (see the package docstring for the plan of the parts)."""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from hybrids.kernels.dtypes import at_least_float32
from hybrids.kernels.sparse.pattern import SparsePattern, _random_key_blocks, outside_inference_mode


# Query tile of the banded path, in positions of one residue class. A tile of Bq queries reads
# Bq + window - 1 keys, so scores per query cost (Bq + window - 1) / window of the exact band,
# while each tile gathers its own copy of those keys and values, and small tiles make small
# matrix products: on CPU, Bq = 32, 64 and 128 measured alike at window 256.
_BAND_TILE = 64
# Tiles are processed in chunks of about this many scores (summed over batch and heads), 4 MiB
# in float32: 2^19 to 2^21 measured alike on CPU.
_CHUNK_SCORES = 1 << 20


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
    work = at_least_float32(q.dtype)
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
@outside_inference_mode
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
@outside_inference_mode
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
@outside_inference_mode
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
