"""Linear attention on the CPU: the chunked backend against the step-by-step reference and
against dense causal softmax attention (SDPA, the quadratic op it replaces): time and peak memory.

    python benchmarks/linear_attention_cpu.py                        # the table of results/2026-12-02-cpu-kernels.md
    python benchmarks/linear_attention_cpu.py --lengths 1024 --repeats 1 --decay none

For each L: ``linear_attention(..., backend="chunk")`` and ``backend="reference"`` with a
scalar log-decay per head and position (Mamba-2's form; ``--decay`` picks another), and
``scaled_dot_product_attention(is_causal=True)`` on the same q, k, v; forward alone (under
``torch.no_grad``) and forward + backward (gradients of every input). The last column is the
reference's time over this row's, per (L, pass).

Every configuration runs in a fresh subprocess, so that one configuration's caches and freed
memory do not count towards the next. Time: best of ``--repeats`` runs after one warm-up run
(the reference at L >= 16k is timed once). Peak memory: the process's resident-set high-water mark over one more call, after the timed ones, minus the
resident set before it, with freed memory returned to the system first (``common.time_and_peak``,
Linux only): what the computation allocates and touches, inputs excluded.
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from common import run_child, time_and_peak
from hybrids.kernels import linear_attention
from hybrids.kernels.linear.chunk import DEFAULT_CHUNK_SIZE, DEFAULT_VECTOR_CHUNK_SIZE


def run_one(config: dict) -> dict:
    """Time one configuration and measure its peak memory; runs inside the child process."""
    torch.manual_seed(0)
    batch, heads, length, dim = config["batch"], config["heads"], config["length"], config["head_dim"]
    backward = config["mode"] == "fwd+bwd"
    # Keys scaled so that the un-normalised sums stay O(1) at every L.
    q, k, v = (torch.randn(batch, heads, length, dim) * dim**-0.5 for _ in range(3))
    g = None
    if config["decay"] != "none" and config["impl"] != "sdpa":
        shape = (batch, heads, length) + ((dim,) if config["decay"] == "vector" else ())
        g = F.logsigmoid(torch.randn(shape) + 4)  # decays near 0.98
    inputs = [t.requires_grad_(backward) for t in (q, k, v, g) if t is not None]
    grad_out = torch.randn(batch, heads, length, dim)

    def forward():
        if config["impl"] == "sdpa":
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return linear_attention(q, k, v, g, backend=config["impl"])

    def step():
        if backward:
            forward().backward(grad_out)
            for t in inputs:
                t.grad = None
        else:
            with torch.no_grad():
                forward()

    return time_and_peak(step, config["repeats"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--decay", choices=("none", "scalar", "vector"), default="scalar")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(json.loads(args.child))))
        return

    base = {"batch": args.batch, "heads": args.heads, "head_dim": args.head_dim, "decay": args.decay}
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, batch {args.batch}, "
        f"{args.heads} heads, K = V = {args.head_dim}, decay: {args.decay}; time: best of {args.repeats}; "
        f"memory: peak RSS increase over the inputs\n"
    )
    print("| L | op | pass | time | peak memory | reference / this |")
    print("| ---: | --- | --- | ---: | ---: | ---: |")
    size = DEFAULT_VECTOR_CHUNK_SIZE if args.decay == "vector" else DEFAULT_CHUNK_SIZE
    names = {"chunk": f"linear, chunk ({size})", "reference": "linear, reference", "sdpa": "softmax, dense SDPA"}
    for length in args.lengths:
        for mode in ("fwd", "fwd+bwd"):
            results = {}
            for impl in ("reference", "chunk", "sdpa"):
                repeats = 1 if impl == "reference" and length >= 16384 else args.repeats
                results[impl] = run_child(__file__, {**base, "length": length, "impl": impl, "mode": mode,
                                                     "repeats": repeats})
            for impl in ("chunk", "reference", "sdpa"):
                r = results[impl]
                ratio = results["reference"]["seconds"] / r["seconds"]
                print(f"| {length:,} | {names[impl]} | {mode} | {r['seconds'] * 1e3:,.1f} ms | "
                      f"{r['peak_mib']:,.0f} MiB | {ratio:,.1f}x |", flush=True)


if __name__ == "__main__":
    main()
