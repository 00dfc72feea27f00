"""Time the selective scan backends on a CUDA GPU, against the memory traffic they must move.

    python benchmarks/selective_scan_gpu.py                      # Mamba's setting, the table
    python benchmarks/selective_scan_gpu.py --length 2048 --dtype float16 --repeats 50
    python benchmarks/selective_scan_gpu.py --sweep              # + Triton block sizes

Inputs as in a Mamba layer: u, delta, z (batch, dim, L) and input-dependent B, C (batch,
groups, d_state, L) in ``--dtype`` (bfloat16 by default); A (dim, d_state), D and delta_bias
(dim,) in float32; ``delta_softplus=True``. For each backend that can run ("triton": ours,
"extension": mamba_ssm's CUDA op, "torch": the pure-PyTorch path, "reference": the Python loop,
at the short ``--reference-length`` only), the forward alone (under ``torch.no_grad``) and the
forward + backward, each the median of ``--repeats`` timed runs (CUDA events) after
``--warmup`` runs.

Bytes that must move, whatever the algorithm: the forward reads u, delta, z, B, C once and writes
out; the backward reads them again with the output's gradient and writes du, ddelta, dz, dB, dC
(A, D, delta_bias and their gradients are negligible). Achieved bandwidth = bytes / time, given
also as a fraction of the device's peak (``--peak-gbps``, else a table by device name). The
Triton kernels also write and read the chunk-boundary states for the backward, which is not
counted: it is overhead of this design.

On a machine without CUDA it prints why it cannot run and exits with status 1.
"""

from __future__ import annotations

import argparse
import itertools
import sys

import torch

from common import cuda_time_ms

# Peak memory bandwidth, GB/s (vendor figures), by a substring of torch's device name. The first
# match wins, so the more specific names come first.
PEAK_GBPS = [
    ("H100 PCIe", 2000.0),
    ("H100 NVL", 3900.0),
    ("H100", 3350.0),  # SXM (also "H100 80GB HBM3")
    ("GH200", 4000.0),  # 96 GB HBM3 (the 144 GB HBM3e one: 4900)
    ("H200", 4800.0),
    ("A100-SXM4-80GB", 2039.0),
    ("A100 80GB PCIe", 1935.0),
    ("A100-PCIE-40GB", 1555.0),
    ("A100-SXM4-40GB", 1555.0),
    ("A100", 2039.0),
    ("L40S", 864.0),
    ("A10", 600.0),
    ("RTX 4090", 1008.0),
]


def peak_bandwidth(name: str) -> float | None:
    for key, gbps in PEAK_GBPS:
        if key.lower() in name.lower():
            return gbps
    return None


def make_inputs(batch, dim, length, d_state, groups, dtype, device, requires_grad):
    g = torch.Generator(device=device).manual_seed(0)

    def randn(*shape, scale=1.0, shift=0.0, dt=dtype):
        return (torch.randn(*shape, generator=g, device=device) * scale + shift).to(dt)

    x = dict(
        u=randn(batch, dim, length),
        delta=randn(batch, dim, length, scale=0.5, shift=-1.0),
        A=-torch.arange(1, d_state + 1, dtype=torch.float32, device=device).repeat(dim, 1),
        B=randn(batch, groups, d_state, length),
        C=randn(batch, groups, d_state, length),
        D=randn(dim, dt=torch.float32),
        z=randn(batch, dim, length),
        delta_bias=randn(dim, scale=0.5, dt=torch.float32),
    )
    if requires_grad:
        for v in x.values():
            v.requires_grad_()
    return x


def traffic_bytes(batch, dim, length, d_state, groups, dtype) -> tuple[int, int]:
    """(forward, forward + backward) bytes that must move; see the module docstring."""
    size = torch.tensor([], dtype=dtype).element_size()
    seq = batch * dim * length * size  # one of u, delta, z, out and their gradients
    bc = batch * groups * d_state * length * size  # one of B, C and their gradients
    forward = 4 * seq + 2 * bc  # read u, delta, z, B, C; write out
    backward = 4 * seq + 2 * bc + 3 * seq + 2 * bc  # read u, delta, z, dout, B, C; write du, ddelta, dz, dB, dC
    return forward, forward + backward


def scan_function(backend: str, **triton_blocks):
    """A callable (u, delta, A, B, C, D, z, delta_bias, softplus) -> out, or an error string."""
    from hybrids.kernels.scan import SELECTIVE_SCAN, selective_scan

    if backend == "triton":
        try:
            from hybrids.kernels.scan.triton_kernels import selective_scan_triton
        except ImportError as e:
            return f"cannot import: {e}"
        return lambda *args: selective_scan_triton(*args, **triton_blocks)
    why_not = SELECTIVE_SCAN.backend(backend).reason_not("cuda", torch.bfloat16, {})
    if why_not:
        return why_not
    return lambda *args: selective_scan(*args, backend=backend)


def measure(fn, shape, dtype, args, with_backward=True) -> dict:
    """Forward (no grad) and forward + backward times of ``fn`` at ``shape``."""
    batch, dim, length, d_state, groups = shape
    x = make_inputs(batch, dim, length, d_state, groups, dtype, "cuda", requires_grad=True)
    values = list(x.values())
    dout = torch.randn(batch, dim, length, device="cuda").to(dtype)

    def forward():
        with torch.no_grad():
            fn(*values, True)

    def forward_backward():
        out = fn(*values, True)
        torch.autograd.grad(out, values, dout)

    res = {"fwd_ms": cuda_time_ms(forward, args.warmup, args.repeats)}
    if with_backward:
        res["fwdbwd_ms"] = cuda_time_ms(forward_backward, args.warmup, args.repeats)
    return res


