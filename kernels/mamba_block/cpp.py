"""The fused Mamba block inside on the CPU (:mod:`hybrids.kernels.mamba_block`): torch custom
operators around ``csrc/mamba_inner.cpp``, forward and backward.

Forward: the C++ convolution reads the conv's columns of ``xz`` in place and writes ``u``
(batch, L, dim); torch computes ``x_dbl = u x_proj^T`` and ``dt = x_dbl[..., :R] dt_proj^T``;
the C++ scan reads ``u``, ``dt``, B and C (columns of ``x_dbl``) and z (columns of ``xz``) where
they lie and writes the gated output, keeping the state only every ``CHUNK`` steps.

Backward: the C++ scan's backward writes dz into the z half of ``dxz`` and dB, dC into their
columns of ``dx_dbl``; torch fills dt's columns and the weight gradients with matrix products;
the C++ convolution's backward writes the other half of ``dxz``. So ``dxz`` is one allocation,
filled by the two kernels, with no transposes, slices copied or zero-filled gradients. ``u``,
``x_dbl`` and ``dt`` are kept from the forward (three (batch, L, ~dim) tensors) rather than
recomputed.
"""

from __future__ import annotations

import ctypes

import torch
import torch.nn.functional as F

from hybrids.kernels import cpp_build

# Steps between saved states. The backward keeps, per thread, one chunk of states and decays and
# the chunk's dB and dC accumulators, CHUNK x d_state x 16 floats each (x groups for dB and dC):
# 16 KiB at d_state 16 and one group, within the L2 cache; 64 KiB each at Mamba-2's default
# d_state of 64.
CHUNK = 16


def _check(xz: torch.Tensor, tensors: dict, shapes: dict) -> None:
    """The kernels read raw buffers: every tensor must have xz's dtype and the shape the block's
    sizes give it (a float32 A beside float64 inputs would be read past its end)."""
    if xz.ndim != 3:
        raise ValueError(f"xz: expected (batch, L, channels), got shape {tuple(xz.shape)}")
    for name, tensor in tensors.items():
        if tensor is None:
            continue
        if tensor.dtype != xz.dtype:
            raise TypeError(f"{name}: expected the input's dtype {xz.dtype}, got {tensor.dtype}")
        if tuple(tensor.shape) != shapes[name]:
            raise ValueError(f"{name}: expected shape {shapes[name]}, got {tuple(tensor.shape)}")


def _call(symbol: str, dtype, *args) -> None:
    c_args = [cpp_build.pointer(a) if a is None or isinstance(a, torch.Tensor) else ctypes.c_int64(a) for a in args]
    cpp_build.function("mamba_inner", symbol, dtype)(*c_args, ctypes.c_int(torch.get_num_threads()))


def _conv(x: torch.Tensor, conv_weight: torch.Tensor, conv_bias: torch.Tensor | None) -> torch.Tensor:
    """silu(causal depthwise conv1d) of x (batch, L, dim), a column slice of a C-order projection
    output (its rows as long as that output's): (batch, L, dim) in C order."""
    batch, length, dim = x.shape
    u = x.new_empty(batch, length, dim)
    _call("mamba_conv_forward", x.dtype, x, x.stride(1), conv_weight.t().contiguous(), conv_bias, u,
          batch, length, dim, conv_weight.shape[1])
    return u


def _conv_backward(x, conv_weight, conv_bias, du, dx) -> tuple[torch.Tensor, torch.Tensor]:
    """The conv's backward from du (batch, L, dim): the input's gradient written into dx (a slice
    laid out as x), and the gradients of the weight and the bias (empty without one)."""
    batch, length, dim = du.shape
    width = conv_weight.shape[1]
    dw_part = du.new_empty(batch, width, dim)  # per sequence, summed here
    dbias_part = du.new_empty(batch, dim) if conv_bias is not None else None
    _call("mamba_conv_backward", x.dtype, x, x.stride(1), conv_weight.t().contiguous(), conv_bias, du, dx, dw_part,
          dbias_part, batch, length, dim, width)
    return dw_part.sum(0).t().contiguous(), dbias_part.sum(0) if dbias_part is not None else du.new_empty(0)


