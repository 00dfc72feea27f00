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
- 16-bit inputs with an odd K or V are zero-padded to even widths (fla's backward asserts even
  widths there) and the output and state cut back: exact.

Known limit of fla itself: fla-core 0.6 refuses the backward of a *gated* ``chunk_simple_gla``
(a scalar decay) on Hopper GPUs (H100, H200) with Triton >= 3.4 and < 3.7.1, where Triton
miscompiles it (fla issue #640); it asks for Triton >= 3.7.1 or the tilelang package. Our
``"triton"`` backend is the default there anyway.

Gradients are fla's own backward kernels, for q, k, v, g and the initial state. Tested against
the reference on CUDA (``tests/kernels/test_linear_attention_fla.py``, GPU-marked); on CPU the adapter's
layout and routing are tested against a stand-in with fla's documented signature, because
fla's kernels do not run under Triton's interpreter (their loop counters are Python ints there).
"""

from __future__ import annotations

import inspect
import warnings

import torch
import torch.nn.functional as F

from hybrids.kernels.linear.common import empty_output, resolve_scale

INSTALL = "`pip install -e '.[fla]'` (fla-core) on a machine with a CUDA GPU"


def fla_available(device: str) -> str | None:
    """None if the fla package's two chunked functions import, else why not."""
    if device != "cuda":
        return f"fla's kernels need CUDA tensors, got {device}"
    try:
        with warnings.catch_warnings():  # fla warns at import on a machine without a GPU
            warnings.simplefilter("ignore")
            from fla.ops.gla import chunk_gla  # noqa: F401
            from fla.ops.simple_gla import chunk_simple_gla  # noqa: F401
    except ImportError as err:
        return f"flash-linear-attention (fla) is not installed or too old ({err})"
    except Exception as err:  # an fla that imports but breaks (driver, Triton version) is not usable
        return f"flash-linear-attention (fla) failed to import: {type(err).__name__}: {err}"
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


def _pad_last(t: torch.Tensor | None, extra: int) -> torch.Tensor | None:
    """Zero-pad the last dimension of ``t`` by ``extra`` at the end (0: as is)."""
    if t is None or not extra:
        return t
    return F.pad(t, (0, extra))


def linear_attention_fla(q, k, v, g=None, scale=None, initial_state=None, output_final_state=False):
    """Linear attention through fla's chunked kernels (module docstring)."""
    scale = resolve_scale(scale, q.shape[-1])
    dk, dv = q.shape[-1], v.shape[-1]
    state = None if initial_state is None else initial_state.to(torch.float32)
    if q.shape[2] == 0:
        o = empty_output(q, k, v)
        if not output_final_state:
            return o
        if state is None:
            state = q.new_zeros(q.shape[0], q.shape[1], dk, dv, dtype=torch.float32)
        return o, state.contiguous()

    # fla's backward asserts even K and V for 16-bit inputs (a Triton miscompile of odd tails);
    # our normalised mixers give v an odd width (a ones column). Zero columns are exact: a zero
    # key column adds nothing to its state row (which, with g = 0 there, stays zero), a zero
    # query column reads nothing, a zero value column gives a zero output column, cut off below.
    pad_k = pad_v = 0
    if q.dtype in (torch.float16, torch.bfloat16):
        pad_k, pad_v = dk % 2, dv % 2
    q, k, v = _pad_last(q, pad_k), _pad_last(k, pad_k), _pad_last(v, pad_v)
    if g is not None and g.ndim == 4:
        g = _pad_last(g, pad_k)
    if state is not None:
        state = F.pad(state, (0, pad_v, 0, pad_k)) if pad_k or pad_v else state
        state = state.contiguous()

    if g is not None and g.ndim == 4:
        from fla.ops.gla import chunk_gla as fn
    else:
        from fla.ops.simple_gla import chunk_simple_gla as fn
    o, final = fn(
        _sequence_first(q), _sequence_first(k), _sequence_first(v), g=_sequence_first(g, torch.float32),
        scale=scale, initial_state=state, output_final_state=output_final_state, **_layout_keywords(fn),
    )
    o = o.transpose(1, 2)[..., :dv].to(q.dtype)
    return (o, final[..., :dk, :dv].to(torch.float32)) if output_final_state else o
