"""Structured state-space kernels: S4 (diagonal plus low rank) and S4D (diagonal), applied by
FFT convolution.

- :mod:`.cauchy`: ``cauchy(v, z, w)``, the Cauchy sums behind the DPLR kernel.
- :mod:`.vandermonde`: ``vandermonde(v, x, L)``, the Vandermonde sums behind the diagonal kernel.
- :mod:`.diagonal`: ``discretize_diagonal`` (ZOH, bilinear) and ``diagonal_kernel`` (S4D).
- :mod:`.dplr`: ``dplr_kernel`` (S4, through the truncated generating function) and
  ``dplr_bilinear_dense`` (the dense discrete system, for decoding and tests).
- :mod:`.fftconv`: ``fft_conv`` (``y = k * u + D u`` in O(L log L)) and ``direct_conv``, its O(L^2)
  reference.

Sums are over N/2 state modes kept by conjugate symmetry: a real system has its complex modes in
conjugate pairs, so every sum over the N modes is the kept half plus its conjugate. Each sum has a
plain reference beside its fast path, chosen by the dispatcher (``backend=`` or
``HYBRIDS_CAUCHY_BACKEND`` / ``HYBRIDS_VANDERMONDE_BACKEND`` / ``HYBRIDS_FFT_CONV_BACKEND``).
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
FFT_CONV = Op(
    "fft_conv",
    (
        Backend("direct", f"{_PACKAGE}.fftconv:direct_conv", priority=0, automatic=()),
        Backend("fft", f"{_PACKAGE}.fftconv:fft_conv", priority=10),
    ),
)

from hybrids.kernels.ssm.cauchy import cauchy, cauchy_reference  # noqa: E402  (after the ops they use)
from hybrids.kernels.ssm.diagonal import DISCRETISATIONS, diagonal_kernel, discretize_diagonal  # noqa: E402
from hybrids.kernels.ssm.dplr import conjugate_full, dplr_bilinear_dense, dplr_kernel  # noqa: E402
from hybrids.kernels.ssm.fftconv import direct_conv, fft_conv  # noqa: E402
from hybrids.kernels.ssm.vandermonde import vandermonde, vandermonde_log, vandermonde_reference  # noqa: E402

__all__ = [
    "CAUCHY",
    "DISCRETISATIONS",
    "FFT_CONV",
    "VANDERMONDE",
    "cauchy",
    "cauchy_reference",
    "conjugate_full",
    "diagonal_kernel",
    "direct_conv",
    "discretize_diagonal",
    "dplr_bilinear_dense",
    "dplr_kernel",
    "fft_conv",
    "vandermonde",
    "vandermonde_log",
    "vandermonde_reference",
]
