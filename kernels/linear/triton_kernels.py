"""The Triton kernels of linear attention's ``"triton"`` backend: one forward kernel and three
backward kernels (launched by :mod:`.triton_chunk`).

Math: that of :mod:`hybrids.kernels.linear` (``S_t = exp(g_t) * S_{t-1} + k_t v_t^T``,
``o_t = scale * q_t^T S_t``), computed chunk by chunk as in :mod:`.chunk`. Inside a chunk of
``BT`` positions, with ``b_t`` the cumulative sum of ``g`` from the chunk's first position up to
and including ``t``, ``b_C`` its value at the chunk's last row and ``S`` the state entering the
chunk (a vector ``g`` makes ``b`` a K-vector and every product below elementwise over K)::

    E_ts     = exp(b_t - b_s) for s <= t, else 0                      (never exp of b_s - b_t)
    A_ts     = scale * sum_k q_tk k_sk E_tsk
    o_t      = scale * (q_t * exp(b_t))^T S  +  sum_s A_ts v_s
    S_leave  = exp(b_C) * S + sum_s (k_s * exp(b_C - b_s)) v_s^T

and, with ``dS`` the gradient of ``S_leave`` and ``D_ts = scale * dO_t . v_s`` masked like ``E``::

    dq_t = sum_s D_ts E_ts k_s  +  scale * exp(b_t) * (S dO_t)
    dk_s = sum_t D_ts E_ts q_t  +  exp(b_C - b_s) * (dS v_s)
    dv_s = sum_t A_ts dO_t      +  (k_s * exp(b_C - b_s))^T dS
    dS_enter = scale * sum_t (q_t * exp(b_t)) dO_t^T  +  exp(b_C) * dS
    db_t = q_t * dq_t - k_t * dk_t  (+ rowsum(S_leave * dS) at the chunk's last row)
    dg_t = sum_{u >= t in the chunk} db_u                               (tl.cumsum, reverse)

(``db`` summed over K as well for a scalar decay: every use of the decay is a factor ``exp(b)``
beside a ``q``, a ``k`` or the state). Positions past L are loaded as ``q = k = v = 0`` and
``g = 0``: they leave the state unchanged, so the chunk size need not divide L.

The kernels (float32 state and arithmetic; the operands of ``tl.dot`` in the inputs' dtype,
products accumulated in float32, as flash-linear-attention does):

- ``_la_fwd_kernel``: one program per (batch * head, block of BV value columns, block of BK key
  rows) carries its (BK, BV) block of the state in registers through the chunks, writing its
  share of ``o`` (the shares of the key blocks add up) and, when a backward follows, the state
  entering every chunk and the final one: ``states`` (batch * heads, n_chunks + 1, K, V).
- ``_la_bwd_dstate_kernel``: the same programs walk the chunks in reverse with ``dS`` and write
  the gradient of the state leaving every chunk: ``dstates`` (batch * heads, n_chunks, K, V),
  and the initial state's gradient.
- ``_la_bwd_dv_kernel``: one program per (batch * head * chunk, value block), every chunk at
  once: ``dv`` of its positions, looping over the key blocks for ``A`` and ``k_out^T dS``.
- ``_la_bwd_dqk_kernel``: one program per (batch * head * chunk, key block): ``dq``, ``dk`` and
  ``dg`` of its positions and keys, looping over the value blocks for ``D``, ``S dO`` and
  ``dS v``. A scalar decay's ``dg`` sums over every key block: each writes its share.

Splitting the backward this way keeps each program's working set small enough for registers
(the single backward kernel it replaced spilled at every useful tile size, see the GPU report in
``docs/gpu.md``), and the two chunk-parallel kernels have batch * heads * n_chunks programs
instead of batch * heads.

``HALF_DOTS``: whether ``tl.dot`` takes bfloat16 operands (q, k, v, dO as loaded; the state,
scores and decayed q / k rounded to bfloat16), as on a GPU for bfloat16 inputs. Off, the
operands are float32 (IEEE products for float32 inputs, TF32 for float16 ones: a float32 state
rounded to float16 overflows past 65504). The interpreter tests patch Triton 3.9's interpreter,
which multiplies bfloat16 matrices wrongly, to run this path.
"""

from __future__ import annotations

import triton
import triton.language as tl

# The forms of the decay, as the kernels' G_MODE.
NO_DECAY, SCALAR_DECAY, VECTOR_DECAY = 0, 1, 2


