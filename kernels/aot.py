"""Ahead-of-time compilation of a Triton launch for a GPU that is not there, and what it costs.

Triton ships ``ptxas``: a kernel compiles to a cubin for any NVIDIA architecture on a machine
without a GPU. :func:`compile_launch` takes a :class:`~hybrids.kernels.triton_launch.TritonLaunch`
built from CPU tensors, specialises it exactly as Triton's JIT would at launch (pointer dtypes
and 16-byte alignment, integer arguments equal to 1 or divisible by 16), compiles it for an
:class:`Arch` and reads back what decides whether and how well it runs:

- the shared memory one block needs (Triton's metadata), against the architecture's per-block
  limit: above it the launch fails with "out of resource: shared memory";
- registers per thread, and spill stores / loads and stack frame from ptxas' own ``-v`` log: a
  spill moves registers through local memory, which a memory-bound kernel pays for several times
  (a configuration that spills at ptxas' own register choice is compiled again with all 255
  registers allowed, as the launch on a GPU does, see
  :class:`~hybrids.kernels.triton_launch.TritonLaunch`);
- how many blocks of it fit on one SM at once (registers, shared memory, threads, the block cap).

Nothing is launched. The interpreter (``TRITON_INTERPRET=1``) checks numerics; this checks the
compiler. ``python -m hybrids.kernels --gpu-report`` prints the table for every kernel
(:mod:`hybrids.kernels.gpu_report`), and ``tests/kernels/test_triton_compile.py`` enforces the limits.
"""

from __future__ import annotations

import contextlib
import io
import re
from dataclasses import dataclass

from hybrids.kernels.triton_launch import NO_SPILL_MAXNREG, TritonLaunch


