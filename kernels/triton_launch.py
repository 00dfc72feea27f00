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

    def run(self) -> None:
        if min(self.grid) == 0:
            return
        self.kernel[self.grid](
            *self.args, **self.constexprs, num_warps=self.num_warps, num_stages=self.num_stages
        )


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
