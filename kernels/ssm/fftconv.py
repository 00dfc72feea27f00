"""Long convolutions through the FFT: ``y = k * u + D u`` in O(L log L).

Shapes: ``u`` (batch, H, L), kernel ``k`` (H, L) for the causal case or (2, H, L) for the
bidirectional one, ``D`` (H,). Transforms run in float32 at least (bfloat16/float16 FFTs lose too
much), and the result comes back in ``u``'s dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hybrids.kernels.dtypes import at_least_float32


def fft_conv(
    u: torch.Tensor,
    k: torch.Tensor,
    D: torch.Tensor | None = None,
    bidirectional: bool = False,
    backend: str | None = None,
) -> torch.Tensor:
    """Convolve each channel of ``u`` with its kernel.

    causal: ``y[t] = sum_{s <= t} k[t - s] u[s] + D u[t]``.
    bidirectional: ``k[0]`` acts on the past and present as above and ``k[1]`` on the future,
    ``y[t] += sum_{s > t} k[1][s - t - 1] u[s]``, as in S4's bidirectional layers.

    Zero-padding to length 2L turns the FFT's circular convolution into a linear one.
    ``backend="direct"`` computes the same sum directly (:func:`direct_conv`, the reference),
    which on the CPU is also the faster way for short sequences and is chosen there for
    ``L <= DIRECT_MAX_LENGTH`` (:func:`prefers_direct`).
    """
    from hybrids.kernels.ssm import FFT_CONV

    check_conv_arguments(u, k, D, bidirectional)
    if FFT_CONV.select(u.device, None, backend, length=u.shape[-1]) == "direct":
        return direct_conv(u, k, D, bidirectional)
    length = u.shape[-1]
    if bidirectional:
        if k.ndim != 3 or k.shape[0] != 2:
            raise ValueError(f"bidirectional kernels have shape (2, H, L), got {tuple(k.shape)}")
        # Circular kernel of length 2L: lags 0..L-1 from k[0], lags -1..-L from k[1] (wrapping).
        kernel = torch.cat((k[0], k[1].flip(-1)), dim=-1)
    else:
        kernel = k
    if k.shape[-1] != length:
        raise ValueError(f"kernel length {k.shape[-1]} does not match the input length {length}")
    work = at_least_float32(u.dtype)
    if u.numel() == 0:
        # An empty batch or sequence: MKL's FFT refuses zero-size transforms. The result stays
        # attached to u so that autograd still gives u an (empty) gradient.
        y = u.to(work) * (0 if D is None else D.to(work)[:, None])
        return y.to(u.dtype)
    n = 2 * length
    u_f = torch.fft.rfft(u.to(work), n=n)  # (B, H, L + 1)
    k_f = torch.fft.rfft(kernel.to(work), n=n)  # (H, L + 1)
    y = torch.fft.irfft(u_f * k_f, n=n)[..., :length]
    if D is not None:
        y = y + u.to(work) * D.to(work)[:, None]
    return y.to(u.dtype)


def check_conv_arguments(u, k, D, bidirectional) -> None:
    """Raise TypeError / ValueError naming the argument that breaks the contract of fft_conv."""
    for name, t in (("u", u), ("k", k), ("D", D)):
        if t is not None and not t.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor, got {t.dtype}")
    if u.ndim != 3:
        raise ValueError(f"u: expected (batch, H, L), got shape {tuple(u.shape)}")
    _, H, length = u.shape
    expected = (2, H, length) if bidirectional else (H, length)
    if tuple(k.shape) != expected:
        what = "(2, H, L)" if bidirectional else "(H, L)"
        raise ValueError(f"k: expected {what} = {expected} to match u {tuple(u.shape)}, got {tuple(k.shape)}")
    if D is not None and tuple(D.shape) != (H,):
        raise ValueError(f"D: expected (H={H},), got {tuple(D.shape)}")


def direct_conv(
    u: torch.Tensor, k: torch.Tensor, D: torch.Tensor | None = None, bidirectional: bool = False
) -> torch.Tensor:
    """The same result as :func:`fft_conv` by direct summation, O(L^2): the reference, and on
    the CPU the path for short sequences. Like the FFT it works in float32 at least and returns
    ``u``'s dtype.

    Each channel's sum is a product with its (L, L) Toeplitz matrix, ``T[s, t] = k[t - s]`` for
    s <= t (with the bidirectional ``k[1][s - t - 1]`` for s > t), built from the windows of the
    zero-padded kernel (``unfold``, then one flipped copy), whose backward sums over the windows:
    indexing the kernel with an (L, L) table of lags instead made the backward a scatter, and the
    direct sum lost to the FFT at length 128. The product runs with autocast off, so that
    ``bf16-mixed`` training keeps these sums in float32 as the FFT path does."""
    check_conv_arguments(u, k, D, bidirectional)
    work = at_least_float32(u.dtype)
    u_in, u, k = u, u.to(work), k.to(work)
    D = None if D is None else D.to(work)
    length = u.shape[-1]
    if length == 0:
        return u_in.clone()
    matrix = _toeplitz(k[0] if bidirectional else k)  # (H, s, t)
    if bidirectional:
        # The future's lag s - t - 1 >= 0 is the causal matrix of k[1] delayed by one, transposed.
        matrix = matrix + _toeplitz(F.pad(k[1], (1, 0))[..., :length]).transpose(1, 2)
    with torch.autocast(u.device.type, enabled=False):
        y = torch.matmul(u.transpose(0, 1), matrix).transpose(0, 1)  # (H, B, s) @ (H, s, t) -> (B, H, t)
    if D is not None:
        y = y + u * D[:, None]
    return y.to(u_in.dtype)


def _toeplitz(k: torch.Tensor) -> torch.Tensor:
    """(H, L) -> (H, L, L) with ``[h, s, t] = k[h, t - s]`` for s <= t, else 0."""
    length = k.shape[-1]
    padded = F.pad(k, (length - 1, 0))  # padded[j + L - 1] = k[j]; zeros at negative lags
    # windows[h, i, t] = padded[i + t] = k[t - (L - 1 - i)]: row i is the source s = L - 1 - i.
    return padded.unfold(-1, length, 1).flip(-2)


# The direct sum's batched (H, L, L) matrix products beat the FFT's transforms of length 2L on
# the CPU up to here: forward and backward, one thread, the FFT's time over the direct sum's at
# (batch, H, L) = (256, 32, 64) 2.8x, (64, 128, 64) 2.7x, (64, 128, 128) 1.7x, (64, 64, 256)
# 1.1x, (64, 64, 512) 0.47x (benchmarks/conv_cpu.py; results/2026-12-07-direct-convolution-cpu.md).
DIRECT_MAX_LENGTH = 128


def prefers_direct(call) -> str | None:
    """The dispatcher's ``prefers`` rule of the direct sum: None (choose it) for sequences of at
    most :data:`DIRECT_MAX_LENGTH`, else why not."""
    length = call.get("length")
    if length is None or length > DIRECT_MAX_LENGTH:
        return f"the FFT is faster beyond length {DIRECT_MAX_LENGTH}"
    return None