@dataclass(frozen=True)
class Arch:
    """An NVIDIA GPU architecture: its limits per block and per SM, and its memory bandwidth.

    ``shared_per_block`` is the most dynamic shared memory one block may opt into
    (cudaDevAttrMaxSharedMemoryPerBlockOptin); ``shared_per_sm`` what an SM holds in all (each
    resident block also reserves 1 KiB for the system).
    """

    name: str  # "sm80"
    gpu: str  # "A100"
    capability: int  # 80
    shared_per_block: int  # bytes
    shared_per_sm: int  # bytes
    registers_per_sm: int = 65536
    max_registers_per_thread: int = 255
    max_threads_per_sm: int = 2048
    max_blocks_per_sm: int = 32
    sms: int = 108
    bandwidth: float = 2.0e12  # bytes / s of HBM

    def blocks_per_sm(self, registers: int, shared: int, num_warps: int) -> tuple[int, str]:
        """(resident blocks per SM, the resource that limits them) for a kernel that uses
        ``registers`` per thread and ``shared`` bytes per block, with ``num_warps`` warps.

        Registers are allocated per warp in units of 256; shared memory in units of 128 bytes
        plus 1 KiB reserved per block.
        """
        per_warp = -(-max(registers, 1) * 32 // 256) * 256
        by_registers = (self.registers_per_sm // per_warp) // num_warps
        by_threads = self.max_threads_per_sm // (32 * num_warps)
        by_shared = self.max_blocks_per_sm
        if shared:
            by_shared = self.shared_per_sm // (-(-shared // 128) * 128 + 1024)
        limits = {"registers": by_registers, "shared": by_shared, "threads": by_threads, "blocks": self.max_blocks_per_sm}
        limiter = min(limits, key=limits.get)
        return limits[limiter], limiter


# The two GPUs of the project's targets. Limits: CUDA C++ Programming Guide, "Technical
# Specifications per Compute Capability"; bandwidths: NVIDIA's A100 80GB SXM and H100 SXM sheets.
SM80 = Arch("sm80", "A100", 80, shared_per_block=166_912, shared_per_sm=167_936, sms=108, bandwidth=2.0e12)
SM90 = Arch("sm90", "H100", 90, shared_per_block=232_448, shared_per_sm=233_472, sms=132, bandwidth=3.35e12)
ARCHS = (SM80, SM90)


@dataclass(frozen=True)
class CompiledStats:
    """What one kernel configuration costs on one architecture (see the module docstring)."""

    kernel: str
    arch: str
    num_warps: int
    num_stages: int
    maxnreg: int | None  # None: ptxas' own register choice; else the cap it was compiled again with
    registers: int
    spill_stores: int  # bytes
    spill_loads: int  # bytes
    stack: int  # bytes of stack frame per thread
    shared: int  # bytes per block
    blocks_per_sm: int
    limited_by: str
    error: str | None = None

    @property
    def spills(self) -> bool:
        return self.spill_stores > 0 or self.spill_loads > 0

    def problems(self, arch: Arch) -> list[str]:
        """What would stop or slow this configuration on ``arch``: empty when it is fine."""
        if self.error is not None:
            return [f"does not compile: {self.error}"]
        found = []
        if self.shared > arch.shared_per_block:
            found.append(f"needs {self.shared:,} B of shared memory, above {arch.gpu}'s {arch.shared_per_block:,} B per block")
        if self.spills:
            found.append(f"spills registers: {self.spill_stores:,} B stored, {self.spill_loads:,} B loaded ({self.registers} registers)")
        return found


_PTXAS_ENTRY = re.compile(r"Compiling entry function '(\w+)'")
_PTXAS_SPILLS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_PTXAS_REGISTERS = re.compile(r"Used (\d+) registers")


def parse_ptxas_log(log: str) -> tuple[int, int, int, int]:
    """(registers, stack frame, spill stores, spill loads) from the ``ptxas -v`` output of one
    entry kernel: its registers, and the stack and spills of every function in it (a function
    ptxas did not inline reports its own)."""
    entry = _PTXAS_ENTRY.search(log)
    body = log[entry.end():] if entry else log
    registers = _PTXAS_REGISTERS.search(body)
    spills = _PTXAS_SPILLS.findall(body)
    if registers is None or not spills:
        raise ValueError(f"no resource usage in the ptxas log:\n{log}")
    stack = max(int(s[0]) for s in spills)
    return int(registers.group(1)), stack, sum(int(s[1]) for s in spills), sum(int(s[2]) for s in spills)


def _specialise(launch: TritonLaunch, backend, maxnreg: int | None = None):
    """Triton's own argument binding and specialisation for ``launch`` on ``backend``:
    (signature, constexprs, attributes, options) exactly as ``kernel[grid](...)`` would build."""
    from triton.runtime.jit import create_function_from_signature

    fn = launch.kernel
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    kwargs = dict(launch.constexprs, **launch.options(maxnreg))
    bound, specialization, options = binder(*launch.args, **kwargs)
    return fn._pack_args(backend, kwargs, bound, specialization, options)


def _compile_once(launch: TritonLaunch, arch: Arch, maxnreg: int | None) -> CompiledStats:
    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend

    target = GPUTarget("cuda", arch.capability, 32)
    backend = make_backend(target)
    empty = dict(registers=0, spill_stores=0, spill_loads=0, stack=0, shared=0, blocks_per_sm=0, limited_by="-")
    common = dict(kernel=launch.name, arch=arch.name, num_warps=launch.num_warps, num_stages=launch.num_stages,
                  maxnreg=maxnreg)  # fmt: skip
    log = io.StringIO()
    try:
        options, signature, constexprs, attrs = _specialise(launch, backend, maxnreg)
        source = ASTSource(launch.kernel, signature, constexprs, attrs)
        with knobs.nvidia.scope(), contextlib.redirect_stdout(log):
            knobs.nvidia.dump_ptxas_log = True
            compiled = triton.compile(source, target=target, options=options.__dict__)
    except Exception as error:  # noqa: BLE001 - reported, with the kernel and arch, by the caller
        message = " ".join(str(error).split())
        # Triton puts the source around the error first and the cause last: keep the end.
        message = message if len(message) <= 600 else "... " + message[-600:]
        return CompiledStats(**common, **empty, error=f"{type(error).__name__}: {message}")
    registers, stack, stores, loads = parse_ptxas_log(log.getvalue())
    shared = int(compiled.metadata.shared)
    blocks, limiter = arch.blocks_per_sm(registers, shared, launch.num_warps)
    return CompiledStats(
        **common, registers=registers, spill_stores=stores, spill_loads=loads, stack=stack,
        shared=shared, blocks_per_sm=blocks, limited_by=limiter,
    )  # fmt: skip


def compile_launch(launch: TritonLaunch, arch: Arch) -> CompiledStats:
    """Compile ``launch`` for ``arch`` (no GPU needed) and read its resource usage, as
    :meth:`TritonLaunch.run <hybrids.kernels.triton_launch.TritonLaunch.run>` would launch it:
    with ptxas' own register choice, or, where that spills, again with ``maxnreg`` =
    :data:`~hybrids.kernels.triton_launch.NO_SPILL_MAXNREG` (the stats say which).

    Needs a Triton cache with no entry for this kernel (the ptxas log is only written when ptxas
    runs): callers compile each configuration once, into a fresh ``TRITON_CACHE_DIR``.
    A compile error is returned in ``error``, not raised, so that a report can list every one.
    """
    stats = _compile_once(launch, arch, None)
    if stats.error is None and stats.spills:
        stats = _compile_once(launch, arch, NO_SPILL_MAXNREG)
    return stats
