"""hybrids.kernels: pure functions on tensors (installed from the top-level ``kernels/`` folder).

Each op has a plain-PyTorch reference beside its fast paths. Nothing here imports Lightning or
any module of ``hybrids`` outside ``hybrids.kernels`` (see DESIGN.md, "The house").
"""

from hybrids.kernels.fftconv import direct_conv, fft_conv
from hybrids.kernels.rotary import apply_rotary, rotary_cos_sin
from hybrids.kernels.ssm_kernels import cauchy, diagonal_kernel, dplr_kernel, vandermonde

__all__ = [
    "apply_rotary",
    "cauchy",
    "diagonal_kernel",
    "direct_conv",
    "dplr_kernel",
    "fft_conv",
    "rotary_cos_sin",
    "vandermonde",
]
