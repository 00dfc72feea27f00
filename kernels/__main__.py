"""``python -m hybrids.kernels``: which backends of each op are available here, and which one
each device would use.

``python -m hybrids.kernels --gpu-report [--arch sm80] [--workers N]``: every Triton kernel
configuration compiled ahead of time for the A100 and the H100 (no GPU needed), with its
registers, spills, shared memory and occupancy, then the memory traffic of each kernel at a
reference shape (:mod:`hybrids.kernels.gpu_report`).
"""

import sys

if __name__ == "__main__":
    if sys.argv[1:2] == ["--gpu-report"]:
        from hybrids.kernels.gpu_report import main

        sys.exit(main(sys.argv[2:]))
    from hybrids.kernels import describe

    print(describe())
