"""What the selective-scan backends share: the argument contract and the parts around the
recurrence (step bias and softplus, the skip term ``D u``, the ``silu(z)`` gate)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hybrids.kernels.dtypes import at_least_float32


def check_scan_arguments(u, delta, A, B, C, D=None, z=None, delta_bias=None, initial_state=None) -> None:
    """Raise ValueError (shape) or TypeError (dtype) naming the argument that breaks the contract."""
    for name, x in (("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C), ("D", D), ("z", z), ("delta_bias", delta_bias), ("initial_state", initial_state)):
        if x is not None and not (x.is_floating_point() or (name == "A" and x.is_complex())):
            raise TypeError(f"{name}: expected a floating-point tensor, got {x.dtype}")
    if u.ndim != 3:
        raise ValueError(f"u: expected (batch, dim, L), got shape {tuple(u.shape)}")
    batch, dim, length = u.shape
    if delta.shape != u.shape:
        raise ValueError(f"delta: expected u's shape {tuple(u.shape)}, got {tuple(delta.shape)}")
    if z is not None and z.shape != u.shape:
        raise ValueError(f"z: expected u's shape {tuple(u.shape)}, got {tuple(z.shape)}")
    if A.ndim != 2 or A.shape[0] != dim:
        raise ValueError(f"A: expected (dim={dim}, d_state), got {tuple(A.shape)}")
    if A.is_complex():
        raise ValueError("A: complex A is not supported; use a real A (Mamba's S4D-Real init)")
    d_state = A.shape[1]
    for name, x in (("B", B), ("C", C)):
        if x.ndim == 3:
            expected, ok = (batch, d_state, length), tuple(x.shape) == (batch, d_state, length)
        elif x.ndim == 4:
            expected = (batch, "groups", d_state, length)
            ok = (x.shape[0], x.shape[2], x.shape[3]) == (batch, d_state, length) and x.shape[1] > 0
            ok = ok and dim % x.shape[1] == 0
        else:
            expected, ok = (batch, d_state, length), False
        if not ok:
            raise ValueError(
                f"{name}: expected {expected} (groups dividing dim={dim}), got {tuple(x.shape)}; "
                "time-invariant (dim, d_state) B/C are not supported: that is S4D (hybrids.mixers.S4D)"
            )
    for name, x in (("D", D), ("delta_bias", delta_bias)):
        if x is not None and tuple(x.shape) != (dim,):
            raise ValueError(f"{name}: expected (dim={dim},), got {tuple(x.shape)}")
    if initial_state is not None and tuple(initial_state.shape) != (batch, dim, d_state):
        raise ValueError(
            f"initial_state: expected (batch={batch}, dim={dim}, d_state={d_state}), got {tuple(initial_state.shape)}"
        )
    for name, x in (("delta", delta), ("A", A), ("B", B), ("C", C), ("D", D), ("z", z), ("delta_bias", delta_bias),
                    ("initial_state", initial_state)):
        if x is not None and x.device != u.device:
            raise ValueError(f"{name}: expected u's device {u.device}, got {x.device}")


def grouped(x: torch.Tensor) -> torch.Tensor:
    """B or C as (batch, groups, d_state, L): a 3-D input is one group."""
    return x.unsqueeze(1) if x.ndim == 3 else x


def gated_scan(core, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, initial_state=None):
    """The parts around the recurrence, shared by the "torch" and "cpu" backends.

    ``core(u, delta, A, B, C, h0) -> (y, last_state)`` runs the bare recurrence on float32/float64
    tensors (``delta`` final, ``B, C`` as (batch, groups, d_state, L), ``h0`` the state before
    the first step, (batch, dim, d_state) in the working dtype, or None for zeros) with its own
    backward, which gives the gradient of ``h0`` too; the step bias and softplus, the skip term
    ``D u`` and the ``silu(z)`` gate are cheap (batch, dim, L) operations left to autograd, and
    so is the cast of ``initial_state`` (its gradient comes back in its own dtype).
    """
    dtype_in, work = u.dtype, at_least_float32(u.dtype)
    u, delta = u.to(work), delta.to(work)
    if delta_bias is not None:
        delta = delta + delta_bias.to(work)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    h0 = initial_state.to(work).contiguous() if initial_state is not None else None
    y, last = core(u, delta, A.to(work), grouped(B).to(work), grouped(C).to(work), h0)
    if D is not None:
        y = y + u * D.to(work)[:, None]
    if z is not None:
        y = y * F.silu(z.to(work))
    out = y.to(dtype_in)
    return (out, last) if return_last_state else out
