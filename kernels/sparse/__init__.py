"""Sparse attention: sliding windows (optionally dilated), global tokens and BigBird-style random
key blocks, as in Longformer (Beltagy et al. 2020) and BigBird (Zaheer et al. 2020).

A :class:`SparsePattern` says which keys each query may see; :func:`sparse_attention` computes
``softmax(q k^T * scale + mask) v`` restricted to them, on tensors shaped like
``scaled_dot_product_attention``'s: ``q`` (batch, heads, L, head_dim), ``k, v`` (batch, kv_heads,
L, head_dim) with ``heads % kv_heads == 0`` (grouped-query attention: query head ``h`` reads
key/value head ``h // (heads // kv_heads)``).

Backends (``backend=`` argument, else the ``HYBRIDS_SPARSE_ATTENTION_BACKEND`` environment
variable, else the dispatcher's choice: ``"flex"`` on CUDA; on CPU ``"masked_sdpa"`` up to
L = 256 and ``"banded"`` beyond):

- ``"reference"`` (:mod:`.reference`): the dense (L, L) mask of :meth:`SparsePattern.dense_mask` and a masked softmax.
  O(L^2) memory; the ground truth for tests.
- ``"banded"`` (:mod:`.banded`): pure PyTorch, forward and a hand-written backward, never forms an (L, L)
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
- ``"masked_sdpa"`` (:mod:`.masked_sdpa`): ``scaled_dot_product_attention`` with the dense (L, L)
  boolean mask, cached per (pattern, L, device). O(L^2) memory and time, but one fused call
  each way: on CPU 2.7x faster than banded at L = 64 and 1.1x at 256 (window 16), slower from
  about 512, so it is chosen by itself only on CPU and only up to L = 256.
- ``"flex"`` (:mod:`.flex`): ``torch.nn.attention.flex_attention`` with a ``BlockMask`` built from the same
  rule, cached per (pattern, L, device), and ``torch.compile``-d on CUDA. On CPU (torch 2.13)
  FlexAttention runs only uncompiled and only forward: it materialises the (L, L) scores and
  has no backward, so ``"flex"`` on CPU with inputs that require grad raises
  ``NotImplementedError``; use ``"banded"`` to train on CPU.

Softmax runs in float32 for float16/bfloat16 inputs (float64 stays float64); the output has
``q``'s dtype.
"""

from __future__ import annotations

import torch

from hybrids.kernels.dispatch import Backend, Op
from hybrids.kernels.sparse.pattern import SparsePattern

_PACKAGE = "hybrids.kernels.sparse"


def _flex_available(device: str) -> str | None:
    from hybrids.kernels.sparse.flex import flex_attention

    if flex_attention is None:
        return "it needs torch.nn.attention.flex_attention (torch >= 2.5): pip install -U torch"
    return None


def _short_enough(call) -> str | None:
    from hybrids.kernels.sparse.masked_sdpa import prefers

    return prefers(call)


SPARSE_ATTENTION = Op(
    "sparse_attention",
    (
        Backend("reference", f"{_PACKAGE}.reference:sparse_attention_reference", priority=0, automatic=()),
        Backend("banded", f"{_PACKAGE}.banded:sparse_attention_banded", priority=10),
        Backend(
            "masked_sdpa", f"{_PACKAGE}.masked_sdpa:sparse_attention_masked_sdpa", priority=15,
            automatic=("cpu",), prefers=_short_enough,
        ),
        # On CPU FlexAttention is uncompiled, O(L^2) and forward-only: asked for, never chosen.
        Backend(
            "flex", f"{_PACKAGE}.flex:sparse_attention_flex", priority=20, available=_flex_available,
            automatic=("cuda",), install="pip install -U torch (>= 2.5)",
        ),
    ),
)
BACKENDS = SPARSE_ATTENTION.names
BACKEND_ENV = SPARSE_ATTENTION.env


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
    backend: ``"reference"``, ``"banded"``, ``"masked_sdpa"`` or ``"flex"``; ``None`` reads
    ``HYBRIDS_SPARSE_ATTENTION_BACKEND``, else takes ``"flex"`` on CUDA and, on CPU,
    ``"masked_sdpa"`` up to L = 256 and ``"banded"`` beyond.
    """
    if not isinstance(pattern, SparsePattern):
        raise TypeError(f"pattern: expected a SparsePattern, got {type(pattern).__name__}")
    _check_shapes(q, k, v)
    backend = SPARSE_ATTENTION.select(q.device, q.dtype, backend, length=q.shape[-2])
    if q.numel() == 0 or k.numel() == 0:
        return q.clone()  # nothing to attend to; the backends' tilings assume non-empty inputs
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    return SPARSE_ATTENTION.function(backend)(q, k, v, pattern.within(q.shape[-2]), scale)


def _check_shapes(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not t.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor, got {t.dtype}")
        if t.device != q.device:
            raise ValueError(f"{name}: expected q's device {q.device}, got {t.device}")
    if q.ndim != 4:
        raise ValueError(f"q: expected (batch, heads, L, head_dim), got shape {tuple(q.shape)}")
    if k.shape != v.shape:
        raise ValueError(f"v: shape {tuple(v.shape)} differs from k's {tuple(k.shape)}")
    batch, heads, length, head_dim = q.shape
    if k.ndim != 4 or (k.shape[0], k.shape[2], k.shape[3]) != (batch, length, head_dim):
        expected = f"(batch={batch}, kv_heads, L={length}, head_dim={head_dim})"
        raise ValueError(f"k: expected {expected}, got {tuple(k.shape)}")
    if k.shape[1] == 0 or heads % k.shape[1]:
        raise ValueError(f"k: heads={heads} is not a multiple of kv_heads={k.shape[1]}")


__all__ = ["BACKENDS", "BACKEND_ENV", "SPARSE_ATTENTION", "SparsePattern", "sparse_attention"]