def _sizes(xz, conv_weight, dt_proj_weight, A):
    batch, length, _ = xz.shape
    dim, width = conv_weight.shape
    return batch, length, dim, width, dt_proj_weight.shape[1], A.shape[1]


@torch.library.custom_op("hybrids::cpu_mamba_block", mutates_args=(), device_types="cpu")
def _block(
    xz: torch.Tensor, conv_weight: torch.Tensor, conv_bias: torch.Tensor | None, x_proj_weight: torch.Tensor,
    dt_proj_weight: torch.Tensor, dt_bias: torch.Tensor, A: torch.Tensor, D: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> y (batch, L, dim), and what the backward reads: u (batch, L, dim), x_dbl (batch, L,
    R + 2N), dt (batch, L, dim) and the states at chunk starts (batch, L / CHUNK, N, dim)."""
    batch, length, dim, width, rank, d_state = _sizes(xz, conv_weight, dt_proj_weight, A)
    _check(xz, {"conv_weight": conv_weight, "conv_bias": conv_bias, "x_proj_weight": x_proj_weight,
                "dt_proj_weight": dt_proj_weight, "dt_bias": dt_bias, "A": A, "D": D},
           {"conv_weight": (dim, width), "conv_bias": (dim,), "x_proj_weight": (rank + 2 * d_state, dim),
            "dt_proj_weight": (dim, rank), "dt_bias": (dim,), "A": (dim, d_state), "D": (dim,)})
    if xz.shape[-1] != 2 * dim:
        raise ValueError(f"xz: expected 2 * dim = {2 * dim} channels (x and z), got {xz.shape[-1]}")
    xz, conv_bias, x_proj_weight, dt_proj_weight, dt_bias, D = cpp_build.contiguous(
        xz, conv_bias, x_proj_weight, dt_proj_weight, dt_bias, D)
    At = A.t().contiguous()  # (N, dim): a vector of channels per n
    u = _conv(xz[..., :dim], conv_weight, conv_bias)
    x_dbl = F.linear(u, x_proj_weight).contiguous()  # (batch, L, R + 2N); the kernels read C order
    dt = F.linear(x_dbl[..., :rank], dt_proj_weight).contiguous()  # (batch, L, dim), before its bias
    y = torch.empty_like(u)
    checkpoints = u.new_empty(batch, -(-length // CHUNK), d_state, dim)
    _call("mamba_scan_forward", xz.dtype, u, dt, dt_bias, At, x_dbl, D, xz[..., dim:], y, checkpoints,
          dim, 2 * dim, rank + 2 * d_state, rank, batch, length, dim, d_state, 1, 0, CHUNK)
    return y, u, x_dbl, dt, checkpoints


@_block.register_fake
def _(xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_bias, A, D):
    batch, length, dim, _, rank, d_state = _sizes(xz, conv_weight, dt_proj_weight, A)
    return (xz.new_empty(batch, length, dim), xz.new_empty(batch, length, dim),
            xz.new_empty(batch, length, rank + 2 * d_state), xz.new_empty(batch, length, dim),
            xz.new_empty(batch, -(-length // CHUNK), d_state, dim))


@torch.library.custom_op("hybrids::cpu_mamba_block_backward", mutates_args=(), device_types="cpu")
def _block_backward(
    dy: torch.Tensor, xz: torch.Tensor, conv_weight: torch.Tensor, conv_bias: torch.Tensor | None,
    x_proj_weight: torch.Tensor, dt_proj_weight: torch.Tensor, dt_bias: torch.Tensor, A: torch.Tensor,
    D: torch.Tensor, u: torch.Tensor, x_dbl: torch.Tensor, dt: torch.Tensor, checkpoints: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of xz, conv_weight, conv_bias (empty without one), x_proj_weight, dt_proj_weight,
    dt_bias, A and D."""
    batch, length, dim, width, rank, d_state = _sizes(xz, conv_weight, dt_proj_weight, A)
    dy, xz, conv_bias, x_proj_weight, dt_proj_weight, dt_bias, D, u, x_dbl, dt, checkpoints = cpp_build.contiguous(
        dy, xz, conv_bias, x_proj_weight, dt_proj_weight, dt_bias, D, u, x_dbl, dt, checkpoints)
    At = A.t().contiguous()
    dxz = torch.empty_like(xz)
    dx_dbl = torch.empty_like(x_dbl)
    du, ddt = torch.empty_like(u), torch.empty_like(u)
    dA_part, dD_part, dbias_part = u.new_empty(batch, d_state, dim), u.new_empty(batch, dim), u.new_empty(batch, dim)
    _call("mamba_scan_backward", xz.dtype, u, dt, dt_bias, At, x_dbl, D, xz[..., dim:], checkpoints, dy, du, ddt,
          dxz[..., dim:], dx_dbl[..., rank:], dA_part, dD_part, dbias_part,
          dim, 2 * dim, rank + 2 * d_state, rank, batch, length, dim, d_state, 1, 0, CHUNK)
    # The products with a side of R (8 or so) are written so that MKL/oneDNN takes its fast path:
    # (R, M) results transposed, not (M, R) or (dim, R) ones (0.6-0.8 ms against 0.15 at M = 4096).
    ddt_flat, dx_dbl_flat = ddt.view(-1, dim), dx_dbl.view(-1, rank + 2 * d_state)
    dx_dbl_flat[:, :rank].t().copy_(dt_proj_weight.t() @ ddt_flat.t())  # d(dt before dt_proj), (M, R)
    d_dt_proj = (x_dbl.view(-1, rank + 2 * d_state)[:, :rank].t() @ ddt_flat).t().contiguous()  # (dim, R)
    d_x_proj = dx_dbl_flat.t() @ u.view(-1, dim)  # (R + 2N, dim)
    du.view(-1, dim).addmm_(dx_dbl_flat, x_proj_weight)  # the scan's du plus x_proj's
    dconv_weight, dconv_bias = _conv_backward(xz[..., :dim], conv_weight, conv_bias, du, dxz[..., :dim])
    return (dxz, dconv_weight, dconv_bias, d_x_proj, d_dt_proj, dbias_part.sum(0), dA_part.sum(0).t().contiguous(),
            dD_part.sum(0))


@_block_backward.register_fake
def _(dy, xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_bias, A, D, u, x_dbl, dt, checkpoints):
    return (xz.new_empty(xz.shape), conv_weight.new_empty(conv_weight.shape),
            conv_bias.new_empty(conv_bias.shape) if conv_bias is not None else xz.new_empty(0),
            x_proj_weight.new_empty(x_proj_weight.shape), dt_proj_weight.new_empty(dt_proj_weight.shape),
            dt_bias.new_empty(dt_bias.shape), A.new_empty(A.shape), D.new_empty(D.shape))


def _setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs, *output[1:])
    # The kept tensors get no gradient: None, not four zero-filled tensors of the block's size.
    ctx.set_materialize_grads(False)
    ctx.has_conv_bias = inputs[2] is not None


