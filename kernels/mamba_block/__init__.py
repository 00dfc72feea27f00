"""The inside of a Mamba block, fused for the CPU: from in_proj's output to out_proj's input.

For ``xz`` (batch, L, 2 dim), in_proj's output as it comes (no transpose)::

    x, z      = xz[..., :dim], xz[..., dim:]
    u         = silu(causal depthwise conv1d(x))                     # width W, with bias
    dt, B, C  = (u @ x_proj_weight.T).split(R, N, N)
    y         = selective_scan(u, dt @ dt_proj_weight.T, A, B, C, D, z,
                               delta_bias=dt_bias, delta_softplus=True)   # (batch, L, dim)

which is what ``hybrids.mixers.Mamba`` computes between its two projections (mamba_ssm's
``mamba_inner_fn`` without out_proj). Mamba-2's inside (:func:`mamba2_block_cpu`), for in_proj's
output ``zxbcdt`` (batch, L, d_inner + conv_dim + H), H heads of P channels and G groups::

    xBC, dt   = zxbcdt[..., d_inner:d_inner + conv_dim], zxbcdt[..., -H:]
    x, B, C   = silu(causal depthwise conv1d(xBC)).split(d_inner, G N, G N)
    h[t]      = exp(delta[t] A) h[t-1] + delta[t] B[t] x[t]^T     # (N, P) per head
    y[t]      = h[t]^T C[t] + D x[t]                               # (batch, L, d_inner), ungated

with ``delta = softplus(dt + dt_bias)`` and A, D one per head: the selective scan with the head's
step and decay on each of its channels and B, C per group, which the same scan kernel runs
with one exp per channel and step. :mod:`.reference` writes it with the reference kernels
(the ground truth of the tests); :mod:`.cpp` runs the convolution and the scan in C++
(``csrc/mamba_inner.cpp``) in the projections' (batch, L, channels) layout, with the step's
softplus, the skip term and the gate inside the scan, and the two small projections between
them left to torch. Forward only from a zero state: prefill and decode, which carry states, take
the mixer's other path.
"""

from __future__ import annotations

import torch

from hybrids.kernels import cpp_build

DTYPES = (torch.float32, torch.float64)


def cpu_unavailable(*tensors: torch.Tensor | None) -> str | None:
    """None if :func:`mamba_block_cpu` runs on these tensors here, else why not."""
    present = [t for t in tensors if t is not None]
    if any(t.device.type != "cpu" for t in present):
        return "the fused CPU block runs on CPU tensors"
    if len({t.dtype for t in present}) != 1 or present[0].dtype not in DTYPES:
        return f"the fused CPU block takes float32 or float64, all alike; got {sorted({str(t.dtype) for t in present})}"
    return _build_unavailable()


@torch.compiler.assume_constant_result
def _build_unavailable() -> str | None:
    return cpp_build.unavailable_reason("mamba_inner")


def mamba_block_cpu(xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_bias, A, D):
    """The block's inside (module docstring) on the C++ kernels: y (batch, L, dim).

    Args: xz (batch, L, 2 dim); conv_weight (dim, W); conv_bias (dim,) or None; x_proj_weight
    (R + 2 N, dim); dt_proj_weight (dim, R); dt_bias (dim,); A (dim, N), negative; D (dim,).
    """
    from hybrids.kernels.mamba_block import cpp  # noqa: F401  (registers the operators)

    return torch.ops.hybrids.cpu_mamba_block(xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_bias, A, D)[0]


def mamba2_block_cpu(zxbcdt, conv_weight, conv_bias, dt_bias, A, D, ngroups: int):
    """Mamba-2's inside (module docstring) on the C++ kernels: y (batch, L, d_inner), ungated.

    Args: zxbcdt (batch, L, d_inner + conv_dim + H); conv_weight (conv_dim, W); conv_bias
    (conv_dim,) or None; dt_bias (H,); A (H,), negative; D (H,); ngroups G, with conv_dim =
    d_inner + 2 G N.
    """
    from hybrids.kernels.mamba_block import cpp  # noqa: F401  (registers the operators)

    return torch.ops.hybrids.cpu_mamba2_block(zxbcdt, conv_weight, conv_bias, dt_bias, A, D, ngroups)[0]


__all__ = ["DTYPES", "cpu_unavailable", "mamba2_block_cpu", "mamba_block_cpu"]
