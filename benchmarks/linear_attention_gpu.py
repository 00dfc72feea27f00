"""Time the linear-attention backends on a CUDA GPU.

    python benchmarks/linear_attention_gpu.py                          # the table
    python benchmarks/linear_attention_gpu.py --length 8192 --decay vector --dtype float16

Inputs: q, k (batch, heads, L, K), v (batch, heads, L, V) in ``--dtype`` (bfloat16 by default),
a log-decay g of the ``--decay`` form (none, scalar per head and step as in Mamba-2 and RetNet,
vector per key dimension as in GLA) in float32. For each backend that can run ("triton": ours,
"fla": flash-linear-attention's kernels through our adapter, which copies the inputs into fla's
(batch, L, heads, dim) layout, "chunk": the pure-PyTorch chunked path, "reference": the
step-by-step loop, at the short ``--reference-length`` only), and for fla's chunked kernel alone
where the ``fla`` package is installed (``chunk_simple_gla`` for no or a scalar decay,
``chunk_gla`` for the vector one, on transposed copies made outside the timing), the forward alone (under ``torch.no_grad``) and the forward + backward, each the median
of ``--repeats`` timed runs (CUDA events) after ``--warmup`` runs; also the bytes q, k, v, g and
o must move once, and the bandwidth that implies.

On a machine without CUDA it prints why it cannot run and exits with status 1.
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

from common import cuda_time_ms


def fla_function(decay: str):
    """flash-linear-attention's chunked op for this decay form, or None (with why) if missing."""
    try:
        if decay == "vector":
            from fla.ops.gla import chunk_gla as fn
        else:
            from fla.ops.simple_gla import chunk_simple_gla as fn
    except ImportError as err:
        return None, f"fla not installed ({err.name}): pip install -e '.[fla]'"
    return fn, None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--head-dim", type=int, default=64, help="K = V")
    parser.add_argument("--decay", choices=("none", "scalar", "vector"), default="scalar")
    parser.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default="bfloat16")
    parser.add_argument("--reference-length", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("linear_attention_gpu: no CUDA device here; run it on a GPU machine", file=sys.stderr)
        return 1
    from hybrids.kernels import linear_attention

    dtype = getattr(torch, args.dtype)
    device = torch.device("cuda")
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__} (CUDA {torch.version.cuda}), {args.dtype}, "
          f"batch {args.batch}, {args.heads} heads, K = V = {args.head_dim}, decay {args.decay}; "
          f"median of {args.repeats}\n")
    print("| backend | L | pass | time | GB/s (q, k, v, g, o once) |")
    print("| --- | ---: | --- | ---: | ---: |")

    def inputs(length: int):
        torch.manual_seed(0)
        shape = (args.batch, args.heads, length, args.head_dim)
        q, k, v = (torch.randn(shape, device=device, dtype=dtype) * args.head_dim**-0.5 for _ in range(3))
        g = None
        if args.decay != "none":
            gshape = shape[:3] + ((args.head_dim,) if args.decay == "vector" else ())
            g = F.logsigmoid(torch.randn(gshape, device=device) + 4)
        return q, k, v, g

    def report(name, length, tensors, fn):
        moved = sum(t.numel() * t.element_size() for t in tensors if t is not None)
        moved += tensors[2].numel() * tensors[2].element_size()  # o, the size of v
        with torch.no_grad():
            forward = cuda_time_ms(fn, args.warmup, args.repeats)
        grads = [t.requires_grad_() for t in tensors if t is not None]

        def both():
            out = fn()
            (out[0] if isinstance(out, tuple) else out).float().sum().backward()
            for t in grads:
                t.grad = None

        backward = cuda_time_ms(both, args.warmup, args.repeats)
        for t in grads:
            t.requires_grad_(False)
        for mode, ms in (("fwd", forward), ("fwd+bwd", backward)):
            print(f"| {name} | {length:,} | {mode} | {ms:.3f} ms | {moved / ms / 1e6:,.0f} |", flush=True)

    for backend in ("triton", "fla", "chunk", "reference"):
        length = args.reference_length if backend == "reference" else args.length
        q, k, v, g = inputs(length)
        try:
            report(backend, length, (q, k, v, g), lambda: linear_attention(q, k, v, g, backend=backend))
        except Exception as err:  # a backend that cannot run here says why, the others go on
            print(f"| {backend} | {length:,} | - | {type(err).__name__}: {err} | |")
    fn, missing = fla_function(args.decay)
    if fn is None:
        print(f"| fla kernel alone | {args.length:,} | - | {missing} | |")
    else:
        q, k, v, g = (None if t is None else t.transpose(1, 2).contiguous() for t in inputs(args.length))
        try:  # fla refuses some GPU and Triton combinations (see kernels/linear/fla.py)
            report("fla kernel alone", args.length, (q, k, v, g), lambda: fn(q, k, v, g=g))
        except Exception as err:
            print(f"| fla kernel alone | {args.length:,} | - | {type(err).__name__}: {err} | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
