"""Cauchy sums with conjugate pairs, the core of the S4 (DPLR) kernel::

    cauchy(v, z, w)[..., l] = sum_n v_n / (z_l - w_n) + conj(v_n) / (z_l - conj(w_n))

``v, w`` (..., N2) complex are the kept halves of conjugate-symmetric vectors; ``z`` (..., Lz)
complex. Backends: ``"reference"`` materialises the (..., Lz, N2) terms; ``"chunked"`` (the
default) never holds more than ``chunk`` evaluation points of them at once.
"""

from __future__ import annotations

import torch

DEFAULT_CHUNK = 256


def cauchy_reference(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Plain Cauchy sum with conjugate pairs, materialising (..., Lz, N2) terms."""
    z, v, w = z[..., :, None], v[..., None, :], w[..., None, :]
    return (v / (z - w) + v.conj() / (z - w.conj())).sum(-1)


def _cauchy_pairs(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """One chunk of the Cauchy sum, the conjugate pair folded into one fraction.

    v / (z - w) + conj(v) / (z - conj(w)) = (2 Re(v) z - 2 Re(v conj(w))) / (z^2 - 2 Re(w) z + |w|^2)

    The denominator does not depend on v, so its reciprocal is formed once per (z, w) pair and
    both numerator parts become contractions over n (batched matrix products):
    sum_n = 2 z sum_n Re(v_n) / den_n - 2 sum_n Re(v_n conj(w_n)) / den_n.
    """
    zc = z[..., :, None]  # (..., chunk, 1)
    inv_den = 1 / (zc * zc - 2 * w.real[..., None, :] * zc + (w.real**2 + w.imag**2)[..., None, :])
    first = torch.einsum("...n,...ln->...l", v.real.to(inv_den.dtype), inv_den)
    second = torch.einsum("...n,...ln->...l", (v * w.conj()).real.to(inv_den.dtype), inv_den)
    return 2 * z * first - 2 * second


def cauchy_chunked(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor, chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
    """The Cauchy sum, ``chunk`` evaluation points at a time (see :func:`_cauchy_pairs`)."""
    if z.shape[-1] == 0:  # no evaluation points
        return cauchy_reference(v, z, w)
    parts = [_cauchy_pairs(v, z[..., i : i + chunk], w) for i in range(0, z.shape[-1], chunk)]
    return torch.cat(parts, dim=-1)


def cauchy(
    v: torch.Tensor, z: torch.Tensor, w: torch.Tensor, backend: str | None = None, chunk: int = DEFAULT_CHUNK
) -> torch.Tensor:
    """``sum_n v_n / (z_l - w_n) + conj(v_n) / (z_l - conj(w_n))`` -> (..., Lz).

    v, w: (..., N2); z: (..., Lz), its leading dimensions broadcast against v's (so each channel
    may have its own evaluation points).
    """
    from hybrids.kernels.ssm import CAUCHY
    if not (v.is_complex() or v.is_floating_point()):
        raise TypeError(f"v: expected a complex or floating-point tensor, got {v.dtype}")
    if not (z.is_complex() or z.is_floating_point()):
        raise TypeError(f"z: expected a complex or floating-point tensor, got {z.dtype}")
    if not (w.is_complex() or w.is_floating_point()):
        raise TypeError(f"w: expected a complex or floating-point tensor, got {w.dtype}")

    if CAUCHY.select(z.device, None, backend) == "reference":
        return cauchy_reference(v, z, w)
    return cauchy_chunked(v, z, w, chunk)