def _backward(ctx, dy, du, dx_dbl, ddt, dcheckpoints):
    # Only y is an output in the block's sense: u, x_dbl, dt and the checkpoints are kept for
    # this backward and never used by the caller, so their gradients are None.
    xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_bias, A, D, u, x_dbl, dt, checkpoints = ctx.saved_tensors
    grads = torch.ops.hybrids.cpu_mamba_block_backward(
        dy, xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_bias, A, D, u, x_dbl, dt, checkpoints)
    dxz, dconv_weight, dconv_bias, d_x_proj, d_dt_proj, ddt_bias, dA, dD = grads
    return dxz, dconv_weight, dconv_bias if ctx.has_conv_bias else None, d_x_proj, d_dt_proj, ddt_bias, dA, dD


_block.register_autograd(_backward, setup_context=_setup)


# ---- Mamba-2 ---------------------------------------------------------------------------------
# The same scan with one decay per head (A repeated over the head's channels, so the kernel takes
# one exp per channel and step), B and C per group, no gate (Mamba-2 gates in its norm). The step
# per head is repeated over the head's channels in torch ((batch, L, d_inner), summed back in the
# backward): the kernel reads one step per lane.


def _sizes2(zxbcdt, conv_weight, dt_bias, ngroups):
    batch, length, total = zxbcdt.shape
    conv_dim, width = conv_weight.shape
    heads = dt_bias.shape[0]
    d_inner = total - conv_dim - heads
    return batch, length, d_inner, conv_dim, heads, d_inner // heads, (conv_dim - d_inner) // (2 * ngroups), width


