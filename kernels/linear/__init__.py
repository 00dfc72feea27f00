"""Linear attention with an optional data-dependent decay (gated linear attention, RetNet,
Mamba-2-style scalar decay): a linear RNN whose state is a (K, V) matrix per head.

For every batch and head, with ``S_0 = initial_state`` (zeros if None)::

    S_t = exp(g_t) * S_{t-1} + k_t v_t^T         t = 1 .. L
    o_t = scale * q_t^T S_t

``g`` is a log-decay (``<= 0`` in use: ``exp(g)`` in [0, 1]) in one of three forms:

- ``None``: no decay (plain causal linear attention, ``exp(g) = 1``);
- (batch, heads, L): a scalar per head and position, which scales all of ``S``;
- (batch, heads, L, K): one per key dimension, which scales the rows of ``S``.

A log-decay of ``-inf`` is a hard reset: the state forgets everything before that step (e.g.
at a document boundary in a packed sequence). The chunked forms take differences of cumulative
log-decays, where ``-inf - (-inf)`` would be NaN, so ``g`` is clamped at
:func:`log_decay_floor` of the working precision before any backend runs: -200 in float32
(float16, bfloat16 and float32 inputs), -800 in float64, the values nearest 0 whose exp is
still exactly 0 there (with a margin), as is the gradient. Nearer 0 matters: the floor enters
the cumulative sums within a chunk, and float32 resolves about 1.5e-5 near 200 but 1e-3 near
1e4 (a floor of -1e4 cost the float32 chunked paths a relative error of 1.7e-4 after a reset,
-200 costs 3e-6). k resets in one chunk put the sums near -200 k: in float32 the chunked path's
error grows to 1.6e-5 with a reset every 16 steps and 6.4e-5 with one every 2.

Shapes (fla's ``(batch, heads, L, dim)`` head-first layout, like ``scaled_dot_product_attention``):
``q, k`` (batch, heads, L, K); ``v`` (batch, heads, L, V); ``initial_state`` (batch, heads, K,
V). ``scale`` defaults to ``K ** -0.5``. Returns ``o`` (batch, heads, L, V), and with
``output_final_state`` also ``S_L`` (batch, heads, K, V).

Dtypes: ``q, k, v`` share one floating dtype, which ``o`` has; ``g`` and ``initial_state`` may
be any floating dtype. The arithmetic and the state run in float32 (float64 for float64 inputs),
and the final state comes back in that working dtype, ready to be passed on as
``initial_state``. Integer inputs raise ``TypeError``, bad shapes and mismatched q/k/v dtypes
``ValueError``, each naming the argument.

Backends (``backend=`` argument, else ``HYBRIDS_LINEAR_ATTENTION_BACKEND``, else the
dispatcher's choice for the tensors, :mod:`hybrids.kernels.dispatch`):

- ``"reference"`` (:mod:`.reference`): the recurrence step by step, autograd for gradients;
  keeps every state, (batch, heads, L, K, V). The ground truth of the tests.
- ``"chunk"`` (:mod:`.chunk`): pure PyTorch, any device: quadratic within chunks of 64
  positions (16, in sub-chunks of 4, for a vector decay), the state handed from chunk to chunk,
  decays as differences of cumulative sums so
  that nothing overflows; autograd for gradients (its memory is in :mod:`.chunk`).
- ``"cpu"`` (:mod:`.cpp`): the recurrence in compiled C++ with its own backward, the state
  saved every 32 steps and recomputed chunk by chunk in the backward; CPU tensors, float32
  arithmetic (float64 for float64 inputs). Chosen on CPU wherever a C++ compiler is found.
- ``"triton"`` (:mod:`.triton_chunk`): our chunked Triton forward kernel and hand-written
  backward kernel, for CUDA tensors (on CPU only under ``TRITON_INTERPRET=1``, for tests);
  float32, float16 and bfloat16 inputs, float32 state and arithmetic; float64 is refused.

- ``"fla"`` (:mod:`.fla`): flash-linear-attention's chunked kernels (``chunk_simple_gla``,
  ``chunk_gla``) through an adapter for its (batch, L, heads, dim) layout; CUDA only, where the
  fla package is installed; only when asked for by name.

Automatic choice: ``"triton"`` on CUDA (``"chunk"`` for float64, which the Triton kernels
reject, or where Triton is missing); ``"cpu"`` or ``"chunk"`` on CPU (below), where
Triton runs only in its interpreter and is never chosen by itself. ``"cpu"`` is chosen for a
vector decay, and for a scalar or no decay where a head's state is small (``K * V < 16 (K +
V)``, strictly); larger states go to ``"chunk"``, whose matrix products are faster there.

The decode step, one token with the state updated in place, is :func:`linear_attention_step`
(:mod:`.step`).
"""