@triton.jit
def _chunk_decays(g_ptr, t, mask_t, offs_t, offs_k, mask_k, K, G_MODE: tl.constexpr, BT: tl.constexpr):
    """(b, b_C, E) of one chunk: cumulative log-decays (BT,) or (BT, BK), their value at the
    chunk's last row, and the masked ratios exp(b_t - b_s), s <= t: (BT, BT) or (BT, BT, BK).
    ``g_ptr`` points at this sequence's g: (L,) or (L, K)."""
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
    BH, L, K, V, n_chunks, scale,
    G_MODE: tl.constexpr, HAS_H0: tl.constexpr, STORE_STATES: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, PRECISION: tl.constexpr, HALF_DOTS: tl.constexpr,
):  # fmt: skip
    bh = tl.program_id(0).to(tl.int64)  # int64 offsets: batch * heads * L * K may pass 2**31
    pid_v = tl.program_id(1)
    pid_k = tl.program_id(2)
    if HALF_DOTS:
        DT = q_ptr.dtype.element_ty
    else:
        DT = tl.float32
    offs_t = tl.arange(0, BT)
    offs_k = pid_k * BK + tl.arange(0, BK)
    offs_v = pid_v * BV + tl.arange(0, BV)
    mask_k = offs_k < K
    mask_v = offs_v < V
    mask_kv = mask_k[:, None] & mask_v[None, :]
    causal = offs_t[:, None] >= offs_t[None, :]

    # q, k, v and g are contiguous: (batch * heads, L, K or V). o is (key blocks, batch * heads,
    # L, V): with one key block, the output itself.
    q_base = q_ptr + bh * L * K
    k_base = k_ptr + bh * L * K
    v_base = v_ptr + bh * L * V
    o_base = o_ptr + (pid_k.to(tl.int64) * BH + bh) * L * V
    if G_MODE == 1:
        g_base = g_ptr + bh * L
    else:
        g_base = g_ptr + bh * L * K
    kv_offs = offs_k[:, None] * V + offs_v[None, :]
    state_base = states_ptr + bh * (n_chunks + 1) * K * V

    S = tl.zeros((BK, BV), tl.float32)  # this program's rows and columns of the state
    if HAS_H0:
        S = tl.load(h0_ptr + bh * K * V + kv_offs, mask=mask_kv, other=0.0)
    for c in range(n_chunks):
        if STORE_STATES:  # the state entering chunk c, for the backward
            tl.store(state_base + c * K * V + kv_offs, S, mask=mask_kv)
        t = c * BT + offs_t
        mask_t = t < L
        mask_tk = mask_t[:, None] & mask_k[None, :]
        mask_tv = mask_t[:, None] & mask_v[None, :]
        q = tl.load(q_base + t[:, None] * K + offs_k[None, :], mask=mask_tk, other=0.0).to(DT)
        k = tl.load(k_base + t[:, None] * K + offs_k[None, :], mask=mask_tk, other=0.0).to(DT)
        v = tl.load(v_base + t[:, None] * V + offs_v[None, :], mask=mask_tv, other=0.0).to(DT)
        # scores: this key block's share of the within-chunk attention (the shares add up).
        if G_MODE == 0:
            scores = tl.where(causal, tl.dot(q, tl.trans(k), input_precision=PRECISION), 0.0)
            q_in = q
            k_out = k
            S_decay = S
        elif G_MODE == 1:
            b, b_last, ratio = _chunk_decays(g_base, t, mask_t, offs_t, offs_k, mask_k, K, G_MODE, BT)
            scores = tl.dot(q, tl.trans(k), input_precision=PRECISION) * ratio
            q_in = (q * tl.exp(b)[:, None]).to(DT)
            k_out = (k * tl.exp(b_last - b)[:, None]).to(DT)
            S_decay = tl.exp(b_last) * S
        else:
            b, b_last, ratio = _chunk_decays(g_base, t, mask_t, offs_t, offs_k, mask_k, K, G_MODE, BT)
            qf = q.to(tl.float32)
            kf = k.to(tl.float32)
            scores = tl.sum(qf[:, None, :] * kf[None, :, :] * ratio, 2)
            q_in = (qf * tl.exp(b)).to(DT)
            k_out = (kf * tl.exp(b_last[None, :] - b)).to(DT)
            S_decay = tl.exp(b_last)[:, None] * S
        o = tl.dot(q_in, S.to(DT), input_precision=PRECISION)
        o = o + tl.dot(scores.to(DT), v, input_precision=PRECISION)
        tl.store(o_base + t[:, None] * V + offs_v[None, :], (scale * o).to(o_ptr.dtype.element_ty), mask=mask_tv)
        S = S_decay + tl.dot(tl.trans(k_out), v, input_precision=PRECISION)  # (BK, BV)

    tl.store(last_ptr + bh * K * V + kv_offs, S, mask=mask_kv)
    if STORE_STATES:  # the final state too: the state leaving the last chunk
        tl.store(state_base + n_chunks * K * V + kv_offs, S, mask=mask_kv)


