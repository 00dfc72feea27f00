"""The selective scan in Triton: a forward kernel and a hand-written backward kernel.

Math (one batch ``b``, channel ``d``, state index ``n``; ``t`` runs over L)::

    delta[t] = softplus(delta_raw[t] + delta_bias[d])        (or without softplus / bias)
    a[t, n]  = exp(delta[t] * A[d, n])                        decay
    b[t, n]  = delta[t] * u[t] * B[t, n]                      drive
    h[t, n]  = a[t, n] * h[t-1, n] + b[t, n]                  h[-1] = initial_state (or 0)
    y[t]     = sum_n C[t, n] * h[t, n] + D[d] * u[t]
    out[t]   = y[t] * silu(z[t])

Shapes (those of mamba_ssm's ``selective_scan_fn``, see :mod:`hybrids.kernels.scan`):
``u, delta, z``: (batch, dim, L); ``A``: (dim, d_state); ``B, C``: (batch, d_state, L) or
(batch, groups, d_state, L); ``D, delta_bias``: (dim,); ``initial_state``: (batch, dim, d_state)
of any floating dtype, cast to float32. ``out`` has ``u``'s dtype, the last state (batch, dim,
d_state) is float32. Inputs may be float32, float16 or bfloat16; everything is computed in
float32. float64 is rejected (use the "torch" or "cpu" backend): the test
tolerances of float64 could not be met by a float32 kernel.

Forward kernel: one program per (block of BLOCK_D channels, batch). It walks L in chunks of
BLOCK_L. For a chunk it loads u / delta / z tiles (BLOCK_D, BLOCK_L) and B / C tiles
(BLOCK_N, BLOCK_L), BLOCK_N = d_state rounded up to a power of two, all contiguous along L;
forms a and b as (BLOCK_D, BLOCK_N, BLOCK_L) and runs ``tl.associative_scan`` along L with
the composition of affine maps ``(a1, b1) o (a2, b2) = (a1 a2, a2 b1 + b2)``. The state carried
from the previous chunk (the initial state, or zeros, for the first chunk) is folded into the
first column (b[0] += a[0] h_prev); positions past
L get a = 1, b = 0 so that the state passes through them unchanged. The state entering each
chunk is saved, (batch, dim, n_chunks, d_state) float32, when a backward will follow.

Backward kernel: the same programs walk the chunks in reverse. For a chunk it recomputes h from
the saved entering state (one forward scan), then runs one reverse scan for the adjoint of the
state::

    g[t] = dL/dh[t] = a[t+1] * g[t+1] + C[t] * dy[t],     dy = dout * silu(z)

(plus the gradient of the last state, if any, at t = L-1), carrying g of the chunk's first
column to the previous chunk; once the first chunk is done, ``a[0] g[0]`` is the gradient of
the initial state. ``a[t+1]`` is recomputed from a second load of delta shifted by
one step (a register tensor cannot be shifted in Triton; the load hits the cache). Then, with
``a[t] h[t-1] = h[t] - b[t]`` (no shifted h needed)::

    ddelta[t] = u[t] sum_n g B + sum_n A g (h - b)       -> times sigmoid(raw) with softplus
    du[t]     = delta[t] sum_n g B + D dy[t]
    dB[t, n]  = sum_{d in group} g delta u               dC[t, n] = sum_{d in group} dy h
    dA[d, n]  = sum_{b, t} delta g (h - b)               dD, ddelta_bias: sums over (b, t)

dB and dC are summed over the channels of a block in registers and over blocks with float32
atomic adds (so they are not bit-for-bit deterministic); dA, dD and ddelta_bias are written as
per-batch partials and summed in torch.

Grouped B / C: every block of channels must lie inside one group, so BLOCK_D is lowered to a
power of two dividing ``dim // groups`` (1 in the worst case: correct, slow).

On CPU the kernels run in Triton's interpreter, which needs ``TRITON_INTERPRET=1`` in the
environment *before triton is first imported* in the process (Triton's own library functions
such as ``tl.sum`` are decorated at that import). That is how the tests run them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from hybrids.kernels.dispatch import BackendUnavailable
from hybrids.kernels.scan.common import check_scan_arguments, grouped
from hybrids.kernels.triton_launch import TritonLaunch, check_int32_offsets, cuda_capability, sequence_extent

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# exp(x) = exp2(x log2 e): exp2 is the native instruction on NVIDIA GPUs. A global a kernel reads
# must be a tl.constexpr object: the compiler, unlike the interpreter, refuses plain Python globals.
LOG2E = tl.constexpr(1.4426950408889634)


@triton.jit
def _affine_combine(a1, b1, a2, b2):
    """Compose h -> a1 h + b1, then h -> a2 h + b2. With reverse=True Triton calls it as
    (accumulated later elements, current element): that gives g = a_cur g_later + b_cur."""
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _softplus(x):
    """log(1 + exp(x)) as torch's F.softplus (threshold 20), with an accurate log1p."""
    e = tl.exp(tl.minimum(x, 20.0))
    w = 1.0 + e
    # log1p(e) = log(w) * e / (w - 1) corrects the rounding of 1 + e; e itself when w rounds to 1.
    log1p = tl.where(w == 1.0, e, tl.log(w) * (e / tl.where(w == 1.0, 1.0, w - 1.0)))
    return tl.where(x > 20.0, x, log1p)


