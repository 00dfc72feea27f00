"""The long convolution's two CPU paths side by side: the FFT and the direct sum (batched Toeplitz
products), forward and backward, on the shapes the sweeps give them.

    OMP_NUM_THREADS=1 python benchmarks/conv_cpu.py
    python benchmarks/conv_cpu.py --shape 64,128,128 --shape 64,64,256

Each shape is (batch, H, L): ``fft_conv(u, k, D)`` with gradients for ``u``, ``k`` and ``D``, each
backend forced by name, the two taking turns (so a drift of the machine's speed touches both);
median of ``--steps`` after ``--warmup``. The CPU's automatic choice is the direct sum up to
``DIRECT_MAX_LENGTH`` (kernels/ssm/fftconv.py): this is the measurement behind it.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from hybrids.kernels.ssm import fft_conv
from hybrids.kernels.ssm.fftconv import DIRECT_MAX_LENGTH

# H3's diagonal SSM at MQAR d64 (batch 64 x head_dim^2 4 rows, 32 heads), S4D/Hyena at d64 and d128,
# and the lengths around the threshold.
SHAPES = [(256, 32, 64), (64, 64, 64), (64, 128, 64), (64, 128, 32), (64, 128, 128), (64, 64, 256), (64, 64, 512)]


def timed(backend: str, batch: int, heads: int, length: int):
    torch.manual_seed(0)
    u = torch.randn(batch, heads, length, requires_grad=True)
    k = torch.randn(heads, length, requires_grad=True)
    D = torch.randn(heads, requires_grad=True)
    grad = torch.randn(batch, heads, length)

    def step() -> float:
        start = time.perf_counter()
        fft_conv(u, k, D, backend=backend).backward(grad)
        return time.perf_counter() - start

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", action="append", help="batch,H,L (repeatable; default: the sweeps' shapes)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    shapes = [tuple(int(x) for x in s.split(",")) for s in args.shape] if args.shape else SHAPES
    print(f"fft_conv forward + backward, 1 thread, median of {args.steps} after {args.warmup}; "
          f"the CPU chooses the direct sum up to L = {DIRECT_MAX_LENGTH}")
    print("| (batch, H, L) | FFT, ms | direct, ms | FFT / direct |")
    print("| --- | ---: | ---: | ---: |")
    for shape in shapes:
        steps = {name: timed(name, *shape) for name in ("fft", "direct")}
        for _ in range(args.warmup):
            for step in steps.values():
                step()
        times = {name: [] for name in steps}
        for _ in range(args.steps):
            for name, step in steps.items():
                times[name].append(step())
        fft, direct = (statistics.median(times[name]) * 1e3 for name in ("fft", "direct"))
        print(f"| {shape} | {fft:.2f} | {direct:.2f} | {fft / direct:.2f} |", flush=True)


if __name__ == "__main__":
    main()
