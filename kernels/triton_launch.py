"""One Triton kernel launch as a value: what the op's wrapper runs, and what the ahead-of-time
compile check (:mod:`hybrids.kernels.aot`) compiles for a GPU that is not there.

A Triton op builds its launches with a pure function of its tensors and its launch
configuration (block sizes, warps, pipeline stages), chosen per GPU architecture. The wrapper
calls :meth:`TritonLaunch.run`; the compile check hands the same value, built from CPU tensors of
the same dtypes and strides, to Triton's compiler for sm_80 and sm_90. Both see exactly the
arguments, constexprs and options a GPU would get, so what compiles there is what runs here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

# CUDA allows 2**31 - 1 blocks on a grid's first axis but only 65,535 on the second and third.
MAX_GRID_YZ = 65535
# The register cap a kernel that spills is compiled again with (TritonLaunch).
NO_SPILL_MAXNREG = 255
# Offsets within one sequence (one batch element, or one batch element and head) are int32 in the
# kernels, to spare registers; batch offsets are int64.
INT32_OFFSETS = 2**31


def sequence_extent(x: torch.Tensor) -> int:
    """The largest element offset within one batch element of ``x`` (its dims after the first)."""
    return sum((size - 1) * abs(stride) for size, stride in zip(x.shape[1:], x.stride()[1:]) if size > 0)


def check_int32_offsets(op: str, extent: int, remedy: str) -> None:
    """ValueError if offsets up to ``extent`` elements would overflow the kernels' int32 ones."""
    if extent >= INT32_OFFSETS:
        raise ValueError(
            f"{op}: offsets within one sequence reach {extent:,} elements, past the Triton kernels' 32-bit "
            f"offsets ({INT32_OFFSETS:,}); {remedy}"
        )


@dataclass(frozen=True)
class TritonLaunch:
    """``kernel[grid](*args, **constexprs, num_warps=..., num_stages=...)``, not yet run.

    Attributes:
        kernel: the ``@triton.jit`` entry kernel.
        grid: program counts per axis (the first axis may be large; the others at most 65,535).
        args: the runtime arguments, in the kernel's order (tensors, ints, floats).
        constexprs: the kernel's ``tl.constexpr`` arguments by name.
        num_warps, num_stages: Triton's launch options (stages: copies of a loop's loads kept in
            shared memory by the software pipeliner).

    Registers: ptxas chooses how many a thread uses, and sometimes caps a kernel at an occupancy
    boundary (128 or 168 registers for 4 warps) and spills a few bytes to local memory to get
    there. A kernel that spills is compiled again with ``maxnreg`` = :data:`NO_SPILL_MAXNREG`
    (all 255 registers), which keeps everything in registers at a lower occupancy; one that does
    not keeps ptxas' choice. :meth:`run` does this on the GPU, from the loaded kernel's local
    memory size, and the ahead-of-time check (:func:`hybrids.kernels.aot.compile_launch`) the same
    from ptxas' log.
    """

    kernel: Any
    grid: tuple[int, ...]
    args: tuple
    constexprs: Mapping[str, Any] = field(default_factory=dict)
    num_warps: int = 4
    num_stages: int = 1

    @property
    def name(self) -> str:
        return self.kernel.fn.__name__

    def options(self, maxnreg: int | None = None) -> dict[str, Any]:
        """The launch options, as ``kernel[grid](...)`` takes them."""
        options = dict(num_warps=self.num_warps, num_stages=self.num_stages)
        if maxnreg is not None:
            options["maxnreg"] = maxnreg
        return options

    def run(self) -> None:
        if min(self.grid) == 0:
            return
        if any(n > MAX_GRID_YZ for n in self.grid[1:]):
            raise ValueError(
                f"{self.name}: grid {self.grid} exceeds CUDA's {MAX_GRID_YZ:,} programs on its second or third "
                "axis; split the call (e.g. the batch) into smaller ones"
            )
        maxnreg = None
        if not interpreting():
            # Compiled (or found in Triton's cache) without launching; loading it tells its local
            # memory per thread, which is only ever spills in these kernels.
            compiled = self.kernel.warmup(*self.args, grid=self.grid, **self.constexprs, **self.options())
            compiled._init_handles()
            if compiled.n_spills:
                maxnreg = NO_SPILL_MAXNREG
        self.kernel[self.grid](*self.args, **self.constexprs, **self.options(maxnreg))


def interpreting() -> bool:
    """True where Triton runs kernels in its interpreter (``TRITON_INTERPRET=1``: CPU tests)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def cuda_capability(device: torch.device) -> int | None:
    """The compute capability of ``device`` as one number (80 for an A100, 90 for an H100), or
    None for the interpreter (CPU tensors), whose launch tables are the ``None`` rows."""
    if device.type != "cuda" or interpreting():
        return None
    major, minor = torch.cuda.get_device_capability(device)
    return 10 * major + minor
