"""One decoding step of the selective scan, with the contract of mamba_ssm's Triton
``selective_state_update``: the recurrence of :mod:`hybrids.kernels.scan` for a single
token, with the state kept by the caller and updated in place::

    dt    = softplus(dt + dt_bias) if dt_softplus else dt + dt_bias
    state = exp(dt * A) * state + dt * B * x
    out   = (sum_n C[n] * state[n] + D * x) * silu(z)              (D and z optional)

Two forms, as in mamba_ssm:

- channels (Mamba-1): ``state`` (batch, dim, dstate); ``x, dt, z`` (batch, dim); ``A`` (dim,
  dstate); ``B, C`` (batch, dstate) or (batch, ngroups, dstate) with ``dim % ngroups == 0``,
  channel ``d`` reading group ``d // (dim // ngroups)`` as in ``selective_scan``; ``D,
  dt_bias`` (dim,).
- heads (Mamba-2 style): ``state`` (batch, nheads, dim, dstate); ``x, dt, z`` (batch, nheads,
  dim); ``A`` (nheads, dim, dstate); ``B, C`` (batch, dstate) or (batch, ngroups, dstate) with
  ``nheads % ngroups == 0``, head ``h`` reading group ``h // (nheads // ngroups)``; ``D,
  dt_bias`` (nheads, dim).

Returns ``out`` shaped like ``x``, in ``x``'s dtype. The state math runs in float32 (float64
for float64 inputs); ``state`` keeps its own dtype. Stepping ``L`` tokens from a zero state gives
``selective_scan`` of them, and its last state.

Backends (``backend=`` argument, else the ``HYBRIDS_SELECTIVE_STATE_UPDATE_BACKEND`` environment
variable, else the dispatcher's choice):

- ``"torch"``: plain PyTorch, any device and dtype.
- ``"extension"``: mamba_ssm's Triton kernel (``pip install -e '.[cuda]'`` on a CUDA machine),
  for CUDA tensors in float32/float16/bfloat16. A grouped channel-form call is handed to it in
  the heads form (``ngroups`` heads of ``dim // ngroups`` channels), which it accepts.

``backend=None``: ``"extension"`` where it is installed and can take the tensors, else
``"torch"``.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from hybrids.kernels.dispatch import Backend, Op
from hybrids.kernels.dtypes import at_least_float32

_EXTENSION_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _extension_available(device: str) -> str | None:
    return None if _extension() is not None else "mamba-ssm is not installed"


def _extension_accepts(call) -> str | None:
    state_dtype = call.get("state_dtype")
    if state_dtype is not None and state_dtype not in _EXTENSION_DTYPES:
        return f"mamba_ssm's kernel keeps float32/float16/bfloat16 states, got {state_dtype}"
    return None


SELECTIVE_STATE_UPDATE = Op(
    "selective_state_update",
    env_aliases=("HYBRIDS_STATE_UPDATE_BACKEND",),
    backends=(
        Backend("torch", f"{__name__}:_state_update_torch", priority=10),
        Backend(
            "extension", f"{__name__}:_state_update_extension", devices=("cuda",), dtypes=_EXTENSION_DTYPES,
            priority=20, available=_extension_available, accepts=_extension_accepts,
            install="`pip install -e '.[cuda]'` on a CUDA machine",
        ),
    ),
)
BACKENDS = SELECTIVE_STATE_UPDATE.names
BACKEND_ENV = SELECTIVE_STATE_UPDATE.env


def selective_state_update(
    state: torch.Tensor,
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    dt_softplus: bool = False,
    backend: str | None = None,
) -> torch.Tensor:
    """One step (module docstring): ``state`` updated in place, ``out`` shaped like ``x``."""
    check_state_update_arguments(state, x, dt, A, B, C, D, z, dt_bias)
    name = SELECTIVE_STATE_UPDATE.select(x.device, x.dtype, backend, state_dtype=state.dtype)
    return SELECTIVE_STATE_UPDATE.function(name)(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus)


# --------------------------------------------------------------------------------------------
# PyTorch


def _state_update_torch(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus):
    work = at_least_float32(torch.promote_types(x.dtype, state.dtype))
    dt = dt.to(work)
    if dt_bias is not None:
        dt = dt + dt_bias.to(work)
    if dt_softplus:
        dt = F.softplus(dt)
    xw = x.to(work)
    # B, C: (batch, ngroups, dstate) -> what each row of the state reads.
    B, C = _per_row(B, state).to(work), _per_row(C, state).to(work)
    decay = torch.exp(dt[..., None] * A.to(work))  # like state
    new = state.to(work) * decay + (dt * xw)[..., None] * B
    state.copy_(new)
    out = (new * C).sum(-1)  # like x
    if D is not None:
        out = out + D.to(work) * xw
    if z is not None:
        out = out * F.silu(z.to(work))
    return out.to(x.dtype)


def _per_row(BC: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
    """(batch, dstate) or (batch, ngroups, dstate) -> broadcastable against ``state``."""
    grouped = BC[:, None, :] if BC.ndim == 2 else BC
    rows = state.shape[1]  # channels (channel form) or heads (heads form)
    grouped = grouped.repeat_interleave(rows // grouped.shape[1], dim=1)  # (batch, rows, dstate)
    return grouped if state.ndim == 3 else grouped[:, :, None, :]


# --------------------------------------------------------------------------------------------
# mamba_ssm


@functools.cache
def _extension():
    try:
        from mamba_ssm.ops.triton.selective_state_update import selective_state_update as fn
    except ImportError:
        return None
    return fn


def _state_update_extension(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus):
    fn = _extension()
    groups_B = 1 if B.ndim == 2 else B.shape[1]
    groups_C = 1 if C.ndim == 2 else C.shape[1]
    groups = math.lcm(groups_B, groups_C)  # divides dim (or nheads), as both do; mamba_ssm wants one
    B = (B if B.ndim == 3 else B[:, None, :]).repeat_interleave(groups // groups_B, dim=1)
    C = (C if C.ndim == 3 else C[:, None, :]).repeat_interleave(groups // groups_C, dim=1)
    if state.ndim == 4 or groups == 1:
        return fn(state, x, dt, A, B, C, D=D, z=z, dt_bias=dt_bias, dt_softplus=dt_softplus)
    # Channel form with ngroups > 1: mamba_ssm reads groups across heads, so make each group a
    # head of dim // groups channels. ``state`` must be viewable (the kernel writes through it).
    batch, dim, dstate = state.shape
    per = dim // groups

    def heads(t):
        return None if t is None else t.reshape(t.shape[0], groups, per)

    def params(t):
        return None if t is None else t.reshape(groups, per)

    out = fn(
        state.view(batch, groups, per, dstate),
        heads(x), heads(dt), A.reshape(groups, per, dstate), B, C,
        D=params(D), z=heads(z), dt_bias=params(dt_bias), dt_softplus=dt_softplus,
    )
    return out.reshape(batch, dim)


# --------------------------------------------------------------------------------------------
# checks and dispatch


def check_state_update_arguments(state, x, dt, A, B, C, D=None, z=None, dt_bias=None) -> None:
    """Raise ValueError (shape) or TypeError (dtype) naming the argument that breaks the contract."""
    for name, t in (("state", state), ("x", x), ("dt", dt), ("A", A), ("B", B), ("C", C), ("D", D), ("z", z),
                    ("dt_bias", dt_bias)):
        if t is not None and not t.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor, got {t.dtype}")
    if state.ndim not in (3, 4):
        raise ValueError(
            f"state: expected (batch, dim, dstate) or (batch, nheads, dim, dstate), got shape {tuple(state.shape)}"
        )
    rows_shape, dstate = tuple(state.shape[:-1]), state.shape[-1]  # (batch, dim) or (batch, nheads, dim)
    batch, rows = state.shape[0], state.shape[1]
    for name, t in (("x", x), ("dt", dt), ("z", z)):
        if t is not None and tuple(t.shape) != rows_shape:
            raise ValueError(f"{name}: expected {rows_shape} to match state {tuple(state.shape)}, got {tuple(t.shape)}")
    if tuple(A.shape) != tuple(state.shape[1:]):
        raise ValueError(f"A: expected {tuple(state.shape[1:])} (state without batch), got {tuple(A.shape)}")
    for name, t in (("D", D), ("dt_bias", dt_bias)):
        if t is not None and tuple(t.shape) != rows_shape[1:]:
            raise ValueError(f"{name}: expected {rows_shape[1:]}, got {tuple(t.shape)}")
    what = "dim" if state.ndim == 3 else "nheads"
    for name, t in (("B", B), ("C", C)):
        ok = (t.ndim == 2 and tuple(t.shape) == (batch, dstate)) or (
            t.ndim == 3 and t.shape[0] == batch and t.shape[2] == dstate and t.shape[1] > 0 and rows % t.shape[1] == 0
        )
        if not ok:
            raise ValueError(
                f"{name}: expected (batch={batch}, dstate={dstate}) or (batch, ngroups, dstate) with ngroups "
                f"dividing {what}={rows}, got {tuple(t.shape)}"
            )
