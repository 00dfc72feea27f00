"""The ``"fla"`` backend of linear attention: flash-linear-attention's chunked Triton kernels.

An adapter, no arithmetic of its own: it maps our contract onto the fla package's functions
(``pip install flash-linear-attention``, or ``fla-core``), CUDA only, never chosen automatically
(our ``"triton"`` backend is the default on CUDA; ask for this one by name, e.g. to compare them).

=============================  =====================================================
our ``g``                      fla function
=============================  =====================================================
None                           ``fla.ops.simple_gla.chunk_simple_gla(g=None)``
(batch, heads, L)              ``chunk_simple_gla(g=...)`` (a scalar log-decay per head)
(batch, heads, L, K)           ``fla.ops.gla.chunk_gla(g=...)`` (one per key dimension)
=============================  =====================================================

Both compute ``S_t = exp(g_t) S_{t-1} + k_t v_t^T``, ``o_t = scale q_t^T S_t`` with natural-log
gates, as here. What the adapter does:

- layout: ours is head-first, (batch, heads, L, dim); fla's is (batch, L, heads, dim) since
  fla 0.2 (older versions took ``head_first=``; where the function still has that parameter it
  is passed ``head_first=False``). Inputs go over as transposed contiguous copies, ``o`` comes
  back transposed. The state is (batch, heads, K, V) in both.
- dtypes: q, k, v as given (float32, float16, bfloat16; fla has no float64 kernels); ``g`` and
  ``initial_state`` in float32; the final state is returned in float32, our working dtype.
- ``scale`` is always passed explicitly (ours defaults to K^-1/2, as fla's does).
- an empty sequence is answered here (fla's kernels launch no work for it).

Gradients are fla's own backward kernels, for q, k, v, g and the initial state. Tested against
the reference on CUDA (``tests/test_linear_attention_fla.py``, GPU-marked); on CPU the adapter's
layout and routing are tested against a stand-in with fla's documented signature, because
fla's kernels do not run under Triton's interpreter (their loop counters are Python ints there).
"""

from __future__ import annotations

import inspect
import warnings

import torch

from hybrids.kernels.linear.common import empty_output, resolve_scale

INSTALL = "`pip install -e '.[fla]'` (fla-core) on a machine with a CUDA GPU"


def fla_available(device: str) -> str | None:
    """None if the fla package's two chunked functions import, else why not."""
    try:
        with warnings.catch_warnings():  # fla warns at import on a machine without a GPU
            warnings.simplefilter("ignore")
            from fla.ops.gla import chunk_gla  # noqa: F401
            from fla.ops.simple_gla import chunk_simple_gla  # noqa: F401
    except ImportError as err:
        return f"flash-linear-attention (fla) is not installed or too old ({err})"
    if device != "cuda":
        return f"fla's kernels need CUDA tensors, got {device}"
    return None


def _sequence_first(t: torch.Tensor | None, dtype: torch.dtype | None = None) -> torch.Tensor | None:
    """(batch, heads, L, ...) -> (batch, L, heads, ...), contiguous, optionally cast."""
    if t is None:
        return None
    t = t.transpose(1, 2)
    return (t if dtype is None else t.to(dtype)).contiguous()


def _layout_keywords(fn) -> dict:
    """``head_first=False`` for fla versions whose functions still have the parameter."""
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}
    return {"head_first": False} if "head_first" in parameters else {}


def linear_attention_fla(q, k, v, g=None, scale=None, initial_state=None, output_final_state=False):
    """Linear attention through fla's chunked kernels (module docstring)."""
    scale = resolve_scale(scale, q.shape[-1])
    state = None if initial_state is None else initial_state.to(torch.float32).contiguous()
    if q.shape[2] == 0:
        o = empty_output(q, k, v)
        if not output_final_state:
            return o
        if state is None:
            state = q.new_zeros(q.shape[0], q.shape[1], q.shape[3], v.shape[3], dtype=torch.float32)
        return o, state

    if g is not None and g.ndim == 4:
        from fla.ops.gla import chunk_gla as fn
    else:
        from fla.ops.simple_gla import chunk_simple_gla as fn
    o, final = fn(
        _sequence_first(q), _sequence_first(k), _sequence_first(v), g=_sequence_first(g, torch.float32),
        scale=scale, initial_state=state, output_final_state=output_final_state, **_layout_keywords(fn),
    )
    o = o.transpose(1, 2).to(q.dtype)
    return (o, final.to(torch.float32)) if output_final_state else o
