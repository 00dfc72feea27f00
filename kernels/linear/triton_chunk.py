"""The ``"triton"`` backend of linear attention: its launch configuration, per GPU
architecture, and its autograd function (the kernels and their math: :mod:`.triton_kernels`).

Launches: the forward kernel over (batch * heads, value blocks, key blocks); in the backward the
state-gradient kernel over the same grid, then the two chunk-parallel kernels over (batch * heads
* chunks, value blocks) and (batch * heads * chunks, key blocks). Shares that a program cannot
sum alone (o over key blocks, a scalar decay's dg over key blocks) are written to float32
buffers with one slice per block, and torch adds the slices (no atomics: deterministic).

Dtypes: q, k and v may be float32, float16 or bfloat16 (one dtype, as the contract asks); g
and the initial state of any floating dtype are cast to float32 beforehand (autograd returns
their gradients in their own dtypes). The state and the arithmetic are float32. Products of
float32 inputs ask ``tl.dot`` for IEEE float32 (no TF32); bfloat16 inputs are multiplied in
bfloat16 with float32 accumulation (the state and scores rounded to bfloat16 for the product, as
flash-linear-attention does); float16 inputs in TF32, because rounding a float32 state to float16
would overflow past 65504. ``o`` has q's dtype, the final state is float32.
float64 is rejected (use the "chunk" backend).

On CPU the kernels run in Triton's interpreter, which needs ``TRITON_INTERPRET=1`` in the
environment before triton is first imported in the process; that is how the tests run them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import triton
from torch.autograd.function import once_differentiable

from hybrids.kernels.dispatch import BackendUnavailable
from hybrids.kernels.linear.common import check_linear_attention_arguments, resolve_scale
from hybrids.kernels.linear.triton_kernels import (
    NO_DECAY,
    SCALAR_DECAY,
    VECTOR_DECAY,
    _la_bwd_dqk_kernel,
    _la_bwd_dstate_kernel,
    _la_bwd_dv_kernel,
    _la_fwd_kernel,
)
from hybrids.kernels.triton_launch import TritonLaunch, check_int32_offsets, cuda_capability

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# --------------------------------------------------------------------------------------------
# launch configuration


@dataclass(frozen=True)
class KernelBlocks:
    """One kernel's tiling: BK key rows and BV value columns per program (or per step of its
    loop over the other dimension), powers of two of at least 16 (``tl.dot``'s smallest side),
    and Triton's launch options."""

    block_k: int
    block_v: int
    num_warps: int = 4
    num_stages: int = 1


@dataclass(frozen=True)
class LinearConfig:
    """The chunk size BT, shared by every kernel (the backward reads the states the forward
    saved at chunk boundaries), each kernel's tiling, and how ``tl.dot`` multiplies."""

    chunk: int
    forward: KernelBlocks
    dstate: KernelBlocks
    dv: KernelBlocks
    dqk: KernelBlocks
    precision: str  # tl.dot's input precision for float32 operands: "ieee" (float32 inputs) or "tf32"
    half_dots: bool  # tl.dot on bfloat16 operands (bfloat16 inputs)

    def kernels(self) -> dict[str, KernelBlocks]:
        return {"forward": self.forward, "dstate": self.dstate, "dv": self.dv, "dqk": self.dqk}


def _power_of_two(name: str, value: int, least: int = 16) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least or value & (value - 1):
        raise ValueError(f"{name}: expected a power of two of at least {least} (a Triton block size), got {value!r}")
    return value


def _tiles(forward, dstate, dv, dqk) -> dict[str, KernelBlocks]:
    return dict(forward=KernelBlocks(*forward), dstate=KernelBlocks(*dstate), dv=KernelBlocks(*dv), dqk=KernelBlocks(*dqk))


# (inputs' dtype, decay form) -> (BT, each kernel's (BK, BV[, warps])), the same on sm_80 and
# sm_90. Chosen with the ahead-of-time compile report (python -m hybrids.kernels --gpu-report):
# the largest tiles that compile without spills on both architectures, at head dims that are
# multiples of 16 and at ragged ones, with and without every optional input. bfloat16 multiplies
# on tensor cores in bfloat16; float16 in TF32 and float32 in IEEE float32 (FMA units), both with
# float32 operands, which take more registers; a scalar decay adds (BT, BT) ratio tiles; a vector
# decay's (BT, BT, BK) ratios need chunks of 16.
_GPU_TILES: dict[tuple[str, int], tuple[int, dict[str, KernelBlocks]]] = {
    ("bfloat16", NO_DECAY): (64, _tiles((64, 32, 8), (64, 64), (32, 64), (32, 32))),
    ("bfloat16", SCALAR_DECAY): (64, _tiles((32, 32), (64, 64), (32, 32), (32, 32))),
    ("float16", NO_DECAY): (64, _tiles((64, 32, 8), (64, 64), (32, 64), (32, 32))),
    ("float16", SCALAR_DECAY): (32, _tiles((32, 32), (64, 64), (32, 64), (32, 32))),
    ("float32", NO_DECAY): (32, _tiles((32, 16), (64, 64), (32, 64), (32, 32))),
    ("float32", SCALAR_DECAY): (32, _tiles((32, 16), (32, 64), (32, 64), (32, 32))),
}
_GPU_VECTOR_TILES = (16, _tiles((64, 32, 8), (32, 64), (32, 64), (32, 64)))  # every dtype


def _gpu_tiles(mode: int, dtype: torch.dtype) -> tuple[int, dict[str, KernelBlocks]]:
    """(BT, each kernel's tiling) on a GPU for the decay form and the inputs' dtype (the tables
    above); :func:`linear_config` caps the blocks at the head dims."""
    if mode == VECTOR_DECAY:
        return _GPU_VECTOR_TILES
    return _GPU_TILES[(str(dtype).removeprefix("torch."), mode)]


def linear_config(
    dk: int,
    dv: int,
    mode: int,
    dtype: torch.dtype,
    capability: int | None,
    chunk_size: int | None = None,
    block_k: int | None = None,
    block_v: int | None = None,
    num_warps: int | None = None,
) -> LinearConfig:
    """The launch configuration for key / value head dims ``dk, dv`` and decay form ``mode`` on a
    GPU of ``capability`` (None: Triton's interpreter, where the cost is per operation, nearly
    whatever the tile size: one block of keys and values, the smallest chunk). The keyword
    overrides (powers of two of at least 16) apply to every kernel; they are for tests and tuning."""
    full_k = max(16, triton.next_power_of_2(dk))
    full_v = max(16, triton.next_power_of_2(dv))
    if capability is None:
        bt, tiles = 16, {name: KernelBlocks(full_k, full_v, 1) for name in ("forward", "dstate", "dv", "dqk")}
    else:
        bt, tiles = _gpu_tiles(mode, dtype)
        tiles = {
            name: dataclasses.replace(blocks, block_k=min(blocks.block_k, full_k), block_v=min(blocks.block_v, full_v))
            for name, blocks in tiles.items()
        }
    bt = _power_of_two("chunk_size", chunk_size) if chunk_size is not None else bt
    override = {}
    if block_k is not None:
        override["block_k"] = _power_of_two("block_k", block_k)
    if block_v is not None:
        override["block_v"] = _power_of_two("block_v", block_v)
    if num_warps is not None:
        override["num_warps"] = _power_of_two("num_warps", num_warps, least=1)
    tiles = {name: dataclasses.replace(blocks, **override) for name, blocks in tiles.items()}
    # bfloat16 has float32's range, so the state and the scores can be rounded to it for tl.dot;
    # float16's largest value is 65504, which a state summed over a long sequence passes.
    return LinearConfig(bt, **tiles, precision="ieee" if dtype == torch.float32 else "tf32",
                        half_dots=dtype == torch.bfloat16)  # fmt: skip


def _decay_mode(g: torch.Tensor | None) -> int:
    return NO_DECAY if g is None else (SCALAR_DECAY if g.ndim == 3 else VECTOR_DECAY)


def _common(config: LinearConfig, blocks: KernelBlocks) -> dict:
    return dict(BT=config.chunk, BK=blocks.block_k, BV=blocks.block_v, PRECISION=config.precision,
                HALF_DOTS=config.half_dots)  # fmt: skip


def forward_launch(q, k, v, g, h0, o, last, states, scale: float, config: LinearConfig) -> TritonLaunch:
    """The forward kernel's launch over contiguous q, k (batch, heads, L, K), v (batch, heads, L,
    V), float32 g (batch, heads, L[, K]) or None, float32 h0 (batch, heads, K, V) or None. It
    writes ``o``: (key blocks, batch, heads, L, V), in q's dtype when there is one key block,
    float32 shares otherwise; ``last`` (batch, heads, K, V) float32; and ``states`` (batch *
    heads, n_chunks + 1, K, V) float32 when that has chunks (a backward follows)."""
    batch, heads, length, dk = q.shape
    dv = v.shape[-1]
    blocks = config.forward
    return TritonLaunch(
        _la_fwd_kernel,
        grid=(batch * heads, triton.cdiv(dv, blocks.block_v), triton.cdiv(dk, blocks.block_k)),
        args=(
            q, k, v, g if g is not None else q, h0 if h0 is not None else last, o, last, states,
            batch * heads, length, dk, dv, triton.cdiv(length, config.chunk), scale,
        ),
        constexprs=dict(G_MODE=_decay_mode(g), HAS_H0=h0 is not None, STORE_STATES=states.shape[1] > 0,
                        **_common(config, blocks)),
        num_warps=blocks.num_warps,
        num_stages=blocks.num_stages,
    )  # fmt: skip


def backward_launches(
    q, k, v, g, do, dlast, states, dstates, dq, dk, dv, dg, dh0, scale: float, config: LinearConfig
) -> list[TritonLaunch]:
    """The backward's three launches, to run in order: the state gradients ``dstates`` (batch *
    heads, n_chunks, K, V) float32 (and ``dh0`` (batch, heads, K, V) float32 if not None), then
    ``dv`` (batch, heads, L, V) in v's dtype, then ``dq, dk`` (batch, heads, L, K) in q's dtype and
    ``dg``: (batch, heads, L, K) float32 for a vector decay, (key blocks, batch, heads, L) float32
    shares for a scalar one."""
    batch, heads, length, dk_ = q.shape
    dv_ = v.shape[-1]
    n_chunks = dstates.shape[1]
    mode = _decay_mode(g)
    gg = g if g is not None else q
    bh = batch * heads
    dstate = TritonLaunch(
        _la_bwd_dstate_kernel,
        grid=(bh, triton.cdiv(dv_, config.dstate.block_v), triton.cdiv(dk_, config.dstate.block_k)),
        args=(q, gg, do, dlast if dlast is not None else dstates, dstates, dh0 if dh0 is not None else dstates,
              length, dk_, dv_, n_chunks, scale),
        constexprs=dict(G_MODE=mode, HAS_DLAST=dlast is not None, HAS_DH0=dh0 is not None,
                        **_common(config, config.dstate)),
        num_warps=config.dstate.num_warps,
        num_stages=config.dstate.num_stages,
    )  # fmt: skip
    dv_launch = TritonLaunch(
        _la_bwd_dv_kernel,
        grid=(bh * n_chunks, triton.cdiv(dv_, config.dv.block_v)),
        args=(q, k, gg, do, dstates, dv, length, dk_, dv_, n_chunks, scale),
        constexprs=dict(G_MODE=mode, **_common(config, config.dv)),
        num_warps=config.dv.num_warps,
        num_stages=config.dv.num_stages,
    )  # fmt: skip
    dqk = TritonLaunch(
        _la_bwd_dqk_kernel,
        grid=(bh * n_chunks, triton.cdiv(dk_, config.dqk.block_k)),
        args=(q, k, v, gg, do, states, dstates, dq, dk, dg if dg is not None else dq, bh, length, dk_, dv_, n_chunks, scale),
        constexprs=dict(G_MODE=mode, **_common(config, config.dqk)),
        num_warps=config.dqk.num_warps,
        num_stages=config.dqk.num_stages,
    )  # fmt: skip
    return [dstate, dv_launch, dqk]


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
        n_chunks = triton.cdiv(length, config.chunk)
        n_k = triton.cdiv(dk, config.forward.block_k)
        # With several key blocks each writes a float32 share of o, added up here.
        o = torch.empty(n_k, batch, heads, length, dv, dtype=q.dtype if n_k == 1 else torch.float32, device=q.device)
        last = torch.empty(batch, heads, dk, dv, dtype=torch.float32, device=q.device)
        states = torch.empty(batch * heads, n_chunks + 1 if save else 0, dk, dv, dtype=torch.float32, device=q.device)
        forward_launch(q, k, v, g, h0, o, last, states, scale, config).run()
        o = o[0] if n_k == 1 else o.sum(0).to(q.dtype)
        ctx.set_materialize_grads(False)
        if save:
            ctx.save_for_backward(q, k, v, g, states)
            ctx.scale, ctx.config = scale, config
        return o, last

    @staticmethod
    @once_differentiable
    def backward(ctx, do, dlast):
        q, k, v, g, states = ctx.saved_tensors
        config = ctx.config
        batch, heads, length, dk = q.shape
        dv = v.shape[-1]
        f32 = dict(dtype=torch.float32, device=q.device)
        do = torch.zeros_like(v) if do is None else do.contiguous()
        dlast = dlast.contiguous() if dlast is not None else None
        dstates = torch.empty(batch * heads, states.shape[1] - 1, dk, dv, **f32)
        dh0 = torch.empty(batch, heads, dk, dv, **f32) if ctx.needs_input_grad[4] else None
        dq, dk_, dv_ = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        dg = None
        if g is not None:  # a scalar decay's dg: one float32 share per key block, added up below
            dg = torch.empty(g.shape if g.ndim == 4 else (triton.cdiv(dk, config.dqk.block_k), *g.shape), **f32)
        for launch in backward_launches(q, k, v, g, do, dlast, states, dstates, dq, dk_, dv_, dg, dh0, ctx.scale, config):
            launch.run()
        if dg is not None and g.ndim == 3:
            dg = dg.sum(0)
        return dq, dk_, dv_, dg, dh0, None, None, None


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
    block_k: int | None = None,
    block_v: int | None = None,
    num_warps: int | None = None,
    capability: int | None = None,
):
    """Linear attention (see :mod:`hybrids.kernels.linear`) with Triton kernels: ``o`` (batch,
    heads, L, V) in q's dtype, and the float32 final state (batch, heads, K, V) if
    ``output_final_state``.

    The keyword-only ``chunk_size`` (BT), ``block_k`` (BK) and ``block_v`` (BV), powers of two of
    at least 16, and ``num_warps`` override the launch defaults of every kernel (for tests and
    tuning). ``capability`` (80, 90, ...) takes the launch table of that GPU instead of the
    device's (so that the interpreter tests run the tiles a GPU would).
    """
    check_linear_attention_arguments(q, k, v, g, scale, initial_state)
    _check_runnable(q)
    batch, heads, length, dk = q.shape
    scale = resolve_scale(scale, dk)
    if capability is None:
        capability = cuda_capability(q.device)
    config = linear_config(dk, v.shape[-1], _decay_mode(g), q.dtype, capability, chunk_size, block_k, block_v, num_warps)
    dv = v.shape[-1]
    check_int32_offsets(
        "linear_attention_triton", max(length * max(dk, dv), (triton.cdiv(length, config.chunk) + 1) * dk * dv),
        "run the sequence in pieces (initial_state= and output_final_state=) or use backend='chunk'",
    )
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
