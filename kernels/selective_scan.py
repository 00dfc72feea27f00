"""The gated selective scan of Mamba (Gu & Dao 2023): a linear RNN with input-dependent step.

For every batch ``b``, channel ``d`` and state index ``n``::

    h[t] = exp(delta[t] * A[d, n]) * h[t-1] + delta[t] * B[t, n] * u[t]      h[-1] = 0
    y[t] = sum_n C[t, n] * h[t, n] + D[d] * u[t]
    out[t] = y[t] * silu(z[t])                                                (if z is given)

with ``delta = softplus(delta + delta_bias)`` when ``delta_softplus`` (else ``delta +
delta_bias``). Shapes and argument names are those of mamba_ssm's ``selective_scan_fn``:

- ``u, delta, z``: (batch, dim, L)
- ``A``: (dim, d_state), real
- ``B, C``: (batch, d_state, L), or (batch, groups, d_state, L) with ``dim % groups == 0``
  (channel ``d`` reads group ``d // (dim // groups)``)
- ``D, delta_bias``: (dim,)

The output has ``u``'s dtype; the state is accumulated in float32 (float64 for float64 inputs).
With ``return_last_state`` the state after the last step, (batch, dim, d_state), comes too.

Backends (``backend=`` argument, else the ``HYBRIDS_SELECTIVE_SCAN_BACKEND`` environment
variable, else the fastest one available for the tensors' device):

- ``"reference"``: the recurrence written out in plain PyTorch, differentiated by autograd. It
  materialises ``exp(delta A)`` and ``delta B u`` as (batch, dim, L, d_state) tensors: the
  ground truth for tests, not for training.
- ``"torch"``: pure PyTorch for any device, with a hand-written backward: time is cut into
  segments scanned side by side, so memory stays O(batch * dim * d_state * segment) and no
  (batch, dim, L, d_state) tensor is ever formed (:mod:`hybrids.kernels.selective_scan_torch`).
- ``"cpu"``: a compiled C++ loop (OpenMP over batch and channels) with its own backward, built
  with the system's C++ compiler on first use (:mod:`hybrids.kernels.selective_scan_cpu`).
- ``"triton"``: our Triton kernels, forward and backward, for CUDA tensors (on CPU only under
  ``TRITON_INTERPRET=1``, for tests) (:mod:`hybrids.kernels.selective_scan_triton`).
- ``"extension"``: mamba_ssm's CUDA op, where mamba-ssm is installed.

``backend=None``: on CUDA ``"triton"`` (``"torch"`` for float64, which the Triton kernels
reject); on CPU ``"cpu"`` where a C++ compiler is found, else ``"torch"``.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

BACKENDS = ("reference", "torch", "cpu", "triton", "extension")
BACKEND_ENV = "HYBRIDS_SELECTIVE_SCAN_BACKEND"


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    backend: str | None = None,
):
    """The selective scan (module docstring): ``out`` (batch, dim, L), and the last state
    (batch, dim, d_state) if ``return_last_state``."""
    check_scan_arguments(u, delta, A, B, C, D, z, delta_bias)
    backend = resolve_backend(backend, u)
    if u.shape[-1] == 0:  # nothing to scan; the fast paths' tilings assume L >= 1
        backend = "reference"
    if backend == "reference":
        return selective_scan_reference(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    if backend == "torch":
        from hybrids.kernels.selective_scan_torch import selective_scan_torch as fn
    elif backend == "cpu":
        from hybrids.kernels.selective_scan_cpu import selective_scan_cpu as fn
    elif backend == "triton":
        from hybrids.kernels.selective_scan_triton import selective_scan_triton as fn
    else:
        fn = _extension_scan
    return fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)


# --------------------------------------------------------------------------------------------
# dispatch


class BackendUnavailable(RuntimeError):
    """A backend was asked for by name but cannot run here; the message says how to get it."""


def resolve_backend(backend: str | None, u: torch.Tensor) -> str:
    """The backend to run: the one named, else the environment variable's, else the default."""
    if backend is None:
        forced = os.environ.get(BACKEND_ENV)
        if forced:
            if forced not in BACKENDS:
                raise ValueError(f"{BACKEND_ENV}: unknown backend {forced!r}; valid: {', '.join(BACKENDS)}")
            backend = forced
        else:
            return default_backend(u)
    elif backend not in BACKENDS:
        raise ValueError(f"backend: unknown {backend!r}; valid: {', '.join(BACKENDS)} (or None)")
    why_not = unavailable_reason(backend, u)
    if why_not:
        raise BackendUnavailable(f"selective_scan backend {backend!r} cannot run here: {why_not}")
    return backend


def default_backend(u: torch.Tensor) -> str:
    # The Triton kernels take float32/float16/bfloat16; float64 (tests, checks) goes to "torch".
    if u.is_cuda and u.dtype != torch.float64 and unavailable_reason("triton", u) is None:
        return "triton"
    if u.device.type == "cpu" and unavailable_reason("cpu", u) is None:
        return "cpu"
    return "torch"


