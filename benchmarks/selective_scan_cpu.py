"""Selective scan on the CPU: each backend against the reference, time and peak memory.

    python benchmarks/selective_scan_cpu.py                  # the table of results/2026-12-02-cpu-kernels.md (issue target shape)
    python benchmarks/selective_scan_cpu.py --length 256 --repeats 1

Shape: batch 2, dim 256, d_state 16, L 1024, float32, B and C varying in time (one group), with
Mamba's extras (D, z gate, delta bias + softplus). For each backend: forward alone (under
``torch.no_grad``) and forward + backward (gradients of every input).

Every configuration runs in a fresh subprocess so that one backend's freed memory and caches do
not count towards the next. Time: best of ``--repeats`` runs after one warm-up run. Peak memory:
the process's resident-set high-water mark over one more call, after the timed ones, minus the
resident set before it, with freed memory returned to the system first (``common.time_and_peak``,
Linux only): what the computation allocates and touches, inputs excluded. Speed-up and memory ratio are against the reference in the same run.
"""

from __future__ import annotations

import argparse
import json

import torch

from common import run_child, time_and_peak
from hybrids.kernels.scan import SELECTIVE_SCAN, selective_scan

BACKENDS = ("reference", "torch", "cpu")


def make_inputs(batch: int, dim: int, d_state: int, length: int, backward: bool) -> dict:
    torch.manual_seed(0)
    g = backward
    return {
        "u": torch.randn(batch, dim, length, requires_grad=g),
        "delta": (0.5 * torch.randn(batch, dim, length) - 2).requires_grad_(g),
        "A": (-torch.arange(1, d_state + 1, dtype=torch.float32).repeat(dim, 1)).requires_grad_(g),
        "B": torch.randn(batch, d_state, length, requires_grad=g),
        "C": torch.randn(batch, d_state, length, requires_grad=g),
        "D": torch.ones(dim, requires_grad=g),
        "z": torch.randn(batch, dim, length, requires_grad=g),
        "delta_bias": torch.zeros(dim, requires_grad=g),
    }


def run_one(config: dict) -> dict:
    """Time one configuration and measure its peak memory; runs inside the child process."""
    backward = config["mode"] == "fwd+bwd"
    inputs = make_inputs(config["batch"], config["dim"], config["d_state"], config["length"], backward)
    grad_out = torch.randn_like(inputs["u"])

    def step():
        if backward:
            selective_scan(**inputs, delta_softplus=True, backend=config["backend"]).backward(grad_out)
            for tensor in inputs.values():
                tensor.grad = None
        else:
            with torch.no_grad():
                selective_scan(**inputs, delta_softplus=True, backend=config["backend"])

    return time_and_peak(step, config["repeats"])


def measure(config: dict) -> dict:
    """Run one configuration in a fresh Python process and return its figures."""
    return run_child(__file__, config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--d-state", type=int, default=16)
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(json.loads(args.child))))
        return

    probe = torch.empty(0)
    backends = [name for name in BACKENDS if SELECTIVE_SCAN.backend(name).reason_not(probe.device.type, probe.dtype, {}) is None]
    shape = {"batch": args.batch, "dim": args.dim, "d_state": args.d_state, "length": args.length}
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, batch {args.batch}, "
        f"dim {args.dim}, d_state {args.d_state}, L {args.length}; time: best of {args.repeats}; "
        "memory: peak RSS increase over the inputs\n"
    )
    print("| backend | pass | time | speed-up | peak memory | memory vs reference |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for mode in ("fwd", "fwd+bwd"):
        reference = None
        for backend in backends:
            # The reference is slow: best of 2 is plenty to compare against.
            repeats = min(args.repeats, 2) if backend == "reference" else args.repeats
            result = measure({**shape, "backend": backend, "mode": mode, "repeats": repeats})
            reference = reference or result
            speedup = reference["seconds"] / result["seconds"]
            ratio = result["peak_mib"] / max(reference["peak_mib"], 1e-9)
            print(
                f"| {backend} | {mode} | {result['seconds'] * 1e3:,.1f} ms | {speedup:,.1f}x | "
                f"{result['peak_mib']:,.1f} MiB | {ratio:.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