@torch.library.custom_op("hybrids::cpu_mamba2_block", mutates_args=(), device_types="cpu")
def _block2(
    zxbcdt: torch.Tensor, conv_weight: torch.Tensor, conv_bias: torch.Tensor | None, dt_bias: torch.Tensor,
    A: torch.Tensor, D: torch.Tensor, ngroups: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> y (batch, L, d_inner), and what the backward reads: the conv's output xBC (batch, L,
    conv_dim), the step repeated per channel (batch, L, d_inner) and the states at chunk starts
    (batch, L / CHUNK, N, d_inner)."""
    batch, length, d_inner, conv_dim, heads, headdim, d_state, width = _sizes2(zxbcdt, conv_weight, dt_bias, ngroups)
    if ngroups < 1 or heads < 1 or d_inner < 1 or d_inner % heads or heads % ngroups or d_state < 1 \
            or conv_dim != d_inner + 2 * ngroups * d_state:
        raise ValueError(f"zxbcdt ({zxbcdt.shape[-1]} channels), conv_weight ({conv_dim}), dt_bias ({heads} heads) and "
                         f"ngroups ({ngroups}) do not make a Mamba-2 block: need d_inner + conv_dim + heads channels, "
                         "conv_dim = d_inner + 2 ngroups d_state, heads dividing d_inner and ngroups dividing heads")
    _check(zxbcdt, {"conv_weight": conv_weight, "conv_bias": conv_bias, "dt_bias": dt_bias, "A": A, "D": D},
           {"conv_weight": (conv_dim, width), "conv_bias": (conv_dim,), "dt_bias": (heads,), "A": (heads,),
            "D": (heads,)})
    zxbcdt, conv_bias = cpp_build.contiguous(zxbcdt, conv_bias)
    xbc = _conv(zxbcdt[..., d_inner:d_inner + conv_dim], conv_weight, conv_bias)
    dt = zxbcdt[..., d_inner + conv_dim:].repeat_interleave(headdim, dim=-1)  # (batch, L, d_inner)
    per_channel = [t.repeat_interleave(headdim).contiguous() for t in (dt_bias, A, D)]
    y = zxbcdt.new_empty(batch, length, d_inner)
    checkpoints = zxbcdt.new_empty(batch, -(-length // CHUNK), d_state, d_inner)
    _call("mamba_scan_forward", zxbcdt.dtype, xbc, dt, per_channel[0], per_channel[1], xbc, per_channel[2], None, y,
          checkpoints, conv_dim, 0, conv_dim, d_inner, batch, length, d_inner, d_state, ngroups, 1, CHUNK)
    return y, xbc, dt, checkpoints


@_block2.register_fake
def _(zxbcdt, conv_weight, conv_bias, dt_bias, A, D, ngroups):
    batch, length, d_inner, conv_dim, _, _, d_state, _ = _sizes2(zxbcdt, conv_weight, dt_bias, ngroups)
    return (zxbcdt.new_empty(batch, length, d_inner), zxbcdt.new_empty(batch, length, conv_dim),
            zxbcdt.new_empty(batch, length, d_inner), zxbcdt.new_empty(batch, -(-length // CHUNK), d_state, d_inner))


@torch.library.custom_op("hybrids::cpu_mamba2_block_backward", mutates_args=(), device_types="cpu")
def _block2_backward(
    dy: torch.Tensor, zxbcdt: torch.Tensor, conv_weight: torch.Tensor, conv_bias: torch.Tensor | None,
    dt_bias: torch.Tensor, A: torch.Tensor, D: torch.Tensor, ngroups: int, xbc: torch.Tensor, dt: torch.Tensor,
    checkpoints: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of zxbcdt (zero in z's columns), conv_weight, conv_bias (empty without one),
    dt_bias, A and D."""
    batch, length, d_inner, conv_dim, heads, headdim, d_state, width = _sizes2(zxbcdt, conv_weight, dt_bias, ngroups)
    dy, zxbcdt, conv_bias, xbc, dt, checkpoints = cpp_build.contiguous(dy, zxbcdt, conv_bias, xbc, dt, checkpoints)
    per_channel = [t.repeat_interleave(headdim).contiguous() for t in (dt_bias, A, D)]
    dzxbcdt = torch.empty_like(zxbcdt)
    dzxbcdt[..., :d_inner].zero_()
    dxbc, ddt = torch.empty_like(xbc), torch.empty_like(dt)  # dxbc: du in x's columns, dB and dC after
    dA_part, dD_part, dbias_part = (xbc.new_empty(batch, d_inner) for _ in range(3))
    _call("mamba_scan_backward", zxbcdt.dtype, xbc, dt, per_channel[0], per_channel[1], xbc, per_channel[2], None,
          checkpoints, dy, dxbc, ddt, None, dxbc[..., d_inner:], dA_part, dD_part, dbias_part,
          conv_dim, 0, conv_dim, d_inner, batch, length, d_inner, d_state, ngroups, 1, CHUNK)
    xbc_columns = slice(d_inner, d_inner + conv_dim)
    dconv_weight, dconv_bias = _conv_backward(zxbcdt[..., xbc_columns], conv_weight, conv_bias, dxbc,
                                              dzxbcdt[..., xbc_columns])
    dzxbcdt[..., d_inner + conv_dim:] = ddt.view(batch, length, heads, headdim).sum(-1)

    def per_head(part):  # (batch, d_inner) -> (heads,)
        return part.sum(0).view(heads, headdim).sum(-1)

    return dzxbcdt, dconv_weight, dconv_bias, per_head(dbias_part), per_head(dA_part), per_head(dD_part)


