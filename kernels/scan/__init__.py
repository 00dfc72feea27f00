"""The gated selective scan of Mamba (Gu & Dao 2023): a linear RNN with input-dependent step.

For every batch ``b``, channel ``d`` and state index ``n``::

    h[t] = exp(delta[t] * A[d, n]) * h[t-1] + delta[t] * B[t, n] * u[t]      h[-1] = initial_state (or 0)
    y[t] = sum_n C[t, n] * h[t, n] + D[d] * u[t]
    out[t] = y[t] * silu(z[t])                                                (if z is given)

with ``delta = softplus(delta + delta_bias)`` when ``delta_softplus`` (else ``delta +
delta_bias``). Shapes and argument names are those of mamba_ssm's ``selective_scan_fn``:

- ``u, delta, z``: (batch, dim, L)
- ``A``: (dim, d_state), real
- ``B, C``: (batch, d_state, L), or (batch, groups, d_state, L) with ``dim % groups == 0``
  (channel ``d`` reads group ``d // (dim // groups)``)
- ``D, delta_bias``: (dim,)
- ``initial_state``: (batch, dim, d_state), the state before the first step (an addition to
  mamba_ssm's contract, so that a prompt can be scanned in pieces)

The output has ``u``'s dtype; the state is accumulated in float32 (float64 for float64 inputs).
With ``return_last_state`` the state after the last step, (batch, dim, d_state), comes too.

Backends (``backend=`` argument, else ``HYBRIDS_SELECTIVE_SCAN_BACKEND``, else the dispatcher's
choice for the tensors, :mod:`hybrids.kernels.dispatch`):

- ``"reference"`` (:mod:`.reference`): the recurrence written out, differentiated by autograd;
  materialises (batch, dim, L, d_state) tensors. The ground truth of the tests.
- ``"torch"`` (:mod:`.segmented`): pure PyTorch for any device with a hand-written backward;
  time is cut into segments scanned side by side, memory O(batch dim d_state sqrt(L)).
- ``"cpu"`` (:mod:`.cpp`): a compiled C++ loop (OpenMP over batch and channels) with its own
  backward, built with the system's C++ compiler on first use.
- ``"triton"`` (:mod:`.triton_kernels`): our Triton forward and backward kernels, for CUDA tensors
  (on CPU only under ``TRITON_INTERPRET=1``, for tests).
- ``"extension"`` (:mod:`.extension`): mamba_ssm's CUDA op, where mamba-ssm is installed.

Automatic choice: on CUDA ``"triton"`` (``"torch"`` for float64, which the Triton kernels
reject); on CPU ``"cpu"`` where a C++ compiler is found, else ``"torch"``. ``"extension"`` runs
only when asked for (the Mamba mixer uses mamba_ssm's fused block instead, where installed).

The decode step, one token with the state updated in place, is
:func:`selective_state_update` (:mod:`.step`).
"""

from __future__ import annotations

import torch

from hybrids.kernels.dispatch import Backend, BackendUnavailable, Op, triton_available
from hybrids.kernels.scan.common import check_scan_arguments
from hybrids.kernels.scan.step import SELECTIVE_STATE_UPDATE, selective_state_update

_PACKAGE = "hybrids.kernels.scan"
_LOW_AND_SINGLE = (torch.float32, torch.float16, torch.bfloat16)


# A constant to torch.compile: the build is looked for once, not traced (its file checks would
# end the graph).
@torch.compiler.assume_constant_result
def _cpp_available(device: str) -> str | None:
    from hybrids.kernels import cpp_build

    return cpp_build.unavailable_reason("selective_scan")


def _extension_available(device: str) -> str | None:
    try:
        import selective_scan_cuda  # noqa: F401  (mamba_ssm's compiled extension)
    except ImportError:
        return "mamba-ssm is not installed with its CUDA extension"
    return None


def _extension_accepts(call) -> str | None:
    if call.get("initial_state"):
        return "mamba_ssm's selective_scan_fn cannot start from an initial_state"
    return None


SELECTIVE_SCAN = Op(
    "selective_scan",
    (
        Backend("reference", f"{_PACKAGE}.reference:selective_scan_reference", priority=0, automatic=()),
        Backend("torch", f"{_PACKAGE}.segmented:selective_scan_torch", priority=10),
        Backend(
            "cpu", f"{_PACKAGE}.cpp:selective_scan_cpu", devices=("cpu",), priority=30,
            available=_cpp_available, install="install g++ or clang++ (or set CXX); HYBRIDS_DISABLE_CPP=1 turns it off",
        ),
        Backend(
            "triton", f"{_PACKAGE}.triton_kernels:selective_scan_triton", devices=("cuda", "cpu"),
            dtypes=_LOW_AND_SINGLE, priority=20, available=triton_available, automatic=("cuda",),
            install="`pip install triton` on Linux with a CUDA GPU",
        ),
        Backend(
            "extension", f"{_PACKAGE}.extension:selective_scan_extension", devices=("cuda",),
            dtypes=_LOW_AND_SINGLE, priority=5, available=_extension_available, accepts=_extension_accepts,
            automatic=(), install="`pip install -e '.[cuda]'` on a CUDA machine",
        ),
    ),
)
BACKENDS = SELECTIVE_SCAN.names
BACKEND_ENV = SELECTIVE_SCAN.env


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
    initial_state: torch.Tensor | None = None,
):
    """The selective scan (module docstring): ``out`` (batch, dim, L), and the last state
    (batch, dim, d_state) if ``return_last_state``."""
    check_scan_arguments(u, delta, A, B, C, D, z, delta_bias, initial_state)
    name = SELECTIVE_SCAN.select(u.device, u.dtype, backend, initial_state=initial_state is not None)
    if u.shape[-1] == 0 or u.shape[0] == 0 or u.shape[1] == 0:
        name = "reference"  # nothing to scan; the fast paths' tilings assume non-empty inputs
    fn = SELECTIVE_SCAN.function(name)
    return fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, initial_state=initial_state)


def default_backend(u: torch.Tensor) -> str:
    """The backend chosen for ``u`` when none is forced."""
    return SELECTIVE_SCAN.automatic(u.device.type, u.dtype)


__all__ = [
    "BACKENDS",
    "BACKEND_ENV",
    "SELECTIVE_SCAN",
    "SELECTIVE_STATE_UPDATE",
    "BackendUnavailable",
    "selective_scan",
    "selective_state_update",
]
