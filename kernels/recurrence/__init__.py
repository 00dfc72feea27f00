"""A diagonal linear recurrence, the core of gated linear RNNs such as Griffin's RG-LRU::

    h[t] = a[t] * h[t-1] + x[t]        h[-1] = initial_state (or 0)

elementwise over every channel, on tensors in the (batch, L, dim) layout that a mixer's
activations have: ``a, x`` (batch, L, dim), ``initial_state`` (batch, dim). Returns ``h``
(batch, L, dim) and, with ``return_last_state``, a copy of ``h[:, -1]`` (batch, dim).
Arithmetic runs in float32 for half-precision inputs (float64 stays float64); ``h`` has ``x``'s
dtype.

The selective scan (:mod:`hybrids.kernels.scan`) computes this too, with ``d_state = 1`` and a
step ``delta`` standing for ``-log a``, but its layout is (batch, dim, L), its inputs must be
recast through ``delta`` (a division by it), and its loops are built for a vector of states per
channel: on CPU this op is about 10x faster for the RG-LRU's shapes (docs/sweeps.md).

Backends (``backend=`` argument, else ``HYBRIDS_LINEAR_RECURRENCE_BACKEND``, else the
dispatcher's choice):

- ``"reference"`` (:mod:`.reference`): a loop over time in plain PyTorch, differentiated by
  autograd; the ground truth of the tests, and the CPU fallback where no C++ compiler is found
  (the RG-LRU then runs on the selective scan's pure-PyTorch path instead, which is faster).
- ``"cpu"`` (:mod:`.cpp`): a compiled C++ loop, channels vectorised, one batch row per OpenMP
  iteration, with its own backward (the adjoint recurrence run backwards), built on first use.

There is no GPU backend: on CUDA, the RG-LRU runs on the selective scan's Triton kernel.
"""

from __future__ import annotations

import torch

from hybrids.kernels.dispatch import Backend, Op

_PACKAGE = "hybrids.kernels.recurrence"


# A constant to torch.compile: the build is looked for once, not traced (its file checks would
# end the graph).
@torch.compiler.assume_constant_result
def _cpp_available(device: str) -> str | None:
    from hybrids.kernels import cpp_build

    return cpp_build.unavailable_reason("linear_recurrence")


LINEAR_RECURRENCE = Op(
    "linear_recurrence",
    (
        # The reference is the CPU fallback where no compiler is found (slow: a loop over time).
        Backend("reference", f"{_PACKAGE}.reference:linear_recurrence_reference", priority=0, automatic=("cpu",)),
        Backend(
            "cpu", f"{_PACKAGE}.cpp:linear_recurrence_cpu", devices=("cpu",), priority=10,
            available=_cpp_available, install="install g++ or clang++ (or set CXX); HYBRIDS_DISABLE_CPP=1 turns it off",
        ),
    ),
)
BACKENDS = LINEAR_RECURRENCE.names


def linear_recurrence(
    a: torch.Tensor,
    x: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    return_last_state: bool = False,
    backend: str | None = None,
):
    """``h[t] = a[t] * h[t-1] + x[t]`` over (batch, L, dim) inputs; see the module docstring."""
    _check(a, x, initial_state)
    name = LINEAR_RECURRENCE.select(x.device, x.dtype, backend)
    h = LINEAR_RECURRENCE.function(name)(a, x, initial_state)
    if not return_last_state:
        return h
    # A tensor of its own, not a view of h: a decoder keeping the state must not keep the
    # whole sequence's states alive with it.
    last = h[:, -1].clone() if h.shape[1] else _zero_or(initial_state, x)
    return h, last


def _zero_or(initial_state: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    if initial_state is not None:
        return initial_state.to(x.dtype)
    return x.new_zeros(x.shape[0], x.shape[2])


def _check(a: torch.Tensor, x: torch.Tensor, initial_state: torch.Tensor | None) -> None:
    for name, t in (("a", a), ("x", x), ("initial_state", initial_state)):
        if t is not None and not t.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor, got {t.dtype}")
        if t is not None and t.device != x.device:
            raise ValueError(f"{name}: expected x's device {x.device}, got {t.device}")
    if x.ndim != 3:
        raise ValueError(f"x: expected (batch, L, dim), got shape {tuple(x.shape)}")
    if a.shape != x.shape:
        raise ValueError(f"a: expected x's shape {tuple(x.shape)}, got {tuple(a.shape)}")
    if initial_state is not None and tuple(initial_state.shape) != (x.shape[0], x.shape[2]):
        raise ValueError(
            f"initial_state: expected (batch={x.shape[0]}, dim={x.shape[2]}), got {tuple(initial_state.shape)}"
        )


__all__ = ["BACKENDS", "LINEAR_RECURRENCE", "linear_recurrence"]
