"""Short sequences: the ``masked_sdpa`` and ``banded`` sparse-attention backends, forward +
backward, and which one the dispatcher picks by itself.

    python benchmarks/sparse_attention_short.py                   # the table of results/2026-12-02-cpu-kernels.md
    python benchmarks/sparse_attention_short.py --lengths 64 128 --windows 16 --repeats 3

At the zoo's CPU scale (MQAR sequences of 64-256 tokens, batch 64) the banded backend's tiling
costs more than it saves; this measures where the dense masked path stops being faster, which
sets the dispatcher's rule (``hybrids.kernels.sparse.masked_sdpa.prefers``). Single thread
unless ``--threads``; best of ``--repeats`` after one warm-up; both backends in one process, one
after the other, so the ratio is measured in one run.
"""

from __future__ import annotations

import argparse

import torch

from common import best_time
from hybrids.kernels.sparse import SPARSE_ATTENTION, SparsePattern, sparse_attention


def fwd_bwd_seconds(backend: str, q, k, v, pattern: SparsePattern, repeats: int) -> float:
    def step():
        sparse_attention(q, k, v, pattern, backend=backend).sum().backward()

    step()
    return best_time(step, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    parser.add_argument("--windows", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"batch {args.batch}, {args.heads} heads of {args.head_dim}, float32, {args.threads} thread(s), "
          f"forward + backward, best of {args.repeats}")
    print("| window | L | masked_sdpa | banded | banded / masked_sdpa | chosen by itself |")
    print("| ---: | ---: | ---: | ---: | ---: | --- |")
    for window in args.windows:
        pattern = SparsePattern(window=window)
        for length in args.lengths:
            q, k, v = (torch.randn(args.batch, args.heads, length, args.head_dim, requires_grad=True) for _ in range(3))
            masked = fwd_bwd_seconds("masked_sdpa", q, k, v, pattern, args.repeats)
            banded = fwd_bwd_seconds("banded", q, k, v, pattern, args.repeats)
            chosen = SPARSE_ATTENTION.select(q.device, q.dtype, length=length)
            print(f"| {window} | {length:,} | {masked * 1e3:.1f} ms | {banded * 1e3:.1f} ms | "
                  f"{banded / masked:.2f}x | {chosen} |")


if __name__ == "__main__":
    main()
