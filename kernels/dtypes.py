"""Precision rules shared by the kernels.

Recurrences, softmax statistics, FFTs and complex SSM arithmetic lose too much in float16 or
bfloat16, so every op computes in at least float32 (float64 stays float64) and returns results
in its input's dtype.
"""

from __future__ import annotations

import torch


def at_least_float32(dtype: torch.dtype) -> torch.dtype:
    """float32 for float16/bfloat16/float32, float64 for float64 (the working precision)."""
    return torch.promote_types(dtype, torch.float32)


def widen(t: torch.Tensor) -> torch.Tensor:
    """``t`` in :func:`at_least_float32` of its dtype (no copy if it is already there)."""
    return t.to(at_least_float32(t.dtype))


def check_floating(name: str, t: torch.Tensor | None) -> None:
    """Raise TypeError naming ``name`` unless ``t`` is None or a real floating-point tensor."""
    if t is not None and not t.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got {t.dtype}")
