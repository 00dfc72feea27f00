"""The ``"flex"`` backend of sparse attention: ``torch.nn.attention.flex_attention`` with a
``BlockMask`` of the pattern, compiled on CUDA (forward only, uncompiled, on CPU)."""

from __future__ import annotations

import functools

import torch

from hybrids.kernels.dtypes import at_least_float32
from hybrids.kernels.sparse.pattern import SparsePattern

try:
    from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention
except ImportError:  # torch < 2.5
    BlockMask = create_block_mask = flex_attention = None

# Block masks kept, oldest forgotten first.
_BLOCK_MASK_CACHE_SIZE = 16

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
    work = at_least_float32(q.dtype)
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
