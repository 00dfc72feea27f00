"""What the linear-attention backends share: the argument contract and the default scale."""

from __future__ import annotations

import math
import numbers

import torch

from hybrids.kernels.dtypes import check_floating


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def resolve_scale(scale: float | None, head_dim_k: int) -> float:
    """``scale``, or K^-1/2 when it is None; ValueError naming ``scale`` unless a finite real number."""
    if scale is None:
        return head_dim_k**-0.5 if head_dim_k > 0 else 1.0
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not math.isfinite(scale):
        raise ValueError(f"scale: expected a finite real number or None, got {scale!r}")
    return float(scale)


def check_decay(g: torch.Tensor | None, leading: tuple[int, ...], dk: int, what: str) -> None:
    """``g`` is None, ``leading`` (one log-decay per head) or ``leading + (K,)`` (one per key dimension)."""
    if g is not None and _shape(g) not in (leading, leading + (dk,)):
        raise ValueError(
            f"g: expected None, {what} {leading} (a scalar log-decay per head) or {what[:-1]}, K) "
            f"{leading + (dk,)} (one per key dimension), got {_shape(g)}"
        )


def check_linear_attention_arguments(q, k, v, g=None, scale=None, initial_state=None) -> None:
    """Raise ValueError (shapes, devices, ``scale``, q/k/v dtypes that differ) or TypeError (a
    tensor that is not real floating point), naming the argument that breaks the contract."""
    for name, t in (("q", q), ("k", k), ("v", v), ("g", g), ("initial_state", initial_state)):
        if t is not None and not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a tensor{' or None' if name in ('g', 'initial_state') else ''}, "
                            f"got {type(t).__name__}")
        check_floating(name, t)
    if q.ndim != 4:
        raise ValueError(f"q: expected (batch, heads, L, K), got shape {_shape(q)}")
    batch, heads, length, dk = q.shape
    if _shape(k) != _shape(q):
        raise ValueError(f"k: expected q's shape (batch, heads, L, K) = {_shape(q)}, got {_shape(k)}")
    if v.ndim != 4 or _shape(v)[:3] != (batch, heads, length):
        raise ValueError(f"v: expected (batch={batch}, heads={heads}, L={length}, V), got {_shape(v)}")
    dv = v.shape[3]
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise ValueError(f"{name}: expected q's dtype {q.dtype}, got {t.dtype} (cast q, k and v to one dtype)")
    check_decay(g, (batch, heads, length), dk, "(batch, heads, L)")
    if initial_state is not None and _shape(initial_state) != (batch, heads, dk, dv):
        raise ValueError(
            f"initial_state: expected (batch={batch}, heads={heads}, K={dk}, V={dv}), got {_shape(initial_state)}"
        )
    for name, t in (("k", k), ("v", v), ("g", g), ("initial_state", initial_state)):
        if t is not None and t.device != q.device:
            raise ValueError(f"{name}: expected q's device {q.device}, got {t.device}")
    resolve_scale(scale, dk)


def check_step_arguments(q, k, v, g, state, scale=None) -> None:
    """The decode step's contract (see :mod:`.step`); errors name the argument."""
    for name, t in (("q", q), ("k", k), ("v", v), ("g", g), ("state", state)):
        if t is not None and not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a tensor, got {type(t).__name__}")
        check_floating(name, t)
    if state is None or state.ndim != 4:
        raise ValueError(f"state: expected (batch, heads, K, V), got {None if state is None else _shape(state)}")
    batch, heads, dk, dv = state.shape
    for name, t, last, label in (("q", q, dk, "K"), ("k", k, dk, "K"), ("v", v, dv, "V")):
        if _shape(t) != (batch, heads, last):
            raise ValueError(
                f"{name}: expected (batch={batch}, heads={heads}, {label}={last}) to match state "
                f"{_shape(state)}, got {_shape(t)}"
            )
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise ValueError(f"{name}: expected q's dtype {q.dtype}, got {t.dtype} (cast q, k and v to one dtype)")
    check_decay(g, (batch, heads), dk, "(batch, heads)")
    for name, t in (("k", k), ("v", v), ("g", g), ("state", state)):
        if t is not None and t.device != q.device:
            raise ValueError(f"{name}: expected q's device {q.device}, got {t.device}")
    resolve_scale(scale, dk)


def empty_output(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The (batch, heads, 0, V) output of an empty sequence, still a function of q, k and v, so
    that a backward through it gives them (empty) gradients instead of none."""
    return v * 0 + (q + k).sum(-1, keepdim=True) * 0
