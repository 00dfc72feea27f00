"""The ``"triton"`` backend of linear attention: a chunked forward Triton kernel and a
hand-written backward Triton kernel.

Math: that of :mod:`hybrids.kernels.linear` (``S_t = exp(g_t) * S_{t-1} + k_t v_t^T``,
``o_t = scale * q_t^T S_t``), computed chunk by chunk as in :mod:`.chunk`. Inside a chunk of
``C = BT`` positions, with ``b_t`` the cumulative sum of ``g`` from the chunk's first position up
to and including ``t``, ``b_C`` its value at the chunk's last row and ``S`` the state entering
the chunk (a vector ``g`` makes ``b`` a K-vector and every product below elementwise over K)::

    E_ts     = exp(b_t - b_s) for s <= t, else 0                      (never exp of b_s - b_t)
    A_ts     = scale * sum_k q_tk k_sk E_tsk
    o_t      = scale * (q_t * exp(b_t))^T S  +  sum_s A_ts v_s
    S_leave  = exp(b_C) * S + sum_s (k_s * exp(b_C - b_s)) v_s^T

Positions past L are loaded as ``q = k = v = 0`` and ``g = 0``: they leave the state unchanged,
so the chunk size need not divide L.

Forward kernel: one program per (block of BV value columns, batch * head). It keeps the
(K, BV) state in float32 registers (K rounded up to a power of two, at least 16, as ``tl.dot``
asks) and walks the chunks in order: loads a (BT, K) tile of q and k, a (BT, BV) tile of v,
forms ``b`` with ``tl.cumsum`` and the masked decay ratios, then the output and the next state
with ``tl.dot``. For the vector decay the ratios differ per key dimension, and the scores are a
reduction over a (BT, BT, K) register tensor: exact for any ``g <= 0``, but heavy, so the
default chunk is 16 there (64 otherwise). The state entering every chunk, and the final one,
are written to a (batch * heads, n_chunks + 1, K, V) float32 buffer only when a backward will
follow.

Backward kernel: the same programs walk the chunks in reverse, carrying ``dS`` (the gradient
of the state leaving the chunk; that of the final state, or zero, to start). For a chunk, with
``D_ts = scale * dO_t . v_s`` masked like ``E``::

    dq_t = sum_s D_ts E_ts k_s  +  scale * exp(b_t) * (S dO_t)
    dk_s = sum_t D_ts E_ts q_t  +  exp(b_C - b_s) * (dS v_s)
    dv_s = sum_t A_ts dO_t      +  (k_s * exp(b_C - b_s))^T dS
    dS  <- scale * sum_t (q_t * exp(b_t)) dO_t^T  +  exp(b_C) * dS          (entering the chunk)

and the decay, whose every use is a factor ``exp(b)`` beside a ``q`` or a ``k`` (or the state),
through the gradient of ``b``::

    db_t = q_t * dq_t - k_t * dk_t  (+ rowsum(S_leave * dS_leave) at the chunk's last row)
    dg_t = sum_{u >= t in the chunk} db_u                               (tl.cumsum, reverse)

summed over K as well for the scalar decay. ``dS`` after the first chunk is the gradient of the
initial state. A program sees only its BV value columns, and dq, dk and dg are sums over all of
them: each program writes its share to a float32 buffer with one slice per value block, and
torch adds the slices (no atomics: deterministic).

Dtypes: q, k and v may be float32, float16 or bfloat16 (one dtype, as the contract asks); g
and the initial state of any floating dtype are cast to float32 beforehand (autograd returns
their gradients in their own dtypes). Everything is computed in float32; products of float32
inputs ask ``tl.dot`` for IEEE float32 (no TF32), products of half-precision inputs allow TF32.
``o`` has q's dtype, the final state is float32. float64 is rejected (use the "chunk" backend).

On CPU the kernels run in Triton's interpreter, which needs ``TRITON_INTERPRET=1`` in the
environment before triton is first imported in the process; that is how the tests run them.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from hybrids.kernels.dispatch import BackendUnavailable
from hybrids.kernels.linear.common import check_linear_attention_arguments, resolve_scale

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# The forms of the decay, as the kernels' G_MODE.
_NO_DECAY, _SCALAR_DECAY, _VECTOR_DECAY = 0, 1, 2


@triton.jit
def _chunk_decays(g_ptr, t, mask_t, offs_t, offs_k, mask_k, K, G_MODE: tl.constexpr, BT: tl.constexpr):
    """(b, b_C, E) of one chunk: cumulative log-decays (BT,) or (BT, BK), their value at the
    chunk's last row, and the masked ratios exp(b_t - b_s), s <= t: (BT, BT) or (BT, BT, BK)."""
    causal = offs_t[:, None] >= offs_t[None, :]
    last_row = offs_t == BT - 1
    if G_MODE == 1:
        gc = tl.load(g_ptr + t, mask=mask_t, other=0.0)
        b = tl.cumsum(gc, 0)
        b_last = tl.sum(tl.where(last_row, b, 0.0), 0)
        ratio = tl.exp(tl.where(causal, b[:, None] - b[None, :], float("-inf")))
    else:
        gc = tl.load(g_ptr + t[:, None] * K + offs_k[None, :], mask=mask_t[:, None] & mask_k[None, :], other=0.0)
        b = tl.cumsum(gc, 0)
        b_last = tl.sum(tl.where(last_row[:, None], b, 0.0), 0)
        ratio = tl.exp(tl.where(causal[:, :, None], b[:, None, :] - b[None, :, :], float("-inf")))
    return b, b_last, ratio