@triton.jit
def _load_delta(delta_ptrs, mask, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """delta after bias and softplus, as float32, 0 where masked: (BLOCK_D, BLOCK_L)."""
    raw = tl.load(delta_ptrs, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        raw = raw + bias[:, None]
    dt = raw
    if SOFTPLUS:
        dt = _softplus(raw)
    return tl.where(mask, dt, 0.0), raw


@triton.jit
def _scan_fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr,
    h0_ptr, out_ptr, last_ptr, states_ptr,
    dim, L, d_state, n_chunks, dpg_B, dpg_C,
    s_u_b, s_u_d, s_u_l,
    s_dt_b, s_dt_d, s_dt_l,
    s_z_b, s_z_d, s_z_l,
    s_A_d, s_A_n,
    s_B_b, s_B_g, s_B_n, s_B_l,
    s_C_b, s_C_g, s_C_n, s_C_l,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_H0: tl.constexpr, STORE_STATES: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr,
):  # fmt: skip
    pid_d = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)  # int64 offsets: batch * dim * L may pass 2**31
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    offs_l = tl.arange(0, BLOCK_L)
    mask_d = offs_d < dim
    mask_n = offs_n < d_state
    mask_dn = mask_d[:, None] & mask_n[None, :]
    first_col = offs_l[None, None, :] == 0
    last_col = offs_l[None, None, :] == BLOCK_L - 1

    # Padded channels / states get A = 0 (decay 1) and B = C = u = 0: they stay zero.
    A = tl.load(A_ptr + offs_d[:, None] * s_A_d + offs_n[None, :] * s_A_n, mask=mask_dn, other=0.0)
    A2 = A.to(tl.float32) * LOG2E  # (BLOCK_D, BLOCK_N)
    bias = tl.zeros((BLOCK_D,), tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)

    # Every channel of the block reads the same group (the wrapper chose BLOCK_D so).
    g_B = (pid_d * BLOCK_D) // dpg_B
    g_C = (pid_d * BLOCK_D) // dpg_C
    u_rows = u_ptr + pid_b * s_u_b + offs_d[:, None] * s_u_d
    dt_rows = delta_ptr + pid_b * s_dt_b + offs_d[:, None] * s_dt_d
    z_rows = z_ptr + pid_b * s_z_b + offs_d[:, None] * s_z_d
    B_rows = B_ptr + pid_b * s_B_b + g_B * s_B_g + offs_n[:, None] * s_B_n
    C_rows = C_ptr + pid_b * s_C_b + g_C * s_C_g + offs_n[:, None] * s_C_n
    out_rows = out_ptr + (pid_b * dim + offs_d[:, None]) * L  # out is ours: contiguous
    state_rows = states_ptr + ((pid_b * dim + offs_d[:, None]) * n_chunks) * d_state + offs_n[None, :]
    dn_offs = (pid_b * dim + offs_d[:, None]) * d_state + offs_n[None, :]  # (batch, dim, d_state), ours

    h = tl.zeros((BLOCK_D, BLOCK_N), tl.float32)
    if HAS_H0:  # the state before the first step (float32, contiguous: the wrapper made it so)
        h = tl.load(h0_ptr + dn_offs, mask=mask_dn, other=0.0).to(tl.float32)
    for c in range(n_chunks):
        if STORE_STATES:  # the state entering chunk c, for the backward
            tl.store(state_rows + c * d_state, h, mask=mask_dn)
        t = c * BLOCK_L + offs_l
        mask_t = t < L
        mask_dt = mask_d[:, None] & mask_t[None, :]
        mask_nt = mask_n[:, None] & mask_t[None, :]
        u = tl.load(u_rows + t[None, :] * s_u_l, mask=mask_dt, other=0.0).to(tl.float32)
        dt, _ = _load_delta(dt_rows + t[None, :] * s_dt_l, mask_dt, bias, HAS_BIAS, SOFTPLUS)
        Bt = tl.load(B_rows + t[None, :] * s_B_l, mask=mask_nt, other=0.0).to(tl.float32)
        Ct = tl.load(C_rows + t[None, :] * s_C_l, mask=mask_nt, other=0.0).to(tl.float32)

        # (BLOCK_D, BLOCK_N, BLOCK_L); dt = 0 past L gives decay 1 and drive 0 there.
        decay = tl.exp2(dt[:, None, :] * A2[:, :, None])
        drive = (dt * u)[:, None, :] * Bt[None, :, :]
        drive = tl.where(first_col, drive + decay * h[:, :, None], drive)
        _, hs = tl.associative_scan((decay, drive), axis=2, combine_fn=_affine_combine)

        y = tl.sum(hs * Ct[None, :, :], axis=1)  # (BLOCK_D, BLOCK_L)
        if HAS_D:
            y += Dv[:, None] * u
        if HAS_Z:
            z = tl.load(z_rows + t[None, :] * s_z_l, mask=mask_dt, other=0.0).to(tl.float32)
            y = y * z * tl.sigmoid(z)
        tl.store(out_rows + t[None, :], y.to(out_ptr.dtype.element_ty), mask=mask_dt)
        # The last column holds the state after the chunk (padding past L passes it through).
        h = tl.sum(tl.where(last_col, hs, 0.0), axis=2)

    tl.store(last_ptr + dn_offs, h, mask=mask_dn)