@triton.jit
def _la_bwd_dstate_kernel(
    q_ptr, g_ptr, do_ptr, dlast_ptr, dstates_ptr, dh0_ptr,
    L, K, V, n_chunks, scale,
    G_MODE: tl.constexpr, HAS_DLAST: tl.constexpr, HAS_DH0: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, PRECISION: tl.constexpr, HALF_DOTS: tl.constexpr,
):  # fmt: skip
    """dstates[c] = the gradient of the state leaving chunk c (batch * heads, n_chunks, K, V)."""
    bh = tl.program_id(0).to(tl.int64)
    pid_v = tl.program_id(1)
    pid_k = tl.program_id(2)
    if HALF_DOTS:
        DT = q_ptr.dtype.element_ty
    else:
        DT = tl.float32
    offs_t = tl.arange(0, BT)
    offs_k = pid_k * BK + tl.arange(0, BK)
    offs_v = pid_v * BV + tl.arange(0, BV)
    mask_k = offs_k < K
    mask_v = offs_v < V
    mask_kv = mask_k[:, None] & mask_v[None, :]
    q_base = q_ptr + bh * L * K
    do_base = do_ptr + bh * L * V
    if G_MODE == 1:
        g_base = g_ptr + bh * L
    else:
        g_base = g_ptr + bh * L * K
    kv_offs = offs_k[:, None] * V + offs_v[None, :]
    dstate_base = dstates_ptr + bh * n_chunks * K * V

    dS = tl.zeros((BK, BV), tl.float32)
    if HAS_DLAST:
        dS = tl.load(dlast_ptr + bh * K * V + kv_offs, mask=mask_kv, other=0.0)
    for i in range(n_chunks):
        c = n_chunks - 1 - i
        tl.store(dstate_base + c * K * V + kv_offs, dS, mask=mask_kv)
        t = c * BT + offs_t
        mask_t = t < L
        q = tl.load(q_base + t[:, None] * K + offs_k[None, :], mask=mask_t[:, None] & mask_k[None, :], other=0.0)
        do = tl.load(do_base + t[:, None] * V + offs_v[None, :], mask=mask_t[:, None] & mask_v[None, :], other=0.0)
        if G_MODE == 0:
            q_in = q.to(DT)
        elif G_MODE == 1:
            b, b_last, _ = _chunk_decays(g_base, t, mask_t, offs_t, offs_k, mask_k, K, G_MODE, BT)
            q_in = (q.to(tl.float32) * tl.exp(b)[:, None]).to(DT)
            dS = tl.exp(b_last) * dS
        else:
            gc = tl.load(g_base + t[:, None] * K + offs_k[None, :], mask=mask_t[:, None] & mask_k[None, :], other=0.0)
            b = tl.cumsum(gc, 0)
            b_last = tl.sum(tl.where((offs_t == BT - 1)[:, None], b, 0.0), 0)
            q_in = (q.to(tl.float32) * tl.exp(b)).to(DT)
            dS = tl.exp(b_last)[:, None] * dS
        dS = dS + scale * tl.dot(tl.trans(q_in), do.to(DT), input_precision=PRECISION)
    if HAS_DH0:  # dS entering the first chunk: the gradient of the initial state
        tl.store(dh0_ptr + bh * K * V + kv_offs, dS, mask=mask_kv)