@triton.jit
def _la_fwd_kernel(
    q_ptr, k_ptr, v_ptr, g_ptr, h0_ptr, o_ptr, last_ptr, states_ptr,
    L, K, V, n_chunks, scale,
    G_MODE: tl.constexpr, HAS_H0: tl.constexpr, STORE_STATES: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    pid_v = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)  # int64 offsets: batch * heads * L * K may pass 2**31
    offs_t = tl.arange(0, BT)
    offs_k = tl.arange(0, BK)
    offs_v = pid_v * BV + tl.arange(0, BV)
    mask_k = offs_k < K
    mask_v = offs_v < V
    mask_kv = mask_k[:, None] & mask_v[None, :]
    causal = offs_t[:, None] >= offs_t[None, :]

    # q, k, v, g and o are contiguous (the wrapper made them so): (batch * heads, L, K or V).
    q_base = q_ptr + bh * L * K
    k_base = k_ptr + bh * L * K
    v_base = v_ptr + bh * L * V
    o_base = o_ptr + bh * L * V
    if G_MODE == 1:
        g_base = g_ptr + bh * L
    else:
        g_base = g_ptr + bh * L * K
    kv_offs = offs_k[:, None] * V + offs_v[None, :]
    state_base = states_ptr + bh * (n_chunks + 1) * K * V

    S = tl.zeros((BK, BV), tl.float32)
    if HAS_H0:
        S = tl.load(h0_ptr + bh * K * V + kv_offs, mask=mask_kv, other=0.0)
    for c in range(n_chunks):
        if STORE_STATES:  # the state entering chunk c, for the backward
            tl.store(state_base + c * K * V + kv_offs, S, mask=mask_kv)
        t = c * BT + offs_t
        mask_t = t < L
        mask_tk = mask_t[:, None] & mask_k[None, :]
        mask_tv = mask_t[:, None] & mask_v[None, :]
        q = tl.load(q_base + t[:, None] * K + offs_k[None, :], mask=mask_tk, other=0.0).to(tl.float32)
        k = tl.load(k_base + t[:, None] * K + offs_k[None, :], mask=mask_tk, other=0.0).to(tl.float32)
        v = tl.load(v_base + t[:, None] * V + offs_v[None, :], mask=mask_tv, other=0.0).to(tl.float32)
        if G_MODE == 0:
            scores = tl.where(causal, tl.dot(q, tl.trans(k), input_precision=PRECISION), 0.0)
            q_in = q
            k_out = k
        elif G_MODE == 1:
            b, b_last, ratio = _chunk_decays(g_base, t, mask_t, offs_t, offs_k, mask_k, K, G_MODE, BT)
            scores = tl.dot(q, tl.trans(k), input_precision=PRECISION) * ratio
            q_in = q * tl.exp(b)[:, None]
            k_out = k * tl.exp(b_last - b)[:, None]
        else:
            b, b_last, ratio = _chunk_decays(g_base, t, mask_t, offs_t, offs_k, mask_k, K, G_MODE, BT)
            scores = tl.sum(q[:, None, :] * k[None, :, :] * ratio, 2)
            q_in = q * tl.exp(b)
            k_out = k * tl.exp(b_last[None, :] - b)
        o = tl.dot(q_in, S, input_precision=PRECISION) + tl.dot(scores, v, input_precision=PRECISION)
        tl.store(o_base + t[:, None] * V + offs_v[None, :], (scale * o).to(o_ptr.dtype.element_ty), mask=mask_tv)
        local = tl.dot(tl.trans(k_out), v, input_precision=PRECISION)  # (BK, BV)
        if G_MODE == 0:
            S = S + local
        elif G_MODE == 1:
            S = tl.exp(b_last) * S + local
        else:
            S = tl.exp(b_last)[:, None] * S + local

    tl.store(last_ptr + bh * K * V + kv_offs, S, mask=mask_kv)
    if STORE_STATES:  # the final state too: the state leaving the last chunk
        tl.store(state_base + n_chunks * K * V + kv_offs, S, mask=mask_kv)