@_block2_backward.register_fake
def _(dy, zxbcdt, conv_weight, conv_bias, dt_bias, A, D, ngroups, xbc, dt, checkpoints):
    return (zxbcdt.new_empty(zxbcdt.shape), conv_weight.new_empty(conv_weight.shape),
            conv_bias.new_empty(conv_bias.shape) if conv_bias is not None else zxbcdt.new_empty(0),
            dt_bias.new_empty(dt_bias.shape), A.new_empty(A.shape), D.new_empty(D.shape))


def _setup2(ctx, inputs, output):
    zxbcdt, conv_weight, conv_bias, dt_bias, A, D, ngroups = inputs
    ctx.save_for_backward(zxbcdt, conv_weight, conv_bias, dt_bias, A, D, *output[1:])
    ctx.ngroups, ctx.has_conv_bias = ngroups, conv_bias is not None
    ctx.set_materialize_grads(False)


def _backward2(ctx, dy, dxbc, ddt, dcheckpoints):
    zxbcdt, conv_weight, conv_bias, dt_bias, A, D, xbc, dt, checkpoints = ctx.saved_tensors
    dzxbcdt, dconv_weight, dconv_bias, ddt_bias, dA, dD = torch.ops.hybrids.cpu_mamba2_block_backward(
        dy, zxbcdt, conv_weight, conv_bias, dt_bias, A, D, ctx.ngroups, xbc, dt, checkpoints)
    return dzxbcdt, dconv_weight, dconv_bias if ctx.has_conv_bias else None, ddt_bias, dA, dD, None


_block2.register_autograd(_backward2, setup_context=_setup2)