@triton.jit
def _scan_bwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr,
    dout_ptr, dlast_ptr, states_ptr,
    du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr, dh0_ptr,
    dim, L, d_state, n_chunks, dpg_B, dpg_C,
    s_u_b, s_u_d, s_u_l,
    s_dt_b, s_dt_d, s_dt_l,
    s_z_b, s_z_d, s_z_l,
    s_do_b, s_do_d, s_do_l,
    s_A_d, s_A_n,
    s_B_b, s_B_g, s_B_n, s_B_l,
    s_C_b, s_C_g, s_C_n, s_C_l,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_DLAST: tl.constexpr, HAS_DH0: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr,
):  # fmt: skip
    pid_d = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    offs_l = tl.arange(0, BLOCK_L)
    mask_d = offs_d < dim
    mask_n = offs_n < d_state
    mask_dn = mask_d[:, None] & mask_n[None, :]
    first_col = offs_l[None, None, :] == 0
    last_col = offs_l[None, None, :] == BLOCK_L - 1

    A = tl.load(A_ptr + offs_d[:, None] * s_A_d + offs_n[None, :] * s_A_n, mask=mask_dn, other=0.0)
    A = A.to(tl.float32)
    A2 = A * LOG2E
    bias = tl.zeros((BLOCK_D,), tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)

    groups_B = dim // dpg_B
    groups_C = dim // dpg_C
    g_B = (pid_d * BLOCK_D) // dpg_B
    g_C = (pid_d * BLOCK_D) // dpg_C
    u_rows = u_ptr + pid_b * s_u_b + offs_d[:, None] * s_u_d
    dt_rows = delta_ptr + pid_b * s_dt_b + offs_d[:, None] * s_dt_d
    z_rows = z_ptr + pid_b * s_z_b + offs_d[:, None] * s_z_d
    do_rows = dout_ptr + pid_b * s_do_b + offs_d[:, None] * s_do_d
    B_rows = B_ptr + pid_b * s_B_b + g_B * s_B_g + offs_n[:, None] * s_B_n
    C_rows = C_ptr + pid_b * s_C_b + g_C * s_C_g + offs_n[:, None] * s_C_n
    # Outputs are ours and contiguous: du, ddelta, dz (batch, dim, L); dB, dC float32
    # (batch, groups, d_state, L); dA (batch, dim, d_state), dD / dbias (batch, dim) partials.
    grad_rows = (pid_b * dim + offs_d[:, None]) * L
    dB_rows = dB_ptr + ((pid_b * groups_B + g_B) * d_state + offs_n[:, None]) * L
    dC_rows = dC_ptr + ((pid_b * groups_C + g_C) * d_state + offs_n[:, None]) * L
    dn_offs = (pid_b * dim + offs_d[:, None]) * d_state + offs_n[None, :]
    state_rows = states_ptr + ((pid_b * dim + offs_d[:, None]) * n_chunks) * d_state + offs_n[None, :]

    # g: dL/dh at the first step of the chunk after the current one (dL/dh[L-1] to start).
    g = tl.zeros((BLOCK_D, BLOCK_N), tl.float32)
    if HAS_DLAST:
        g = tl.load(dlast_ptr + dn_offs, mask=mask_dn, other=0.0).to(tl.float32)
    dA_acc = tl.zeros((BLOCK_D, BLOCK_N), tl.float32)
    dD_acc = tl.zeros((BLOCK_D,), tl.float32)
    dbias_acc = tl.zeros((BLOCK_D,), tl.float32)

    for i in range(n_chunks):
        c = n_chunks - 1 - i
        t = c * BLOCK_L + offs_l
        mask_t = t < L
        mask_dt = mask_d[:, None] & mask_t[None, :]
        mask_nt = mask_n[:, None] & mask_t[None, :]
        u = tl.load(u_rows + t[None, :] * s_u_l, mask=mask_dt, other=0.0).to(tl.float32)
        dt, raw = _load_delta(dt_rows + t[None, :] * s_dt_l, mask_dt, bias, HAS_BIAS, SOFTPLUS)
        # delta one step ahead, for the coefficients a[t+1] of the reverse recurrence; 0 at
        # and past L, so a[L] = 1 and the carried gradient passes the padding unchanged.
        mask_next = mask_d[:, None] & (t[None, :] + 1 < L)
        dt_next, _ = _load_delta(dt_rows + (t[None, :] + 1) * s_dt_l, mask_next, bias, HAS_BIAS, SOFTPLUS)
        Bt = tl.load(B_rows + t[None, :] * s_B_l, mask=mask_nt, other=0.0).to(tl.float32)
        Ct = tl.load(C_rows + t[None, :] * s_C_l, mask=mask_nt, other=0.0).to(tl.float32)
        dout = tl.load(do_rows + t[None, :] * s_do_l, mask=mask_dt, other=0.0).to(tl.float32)

        # Recompute h over the chunk from the saved entering state, as the forward did.
        decay = tl.exp2(dt[:, None, :] * A2[:, :, None])
        dtu = dt * u
        drive = dtu[:, None, :] * Bt[None, :, :]
        h0 = tl.load(state_rows + c * d_state, mask=mask_dn, other=0.0)
        folded = tl.where(first_col, drive + decay * h0[:, :, None], drive)
        _, hs = tl.associative_scan((decay, folded), axis=2, combine_fn=_affine_combine)

        # The gate: out = y * silu(z).
        dy = dout
        if HAS_Z:
            y = tl.sum(hs * Ct[None, :, :], axis=1)
            if HAS_D:
                y += Dv[:, None] * u
            z = tl.load(z_rows + t[None, :] * s_z_l, mask=mask_dt, other=0.0).to(tl.float32)
            sz = tl.sigmoid(z)
            dz = dout * y * sz * (1.0 + z * (1.0 - sz))
            tl.store(dz_ptr + grad_rows + t[None, :], dz.to(dz_ptr.dtype.element_ty), mask=mask_dt)
            dy = dout * z * sz
        if HAS_D:
            dD_acc += tl.sum(dy * u, axis=1)

        # Reverse scan: g[t] = a[t+1] g[t+1] + C[t] dy[t]; the carried g enters the last column.
        decay_next = tl.exp2(dt_next[:, None, :] * A2[:, :, None])
        rhs = dy[:, None, :] * Ct[None, :, :]
        rhs = tl.where(last_col, rhs + decay_next * g[:, :, None], rhs)
        _, gs = tl.associative_scan((decay_next, rhs), axis=2, combine_fn=_affine_combine, reverse=True)
        g = tl.sum(tl.where(first_col, gs, 0.0), axis=2)

        gB = tl.sum(gs * Bt[None, :, :], axis=1)  # (BLOCK_D, BLOCK_L)
        # a[t] h[t-1] = h[t] - b[t] (b unfolded), times g: the decay's share of the gradient.
        w = gs * (hs - drive)
        ddt = u * gB + tl.sum(w * A[:, :, None], axis=1)
        dA_acc += tl.sum(w * dt[:, None, :], axis=2)
        du = dt * gB
        if HAS_D:
            du += Dv[:, None] * dy
        if SOFTPLUS:
            ddt = ddt * tl.sigmoid(raw)
        ddt = tl.where(mask_dt, ddt, 0.0)
        if HAS_BIAS:
            dbias_acc += tl.sum(ddt, axis=1)
        tl.store(du_ptr + grad_rows + t[None, :], du.to(du_ptr.dtype.element_ty), mask=mask_dt)
        tl.store(ddelta_ptr + grad_rows + t[None, :], ddt.to(ddelta_ptr.dtype.element_ty), mask=mask_dt)

        # B and C are shared by the channels of a group: sum the block's, then add atomically
        # (relaxed: only the sum matters, not the order; the kernel's end orders it for torch).
        dB = tl.sum(gs * dtu[:, None, :], axis=0)  # (BLOCK_N, BLOCK_L)
        dC = tl.sum(hs * dy[:, None, :], axis=0)
        tl.atomic_add(dB_rows + t[None, :], dB, mask=mask_nt, sem="relaxed")
        tl.atomic_add(dC_rows + t[None, :], dC, mask=mask_nt, sem="relaxed")

    tl.store(dA_ptr + dn_offs, dA_acc, mask=mask_dn)
    if HAS_DH0:
        # g is dL/dh[0] now; the initial state enters through h[0] = a[0] h0 + b[0].
        dt0, _ = _load_delta(dt_rows, mask_d[:, None], bias, HAS_BIAS, SOFTPLUS)  # (BLOCK_D, 1)
        tl.store(dh0_ptr + dn_offs, tl.exp2(dt0 * A2) * g, mask=mask_dn)
    if HAS_D:
        tl.store(dD_ptr + pid_b * dim + offs_d, dD_acc, mask=mask_d)
    if HAS_BIAS:
        tl.store(dbias_ptr + pid_b * dim + offs_d, dbias_acc, mask=mask_d)


