"""Banded sparse attention against dense causal SDPA on the CPU: time and peak memory.

    python benchmarks/sparse_attention_cpu.py                       # the table of results/2026-12-02-cpu-kernels.md
    python benchmarks/sparse_attention_cpu.py --lengths 1024 --long 0 --repeats 1

(a) For each L: sliding-window attention through ``sparse_attention(..., backend="banded")`` and
dense causal attention through ``scaled_dot_product_attention(is_causal=True)``, forward alone
(under ``torch.no_grad``) and forward + backward. (b) One banded layer, forward + backward, at
``--long`` tokens.

Every configuration runs in a fresh subprocess, so that one configuration's caches and freed
memory do not count towards the next. Time: best of ``--repeats`` runs after one warm-up run.
Peak memory: the process's resident-set high-water mark over one more call, after the timed ones, minus the
resident set before it, with freed memory returned to the system first (``common.time_and_peak``,
Linux only): what the computation allocates and touches, inputs excluded.
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from common import run_child, time_and_peak
from hybrids.kernels.sparse import SparsePattern, sparse_attention

MiB = 1 << 20


def run_one(config: dict) -> dict:
    """Time one configuration and measure its peak memory; runs inside the child process."""
    torch.manual_seed(0)
    batch, heads, length, head_dim = config["batch"], config["heads"], config["length"], config["head_dim"]
    backward = config["mode"] == "fwd+bwd"
    q, k, v = (torch.randn(batch, heads, length, head_dim, requires_grad=backward) for _ in range(3))
    grad_out = torch.randn(batch, heads, length, head_dim)
    pattern = SparsePattern(window=config["window"])

    def attention():
        if config["impl"] == "sdpa":
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return sparse_attention(q, k, v, pattern, backend="banded")

    def step():
        if backward:
            attention().backward(grad_out)
            for t in (q, k, v):
                t.grad = None
        else:
            with torch.no_grad():
                attention()

    return time_and_peak(step, config["repeats"])


def measure(config: dict) -> dict:
    """Run one configuration in a fresh Python process and return its figures."""
    return run_child(__file__, config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--long", type=int, default=65536, help="L of the single banded layer (b); 0 skips it")
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(json.loads(args.child))))
        return

    base = {"batch": args.batch, "heads": args.heads, "head_dim": args.head_dim, "window": args.window}
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, batch {args.batch}, "
        f"{args.heads} heads of {args.head_dim}, window {args.window}; time: best of {args.repeats}; "
        f"memory: peak RSS increase over the inputs\n"
    )
    print("| L | attention | pass | time | peak memory |")
    print("| ---: | --- | --- | ---: | ---: |")
    modes = ("fwd", "fwd+bwd")
    rows = [(length, impl, mode) for length in args.lengths for impl in ("banded", "sdpa") for mode in modes]
    if args.long:
        rows.append((args.long, "banded", "fwd+bwd"))
    names = {"banded": f"banded, window {args.window}", "sdpa": "dense causal SDPA"}
    for length, impl, mode in rows:
        # The long layer is timed once: it is the memory figure that matters there.
        repeats = 1 if length == args.long else args.repeats
        result = measure({**base, "length": length, "impl": impl, "mode": mode, "repeats": repeats})
        print(
            f"| {length:,} | {names[impl]} | {mode} | {result['seconds'] * 1e3:,.1f} ms | "
            f"{result['peak_mib']:,.0f} MiB |",
            flush=True,
        )


if __name__ == "__main__":
    main()
