"""The ``"masked_sdpa"`` backend of sparse attention: ``scaled_dot_product_attention`` with the
pattern's dense (L, L) boolean mask.

At short lengths the banded backend's tiling costs more than it saves: at L = 64 and window 16
every query already sees a quarter of the keys, and gathering key tiles, merging partial
softmaxes and a hand-written backward in Python cost more than the dense scores. PyTorch's fused
CPU attention with a boolean mask is one call each way. Measured on one CPU thread, batch 64,
2 heads of 32, forward + backward (``python benchmarks/sparse_attention_short.py``): at window
16, 2.7x faster than banded at L = 64, 1.7x at 128, 1.1x at 256 and 0.5x at 512; at window 64,
4.3x, 2.7x, 1.6x and 0.8x. The dispatcher therefore chooses it on CPU only up to
:data:`AUTOMATIC_MAX_LENGTH` (wider windows move the crossover up, so the rule is conservative
for them). Asked for by name it runs
at any length; the mask is L^2 booleans (16 MiB at L = 4,096), shared by batch and heads and
cached per (pattern, L, device).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from hybrids.kernels.dtypes import at_least_float32
from hybrids.kernels.sparse.pattern import SparsePattern, outside_inference_mode

# The longest sequence for which the dispatcher picks this backend over "banded" (see above).
AUTOMATIC_MAX_LENGTH = 256


def sparse_attention_masked_sdpa(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: SparsePattern, scale: float
) -> torch.Tensor:
    """Dense attention under the pattern's (L, L) mask; every query sees at least itself, so no
    row of the softmax is empty. Half-precision inputs are computed in float32, as elsewhere."""
    work = at_least_float32(q.dtype)
    mask = _mask(pattern, q.shape[-2], q.device)
    out = F.scaled_dot_product_attention(
        q.to(work), k.to(work), v.to(work), attn_mask=mask, scale=scale, enable_gqa=q.shape[1] != k.shape[1]
    )
    return out.to(q.dtype)


@functools.lru_cache(maxsize=16)
@outside_inference_mode
def _mask(pattern: SparsePattern, length: int, device: torch.device) -> torch.Tensor:
    return pattern.dense_mask(length, device)


def prefers(call) -> str | None:
    """The dispatcher's rule for choosing this backend by itself: short sequences only."""
    length = call.get("length")
    if length is None or length > AUTOMATIC_MAX_LENGTH:
        return f"chosen by itself only up to L = {AUTOMATIC_MAX_LENGTH} (the banded tiling is faster beyond)"
    return None