# --------------------------------------------------------------------------------------------
# launch configuration


@dataclass(frozen=True)
class ScanConfig:
    """Block sizes and launch options of both kernels (powers of two; BLOCK_N covers d_state).

    A program holds a few (BLOCK_D, BLOCK_N, BLOCK_L) float32 tiles in registers: decay, drive
    and the scanned states in the forward; in the backward also the adjoint, the next step's
    decay and their products. Their size per thread, ``BLOCK_D * BLOCK_N * BLOCK_L / (32 *
    num_warps)``, is what decides registers and spills.
    """

    block_n: int
    block_l: int
    block_d: int
    block_d_bwd: int
    num_warps: int
    num_warps_bwd: int
    num_stages: int = 1


def _gpu_blocks(block_n: int, capability: int) -> tuple[int, int, int, int, int]:
    """(BLOCK_L, BLOCK_D forward, warps forward, BLOCK_D backward, warps backward) on a GPU of
    ``capability``.

    Chosen with the ahead-of-time compile report (``python -m hybrids.kernels --gpu-report``):
    tiles of about 16 elements per thread in the forward and 8 in the backward (4, over 8 warps,
    from d_state 32 on), which compile without spills at d_state 16, 64 and 128 in float32,
    bfloat16 and float16 (larger tiles spill in the backward, or come within a few registers of
    it). A bf16 row of BLOCK_L = 64 is one 128-byte line; beyond d_state 16 the chunk shrinks to
    16 steps so that one channel's (BLOCK_N, BLOCK_L) tiles stay in budget. One exception: at
    d_state 128 on sm_90, ptxas caps the 8-warp backward at 128 registers and spills (bf16), so
    it runs 4 warps of 16 elements there (214-218 registers, no spill).
    """
    if block_n <= 16:
        block_l = 64
        return block_l, max(1, 16 * 128 // (block_n * block_l)), 4, max(1, 8 * 128 // (block_n * block_l)), 4
    block_l = 16
    warps_bwd = 4 if (capability >= 90 and block_n >= 128) else 8
    return block_l, max(1, 16 * 128 // (block_n * block_l)), 4, max(1, 4 * 32 * warps_bwd // (block_n * block_l)), warps_bwd


def scan_config(
    d_state: int,
    capability: int | None,
    block_l: int | None = None,
    block_d: int | None = None,
    block_d_bwd: int | None = None,
    num_warps: int | None = None,
) -> ScanConfig:
    """The launch configuration for ``d_state`` on a GPU of ``capability`` (80, 90, ...; None:
    Triton's interpreter, where a few large tiles beat many small ones because the cost is per
    operation). The keyword overrides are for tests and tuning (powers of two); ``num_warps``
    sets both kernels'."""
    block_n = max(2, triton.next_power_of_2(d_state))
    if capability is None:
        bl, bd, warps, bd_bwd, warps_bwd = 16, 8, 1, 8, 1
    else:
        bl, bd, warps, bd_bwd, warps_bwd = _gpu_blocks(block_n, capability)
    if num_warps is not None:
        warps = warps_bwd = num_warps
    config = ScanConfig(block_n, block_l or bl, block_d or bd, block_d_bwd or bd_bwd, warps, warps_bwd)
    for name in ("block_l", "block_d", "block_d_bwd", "num_warps", "num_warps_bwd"):
        value = getattr(config, name)
        if value < 1 or value & (value - 1):
            raise ValueError(f"{name}: expected a power of two (a Triton block size), got {value}")
    return config


def fit_groups(config: ScanConfig, dim: int, B: torch.Tensor, C: torch.Tensor) -> ScanConfig:
    """``config`` with BLOCK_D lowered so that no block of channels straddles two groups of B / C."""
    bd, bd_bwd = config.block_d, config.block_d_bwd
    for x in (B, C):
        if x.ndim == 4 and x.shape[1] > 1:
            per_group = dim // x.shape[1]
            while per_group % bd:
                bd //= 2
            while per_group % bd_bwd:
                bd_bwd //= 2
    return dataclasses.replace(config, block_d=bd, block_d_bwd=bd_bwd)


def forward_launch(u, delta, A, Bg, Cg, D, z, delta_bias, h0, out, last, states, softplus, config: ScanConfig):
    """The forward kernel's launch: ``out`` (batch, dim, L) and ``last`` (batch, dim, d_state)
    are written, and ``states`` (batch, dim, n_chunks, d_state) when it has chunks (a backward
    follows). ``Bg, Cg``: (batch, groups, d_state, L); optional tensors may be None."""
    batch, dim, length = u.shape
    d_state = A.shape[1]
    zz = z if z is not None else u  # a placeholder pointer, never read (HAS_Z=False)
    n_chunks = triton.cdiv(length, config.block_l)
    return TritonLaunch(
        _scan_fwd_kernel,
        grid=(triton.cdiv(dim, config.block_d), batch),
        args=(
            u, delta, A, Bg, Cg, D if D is not None else u, zz, delta_bias if delta_bias is not None else u,
            h0 if h0 is not None else last, out, last, states,
            dim, length, d_state, n_chunks, dim // Bg.shape[1], dim // Cg.shape[1],
            *u.stride(), *delta.stride(), *zz.stride(), *A.stride(), *Bg.stride(), *Cg.stride(),
        ),
        constexprs=dict(
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(softplus),
            HAS_H0=h0 is not None, STORE_STATES=states.shape[2] > 0,
            BLOCK_D=config.block_d, BLOCK_N=config.block_n, BLOCK_L=config.block_l,
        ),
        num_warps=config.num_warps,
        num_stages=config.num_stages,
    )  # fmt: skip


def backward_launch(
    u, delta, A, Bg, Cg, D, z, delta_bias, dout, dlast, states,
    du, ddelta, dz, dA, dB, dC, dD, dbias, dh0, softplus, config: ScanConfig,
):  # fmt: skip
    """The backward kernel's launch. Gradients are written to ``du, ddelta, dz`` (batch, dim, L),
    float32 ``dB, dC`` (batch, groups, d_state, L) by atomic adds, and float32 per-batch partials
    ``dA`` (batch, dim, d_state), ``dD, dbias`` (batch, dim), ``dh0`` (batch, dim, d_state)."""
    batch, dim, length = u.shape
    d_state = A.shape[1]
    zz = z if z is not None else u
    return TritonLaunch(
        _scan_bwd_kernel,
        grid=(triton.cdiv(dim, config.block_d_bwd), batch),
        args=(
            u, delta, A, Bg, Cg, D if D is not None else u, zz, delta_bias if delta_bias is not None else u,
            dout, dlast if dlast is not None else u, states,
            du, ddelta, dz if dz is not None else du, dA, dB, dC,
            dD if dD is not None else dA, dbias if dbias is not None else dA, dh0 if dh0 is not None else dA,
            dim, length, d_state, states.shape[2], dim // Bg.shape[1], dim // Cg.shape[1],
            *u.stride(), *delta.stride(), *zz.stride(), *dout.stride(), *A.stride(), *Bg.stride(), *Cg.stride(),
        ),
        constexprs=dict(
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(softplus),
            HAS_DLAST=dlast is not None, HAS_DH0=dh0 is not None,
            BLOCK_D=config.block_d_bwd, BLOCK_N=config.block_n, BLOCK_L=config.block_l,
        ),
        num_warps=config.num_warps_bwd,
        num_stages=config.num_stages,
    )  # fmt: skip


def _check_runnable(u, delta, A, B, C, D, z, delta_bias) -> None:
    from hybrids.kernels.scan import SELECTIVE_SCAN

    why_not = SELECTIVE_SCAN.backend("triton").available(u.device.type)
    if why_not:
        raise BackendUnavailable(f"selective_scan_triton cannot run here: {why_not}")
    if u.dtype not in SUPPORTED_DTYPES:
        raise ValueError(
            f"u: the Triton selective scan takes float32, float16 or bfloat16, got {u.dtype}; "
            "use backend='torch' or 'cpu' for float64"
        )
    for name, x in (("delta", delta), ("A", A), ("B", B), ("C", C), ("D", D), ("z", z), ("delta_bias", delta_bias)):
        if x is None:
            continue
        if x.device != u.device:
            raise ValueError(f"{name}: expected u's device {u.device}, got {x.device}")
        if not x.is_floating_point() or x.dtype == torch.float64:
            raise ValueError(f"{name}: expected float32, float16 or bfloat16, got {x.dtype}")


# --------------------------------------------------------------------------------------------
# autograd


class _SelectiveScanTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, h0, delta_softplus, config, save):
        batch, dim, length = u.shape
        d_state = A.shape[1]
        Bg, Cg = grouped(B), grouped(C)
        n_chunks = triton.cdiv(length, config.block_l)

        out = torch.empty(batch, dim, length, dtype=u.dtype, device=u.device)
        last = torch.empty(batch, dim, d_state, dtype=torch.float32, device=u.device)
        states = torch.empty(batch, dim, n_chunks if save else 0, d_state, dtype=torch.float32, device=u.device)
        if length > 0:
            forward_launch(u, delta, A, Bg, Cg, D, z, delta_bias, h0, out, last, states, delta_softplus, config).run()
        elif h0 is not None:
            last.copy_(h0)
        else:
            last.zero_()
        ctx.set_materialize_grads(False)
        if save:
            ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, states)
            ctx.delta_softplus = bool(delta_softplus)
            ctx.config = config
        return out, last

    @staticmethod
    @once_differentiable
    def backward(ctx, dout, dlast):
        u, delta, A, B, C, D, z, delta_bias, states = ctx.saved_tensors
        batch, dim, length = u.shape
        d_state = A.shape[1]
        Bg, Cg = grouped(B), grouped(C)
        f32 = dict(dtype=torch.float32, device=u.device)
        if dout is None:
            dout = torch.zeros_like(u)

        du = torch.empty(batch, dim, length, dtype=u.dtype, device=u.device)
        ddelta = torch.empty(batch, dim, length, dtype=delta.dtype, device=u.device)
        dz = torch.empty(batch, dim, length, dtype=z.dtype, device=u.device) if z is not None else None
        dA = torch.zeros(batch, dim, d_state, **f32)
        dB = torch.zeros(Bg.shape, **f32)
        dC = torch.zeros(Cg.shape, **f32)
        dD = torch.zeros(batch, dim, **f32) if D is not None else None
        dbias = torch.zeros(batch, dim, **f32) if delta_bias is not None else None
        dlast_c = dlast.contiguous() if dlast is not None else None
        dh0 = torch.empty(batch, dim, d_state, **f32) if ctx.needs_input_grad[8] else None
        if length > 0:
            backward_launch(
                u, delta, A, Bg, Cg, D, z, delta_bias, dout, dlast_c, states,
                du, ddelta, dz, dA, dB, dC, dD, dbias, dh0, ctx.delta_softplus, ctx.config,
            ).run()  # fmt: skip
        elif dh0 is not None:  # no steps: the last state is the initial state
            dh0 = dlast_c.clone() if dlast_c is not None else dh0.zero_()
        dB = dB.to(B.dtype).reshape(B.shape)
        dC = dC.to(C.dtype).reshape(C.shape)
        return (
            du,
            ddelta,
            dA.sum(0).to(A.dtype),
            dB,
            dC,
            dD.sum(0).to(D.dtype) if D is not None else None,
            dz,
            dbias.sum(0).to(delta_bias.dtype) if delta_bias is not None else None,
            dh0,
            None,
            None,
            None,
        )