@triton.jit
def _la_bwd_dv_kernel(
    q_ptr, k_ptr, g_ptr, do_ptr, dstates_ptr, dv_ptr,
    L, K, V, n_chunks, scale,
    G_MODE: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, PRECISION: tl.constexpr, HALF_DOTS: tl.constexpr,
):  # fmt: skip
    """dv of one chunk's positions and one block of value columns (written in v's dtype)."""
    pid = tl.program_id(0).to(tl.int64)  # batch * head * n_chunks + chunk
    bh = pid // n_chunks
    c = pid % n_chunks
    pid_v = tl.program_id(1)
    if HALF_DOTS:
        DT = q_ptr.dtype.element_ty
    else:
        DT = tl.float32
    offs_t = tl.arange(0, BT)
    offs_v = pid_v * BV + tl.arange(0, BV)
    mask_v = offs_v < V
    causal = offs_t[:, None] >= offs_t[None, :]
    t = c * BT + offs_t
    mask_t = t < L
    mask_tv = mask_t[:, None] & mask_v[None, :]
    q_base = q_ptr + bh * L * K
    k_base = k_ptr + bh * L * K
    if G_MODE == 1:
        g_base = g_ptr + bh * L
        b, b_last, ratio = _chunk_decays(g_base, t, mask_t, offs_t, offs_t, mask_t, K, G_MODE, BT)
        k_scale = tl.exp(b_last - b)[:, None]
    else:
        g_base = g_ptr + bh * L * K
    dstate_base = dstates_ptr + (bh * n_chunks + c) * K * V

    A = tl.zeros((BT, BT), tl.float32)  # scale * sum_k q_tk k_sk E_tsk, summed over key blocks
    acc = tl.zeros((BT, BV), tl.float32)  # (k_out dS)_s, summed over key blocks
    for kb in range(tl.cdiv(K, BK)):
        offs_k = kb * BK + tl.arange(0, BK)
        mask_k = offs_k < K
        mask_tk = mask_t[:, None] & mask_k[None, :]
        q = tl.load(q_base + t[:, None] * K + offs_k[None, :], mask=mask_tk, other=0.0)
        k = tl.load(k_base + t[:, None] * K + offs_k[None, :], mask=mask_tk, other=0.0)
        dS = tl.load(dstate_base + offs_k[:, None] * V + offs_v[None, :], mask=mask_k[:, None] & mask_v[None, :], other=0.0)
        if G_MODE == 0:
            A += tl.dot(q.to(DT), tl.trans(k.to(DT)), input_precision=PRECISION)
            k_out = k.to(DT)
        elif G_MODE == 1:
            A += tl.dot(q.to(DT), tl.trans(k.to(DT)), input_precision=PRECISION)
            k_out = (k.to(tl.float32) * k_scale).to(DT)
        else:
            bk, bk_last, ratio_k = _chunk_decays(g_base, t, mask_t, offs_t, offs_k, mask_k, K, G_MODE, BT)
            qf = q.to(tl.float32)
            kf = k.to(tl.float32)
            A += tl.sum(qf[:, None, :] * kf[None, :, :] * ratio_k, 2)
            k_out = (kf * tl.exp(bk_last[None, :] - bk)).to(DT)
        acc += tl.dot(k_out, dS.to(DT), input_precision=PRECISION)
    if G_MODE == 0:
        A = tl.where(causal, A, 0.0)
    elif G_MODE == 1:
        A = A * ratio
    do = tl.load(do_ptr + bh * L * V + t[:, None] * V + offs_v[None, :], mask=mask_tv, other=0.0).to(DT)
    dv = tl.dot(tl.trans((scale * A).to(DT)), do, input_precision=PRECISION) + acc
    tl.store(dv_ptr + bh * L * V + t[:, None] * V + offs_v[None, :], dv.to(dv_ptr.dtype.element_ty), mask=mask_tv)


