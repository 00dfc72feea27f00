"""The ``"chunk"`` backend of linear attention: pure PyTorch, any device, autograd for gradients.

The sequence is cut into chunks of ``C = chunk_size`` positions (the last one padded with
``q = k = v = 0`` and ``g = 0``, which leaves the state unchanged; C need not divide L). Inside
a chunk, with ``b_t`` the cumulative sum of ``g`` from the chunk's first position up to and
including ``t`` and ``S`` the state entering the chunk,

    S_t = exp(b_t) * S + sum_{s <= t} exp(b_t - b_s) * k_s v_s^T

so that

    o_t      = scale * (q_t * exp(b_t))^T S  +  scale * sum_{s <= t} (q_t . (exp(b_t - b_s) * k_s)) v_s
    S_leave  = exp(b_C) * S + sum_s (exp(b_C - b_s) * k_s) v_s^T

The second term of ``o`` is quadratic within the chunk (a masked (C, C) score matrix times
``v``); the first and the state update are matrix products with the (K, V) state. Everything
but the hand-off of the state from chunk to chunk runs for all chunks at once; that hand-off is
a Python loop over the L / C chunks.

Stability: every exponent is a difference of cumulative log-decays *later minus earlier*
(``b_t - b_s`` with ``s <= t``, ``b_C - b_s``, and ``b_t`` itself, which is ``b_t - b_start``
with ``b_start = 0``), so for ``g <= 0`` every factor is in [0, 1] and nothing overflows however
negative ``g`` gets. ``exp(-b_s)`` alone, which would overflow, is never formed; the upper
triangle of the differences (``s > t``, positive) is replaced by ``-inf`` before ``exp``, so its
zeros carry no gradient either. (For ``g > 0`` the state itself grows and any form overflows
eventually.) Cumulative sums restart at every chunk, so their magnitude, and with it the
rounding of the differences, is bounded by C * max|g|.

Vector ``g`` (one log-decay per key dimension): the decay between ``s`` and ``t`` differs per
key dimension, so the scores are ``sum_k q_tk k_sk exp(b_tk - b_sk)``. The direct form needs a
(C, C, K) tensor of differences per chunk; instead each chunk is split into sub-chunks of c: the
diagonal (c, c) blocks take the direct form, the blocks below them factorise against the
position just before the query's sub-chunk, ``q exp(b - b_ref)`` times ``k exp(b_ref - b)``,
both factors <= 1, as a matrix product (``_vector_decay_scores``). Still stable for any
``g <= 0``, and (c + C / c) * K elements per position instead of C * K.

Memory (what autograd keeps for the backward, per batch and head, in the working dtype):
O(L * C) for the scalar or absent decay (the masked scores and decay ratios), O(L * C * K) for
the vector decay (the (c, c, K) diagonal ratios and the (C / c, C, K) factors below them), plus
the states entering every chunk, (L / C) * K * V, and the inputs. With the defaults (C = 16,
c = 4) that is a few times 8 * K elements per position per head; the times behind the defaults
are beside ``DEFAULT_VECTOR_CHUNK_SIZE``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hybrids.kernels.dtypes import at_least_float32
from hybrids.kernels.linear.common import empty_output, resolve_scale

DEFAULT_CHUNK_SIZE = 64
# A vector decay's scores in the direct form cost C * K exponentials per position (the (C, C, K)
# ratios), so small chunks win: fwd + bwd on 1 thread, batch 64, 2 heads, L = 64, K = V = 32
# (MQAR's shape): 773 / 368 / 109 / 38 ms for C = 64 / 32 / 16 / 8; batch 1, 4 heads, L = 4,096,
# K = V = 64: 3,103 / 1,454 / 796 / 559 ms. Sub-chunks of c (``_vector_decay_scores``) cost
# (c + C / c) * K instead, and fewer chunks mean fewer hand-offs of the state (a Python loop):
# 2 threads, best of 3, two rounds, at L = 4,096: 284-285 ms for (C, c) = (8, 8), 118-128 for
# (16, 4), 146-174 for (16, 2), 169-197 for (32, 4), 387-402 for (64, 4); at MQAR's shape the
# same within noise (17-29 ms).
DEFAULT_VECTOR_CHUNK_SIZE = 16
DEFAULT_SUB_CHUNK_SIZE = 4


def _sub_chunk(size: int, sub_chunk_size: int | None) -> int:
    """The sub-chunk c for chunks of ``size``: ``sub_chunk_size`` (default 4) if it divides the
    chunk, else the whole chunk (one diagonal block: the direct (C, C, K) form)."""
    c = DEFAULT_SUB_CHUNK_SIZE if sub_chunk_size is None else sub_chunk_size
    if isinstance(c, bool) or not isinstance(c, int) or c < 1:
        raise ValueError(f"sub_chunk_size: expected a positive integer or None, got {sub_chunk_size!r}")
    return c if size % c == 0 else size


# Chunks whose vector-decay scores are formed at once: their temporaries, (C / c, C, K) per chunk
# and head, then stay within a few MiB, in cache; all chunks at once made L = 16k 7x slower than
# 4k in the forward pass (4x the work).
_SCORE_GROUP_ELEMENTS = 1 << 20


def _vector_decay_scores(q: torch.Tensor, k: torch.Tensor, b: torch.Tensor, c: int) -> torch.Tensor:
    """Causal scores of every chunk (``_vector_decay_scores_at_once``), a group of chunks at a time."""
    batch, heads, n, size, dk = q.shape
    per_chunk = batch * heads * (size // c) * size * dk
    group = max(1, _SCORE_GROUP_ELEMENTS // max(per_chunk, 1))  # per_chunk is 0 for an empty batch
    if group >= n:
        return _vector_decay_scores_at_once(q, k, b, c)
    parts = [
        _vector_decay_scores_at_once(q[:, :, i:i + group], k[:, :, i:i + group], b[:, :, i:i + group], c)
        for i in range(0, n, group)
    ]
    return torch.cat(parts, dim=2)


def _vector_decay_scores_at_once(q: torch.Tensor, k: torch.Tensor, b: torch.Tensor, c: int) -> torch.Tensor:
    """Causal scores ``A[t, s] = sum_k q_tk k_sk exp(b_tk - b_sk)`` (s <= t, else 0) of every chunk.

    q, k, b (batch, heads, n, C, K), b the cumulative log-decays within each chunk; c divides C.
    The chunk's C positions form m = C / c sub-chunks. Diagonal blocks (t and s in one
    sub-chunk) take the direct form, a (c, c, K) tensor of ``exp(b_t - b_s)`` each. A block
    below them (t in sub-chunk i, s in an earlier one) factorises through a reference r_i = b at
    the last position before sub-chunk i: ``exp(b_t - b_s) = exp(b_t - r_i) exp(r_i - b_s)``,
    two factors that are both <= 1 (t is after that position, s at or before it), so these
    blocks are matrix products of ``q exp(b - r_i)`` (c, K) with ``k exp(r_i - b)`` (C, K),
    positions at or after sub-chunk i masked out before exp. Cost per position: c * K for the
    diagonal, m * K exponentials and C * K multiply-adds (as a matmul) below it, against C * K
    exponentials for the direct form. Returns (batch, heads, n, C, C).
    """
    *lead, size, dk = q.shape
    m = size // c
    work, device = q.dtype, q.device
    minus_inf = torch.tensor(float("-inf"), dtype=work, device=device)
    qs, ks, bs = (x.reshape(*lead, m, c, dk) for x in (q, k, b))  # (..., m, c, K)

    causal = torch.ones(c, c, dtype=torch.bool, device=device).tril()
    diff = bs[..., :, None, :] - bs[..., None, :, :]  # (..., m, c, c, K): [i, t, s] = b_t - b_s
    diagonal = torch.einsum("...tk,...sk,...tsk->...ts", qs, ks, torch.where(causal[..., None], diff, minus_inf).exp())
    scores = diagonal[..., :, :, None, :] * torch.eye(m, dtype=work, device=device)[:, None, :, None]  # (..., m, c, m, c)
    if m > 1:
        # r_i: b at the position before sub-chunk i (0, the chunk's start, for i = 0, which has no block below).
        ref = torch.cat([torch.zeros_like(bs[..., :1, -1, :]), bs[..., :-1, -1, :]], dim=-2)  # (..., m, K)
        q_ref = qs * (bs - ref[..., None, :]).exp()  # (..., m, c, K): exponents <= 0
        before = torch.arange(size, device=device)[None, :] < (torch.arange(m, device=device) * c)[:, None]  # (m, C)
        gap = torch.where(before[..., None], ref[..., :, None, :] - b[..., None, :, :], minus_inf)  # (..., m, C, K)
        k_ref = k[..., None, :, :] * gap.exp()  # (..., m, C, K): zero at and after sub-chunk i
        scores = scores + (q_ref @ k_ref.transpose(-1, -2)).view(*lead, m, c, m, c)
    return scores.reshape(*lead, size, size)


def default_chunk_size(g) -> int:
    """The chunk size used when none is given: 16 for a vector decay (batch, heads, L, K), else 64."""
    return DEFAULT_VECTOR_CHUNK_SIZE if g is not None and g.ndim == 4 else DEFAULT_CHUNK_SIZE


def linear_attention_chunk(
    q, k, v, g=None, scale=None, initial_state=None, output_final_state=False, chunk_size=None,
    sub_chunk_size=None,
):
    """Linear attention chunk by chunk (module docstring); ``chunk_size`` need not divide L and
    defaults to 64, or 16 for a vector decay (see ``DEFAULT_VECTOR_CHUNK_SIZE``); a vector decay's
    scores are formed in sub-chunks of ``sub_chunk_size`` (default 4; the whole chunk if it does
    not divide it)."""
    if chunk_size is None:
        chunk_size = default_chunk_size(g)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size: expected a positive integer, got {chunk_size!r}")
    _sub_chunk(chunk_size, sub_chunk_size)  # checks sub_chunk_size whatever the decay
    dtype_in, work = q.dtype, at_least_float32(q.dtype)
    batch, heads, length, dk = q.shape
    dv = v.shape[-1]
    scale = resolve_scale(scale, dk)
    if length == 0:
        o = empty_output(q, k, v)
        state = q.new_zeros(batch, heads, dk, dv, dtype=work) if initial_state is None else initial_state.to(work)
        return (o, state) if output_final_state else o

    size = min(chunk_size, length)
    n = -(-length // size)
    pad = n * size - length

    def chunks(x: torch.Tensor) -> torch.Tensor:
        """(batch, heads, L, ...) -> (batch, heads, n, C, ...), zero-padded at the end."""
        x = x.to(work)
        if pad:
            x = F.pad(x, (0, 0) * (x.ndim - 3) + (0, pad))
        return x.reshape(batch, heads, n, size, *x.shape[3:])

    q, k, v = chunks(q), chunks(k), chunks(v)  # (batch, heads, n, C, K or V)
    causal = torch.ones(size, size, dtype=torch.bool, device=q.device).tril()  # [t, s]: s <= t
    minus_inf = torch.tensor(float("-inf"), dtype=work, device=q.device)

    if g is None:
        scores = (q @ k.transpose(-1, -2)).masked_fill(~causal, 0.0)  # (batch, heads, n, C, C)
    elif g.ndim == 3:  # one log-decay per head and position
        b = chunks(g).cumsum(-1)  # (batch, heads, n, C)
        ratio = torch.where(causal, b[..., :, None] - b[..., None, :], minus_inf).exp()  # [t, s] = exp(b_t - b_s)
        scores = (q @ k.transpose(-1, -2)) * ratio
    else:  # one log-decay per key dimension
        b = chunks(g).cumsum(-2)  # (batch, heads, n, C, K)
        scores = _vector_decay_scores(q, k, b, _sub_chunk(size, sub_chunk_size))

    intra = scores @ v  # (batch, heads, n, C, V): the chunk's own keys and values
    if n == 1 and initial_state is None and not output_final_state:
        # One chunk from a zero state, no state asked for (a training forward at L <= C): the
        # output is the chunk's own part. The (K, V) state products, zeros in and unused out,
        # cost as much as the scores for a wide feature map (Based's 273, Performer's m).
        return (scale * intra).reshape(batch, heads, size, dv)[:, :, :length].to(dtype_in)

    # What crosses chunk boundaries: queries decayed from the chunk's start, keys decayed to its
    # end, and the chunk's total decay applied to the state it receives.
    if g is None:
        q_in, k_out, carry = q, k, None
    elif g.ndim == 3:
        last = b[..., -1:]  # (batch, heads, n, 1): the chunk's total log-decay
        q_in = q * b.exp()[..., None]
        k_out = k * (last - b).exp()[..., None]
        carry = last.exp()[..., None]  # (batch, heads, n, 1, 1): scales the whole state
    else:
        last = b[..., -1:, :]  # (batch, heads, n, 1, K)
        q_in = q * b.exp()
        k_out = k * (last - b).exp()
        carry = last.transpose(-1, -2).exp()  # (batch, heads, n, K, 1): scales the state's rows
    local = k_out.transpose(-1, -2) @ v  # (batch, heads, n, K, V): what each chunk adds to the state
    state = q.new_zeros(batch, heads, dk, dv, dtype=work) if initial_state is None else initial_state.to(work)
    # Hand the state from chunk to chunk. The per-chunk pieces come from ``unbind``, whose
    # backward stacks the n gradients once; indexing ``local[:, :, c]`` instead would make every
    # one of the n select-backwards allocate and fill a whole (n, K, V) zero tensor: O(n^2).
    local_c = local.unbind(2)
    carry_c = (None,) * n if carry is None else carry.unbind(2)
    entering = []
    for c in range(n):
        entering.append(state)
        state = local_c[c] + (state if carry_c[c] is None else carry_c[c] * state)
    entering = torch.stack(entering, dim=2)  # (batch, heads, n, K, V)
    o = scale * (q_in @ entering + intra)
    o = o.reshape(batch, heads, n * size, dv)[:, :, :length].to(dtype_in)
    return (o, state) if output_final_state else o

