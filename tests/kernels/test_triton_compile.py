"""Every Triton kernel compiles for the A100 (sm_80) and the H100 (sm_90), without a GPU.

Triton's interpreter (the numerics tests) runs kernels as Python: it reads plain Python globals
and never allocates registers or shared memory, so a kernel can pass every interpreter test and
fail on the first GPU it meets. Here each configuration the launchers choose on a GPU
(:func:`hybrids.kernels.gpu_report.cases`: every entry kernel, dtype, constexpr branch and the
block sizes for the mixers' shapes) is compiled ahead of time to a cubin with Triton's bundled
ptxas, and must

- compile (no error in the front end, the MLIR passes, LLVM or ptxas);
- need no more shared memory per block than the architecture allows (A100 166,912 B, H100
  232,448 B): above it the launch fails with "out of resource: shared memory";
- not spill registers to local memory (ptxas' own ``-v`` log).

The distinct specialisations are compiled once, in one process per core sharing one fresh
Triton cache (module fixture). A kernel added to a Triton module without cases fails
``test_every_triton_kernel_has_cases``.

Two sizes of the check. ``make test`` compiles every entry kernel once per program it can be
(:func:`branch`: architecture, dtype and every constexpr but the tile sizes) at the op's largest
size (:func:`smoke_cases`, 132 cases, about a minute). ``--kernel-matrix full`` (``make
kernel-matrix``; CI runs it after ``make test``) compiles all of
:func:`hybrids.kernels.gpu_report.cases`: every dtype, tile size and aligned or ragged shape (792
cases, 392 distinct compilations, about 2.5 minutes on a quiet 2-core machine).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import os
import pkgutil
import platform
import re

import pytest

if platform.system() == "Linux" and platform.machine() in ("x86_64", "aarch64"):
    import triton  # a dependency there: its absence is a failure, not a skip
    import triton.language as tl
else:
    triton = pytest.importorskip("triton")
    tl = pytest.importorskip("triton.language")

from triton.runtime.jit import JITFunction  # noqa: E402

import hybrids.kernels  # noqa: E402
from hybrids.kernels import gpu_report  # noqa: E402
from hybrids.kernels.aot import SM80, SM90, CompiledStats, compile_launch, parse_ptxas_log  # noqa: E402
from hybrids.kernels.triton_launch import TritonLaunch  # noqa: E402

CASES = gpu_report.cases()


# The launch's tile sizes: chosen by the launchers from the dtype and size, not branches of the code.
_TILE_CONSTEXPR = re.compile(r"^(BT|BK|BV|BLOCK_\w+)$")


@functools.cache  # collection, the fixture and the coverage test all ask for the same cases
def branch(case: gpu_report.KernelCase) -> tuple:
    """What makes a different program of a kernel, tile sizes aside: the architecture, the dtype
    and every other constexpr of the launch (the scan's HAS_D, HAS_Z, SOFTPLUS, STORE_STATES ...;
    linear attention's G_MODE, and PRECISION and HALF_DOTS, which follow the dtype)."""
    constexprs = gpu_report.build_launch(case).constexprs
    return (case.kernel, case.arch, case.dtype,
            tuple(sorted((k, v) for k, v in constexprs.items() if not _TILE_CONSTEXPR.match(k))))


def smoke_cases(cases: list[gpu_report.KernelCase]) -> list[gpu_report.KernelCase]:
    """One case per :func:`branch`: the op's largest size (the largest tiles the launchers choose
    for that dtype), aligned shapes first."""
    chosen: dict[tuple, gpu_report.KernelCase] = {}
    for case in sorted(cases, key=lambda c: (-c.size, c.shape != "aligned")):
        chosen.setdefault(branch(case), case)
    kept = set(chosen.values())
    return [c for c in cases if c in kept]


def selected_cases(config: pytest.Config) -> list[gpu_report.KernelCase]:
    return CASES if config.getoption("--kernel-matrix") == "full" else smoke_cases(CASES)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.name == "test_compiles_fits_in_shared_memory_and_does_not_spill":
        metafunc.parametrize("case", selected_cases(metafunc.config), ids=lambda c: c.id)


@pytest.fixture(scope="module")
def compiled(request, tmp_path_factory):
    """Every selected case compiled once per session (shared by the workers of a pytest-xdist
    run through the session's temporary folder, like the interpreter tests' results)."""
    from filelock import FileLock  # a dependency of torch

    selected = selected_cases(request.config)
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    cache = root / f"triton_compile_cases_{request.config.getoption('--kernel-matrix')}.json"
    with FileLock(str(cache) + ".lock"):
        if not cache.exists():
            results = gpu_report.compile_cases(selected)
            cache.write_text(json.dumps({case.id: dataclasses.asdict(stats) for case, stats in results.items()}))
        saved = json.loads(cache.read_text())
    return {case: CompiledStats(**saved[case.id]) for case in selected}


def test_the_smoke_matrix_covers_every_kernel_branch_on_both_architectures():
    smoke = smoke_cases(CASES)
    assert {branch(c) for c in smoke} == {branch(c) for c in CASES}
    assert len(smoke) == len({branch(c) for c in CASES}), "one case per branch"
    # Every dtype of every kernel on both architectures, and linear attention's decays.
    assert {(c.kernel, c.arch, c.dtype, c.variant, c.decay) for c in smoke} == \
        {(c.kernel, c.arch, c.dtype, c.variant, c.decay) for c in CASES}


def test_compiles_fits_in_shared_memory_and_does_not_spill(case, compiled):
    stats = compiled[case]
    problems = stats.problems(case.arch_spec)
    assert not problems, f"{case.id}: " + "; ".join(problems)
    assert stats.registers > 0 and stats.blocks_per_sm >= 1, stats


def _jit_functions(module) -> dict[str, JITFunction]:
    return {name: obj for name, obj in vars(module).items() if isinstance(obj, JITFunction) and obj.__module__ == module.__name__}


def test_every_triton_kernel_has_cases():
    """Every @triton.jit function of the project lives in a module the report knows, and is
    either an entry kernel with compile cases on both architectures or a helper that one calls."""
    found = {}
    for info in pkgutil.walk_packages(hybrids.kernels.__path__, "hybrids.kernels."):
        module = importlib.import_module(info.name)
        if _jit_functions(module):
            found[info.name] = _jit_functions(module)
    assert set(found) == set(gpu_report.TRITON_MODULES), (
        f"modules with Triton kernels {sorted(found)}; the report covers {gpu_report.TRITON_MODULES}"
    )
    covered = {(case.kernel, case.arch) for case in CASES}
    entries = {name for functions in found.values() for name in functions if name.endswith("_kernel")}
    for name in entries:
        for arch in (SM80, SM90):
            assert (name, arch.name) in covered, f"{name} has no compile case for {arch.gpu}"
    for module, functions in found.items():
        for name in set(functions) - entries:
            users = [other for other, fn in functions.items() if other != name and re.search(rf"\b{name}\b", fn.src)]
            assert users, f"{module}.{name}: neither an entry kernel (named *_kernel) nor used by one"


def test_ptxas_log_is_read():
    log = (
        "ptxas info    : 0 bytes gmem\n"
        "ptxas info    : Compiling entry function '_k' for 'sm_90a'\n"
        "ptxas info    : Function properties for _k\n"
        "    12456 bytes stack frame, 17508 bytes spill stores, 22284 bytes spill loads\n"
        "ptxas info    : Used 255 registers, used 1 barriers, 12456 bytes cumulative stack size\n"
    )
    assert parse_ptxas_log(log) == (255, 12456, 17508, 22284)
    with pytest.raises(ValueError, match="no resource usage"):
        parse_ptxas_log("ptxas fatal")


def test_occupancy_arithmetic():
    # 128 registers x 128 threads: 4 warps of 4,096 registers; 65,536 / 16,384 = 4 blocks.
    assert SM90.blocks_per_sm(128, 0, 4) == (4, "registers")
    # 40 registers: 1,280 a warp, 5,120 a block, 12 blocks in 65,536 (the threads would allow 16).
    assert SM80.blocks_per_sm(40, 0, 4) == (12, "registers")
    assert SM80.blocks_per_sm(32, 0, 4)[0] == 16
    # 100 KB of shared memory: one block on an A100 (167,936 B per SM), two on an H100.
    assert SM80.blocks_per_sm(32, 100_000, 4) == (1, "shared")
    assert SM90.blocks_per_sm(32, 100_000, 4) == (2, "shared")


def test_problems_name_shared_memory_and_spills():
    common = dict(kernel="k", arch="sm80", num_warps=4, num_stages=1, maxnreg=None, registers=255, stack=0,
                  blocks_per_sm=1, limited_by="registers")  # fmt: skip
    fine = CompiledStats(**common, spill_stores=0, spill_loads=0, shared=166_912)
    assert fine.problems(SM80) == []
    too_big = CompiledStats(**common, spill_stores=0, spill_loads=0, shared=212_992)
    assert "above A100's 166,912 B per block" in too_big.problems(SM80)[0]
    assert too_big.problems(SM90) == []  # the H100 holds it
    spilling = CompiledStats(**common, spill_stores=8, spill_loads=8, shared=0)
    assert "spills registers" in spilling.problems(SM90)[0]


PLAIN_GLOBAL = 2.0  # a Python float: the interpreter reads it, the compiler refuses it


@triton.jit
def _reads_a_plain_global(x_ptr):
    tl.store(x_ptr, tl.load(x_ptr) * PLAIN_GLOBAL)


@triton.jit
def _spills(x_ptr, N: tl.constexpr):
    # (N, N) float32 live across a loop of data-dependent updates: far more than 255 registers.
    offs = tl.arange(0, N)
    acc = tl.load(x_ptr + offs[:, None] * N + offs[None, :])
    for i in range(4):
        acc = acc * tl.load(x_ptr + i) + tl.trans(acc)
    tl.store(x_ptr + offs[:, None] * N + offs[None, :], acc)


def test_the_checks_catch_what_the_interpreter_does_not(tmp_path, monkeypatch):
    """The two failures this test exists for, caught on purpose: a kernel that reads a plain
    Python global (the selective scan's LOG2E did) does not compile; a tile too large for
    registers spills."""
    import torch

    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))
    x = torch.empty(128 * 128)
    error = compile_launch(TritonLaunch(_reads_a_plain_global, (1,), (x,)), SM90)
    assert error.error is not None and "PLAIN_GLOBAL" in error.error, error
    spilled = compile_launch(TritonLaunch(_spills, (1,), (x,), dict(N=128), num_warps=1), SM80)
    assert spilled.error is None and spilled.spills, spilled
    assert "spills registers" in spilled.problems(SM80)[0]