def rel_rms(x, ref) -> float:
    x, ref = x.double(), ref.double()
    return ((x - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt()).item()


def check_against_reference(fn, shape, dtype) -> float:
    """Relative RMS error of ``fn``'s output against the reference on the same inputs."""
    from hybrids.kernels.scan.reference import selective_scan_reference

    x = make_inputs(*shape, dtype, "cuda", requires_grad=False)
    with torch.no_grad():
        out = fn(*x.values(), True)
        ref = selective_scan_reference(*[v.float() for v in x.values()], True)
    return rel_rms(out, ref)


def row(name, length, res, traffic, peak) -> str:
    cells = [name, str(length)]
    for key, nbytes in (("fwd_ms", traffic[0]), ("fwdbwd_ms", traffic[1])):
        ms = res.get(key)
        if ms is None:
            cells += ["-", "-", "-"]
            continue
        gbps = nbytes / (ms * 1e-3) / 1e9
        cells += [f"{ms:.3f}", f"{gbps:.0f}", f"{100 * gbps / peak:.0f}%" if peak else "?"]
    cells.append(res.get("err", "-"))
    return "| " + " | ".join(cells) + " |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--d-state", type=int, default=16)
    parser.add_argument("--groups", type=int, default=1, help="groups of B and C")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--backends", nargs="+", default=["triton", "extension", "torch", "reference"])
    parser.add_argument("--reference-length", type=int, default=256, help="L for the reference (a Python loop)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--peak-gbps", type=float, default=None, help="peak memory bandwidth; default: by device name")
    parser.add_argument("--sweep", action="store_true", help="also time Triton block sizes (block_l, block_d, warps)")
    args = parser.parse_args()

    if not torch.cuda.is_available():
        print("selective_scan_gpu: no CUDA device here (torch.cuda.is_available() is False); "
              "run it on a machine with an NVIDIA GPU and a CUDA build of torch.")  # fmt: skip
        return 1

    dtype = getattr(torch, args.dtype)
    name = torch.cuda.get_device_name()
    peak = args.peak_gbps or peak_bandwidth(name)
    shape = (args.batch, args.dim, args.length, args.d_state, args.groups)
    print(f"device: {name}; peak bandwidth: {f'{peak:.0f} GB/s' if peak else 'unknown (pass --peak-gbps)'}; "
          f"torch {torch.__version__}")  # fmt: skip
    print(f"batch {args.batch}, dim {args.dim}, d_state {args.d_state}, groups {args.groups}, "
          f"{args.dtype} u/delta/z/B/C, float32 A/D/delta_bias, softplus; "
          f"median of {args.repeats} after {args.warmup} warm-up")  # fmt: skip
    print()
    print("| backend | L | fwd ms | fwd GB/s | fwd % peak | fwd+bwd ms | fwd+bwd GB/s | fwd+bwd % peak "
          f"| out rel. RMS vs reference (L={args.reference_length}) |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    check_shape = (args.batch, args.dim, args.reference_length, args.d_state, args.groups)
    for backend in args.backends:
        length = args.reference_length if backend == "reference" else args.length
        run_shape = check_shape if backend == "reference" else shape
        traffic = traffic_bytes(*run_shape[:4], args.groups, dtype)
        fn = scan_function(backend)
        if isinstance(fn, str):
            print(f"| {backend} | {length} | unavailable: {fn} |||||||")
            continue
        try:
            res = measure(fn, run_shape, dtype, args)
            if backend != "reference":
                res["err"] = f"{check_against_reference(fn, check_shape, dtype):.1e}"
        except Exception as e:  # a backend failing (e.g. out of memory) must not stop the others
            print(f"| {backend} | {length} | failed: {type(e).__name__}: {str(e).splitlines()[0][:120]} |||||||")
            torch.cuda.empty_cache()
            continue
        print(row(backend, length, res, traffic, peak))

    if args.sweep:
        sweep(args, shape, dtype, peak)
    return 0


def sweep(args, shape, dtype, peak) -> None:
    """Triton block sizes: forward (block_l, block_d, warps); backward (block_l, block_d_bwd, warps)."""
    traffic = traffic_bytes(*shape[:4], args.groups, dtype)
    block_n = 1 << max(1, (args.d_state - 1).bit_length())
    print()
    print("| block_l | block_d (fwd and bwd) | warps | fwd ms | fwd % peak | fwd+bwd ms | fwd+bwd % peak |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for block_l, block_d, warps in itertools.product((32, 64, 128), (1, 2, 4, 8, 16), (2, 4, 8)):
        if block_d * block_n * block_l > 16384:
            continue
        fn = scan_function("triton", block_l=block_l, block_d=block_d, block_d_bwd=block_d, num_warps=warps)
        try:
            res = measure(fn, shape, dtype, args)
        except Exception as e:
            print(f"| {block_l} | {block_d} | {warps} | failed: {type(e).__name__} ||||")
            continue
        pct = [f"{100 * b / (res[k] * 1e-3) / 1e9 / peak:.0f}%" if peak else "?"
               for k, b in (("fwd_ms", traffic[0]), ("fwdbwd_ms", traffic[1]))]  # fmt: skip
        print(f"| {block_l} | {block_d} | {warps} | {res['fwd_ms']:.3f} | {pct[0]} "
              f"| {res['fwdbwd_ms']:.3f} | {pct[1]} |")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