def unavailable_reason(backend: str, u: torch.Tensor) -> str | None:
    """None if ``backend`` can run on ``u``'s device, else why not and how to fix it."""
    if backend in ("reference", "torch"):
        return None
    if backend == "cpu":
        if u.device.type != "cpu":
            return f"it runs on CPU tensors only, got {u.device}; use 'triton' or 'torch'"
        from hybrids.kernels import cpp_build

        return cpp_build.unavailable_reason()
    if backend == "triton":
        try:
            import triton  # noqa: F401
        except ImportError:
            return "Triton is not installed: `pip install triton` (Linux x86_64/aarch64)"
        if not u.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
            return (
                f"Triton kernels need CUDA tensors, got {u.device}; on CPU they run only in "
                "Triton's interpreter (set TRITON_INTERPRET=1 before importing triton, for tests)"
            )
        return None
    # extension
    if not u.is_cuda:
        return f"mamba_ssm's op needs CUDA tensors, got {u.device}"
    try:
        import selective_scan_cuda  # noqa: F401  (mamba_ssm's compiled extension)
    except ImportError:
        return "mamba-ssm is not installed with its CUDA extension: `pip install -e '.[cuda]'` on a CUDA machine"
    return None


def _extension_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state):
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    return selective_scan_fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)


# --------------------------------------------------------------------------------------------
# argument checks shared by every backend


def check_scan_arguments(u, delta, A, B, C, D=None, z=None, delta_bias=None) -> None:
    """Raise ValueError naming the argument whose shape breaks the contract."""
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
            ok = (x.shape[0], x.shape[2], x.shape[3]) == (batch, d_state, length) and dim % x.shape[1] == 0
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


def grouped(x: torch.Tensor) -> torch.Tensor:
    """B or C as (batch, groups, d_state, L): a 3-D input is one group."""
    return x.unsqueeze(1) if x.ndim == 3 else x


def state_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 state for float16/bfloat16/float32 inputs, float64 for float64."""
    return torch.promote_types(dtype, torch.float32)


def gated_scan(core, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state):
    """The parts around the recurrence, shared by the "torch" and "cpu" backends.

    ``core(u, delta, A, B, C) -> (y, last_state)`` runs the bare recurrence on float32/float64
    tensors (``delta`` final, ``B, C`` as (batch, groups, d_state, L)) with its own backward;
    the step bias and softplus, the skip term ``D u`` and the ``silu(z)`` gate are cheap
    (batch, dim, L) operations left to autograd.
    """
    dtype_in, work = u.dtype, state_dtype(u.dtype)
    u, delta = u.to(work), delta.to(work)
    if delta_bias is not None:
        delta = delta + delta_bias.to(work)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    y, last = core(u, delta, A.to(work), grouped(B).to(work), grouped(C).to(work))
    if D is not None:
        y = y + u * D.to(work)[:, None]
    if z is not None:
        y = y * F.silu(z.to(work))
    out = y.to(dtype_in)
    return (out, last) if return_last_state else out


# --------------------------------------------------------------------------------------------
# reference


def selective_scan_reference(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, return_last_state=False
):
    """The recurrence step by step, autograd for gradients: the ground truth."""
    dtype_in, work = u.dtype, state_dtype(u.dtype)
    u, delta, A = u.to(work), delta.to(work), A.to(work)
    if delta_bias is not None:
        delta = delta + delta_bias.to(work)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    batch, dim, length = u.shape
    # Each channel reads its group's B and C: (batch, groups, N, L) -> (batch, dim, N, L).
    B = grouped(B).to(work).repeat_interleave(dim // grouped(B).shape[1], dim=1)
    C = grouped(C).to(work).repeat_interleave(dim // grouped(C).shape[1], dim=1)
    decay = torch.exp(delta[:, :, :, None] * A[:, None, :])  # (batch, dim, L, N)
    drive = (delta * u)[:, :, :, None] * B.transpose(2, 3)  # (batch, dim, L, N)
    h = u.new_zeros(batch, dim, A.shape[1])
    ys = []
    # unbind, not decay[:, :, t]: autograd turns each indexing into a zero-filled
    # (batch, dim, L, N) gradient, which made the backward ~200x slower.
    for decay_t, drive_t, c_t in zip(decay.unbind(2), drive.unbind(2), C.unbind(3)):
        h = decay_t * h + drive_t
        ys.append((h * c_t).sum(-1))  # (batch, dim)
    y = torch.stack(ys, dim=2) if ys else u.new_zeros(batch, dim, 0)
    if D is not None:
        y = y + u * D.to(work)[:, None]
    if z is not None:
        y = y * F.silu(z.to(work))
    out = y.to(dtype_in)
    return (out, h) if return_last_state else out
