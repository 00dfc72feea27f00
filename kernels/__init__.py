"""hybrids.kernels: pure functions on tensors (installed from the top-level ``kernels/`` folder).

Each op has a plain-PyTorch reference beside its fast paths. Nothing here imports Lightning or
any module of ``hybrids`` outside ``hybrids.kernels`` (see DESIGN.md, "The house").
"""

from hybrids.kernels.causal_conv1d import causal_conv1d, causal_conv1d_update
from hybrids.kernels.fftconv import direct_conv, fft_conv
from hybrids.kernels.rotary import apply_rotary, rotary_cos_sin
from hybrids.kernels.selective_scan import selective_scan
from hybrids.kernels.selective_state_update import selective_state_update
from hybrids.kernels.ssm_kernels import cauchy, diagonal_kernel, dplr_kernel, vandermonde

__all__ = [
    "apply_rotary",
    "cauchy",
    "causal_conv1d",
    "causal_conv1d_update",
    "diagonal_kernel",
    "direct_conv",
    "dplr_kernel",
    "fft_conv",
    "rotary_cos_sin",
    "selective_scan",
    "selective_state_update",
    "vandermonde",
]