def selective_scan_triton(
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
    initial_state: torch.Tensor | None = None,
    *,
    block_l: int | None = None,
    block_d: int | None = None,
    block_d_bwd: int | None = None,
    num_warps: int | None = None,
    capability: int | None = None,
):
    """The selective scan (module docstring) with Triton kernels: ``out`` (batch, dim, L) in
    u's dtype, and the float32 last state (batch, dim, d_state) if ``return_last_state``.

    ``initial_state`` (batch, dim, d_state), the state before the first step (zeros if None), is
    cast to float32; its gradient comes back in its own dtype.

    The keyword-only block sizes override the defaults (for tuning, see
    ``benchmarks/selective_scan_gpu.py``); BLOCK_D is still lowered to fit the groups of B / C.
    ``capability`` (80, 90, ...) takes the launch table of that GPU instead of the device's (so
    that the interpreter tests run the block sizes a GPU would).
    """
    check_scan_arguments(u, delta, A, B, C, D, z, delta_bias, initial_state)
    _check_runnable(u, delta, A, B, C, D, z, delta_bias)
    # The kernels read the inputs through their strides with int32 offsets within a sequence.
    check_int32_offsets(
        "selective_scan_triton", max(sequence_extent(x) for x in (u, delta, B, C, z) if x is not None),
        "scan the sequence in pieces (initial_state= and return_last_state=) or use backend='torch'",
    )
    # The cast (a no-op for float32) is left to autograd: the gradient returns in initial_state's dtype.
    h0 = initial_state.to(torch.float32).contiguous() if initial_state is not None else None
    if capability is None:
        capability = cuda_capability(u.device)
    config = scan_config(A.shape[1], capability, block_l, block_d, block_d_bwd, num_warps)
    config = fit_groups(config, u.shape[1], B, C)
    # Inside forward grad mode is always off, so whether a backward can follow is decided here:
    # only then are the chunk states written.
    tensors = (u, delta, A, B, C, D, z, delta_bias, h0)
    save = torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in tensors)
    out, last = _SelectiveScanTriton.apply(u, delta, A, B, C, D, z, delta_bias, h0, delta_softplus, config, save)
    return (out, last) if return_last_state else out