from __future__ import annotations

import torch

from hybrids.kernels.dispatch import Backend, BackendUnavailable, Op, triton_available
from hybrids.kernels.dtypes import at_least_float32
from hybrids.kernels.linear.common import check_linear_attention_arguments, resolve_scale
from hybrids.kernels.linear.fla import INSTALL as FLA_INSTALL
from hybrids.kernels.linear.fla import fla_available
from hybrids.kernels.linear.step import linear_attention_step

_PACKAGE = "hybrids.kernels.linear"


def _recurrence_pays(call) -> str | None:
    """None where the C++ recurrence beats the chunked form on a CPU, else why not. The recurrence
    costs K * V per step; the chunked form's matrix products cost about C * (K + V) with C = 64,
    at BLAS speed, plus, for a vector decay, (C, C, K) elementwise work that the recurrence
    avoids. Measured (batch 64, L = 64, forward and backward, one thread; docs/kernels.md): a
    vector decay 3.5x faster on the recurrence (GLA, K = V = 32); a scalar decay 1.8x faster at
    8 heads of K = V = 16 (Mamba-2), no faster at 2 heads of K = V = 32 (RetNet: its whole
    training step 20% slower), 1.6x slower at one head of 64; no decay with large feature maps
    (Based, K = 153; Performer, K = 64) 1.7-2x slower."""
    if call.get("decay") == "vector":
        return None
    key, value = call.get("key_dim"), call.get("value_dim")
    if key is None or value is None or key * value < 16 * (key + value):
        return None
    return f"K * V = {key * value} state elements per head: the chunked form's matrix products are faster"


# A constant to torch.compile: the build is looked for once, not traced.
@torch.compiler.assume_constant_result
def _cpp_available(device: str) -> str | None:
    from hybrids.kernels import cpp_build

    return cpp_build.unavailable_reason("linear_attention")
_LOW_AND_SINGLE = (torch.float32, torch.float16, torch.bfloat16)


LINEAR_ATTENTION = Op(
    "linear_attention",
    (
        Backend("reference", f"{_PACKAGE}.reference:linear_attention_reference", priority=0, automatic=()),
        Backend("chunk", f"{_PACKAGE}.chunk:linear_attention_chunk", priority=10),
        Backend(
            "cpu", f"{_PACKAGE}.cpp:linear_attention_cpu", devices=("cpu",), priority=15, available=_cpp_available,
            install="a C++ compiler (g++ or clang++) on the PATH, or $CXX", prefers=_recurrence_pays,
        ),
        Backend(
            "triton", f"{_PACKAGE}.triton_chunk:linear_attention_triton", devices=("cuda", "cpu"),
            dtypes=_LOW_AND_SINGLE, priority=20, available=triton_available, automatic=("cuda",),
            install="`pip install triton` on Linux with a CUDA GPU",
        ),
        Backend(
            "fla", f"{_PACKAGE}.fla:linear_attention_fla", devices=("cuda",), dtypes=_LOW_AND_SINGLE,
            priority=5, available=fla_available, automatic=(), install=FLA_INSTALL,
        ),
    ),
)
BACKENDS = LINEAR_ATTENTION.names
BACKEND_ENV = LINEAR_ATTENTION.env


def log_decay_floor(dtype: torch.dtype) -> float:
    """The clamp applied to log-decays (module docstring) when q, k, v have ``dtype``: exp of it
    is exactly 0 in the working precision (float64 for float64 inputs, else float32)."""
    return -800.0 if at_least_float32(dtype) == torch.float64 else -200.0


def linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    backend: str | None = None,
):
    """Linear attention (module docstring): ``o`` (batch, heads, L, V), and the final state
    (batch, heads, K, V) if ``output_final_state``."""
    check_linear_attention_arguments(q, k, v, g, scale, initial_state)
    if g is not None:
        g = g.clamp(min=log_decay_floor(q.dtype))  # -inf (a hard reset) -> a decay of exactly 0, finite sums
    decay = None if g is None else "scalar" if g.ndim == 3 else "vector"
    name = LINEAR_ATTENTION.select(q.device, q.dtype, backend, decay=decay, key_dim=q.shape[-1], value_dim=v.shape[-1])
    fn = LINEAR_ATTENTION.function(name)
    return fn(q, k, v, g, resolve_scale(scale, q.shape[-1]), initial_state, output_final_state)


__all__ = [
    "BACKENDS",
    "BACKEND_ENV",
    "LINEAR_ATTENTION",
    "BackendUnavailable",
    "log_decay_floor",
    "linear_attention",
    "linear_attention_step",
]