class _FakeKernel:
    """Stands in for a @triton.jit function: records launches; its warm-up reports spills."""

    def __init__(self, spills: int):
        self.fn = type("fn", (), {"__name__": "_fake_kernel"})
        self.spills, self.warmups, self.launches = spills, [], []

    def warmup(self, *args, grid, **options):
        self.warmups.append(options)
        return type("compiled", (), {"n_spills": self.spills, "_init_handles": lambda self: None})()

    def __getitem__(self, grid):
        return lambda *args, **options: self.launches.append((grid, options))


def test_a_launch_that_spills_is_compiled_again_with_every_register(monkeypatch):
    """On a GPU, TritonLaunch.run keeps ptxas' register choice unless the loaded kernel has local
    memory (spills); then it launches with maxnreg=255, as the compile check assumes."""
    from hybrids.kernels.triton_launch import NO_SPILL_MAXNREG

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    for spills, expected in ((0, None), (8, NO_SPILL_MAXNREG)):
        kernel = _FakeKernel(spills)
        TritonLaunch(kernel, (3, 2), (1, 2), dict(B=4), num_warps=8).run()
        assert kernel.warmups == [dict(B=4, num_warps=8, num_stages=1)]
        [(grid, options)] = kernel.launches
        assert grid == (3, 2) and options.get("maxnreg") == expected and options["num_warps"] == 8
    empty = _FakeKernel(0)
    TritonLaunch(empty, (0, 2), ()).run()
    assert empty.launches == [] and empty.warmups == []
    with pytest.raises(ValueError, match="exceeds CUDA's 65,535 programs"):
        TritonLaunch(_FakeKernel(0), (1, 70_000), ()).run()


def test_offsets_past_int32_are_refused():
    import torch

    from hybrids.kernels.triton_launch import check_int32_offsets, sequence_extent

    assert sequence_extent(torch.empty(3, 4, 5)) == 3 * 5 + 4
    assert sequence_extent(torch.empty(3, 5, 4).transpose(1, 2)) == 3 * 1 + 4 * 4
    check_int32_offsets("op", 2**31 - 1, "remedy")
    with pytest.raises(ValueError, match=r"^op: offsets within one sequence reach 2,147,483,648 elements.*; remedy"):
        check_int32_offsets("op", 2**31, "remedy")
