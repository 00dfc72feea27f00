"""The ``"reference"`` backend of sparse attention: the dense (L, L) mask of
:meth:`SparsePattern.dense_mask` and a masked softmax. O(L^2) memory; the ground truth of tests."""

from __future__ import annotations

import math

import torch

from hybrids.kernels.dtypes import at_least_float32
from hybrids.kernels.sparse.pattern import SparsePattern


def sparse_attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: SparsePattern, scale: float
) -> torch.Tensor:
    """Dense masked softmax over the (L, L) mask: O(L^2) memory, for tests and small L."""
    work = at_least_float32(q.dtype)
    group = q.shape[1] // k.shape[1]
    k = k.to(work).repeat_interleave(group, dim=1)  # (batch, heads, L, head_dim)
    v = v.to(work).repeat_interleave(group, dim=1)
    scores = q.to(work) @ k.transpose(-1, -2) * scale  # (batch, heads, L, L)
    scores = scores.masked_fill(~pattern.dense_mask(q.shape[-2], q.device), -math.inf)
    return (scores.softmax(dim=-1) @ v).to(q.dtype)
