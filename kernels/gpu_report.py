"""Every Triton kernel of the project, compiled ahead of time for the A100 (sm_80) and the H100
(sm_90) in every configuration its launchers choose on a GPU; and what each moves through memory.

``python -m hybrids.kernels --gpu-report`` prints three tables:

1. per kernel and architecture, the range over its configurations (registers, spills, shared
   memory, blocks per SM) and how many have a problem;
2. per kernel, configuration and architecture: registers per thread, spilled bytes, shared
   memory per block, and the blocks per SM those allow (with the limiting resource);
3. per kernel, at a reference shape: the bytes it reads and writes, and the time the memory
   bandwidth alone would take on each GPU (the floor a GPU run is measured against).

It exits with status 1 if any configuration has a problem (a compile error, shared memory
above the per-block limit, or spills).

The cases (:func:`cases`) are the single list that ``tests/kernels/test_triton_compile.py`` enforces:
every entry kernel has cases (a kernel added without any fails a guard), and every case must
compile, fit the architecture's shared memory per block and not spill. A case is built the
way the op's wrapper builds its launch (:func:`build_launch` calls the same ``*_launch``
functions with CPU tensors of the right dtypes and strides), so the compile sees what a GPU
launch would. Configurations whose compiled kernels would be identical (same specialisation)
are compiled once.

Coverage, per architecture, each at an ``aligned`` shape (L 4096, head dims as given: every
integer argument a multiple of 16) and a ``ragged`` one (L 4095; for linear attention K one less
and V one more than the head dim), because Triton specialises a kernel on which integers divide
by 16:

- ``_scan_fwd_kernel`` / ``_scan_bwd_kernel``: float32, bfloat16 and float16 activations
  (float32 A, D and delta_bias, as the Mamba mixer passes them) at d_state 16, 64 and 128; each
  constexpr branch on and off: ``gated`` (D, z, delta_bias, softplus; the Mamba mixer's strided
  layout of delta, z, B, C and the output's gradient; states stored, no last-state gradient:
  training) and ``plain`` (none of them, contiguous; an initial state; no states stored / a
  last-state gradient and an initial-state gradient).
- ``_la_fwd_kernel`` and the three backward kernels ``_la_bwd_dstate_kernel``,
  ``_la_bwd_dv_kernel``, ``_la_bwd_dqk_kernel``: the three dtypes, head dims 64, 128 and 256, each
  decay form (none, scalar, vector); the forward and the state-gradient kernel also as ``train``
  (no initial state, states stored / no final-state gradient) and ``state`` (an initial state,
  none stored / final-state and initial-state gradients).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import torch

from hybrids.kernels.aot import ARCHS, Arch, CompiledStats, compile_launch
from hybrids.kernels.triton_launch import TritonLaunch

DTYPES = ("float32", "bfloat16", "float16")
SCAN_STATES = (16, 64, 128)
HEAD_DIMS = (64, 128, 256)
DECAYS = ("none", "scalar", "vector")
# Triton specialises an integer argument on whether it is divisible by 16 (and a pointer on
# 16-byte alignment), so each configuration is compiled at shapes of both kinds: "aligned" (L
# 4096, head dims as given) and "ragged" (L 4095; for linear attention K one less and V one more
# than the head dim, as a normalised feature map's value column makes it).
SHAPES = ("aligned", "ragged")

# The modules whose @triton.jit kernels the cases cover (the guard in the test reads them).
TRITON_MODULES = ("hybrids.kernels.scan.triton_kernels", "hybrids.kernels.linear.triton_kernels")
SCAN_KERNELS = ("_scan_fwd_kernel", "_scan_bwd_kernel")
LINEAR_KERNELS = ("_la_fwd_kernel", "_la_bwd_dstate_kernel", "_la_bwd_dv_kernel", "_la_bwd_dqk_kernel")
# Kernels whose constexpr flags differ between the two variants (the others have none).
_LINEAR_WITH_VARIANTS = ("_la_fwd_kernel", "_la_bwd_dstate_kernel")

# Reference shapes of the traffic table: a Mamba layer and a linear-attention layer, in bf16.
SCAN_SHAPE = dict(batch=8, dim=2048, d_state=16, length=4096)
LINEAR_SHAPE = dict(batch=8, heads=16, head_dim=128, length=4096)
# The compile cases need no batch: one sequence at the reference lengths, so that integer
# arguments are specialised as on a GPU (strides of 1, multiples of 16 or not).
_CASE_DIM, _CASE_HEADS, _CASE_LENGTH = 2048, 16, 4096


@dataclass(frozen=True)
class KernelCase:
    """One launch configuration of one kernel on one architecture (picklable: workers rebuild
    the launch from it)."""

    op: str  # "selective_scan" or "linear_attention"
    kernel: str  # the @triton.jit entry kernel's name
    arch: str  # "sm80", "sm90"
    dtype: str
    size: int  # d_state (scan) or head dim (linear attention)
    variant: str  # scan: "gated" / "plain"; linear attention: "train" / "state"
    decay: str = ""  # linear attention: "none", "scalar", "vector"
    shape: str = "aligned"  # or "ragged" (see SHAPES)

    @property
    def id(self) -> str:
        size = f"N{self.size}" if self.op == "selective_scan" else f"K{self.size}"
        parts = [self.kernel.strip("_"), self.arch, self.dtype, size, self.decay, self.variant, self.shape]
        return "-".join(p for p in parts if p)

    @property
    def length(self) -> int:
        return _CASE_LENGTH if self.shape == "aligned" else _CASE_LENGTH - 1

    @property
    def arch_spec(self) -> Arch:
        return next(a for a in ARCHS if a.name == self.arch)


def cases(archs: Sequence[Arch] = ARCHS) -> list[KernelCase]:
    """Every configuration the launchers choose on a GPU, for the shapes the mixers use."""
    found = []
    for arch in archs:
        for dtype in DTYPES:
            for shape in SHAPES:
                for kernel in SCAN_KERNELS:
                    for size in SCAN_STATES:
                        for variant in ("gated", "plain"):
                            found.append(KernelCase("selective_scan", kernel, arch.name, dtype, size, variant, "", shape))
                for kernel in LINEAR_KERNELS:
                    variants = ("train", "state") if kernel in _LINEAR_WITH_VARIANTS else ("train",)
                    for size in HEAD_DIMS:
                        for decay in DECAYS:
                            for variant in variants:
                                found.append(KernelCase(
                                    "linear_attention", kernel, arch.name, dtype, size, variant, decay, shape
                                ))  # fmt: skip
    return found


def _empty(*shape, dtype=torch.float32) -> torch.Tensor:
    # Never touched: a kernel's specialisation needs only dtype, alignment and strides.
    return torch.empty(*shape, dtype=dtype)


_MODES = {"none": 0, "scalar": 1, "vector": 2}  # the kernels' G_MODE


def _mamba_layout(batch: int, dim: int, n: int, length: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The scan's inputs laid out as the Mamba mixer makes them (``hybrids/mixers/mamba.py``):
    u from the causal conv, contiguous; z a half of in_proj's output and delta dt_proj's, both
    transposed (stride 1 along channels); B and C slices of x_proj's output, transposed; the
    output's gradient transposed like z (it comes back through out_proj)."""
    rank = max(1, dim // 32)  # dt_rank = ceil(d_model / 16), d_model = dim / 2
    xz = _empty(batch, length, 2 * dim, dtype=dtype).transpose(1, 2)
    x_dbl = _empty(batch, length, rank + 2 * n, dtype=dtype)
    return dict(
        u=_empty(batch, dim, length, dtype=dtype), z=xz[:, dim:], delta=_empty(batch, length, dim, dtype=dtype).transpose(1, 2),
        B=x_dbl[..., rank : rank + n].transpose(1, 2).unsqueeze(1), C=x_dbl[..., rank + n :].transpose(1, 2).unsqueeze(1),
        dout=_empty(batch, length, dim, dtype=dtype).transpose(1, 2),
    )  # fmt: skip


def _scan_launch(case: KernelCase, batch: int = 1, dim: int = _CASE_DIM) -> TritonLaunch:
    """``gated``: Mamba's call (D, z, delta_bias, softplus; the mixer's strided layout; states
    stored for the backward, no last-state gradient). ``plain``: none of them, contiguous, from
    an initial state (no states stored; a last-state and an initial-state gradient)."""
    from hybrids.kernels.scan import triton_kernels as scan

    dtype = getattr(torch, case.dtype)
    n, length = case.size, case.length
    gated = case.variant == "gated"
    act = lambda *shape: _empty(*shape, dtype=dtype)  # noqa: E731
    if gated:
        x = _mamba_layout(batch, dim, n, length, dtype)
    else:
        x = dict(u=act(batch, dim, length), delta=act(batch, dim, length), z=None, B=act(batch, 1, n, length),
                 C=act(batch, 1, n, length), dout=act(batch, dim, length))  # fmt: skip
    u, delta, z, B, C = x["u"], x["delta"], x["z"], x["B"], x["C"]
    A = _empty(dim, n)
    D = _empty(dim) if gated else None
    bias = _empty(dim) if gated else None
    config = scan.scan_config(n, case.arch_spec.capability)
    if case.kernel == "_scan_fwd_kernel":
        chunks = -(-length // config.block_l) if gated else 0  # states stored for a backward
        h0 = None if gated else _empty(batch, dim, n)
        out, last, states = act(batch, dim, length), _empty(batch, dim, n), _empty(batch, dim, chunks, n)
        return scan.forward_launch(u, delta, A, B, C, D, z, bias, h0, out, last, states, gated, config)
    states = _empty(batch, dim, -(-length // config.block_l), n)
    dlast = None if gated else _empty(batch, dim, n)
    dh0 = None if gated else _empty(batch, dim, n)
    grads = dict(
        du=act(batch, dim, length), ddelta=act(batch, dim, length), dz=act(batch, dim, length) if gated else None,
        dA=_empty(batch, dim, n), dB=_empty(*B.shape), dC=_empty(*C.shape),
        dD=_empty(batch, dim) if gated else None, dbias=_empty(batch, dim) if gated else None, dh0=dh0,
    )  # fmt: skip
    return scan.backward_launch(
        u, delta, A, B, C, D, z, bias, x["dout"], dlast, states, **grads, softplus=gated, config=config
    )


def _linear_launch(case: KernelCase, batch: int = 1, heads: int = _CASE_HEADS) -> TritonLaunch:
    from hybrids.kernels.linear import triton_chunk as la

    dtype = getattr(torch, case.dtype)
    length = case.length
    dk, dv = (case.size, case.size) if case.shape == "aligned" else (case.size - 1, case.size + 1)
    config = la.linear_config(dk, dv, _MODES[case.decay], dtype, case.arch_spec.capability)
    q, k = _empty(batch, heads, length, dk, dtype=dtype), _empty(batch, heads, length, dk, dtype=dtype)
    v = _empty(batch, heads, length, dv, dtype=dtype)
    g = {"none": None, "scalar": _empty(batch, heads, length), "vector": _empty(batch, heads, length, dk)}[case.decay]
    train = case.variant == "train"
    chunks = -(-length // config.chunk)
    if case.kernel == "_la_fwd_kernel":
        n_k = -(-dk // config.forward.block_k)
        o = _empty(n_k, batch, heads, length, dv, dtype=dtype if n_k == 1 else torch.float32)
        states = _empty(batch * heads, chunks + 1 if train else 0, dk, dv)
        h0 = None if train else _empty(batch, heads, dk, dv)
        return la.forward_launch(q, k, v, g, h0, o, _empty(batch, heads, dk, dv), states, dk**-0.5, config)
    dg = None
    if g is not None:
        dg = _empty(*g.shape) if g.ndim == 4 else _empty(-(-dk // config.dqk.block_k), *g.shape)
    dlast = None if train else _empty(batch, heads, dk, dv)
    dh0 = None if train else _empty(batch, heads, dk, dv)
    launches = la.backward_launches(
        q, k, v, g, _empty(batch, heads, length, dv, dtype=dtype), dlast, _empty(batch * heads, chunks + 1, dk, dv),
        _empty(batch * heads, chunks, dk, dv), _empty(*q.shape, dtype=dtype), _empty(*k.shape, dtype=dtype),
        _empty(*v.shape, dtype=dtype), dg, dh0, dk**-0.5, config,
    )  # fmt: skip
    return next(launch for launch in launches if launch.name == case.kernel)


def build_launch(case: KernelCase) -> TritonLaunch:
    """The launch the op's wrapper would make for ``case`` on its architecture."""
    return (_scan_launch if case.op == "selective_scan" else _linear_launch)(case)


def specialisation_key(launch: TritonLaunch, arch: Arch) -> str:
    """A key equal for two launches exactly when Triton would compile the same kernel."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend

    from hybrids.kernels.aot import _specialise

    options, signature, constexprs, attrs = _specialise(launch, make_backend(GPUTarget("cuda", arch.capability, 32)))
    return repr((launch.name, arch.name, sorted(signature.items()), sorted(constexprs.items()), sorted(attrs.items()),
                 sorted(options.__dict__.items())))  # fmt: skip


def _compile_case(case: KernelCase) -> CompiledStats:
    return compile_launch(build_launch(case), case.arch_spec)


def compile_cases(selected: Iterable[KernelCase], workers: int | None = None) -> dict[KernelCase, CompiledStats]:
    """Compile every case (each distinct specialisation once, in ``workers`` processes sharing one
    fresh Triton cache) and return the stats of each case."""
    selected = list(selected)
    by_key: dict[str, KernelCase] = {}
    key_of = {}
    for case in selected:
        key = specialisation_key(build_launch(case), case.arch_spec)
        key_of[case] = key
        by_key.setdefault(key, case)
    workers = workers or min(len(by_key), os.cpu_count() or 1) or 1
    with tempfile.TemporaryDirectory(prefix="hybrids-triton-aot-") as cache:
        saved = os.environ.get("TRITON_CACHE_DIR")
        os.environ["TRITON_CACHE_DIR"] = cache  # inherited by the workers: ptxas runs for each
        try:
            unique = list(by_key.values())
            if workers == 1:
                results = [_compile_case(c) for c in unique]
            else:
                import multiprocessing

                # fork: the workers need no import of their own, and nothing here has touched a
                # GPU or started threads that a fork would break.
                with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
                    results = list(pool.map(_compile_case, unique))
        finally:
            if saved is None:
                os.environ.pop("TRITON_CACHE_DIR", None)
            else:
                os.environ["TRITON_CACHE_DIR"] = saved
    stats = {key_of[c]: r for c, r in zip(unique, results)}
    return {case: stats[key_of[case]] for case in selected}


# --------------------------------------------------------------------------------------------
# memory traffic at the reference shapes


@dataclass(frozen=True)
class Traffic:
    """Bytes one launch reads and writes: ``unique`` counts every tensor once (what HBM must
    move at least); ``issued`` counts each program's loads (re-reads of a tile by programs that
    share it: an upper bound on HBM traffic, the L2 cache may serve them)."""

    kernel: str
    config: str
    unique: int
    issued: int

    def floor_us(self, arch: Arch) -> float:
        return self.unique / arch.bandwidth * 1e6


def scan_traffic(dtype: torch.dtype = torch.bfloat16, capability: int = 90) -> list[Traffic]:
    """The selective scan's kernels at :data:`SCAN_SHAPE` as the Mamba mixer calls them in
    training (D, z, delta_bias, softplus; B and C one group; states stored)."""
    from hybrids.kernels.scan.triton_kernels import scan_config

    b, d, n, length = (SCAN_SHAPE[k] for k in ("batch", "dim", "d_state", "length"))
    config = scan_config(n, capability)
    e = torch.tensor([], dtype=dtype).element_size()
    act, bc = b * d * length * e, b * n * length * e  # one (batch, dim, L) tensor, one of B / C
    chunks = -(-length // config.block_l)
    states = b * d * chunks * n * 4
    params = d * n * 4 + 2 * d * 4  # A; D, delta_bias
    # B and C are read by every block of channels.
    blocks_fwd, blocks_bwd = -(-d // config.block_d), -(-d // config.block_d_bwd)
    fwd_unique = 3 * act + 2 * bc + params + act + states + b * d * n * 4
    fwd_issued = 3 * act + 2 * bc * blocks_fwd + params + act + states + b * d * n * 4
    grads_bc = 2 * b * n * length * 4  # dB, dC float32 (atomic adds from every block)
    partials = b * d * n * 4 + 2 * b * d * 4
    bwd_unique = 4 * act + 2 * bc + params + states + 3 * act + grads_bc + partials
    bwd_issued = 5 * act + 2 * bc * blocks_bwd + params + states + 3 * act + grads_bc * blocks_bwd + partials
    label = f"{str(dtype).removeprefix('torch.')}, batch {b}, dim {d}, d_state {n}, L {length}"
    return [
        Traffic("_scan_fwd_kernel", label, fwd_unique, fwd_issued),
        Traffic("_scan_bwd_kernel", label, bwd_unique, bwd_issued),
    ]


def linear_traffic(decay: str, dtype: torch.dtype = torch.bfloat16, capability: int = 90) -> list[Traffic]:
    """Linear attention's kernels at :data:`LINEAR_SHAPE` in training (states stored, no initial
    state), for one decay form."""
    from hybrids.kernels.linear import triton_chunk as la

    b, h, dh, length = (LINEAR_SHAPE[k] for k in ("batch", "heads", "head_dim", "length"))
    config = la.linear_config(dh, dh, _MODES[decay], dtype, capability)
    e = torch.tensor([], dtype=dtype).element_size()
    bh = b * h
    x = bh * length * dh * e  # one of q, k, v, o, do, dq, dk, dv (K = V)
    g = {"none": 0, "scalar": bh * length * 4, "vector": bh * length * dh * 4}[decay]
    chunks = -(-length // config.chunk)
    state = bh * dh * dh * 4  # one (K, V) float32 state per sequence
    blocks = lambda kb: (-(-dh // kb.block_v), -(-dh // kb.block_k))  # noqa: E731 - (value, key) blocks

    n_v, n_k = blocks(config.forward)
    o = x if n_k == 1 else n_k * bh * length * dh * 4  # float32 shares of o with several key blocks
    g_fwd = g * n_v * (n_k if decay == "scalar" else 1)  # every program reads its chunk's decays
    forward = Traffic(
        "_la_fwd_kernel", "", 3 * x + g + o + (chunks + 2) * state, 2 * x * n_v + x * n_k + g_fwd + o + (chunks + 2) * state
    )
    n_v, n_k = blocks(config.dstate)
    dstate = Traffic("_la_bwd_dstate_kernel", "", x + g + x + chunks * state, x * n_v + g * n_v + x * n_k + chunks * state)
    n_v, _ = blocks(config.dv)
    dv = Traffic("_la_bwd_dv_kernel", "", 2 * x + g + chunks * state + 2 * x, (2 * x + g) * n_v + chunks * state + 2 * x)
    _, n_k = blocks(config.dqk)
    leaving = chunks * state if decay != "none" else 0  # S_leave for dg
    dg = {"none": 0, "scalar": n_k * bh * length * 4, "vector": bh * length * dh * 4}[decay]
    dqk_unique = 2 * x + 2 * chunks * state + leaving + 2 * x + g + 2 * x + dg
    dqk_issued = 2 * x * n_k + 2 * chunks * state + leaving + 2 * x + g + 2 * x + dg
    dqk = Traffic("_la_bwd_dqk_kernel", "", dqk_unique, dqk_issued)
    label = f"{str(dtype).removeprefix('torch.')}, batch {b}, heads {h}, K = V = {dh}, L {length}, {decay} decay"
    return [dataclasses.replace(t, config=label) for t in (forward, dstate, dv, dqk)]


# --------------------------------------------------------------------------------------------
# the report


def _mib(x: int) -> str:
    return f"{x / 2**20:,.0f}"


def compile_table(results: dict[KernelCase, CompiledStats]) -> str:
    lines = [
        "| kernel | arch | dtype | size | decay | variant | shape | warps | regs | spill st/ld (B) | shared (B) | blocks/SM (limit) | problems |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case, s in results.items():
        problems = "; ".join(s.problems(case.arch_spec)) or "-"
        size = f"N {case.size}" if case.op == "selective_scan" else f"K {case.size}"
        lines.append(
            f"| {s.kernel} | {case.arch} | {case.dtype} | {size} | {case.decay or '-'} | {case.variant} | {case.shape} | "
            f"{s.num_warps} | {s.registers}{'*' if s.maxnreg else ''} | {s.spill_stores}/{s.spill_loads} | {s.shared:,} | "
            f"{s.blocks_per_sm} ({s.limited_by}) | {problems} |"
        )
    return "\n".join(lines)


def summary_table(results: dict[KernelCase, CompiledStats]) -> str:
    """Per kernel and architecture, over its configurations: registers, spills, shared memory and
    blocks per SM (ranges), and how many configurations have a problem."""
    groups: dict[tuple[str, str], list[tuple[KernelCase, CompiledStats]]] = {}
    for case, stats in results.items():
        groups.setdefault((stats.kernel, case.arch), []).append((case, stats))
    lines = [
        "| kernel | arch | configurations | registers | spilled bytes (max) | shared B (max) | blocks/SM | all 255 registers allowed | with problems |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (kernel, arch), rows in groups.items():
        ok = [s for _, s in rows if s.error is None]
        regs = [s.registers for s in ok] or [0]
        blocks = [s.blocks_per_sm for s in ok] or [0]
        spill = max((s.spill_stores + s.spill_loads for s in ok), default=0)
        shared = max((s.shared for s in ok), default=0)
        bad = sum(1 for c, s in rows if s.problems(c.arch_spec))
        capped = sum(1 for _, s in rows if s.maxnreg)
        lines.append(
            f"| {kernel} | {arch} | {len(rows)} | {min(regs)}-{max(regs)} | {spill:,} | {shared:,} | "
            f"{min(blocks)}-{max(blocks)} | {capped} | {bad} |"
        )
    return "\n".join(lines)


def traffic_table() -> str:
    rows = scan_traffic() + [t for decay in DECAYS for t in linear_traffic(decay)]
    a100, h100 = ARCHS
    lines = [
        f"| kernel | shape | unique MiB | issued MiB | {a100.gpu} floor (µs) | {h100.gpu} floor (µs) |",
        "|---|---|---|---|---|---|",
    ]
    for t in rows:
        lines.append(
            f"| {t.kernel} | {t.config} | {_mib(t.unique)} | {_mib(t.issued)} | {t.floor_us(a100):,.0f} | {t.floor_us(h100):,.0f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hybrids.kernels --gpu-report",
        description="Compile every Triton kernel configuration for sm_80 and sm_90 (no GPU needed) and "
        "print registers, spills, shared memory and occupancy, then the memory traffic at reference shapes.",
    )
    parser.add_argument("--arch", choices=[a.name for a in ARCHS], action="append", help="default: all")
    parser.add_argument("--workers", type=int, default=None, help="compile processes (default: one per core)")
    parser.add_argument("--traffic-only", action="store_true", help="only the traffic table (no compiling)")
    args = parser.parse_args(argv)
    try:
        import triton  # noqa: F401
    except ImportError:
        print("--gpu-report needs Triton (`pip install triton`, Linux x86_64 or aarch64)", file=sys.stderr)
        return 2
    if not args.traffic_only:
        archs = [a for a in ARCHS if args.arch is None or a.name in args.arch]
        results = compile_cases(cases(archs), workers=args.workers)
        print(summary_table(results))
        print()
        print(compile_table(results))
        print("\nregs with *: ptxas' own register choice spilled, so the launch allows all 255 (TritonLaunch.run).\n")
    print(traffic_table())
    if args.traffic_only:
        return 0
    bad = [c for c, s in results.items() if s.problems(c.arch_spec)]
    if bad:
        print(f"\n{len(bad)} configuration(s) with problems", file=sys.stderr)
    return 1 if bad else 0
