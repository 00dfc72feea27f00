"""The block's inside (:mod:`hybrids.kernels.mamba_block`) written with the reference kernels,
in the layout they take: the ground truth of the fused block's tests."""

from __future__ import annotations

import torch.nn.functional as F

from hybrids.kernels.conv.reference import causal_conv1d_reference
from hybrids.kernels.scan.reference import selective_scan_reference


def mamba_block_reference(xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_bias, A, D):
    dim, d_state, rank = conv_weight.shape[0], A.shape[1], dt_proj_weight.shape[1]
    x, z = xz.transpose(1, 2).split(dim, dim=1)  # (batch, dim, L) each
    u = causal_conv1d_reference(x, conv_weight, conv_bias, "silu")
    dt, B, C = F.linear(u.transpose(1, 2), x_proj_weight).split([rank, d_state, d_state], dim=-1)
    delta = F.linear(dt, dt_proj_weight).transpose(1, 2)
    y = selective_scan_reference(u, delta, A, B.transpose(1, 2), C.transpose(1, 2), D, z, delta_bias=dt_bias,
                                 delta_softplus=True)
    return y.transpose(1, 2)  # (batch, L, dim)


def mamba2_block_reference(zxbcdt, conv_weight, conv_bias, dt_bias, A, D, ngroups: int):
    conv_dim, heads = conv_weight.shape[0], dt_bias.shape[0]
    d_inner = zxbcdt.shape[-1] - conv_dim - heads
    headdim, d_state = d_inner // heads, (conv_dim - d_inner) // (2 * ngroups)
    xbc, dt = zxbcdt[..., d_inner:].transpose(1, 2).split([conv_dim, heads], dim=1)  # (batch, ., L)
    x, B, C = causal_conv1d_reference(xbc, conv_weight, conv_bias, "silu").split(
        [d_inner, ngroups * d_state, ngroups * d_state], dim=1)
    grouped = lambda t: t.unflatten(1, (ngroups, d_state))  # noqa: E731  (batch, G, N, L)
    y = selective_scan_reference(
        x, dt.repeat_interleave(headdim, dim=1), A.repeat_interleave(headdim)[:, None].expand(d_inner, d_state),
        grouped(B), grouped(C), D.repeat_interleave(headdim), delta_bias=dt_bias.repeat_interleave(headdim),
        delta_softplus=True)
    return y.transpose(1, 2)  # (batch, L, d_inner)
