"""Time S4 kernel generation + FFT convolution against direct convolution, for growing L.

    python benchmarks/ssm_conv.py                     # L = 1k, 4k, 16k, 64k
    python benchmarks/ssm_conv.py --lengths 1024 4096 --direct-max 4096

For each L: the S4 (DPLR, Cauchy) and S4D (Vandermonde) kernel generation, the FFT convolution
that applies it, and a direct causal convolution (torch.conv1d with the full-length kernel, the
O(L^2) baseline). The last column divides the S4 total by L log2 L, normalised to the first row:
flat means L log L growth.
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F

from common import best_time
from hybrids.kernels.ssm import fft_conv
from hybrids.mixers.s4 import S4, S4D


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    return best_time(fn, repeats)


def direct_conv1d(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Causal depthwise convolution with a full-length kernel: u (B, H, L), k (H, L)."""
    length = u.shape[-1]
    return F.conv1d(F.pad(u, (length - 1, 0)), k.flip(-1)[:, None, :], groups=k.shape[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384, 65536])
    parser.add_argument("--channels", type=int, default=16, help="H")
    parser.add_argument("--d-state", type=int, default=64, help="N")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--direct-max", type=int, default=65536, help="skip direct convolution above this L")
    args = parser.parse_args()
    torch.manual_seed(0)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, H={args.channels}, N={args.d_state}, "
          f"batch={args.batch}, float32, best of {args.repeats}")
    header = (f"{'L':>6} | {'S4 kernel':>10} {'S4D kernel':>10} {'FFT conv':>9} {'S4 total':>9} | "
              f"{'direct':>9} {'speed-up':>8} | {'S4 total / (L log L), rel.':>26}")
    print(header)
    print("-" * len(header))
    base = None
    with torch.no_grad():
        for length in args.lengths:
            s4 = S4(args.channels, d_state=args.d_state, l_max=length)
            s4d = S4D(args.channels, d_state=args.d_state)
            u = torch.randn(args.batch, args.channels, length)
            k = s4.kernel(length)
            t_s4 = timed(lambda: s4.kernel(length), args.repeats)
            t_s4d = timed(lambda: s4d.kernel(length), args.repeats)
            t_fft = timed(lambda: fft_conv(u, k, s4.D), args.repeats)
            total = t_s4 + t_fft
            if length <= args.direct_max:
                t_direct = timed(lambda: direct_conv1d(u, k), 1)
                direct, speedup = f"{t_direct * 1e3:8.1f}ms", f"{t_direct / total:7.1f}x"
            else:
                direct, speedup = f"{'skipped':>10}", f"{'':>8}"
            per = total / (length * math.log2(length))
            base = base or per
            print(f"{length:>6} | {t_s4 * 1e3:8.2f}ms {t_s4d * 1e3:8.2f}ms {t_fft * 1e3:7.2f}ms {total * 1e3:7.2f}ms | "
                  f"{direct} {speedup} | {per / base:26.2f}")


if __name__ == "__main__":
    main()