@triton.jit
def _la_bwd_kernel(
    q_ptr, k_ptr, v_ptr, g_ptr, do_ptr, dlast_ptr, states_ptr,
    dq_ptr, dk_ptr, dv_ptr, dg_ptr, dh0_ptr,
    BH, L, K, V, n_chunks, scale,
    G_MODE: tl.constexpr, HAS_DLAST: tl.constexpr, HAS_DH0: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    pid_v = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    offs_t = tl.arange(0, BT)
    offs_k = tl.arange(0, BK)
    offs_v = pid_v * BV + tl.arange(0, BV)
    mask_k = offs_k < K
    mask_v = offs_v < V
    mask_kv = mask_k[:, None] & mask_v[None, :]
    causal = offs_t[:, None] >= offs_t[None, :]
    last_row = offs_t == BT - 1

    q_base = q_ptr + bh * L * K
    k_base = k_ptr + bh * L * K
    v_base = v_ptr + bh * L * V
    do_base = do_ptr + bh * L * V
    dv_base = dv_ptr + bh * L * V
    # dq, dk, dg: float32 (n_value_blocks, batch * heads, L, K or 1), this block's share.
    share = pid_v.to(tl.int64) * BH + bh
    dq_base = dq_ptr + share * L * K
    dk_base = dk_ptr + share * L * K
    if G_MODE == 1:
        g_base = g_ptr + bh * L
        dg_base = dg_ptr + share * L
    else:
        g_base = g_ptr + bh * L * K
        dg_base = dg_ptr + share * L * K
    kv_offs = offs_k[:, None] * V + offs_v[None, :]
    state_base = states_ptr + bh * (n_chunks + 1) * K * V

    # dS: the gradient of the state leaving the chunk being processed.
    dS = tl.zeros((BK, BV), tl.float32)
    if HAS_DLAST:
        dS = tl.load(dlast_ptr + bh * K * V + kv_offs, mask=mask_kv, other=0.0)
    for i in range(n_chunks):
        c = n_chunks - 1 - i
        t = c * BT + offs_t
        mask_t = t < L
        mask_tk = mask_t[:, None] & mask_k[None, :]
        mask_tv = mask_t[:, None] & mask_v[None, :]
        q = tl.load(q_base + t[:, None] * K + offs_k[None, :], mask=mask_tk, other=0.0).to(tl.float32)
        k = tl.load(k_base + t[:, None] * K + offs_k[None, :], mask=mask_tk, other=0.0).to(tl.float32)
        v = tl.load(v_base + t[:, None] * V + offs_v[None, :], mask=mask_tv, other=0.0).to(tl.float32)
        do = tl.load(do_base + t[:, None] * V + offs_v[None, :], mask=mask_tv, other=0.0).to(tl.float32)
        S = tl.load(state_base + c * K * V + kv_offs, mask=mask_kv, other=0.0)  # entering the chunk

        D = scale * tl.dot(do, tl.trans(v), input_precision=PRECISION)  # [t, s] = scale dO_t . v_s
        do_S = scale * tl.dot(do, tl.trans(S), input_precision=PRECISION)  # (BT, BK)
        v_dS = tl.dot(v, tl.trans(dS), input_precision=PRECISION)  # (BT, BK)
        if G_MODE == 0:
            DE = tl.where(causal, D, 0.0)
            A = tl.where(causal, scale * tl.dot(q, tl.trans(k), input_precision=PRECISION), 0.0)
            dq = tl.dot(DE, k, input_precision=PRECISION) + do_S
            dk = tl.dot(tl.trans(DE), q, input_precision=PRECISION) + v_dS
            k_out = k
            q_in = q
        elif G_MODE == 1:
            b, b_last, ratio = _chunk_decays(g_base, t, mask_t, offs_t, offs_k, mask_k, K, G_MODE, BT)
            DE = D * ratio
            A = scale * tl.dot(q, tl.trans(k), input_precision=PRECISION) * ratio
            e_in = tl.exp(b)[:, None]
            e_out = tl.exp(b_last - b)[:, None]
            dq = tl.dot(DE, k, input_precision=PRECISION) + e_in * do_S
            dk = tl.dot(tl.trans(DE), q, input_precision=PRECISION) + e_out * v_dS
            k_out = k * e_out
            q_in = q * e_in
        else:
            b, b_last, ratio = _chunk_decays(g_base, t, mask_t, offs_t, offs_k, mask_k, K, G_MODE, BT)
            A = scale * tl.sum(q[:, None, :] * k[None, :, :] * ratio, 2)
            DE = D[:, :, None] * ratio  # (BT, BT, BK)
            e_in = tl.exp(b)
            e_out = tl.exp(b_last[None, :] - b)
            dq = tl.sum(DE * k[None, :, :], 1) + e_in * do_S
            dk = tl.sum(DE * q[:, None, :], 0) + e_out * v_dS
            k_out = k * e_out
            q_in = q * e_in
        dv = tl.dot(tl.trans(A), do, input_precision=PRECISION) + tl.dot(k_out, dS, input_precision=PRECISION)
        tl.store(dv_base + t[:, None] * V + offs_v[None, :], dv.to(dv_ptr.dtype.element_ty), mask=mask_tv)
        tl.store(dq_base + t[:, None] * K + offs_k[None, :], dq, mask=mask_tk)
        tl.store(dk_base + t[:, None] * K + offs_k[None, :], dk, mask=mask_tk)

        if G_MODE != 0:
            # The gradient of b, then of g (a reverse cumulative sum within the chunk). The state
            # leaving the chunk depends on b_C: rowsum(S_leave * dS) at the last row.
            S_leave = tl.load(state_base + (c + 1) * K * V + kv_offs, mask=mask_kv, other=0.0)
            leave = tl.sum(S_leave * dS, 1)  # (BK,)
            db = q * dq - k * dk
            if G_MODE == 1:
                db = tl.sum(db, 1) + tl.where(last_row, tl.sum(leave, 0), 0.0)
                dg = tl.cumsum(db, 0, reverse=True)
                tl.store(dg_base + t, dg, mask=mask_t)
            else:
                db = db + tl.where(last_row[:, None], leave[None, :], 0.0)
                dg = tl.cumsum(db, 0, reverse=True)
                tl.store(dg_base + t[:, None] * K + offs_k[None, :], dg, mask=mask_tk)

        # The gradient of the state entering the chunk.
        dS_in = tl.dot(tl.trans(q_in), do, input_precision=PRECISION) * scale
        if G_MODE == 0:
            dS = dS + dS_in
        elif G_MODE == 1:
            dS = tl.exp(b_last) * dS + dS_in
        else:
            dS = tl.exp(b_last)[:, None] * dS + dS_in

    if HAS_DH0:
        tl.store(dh0_ptr + bh * K * V + kv_offs, dS, mask=mask_kv)


# --------------------------------------------------------------------------------------------
# launch configuration


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def _power_of_two(name: str, value: int, least: int = 16) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least or value & (value - 1):
        raise ValueError(f"{name}: expected a power of two of at least {least} (a Triton block size), got {value!r}")
    return value


def _launch_config(q, v, g, chunk_size=None, block_v=None, num_warps=None):
    """(BT, BK, BV, num_warps, tl.dot precision).

    BK holds the whole key dimension (at least 16, tl.dot's smallest operand side). On a GPU the
    chunk is 64 positions, 16 with a vector decay (its (BT, BT, BK) ratios live in registers),
    and a program takes up to 64 value columns. In the interpreter the cost is per operation,
    nearly whatever the tile size: one value block, the smallest chunk.
    """
    dk, dv = q.shape[-1], v.shape[-1]
    block_k = max(16, triton.next_power_of_2(dk))
    vector = g is not None and g.ndim == 4
    if _interpreting() or not q.is_cuda:
        bt, bv, warps = 16, max(16, triton.next_power_of_2(dv)), 1
    else:
        bt = 16 if vector else 64
        bv = min(64, max(16, triton.next_power_of_2(dv)))
        warps = 4
    bt = _power_of_two("chunk_size", chunk_size) if chunk_size is not None else bt
    bv = _power_of_two("block_v", block_v) if block_v is not None else bv
    precision = "ieee" if q.dtype == torch.float32 else "tf32"
    return bt, block_k, bv, num_warps or warps, precision


def _check_runnable(q: torch.Tensor) -> None:
    from hybrids.kernels.linear import LINEAR_ATTENTION

    why_not = LINEAR_ATTENTION.backend("triton").available(q.device.type)
    if why_not:
        raise BackendUnavailable(f"linear_attention_triton cannot run here: {why_not}")
    if q.dtype not in SUPPORTED_DTYPES:
        raise ValueError(
            f"q: the Triton linear attention takes float32, float16 or bfloat16 q, k and v, got {q.dtype}; "
            "use backend='chunk' for float64"
        )


# --------------------------------------------------------------------------------------------
# autograd


class _LinearAttentionTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, g, h0, scale, config, save):
        batch, heads, length, dk = q.shape
        dv = v.shape[-1]
        bt, bk, bv, num_warps, precision = config
        n_chunks = triton.cdiv(length, bt)
        mode = _NO_DECAY if g is None else (_SCALAR_DECAY if g.ndim == 3 else _VECTOR_DECAY)
        o = torch.empty(batch, heads, length, dv, dtype=q.dtype, device=q.device)
        last = torch.empty(batch, heads, dk, dv, dtype=torch.float32, device=q.device)
        states = torch.empty(batch * heads, n_chunks + 1 if save else 0, dk, dv, dtype=torch.float32, device=q.device)
        grid = (triton.cdiv(dv, bv), batch * heads)
        _la_fwd_kernel[grid](
            q, k, v, g if g is not None else q, h0 if h0 is not None else last, o, last, states,
            length, dk, dv, n_chunks, scale,
            G_MODE=mode, HAS_H0=h0 is not None, STORE_STATES=save,
            BT=bt, BK=bk, BV=bv, PRECISION=precision, num_warps=num_warps,
        )  # fmt: skip
        ctx.set_materialize_grads(False)
        if save:
            ctx.save_for_backward(q, k, v, g, states)
            ctx.scale, ctx.config, ctx.mode = scale, config, mode
        return o, last

    @staticmethod
    @once_differentiable
    def backward(ctx, do, dlast):
        q, k, v, g, states = ctx.saved_tensors
        bt, bk, bv, num_warps, precision = ctx.config
        batch, heads, length, dk = q.shape
        dv = v.shape[-1]
        n_chunks = states.shape[1] - 1
        n_vblocks = triton.cdiv(dv, bv)
        f32 = dict(dtype=torch.float32, device=q.device)
        do = torch.zeros_like(v) if do is None else do.contiguous()
        dlast = dlast.contiguous() if dlast is not None else None
        # dq, dk and dg get one share per value block (float32), added up below.
        dq = torch.empty(n_vblocks, batch, heads, length, dk, **f32)
        dk_ = torch.empty(n_vblocks, batch, heads, length, dk, **f32)
        dg = torch.empty((n_vblocks, *g.shape), **f32) if g is not None else None
        dv_ = torch.empty(batch, heads, length, dv, dtype=v.dtype, device=q.device)
        dh0 = torch.empty(batch, heads, dk, dv, **f32) if ctx.needs_input_grad[4] else None
        grid = (n_vblocks, batch * heads)
        _la_bwd_kernel[grid](
            q, k, v, g if g is not None else q, do, dlast if dlast is not None else dq, states,
            dq, dk_, dv_, dg if dg is not None else dq, dh0 if dh0 is not None else dq,
            batch * heads, length, dk, dv, n_chunks, ctx.scale,
            G_MODE=ctx.mode, HAS_DLAST=dlast is not None, HAS_DH0=dh0 is not None,
            BT=bt, BK=bk, BV=bv, PRECISION=precision, num_warps=num_warps,
        )  # fmt: skip
        return (
            dq.sum(0).to(q.dtype),
            dk_.sum(0).to(k.dtype),
            dv_,
            dg.sum(0) if dg is not None else None,
            dh0,
            None,
            None,
            None,
        )