@triton.jit
def _la_bwd_dqk_kernel(
    q_ptr, k_ptr, v_ptr, g_ptr, do_ptr, states_ptr, dstates_ptr, dq_ptr, dk_ptr, dg_ptr,
    BH, L, K, V, n_chunks, scale,
    G_MODE: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, PRECISION: tl.constexpr, HALF_DOTS: tl.constexpr,
):  # fmt: skip
    """dq, dk (in q's dtype) and dg of one chunk's positions and one block of keys: dg is
    (batch * heads, L, K) float32 for a vector decay; for a scalar one each key block writes its
    share, (key blocks, batch * heads, L)."""
    pid = tl.program_id(0).to(tl.int64)  # batch * head * n_chunks + chunk
    bh = pid // n_chunks
    c = pid % n_chunks
    pid_k = tl.program_id(1)
    if HALF_DOTS:
        DT = q_ptr.dtype.element_ty
    else:
        DT = tl.float32
    offs_t = tl.arange(0, BT)
    offs_k = pid_k * BK + tl.arange(0, BK)
    mask_k = offs_k < K
    causal = offs_t[:, None] >= offs_t[None, :]
    last_row = offs_t == BT - 1
    t = c * BT + offs_t
    mask_t = t < L
    mask_tk = mask_t[:, None] & mask_k[None, :]
    v_base = v_ptr + bh * L * V
    do_base = do_ptr + bh * L * V
    state_base = states_ptr + (bh * (n_chunks + 1) + c) * K * V  # entering chunk c; + K * V: leaving
    dstate_base = dstates_ptr + (bh * n_chunks + c) * K * V

    D = tl.zeros((BT, BT), tl.float32)  # dO_t . v_s over every value column
    do_S = tl.zeros((BT, BK), tl.float32)  # dO_t S^T
    v_dS = tl.zeros((BT, BK), tl.float32)  # v_s dS^T
    leave = tl.zeros((BK,), tl.float32)  # rowsum(S_leave * dS)
    for vb in range(tl.cdiv(V, BV)):
        offs_v = vb * BV + tl.arange(0, BV)
        mask_v = offs_v < V
        mask_tv = mask_t[:, None] & mask_v[None, :]
        mask_kv = mask_k[:, None] & mask_v[None, :]
        kv_offs = offs_k[:, None] * V + offs_v[None, :]
        v = tl.load(v_base + t[:, None] * V + offs_v[None, :], mask=mask_tv, other=0.0).to(DT)
        do = tl.load(do_base + t[:, None] * V + offs_v[None, :], mask=mask_tv, other=0.0).to(DT)
        S = tl.load(state_base + kv_offs, mask=mask_kv, other=0.0)
        dS = tl.load(dstate_base + kv_offs, mask=mask_kv, other=0.0)
        D += tl.dot(do, tl.trans(v), input_precision=PRECISION)
        do_S += tl.dot(do, tl.trans(S.to(DT)), input_precision=PRECISION)
        v_dS += tl.dot(v, tl.trans(dS.to(DT)), input_precision=PRECISION)
        if G_MODE != 0:
            S_leave = tl.load(state_base + K * V + kv_offs, mask=mask_kv, other=0.0)
            leave += tl.sum(S_leave * dS, 1)

    q = tl.load(q_ptr + bh * L * K + t[:, None] * K + offs_k[None, :], mask=mask_tk, other=0.0)
    k = tl.load(k_ptr + bh * L * K + t[:, None] * K + offs_k[None, :], mask=mask_tk, other=0.0)
    D = scale * D
    if G_MODE == 0:
        DE = tl.where(causal, D, 0.0).to(DT)
        dq = tl.dot(DE, k.to(DT), input_precision=PRECISION) + scale * do_S
        dk = tl.dot(tl.trans(DE), q.to(DT), input_precision=PRECISION) + v_dS
    elif G_MODE == 1:
        b, b_last, ratio = _chunk_decays(g_ptr + bh * L, t, mask_t, offs_t, offs_k, mask_k, K, G_MODE, BT)
        DE = (D * ratio).to(DT)
        dq = tl.dot(DE, k.to(DT), input_precision=PRECISION) + (scale * tl.exp(b))[:, None] * do_S
        dk = tl.dot(tl.trans(DE), q.to(DT), input_precision=PRECISION) + tl.exp(b_last - b)[:, None] * v_dS
    else:
        b, b_last, ratio = _chunk_decays(g_ptr + bh * L * K, t, mask_t, offs_t, offs_k, mask_k, K, G_MODE, BT)
        DE = D[:, :, None] * ratio  # (BT, BT, BK)
        qf = q.to(tl.float32)
        kf = k.to(tl.float32)
        dq = tl.sum(DE * kf[None, :, :], 1) + scale * tl.exp(b) * do_S
        dk = tl.sum(DE * qf[:, None, :], 0) + tl.exp(b_last[None, :] - b) * v_dS
    qk_offs = bh * L * K + t[:, None] * K + offs_k[None, :]
    tl.store(dq_ptr + qk_offs, dq.to(dq_ptr.dtype.element_ty), mask=mask_tk)
    tl.store(dk_ptr + qk_offs, dk.to(dk_ptr.dtype.element_ty), mask=mask_tk)

    if G_MODE != 0:
        # The gradient of b, then of g (a reverse cumulative sum within the chunk).
        db = q.to(tl.float32) * dq - k.to(tl.float32) * dk
        if G_MODE == 1:
            db = tl.sum(db, 1) + tl.where(last_row, tl.sum(leave, 0), 0.0)
            dg = tl.cumsum(db, 0, reverse=True)
            tl.store(dg_ptr + (pid_k.to(tl.int64) * BH + bh) * L + t, dg, mask=mask_t)
        else:
            db = db + tl.where(last_row[:, None], leave[None, :], 0.0)
            dg = tl.cumsum(db, 0, reverse=True)
            tl.store(dg_ptr + qk_offs, dg, mask=mask_tk)
