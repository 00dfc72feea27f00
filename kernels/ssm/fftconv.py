"""Long convolutions through the FFT: ``y = k * u + D u`` in O(L log L).

Shapes: ``u`` (batch, H, L), kernel ``k`` (H, L) for the causal case or (2, H, L) for the
bidirectional one, ``D`` (H,). Transforms run in float32 at least (bfloat16/float16 FFTs lose too
much), and the result comes back in ``u``'s dtype.
"""

from __future__ import annotations

import torch

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
    ``backend="direct"`` computes the same sum directly (:func:`direct_conv`, the reference).
    """
    from hybrids.kernels.ssm import FFT_CONV

    check_conv_arguments(u, k, D, bidirectional)
    if FFT_CONV.select(u.device, None, backend) == "direct":
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
    """The same result as :func:`fft_conv` by direct summation, O(L^2): the reference."""
    length = u.shape[-1]
    lags = torch.arange(length, device=u.device)
    # T[t, s] = k[t - s] for s <= t: a (H, L, L) Toeplitz matrix per channel.
    diff = lags[:, None] - lags[None, :]
    causal_k = k[0] if bidirectional else k
    toeplitz = torch.where(diff >= 0, causal_k[:, diff.clamp(min=0)], torch.zeros((), dtype=k.dtype, device=k.device))
    if bidirectional:
        future = torch.where(diff < 0, k[1][:, (-diff - 1).clamp(min=0)], torch.zeros((), dtype=k.dtype, device=k.device))
        toeplitz = toeplitz + future
    y = torch.einsum("hts,bhs->bht", toeplitz, u)
    if D is not None:
        y = y + u * D[:, None]
    return y