def linear_attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    *,
    chunk_size: int | None = None,
    block_v: int | None = None,
    num_warps: int | None = None,
):
    """Linear attention (see :mod:`hybrids.kernels.linear`) with Triton kernels: ``o`` (batch,
    heads, L, V) in q's dtype, and the float32 final state (batch, heads, K, V) if
    ``output_final_state``.

    The keyword-only ``chunk_size`` (BT) and ``block_v`` (BV), powers of two of at least 16, and
    ``num_warps`` override the launch defaults (for tests and tuning).
    """
    check_linear_attention_arguments(q, k, v, g, scale, initial_state)
    _check_runnable(q)
    batch, heads, length, dk = q.shape
    scale = resolve_scale(scale, dk)
    config = _launch_config(q, v, g, chunk_size, block_v, num_warps)
    if length == 0 or batch * heads == 0 or dk == 0 or v.shape[-1] == 0:
        # Nothing to run a kernel over; the chunked PyTorch path returns the empty result.
        from hybrids.kernels.linear.chunk import linear_attention_chunk

        return linear_attention_chunk(q, k, v, g, scale, initial_state, output_final_state)
    # The casts (no-ops for float32, contiguous inputs) are left to autograd, so gradients return
    # in the inputs' own layouts and dtypes.
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    g32 = g.to(torch.float32).contiguous() if g is not None else None
    h0 = initial_state.to(torch.float32).contiguous() if initial_state is not None else None
    # Inside forward grad mode is off, so whether a backward can follow is decided here: only
    # then are the chunk states written.
    save = torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in (q, k, v, g32, h0))
    o, last = _LinearAttentionTriton.apply(q, k, v, g32, h0, scale, config, save)
    return (o, last) if output_final_state else o
