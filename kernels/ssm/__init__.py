"""Structured state-space kernels: S4 (diagonal plus low rank) and S4D (diagonal), applied by
FFT convolution.

- :mod:`.cauchy`: ``cauchy(v, z, w)``, the Cauchy sums behind the DPLR kernel.
- :mod:`.vandermonde`: ``vandermonde(v, x, L)``, the Vandermonde sums behind the diagonal kernel.
- :mod:`.diagonal`: ``discretize_diagonal`` (ZOH, bilinear), ``diagonal_kernel`` (S4D) and
  ``diagonal_ssm`` (the SSM over a sequence from an initial state, returning the final state).
- :mod:`.dplr`: ``dplr_kernel`` (S4, through the truncated generating function),
  ``dplr_bilinear_dense`` (the dense discrete system, for decoding and tests), ``dplr_c_tilde`` /
  ``dplr_double_c_tilde`` (S4's C~ for a kernel length) and ``dplr_ssm`` (as ``diagonal_ssm``).
- :mod:`.krylov`: ``dense_ssm_state``, the state a dense system reaches after a sequence (log
  depth), which carries ``dplr_ssm``'s state.
- :mod:`.fftconv`: ``fft_conv`` (``y = k * u + D u`` in O(L log L)) and ``direct_conv``, its O(L^2)
  reference, which the CPU also takes for sequences of at most 128 (faster there).

Sums are over N/2 state modes kept by conjugate symmetry: a real system has its complex modes in
conjugate pairs, so every sum over the N modes is the kept half plus its conjugate. Each sum has a
plain reference beside its fast path, chosen by the dispatcher (``backend=`` or
``HYBRIDS_CAUCHY_BACKEND`` / ``HYBRIDS_VANDERMONDE_BACKEND`` / ``HYBRIDS_FFT_CONV_BACKEND``).
The SSM ops ``diagonal_ssm`` and ``dplr_ssm`` have a ``"recurrent"`` reference that steps the
recurrence beside their ``"parallel"`` path (``HYBRIDS_DIAGONAL_SSM_BACKEND`` /
``HYBRIDS_DPLR_SSM_BACKEND``).
"""

from __future__ import annotations

from hybrids.kernels.dispatch import Backend, Op

_PACKAGE = "hybrids.kernels.ssm"

CAUCHY = Op(
    "cauchy",
    (
        Backend("reference", f"{_PACKAGE}.cauchy:cauchy_reference", priority=0, automatic=()),
        Backend("chunked", f"{_PACKAGE}.cauchy:cauchy_chunked", priority=10),
    ),
)
VANDERMONDE = Op(
    "vandermonde",
    (
        Backend("reference", f"{_PACKAGE}.vandermonde:vandermonde_reference", priority=0, automatic=()),
        Backend("chunked", f"{_PACKAGE}.vandermonde:vandermonde", priority=10),
    ),
)


def _short_conv(call) -> str | None:
    from hybrids.kernels.ssm.fftconv import prefers_direct

    return prefers_direct(call)


FFT_CONV = Op(
    "fft_conv",
    (
        # The reference, and on the CPU the faster path for short sequences.
        Backend("direct", f"{_PACKAGE}.fftconv:direct_conv", priority=20, automatic=("cpu",), prefers=_short_conv),
        Backend("fft", f"{_PACKAGE}.fftconv:fft_conv", priority=10),
    ),
)
DIAGONAL_SSM = Op(
    "diagonal_ssm",
    (
        Backend("recurrent", f"{_PACKAGE}.diagonal:diagonal_ssm_recurrent", priority=0, automatic=()),
        Backend("parallel", f"{_PACKAGE}.diagonal:diagonal_ssm", priority=10),
    ),
)
DPLR_SSM = Op(
    "dplr_ssm",
    (
        Backend("recurrent", f"{_PACKAGE}.dplr:dplr_ssm_recurrent", priority=0, automatic=()),
        Backend("parallel", f"{_PACKAGE}.dplr:dplr_ssm", priority=10),
    ),
)

from hybrids.kernels.ssm.cauchy import cauchy, cauchy_reference  # noqa: E402  (after the ops they use)
from hybrids.kernels.ssm.diagonal import (  # noqa: E402
    DISCRETISATIONS,
    diagonal_kernel,
    diagonal_ssm,
    diagonal_ssm_recurrent,
    discretize_diagonal,
)
from hybrids.kernels.ssm.dplr import (  # noqa: E402
    conjugate_full,
    dplr_bilinear_dense,
    dplr_c_tilde,
    dplr_double_c_tilde,
    dplr_kernel,
    dplr_precompute,
    dplr_ssm,
    dplr_ssm_recurrent,
)
from hybrids.kernels.ssm.fftconv import direct_conv, fft_conv  # noqa: E402
from hybrids.kernels.ssm.krylov import dense_ssm_state, krylov_matrix  # noqa: E402
from hybrids.kernels.ssm.vandermonde import (  # noqa: E402
    vandermonde,
    vandermonde_log,
    vandermonde_reference,
    vandermonde_transpose_log,
)

__all__ = [
    "CAUCHY",
    "DIAGONAL_SSM",
    "DISCRETISATIONS",
    "DPLR_SSM",
    "FFT_CONV",
    "VANDERMONDE",
    "cauchy",
    "cauchy_reference",
    "conjugate_full",
    "dense_ssm_state",
    "diagonal_kernel",
    "diagonal_ssm",
    "diagonal_ssm_recurrent",
    "direct_conv",
    "discretize_diagonal",
    "dplr_bilinear_dense",
    "dplr_c_tilde",
    "dplr_double_c_tilde",
    "dplr_kernel",
    "dplr_precompute",
    "dplr_ssm",
    "dplr_ssm_recurrent",
    "fft_conv",
    "krylov_matrix",
    "vandermonde",
    "vandermonde_log",
    "vandermonde_reference",
    "vandermonde_transpose_log",
]
