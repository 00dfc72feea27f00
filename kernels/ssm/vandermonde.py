"""Vandermonde sums with conjugate pairs, the core of the S4D (diagonal) kernel::

    vandermonde(v, x, L)[..., l] = 2 Re sum_n v_n x_n^l        for l < L

``v, x`` (..., N2) complex. Backends: ``"reference"`` materialises the (..., L, N2) powers;
``"chunked"`` (the default) builds one table of ``chunk`` powers and never holds more.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from hybrids.kernels.ssm.cauchy import DEFAULT_CHUNK


def vandermonde_reference(v: torch.Tensor, x: torch.Tensor, length: int) -> torch.Tensor:
    """``2 Re sum_n v_n x_n^l`` for l < length, materialising (..., length, N2) powers."""
    powers = x[..., None, :] ** torch.arange(length, device=x.device)[:, None]  # (..., L, N2)
    return 2 * (v[..., None, :] * powers).sum(-1).real


def vandermonde(
    v: torch.Tensor, x: torch.Tensor, length: int, backend: str | None = None, chunk: int = DEFAULT_CHUNK
) -> torch.Tensor:
    """``2 Re sum_n v_n x_n^l`` for l < ``length`` -> (..., length) real.

    The chunked path computes the powers of a chunk as ``x^l = exp(l log x)`` (any branch of the
    log gives the same integer powers; x must be nonzero) and bounds memory to one chunk of
    (..., chunk, N2) terms. :func:`vandermonde_log` takes ``log x`` directly, as the ZOH kernel
    does with ``log x = dt * Lambda``.
    """
    from hybrids.kernels.ssm import VANDERMONDE
    if not (v.is_complex() or v.is_floating_point()):
        raise TypeError(f"v: expected a complex or floating-point tensor, got {v.dtype}")
    if not (x.is_complex() or x.is_floating_point()):
        raise TypeError(f"x: expected a complex or floating-point tensor, got {x.dtype}")

    if VANDERMONDE.select(x.device, None, backend) == "reference":
        return vandermonde_reference(v, x, length)
    return vandermonde_log(v, torch.log(x), length, chunk=chunk)


def powers(log_x: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """``x^s`` for each step s: (..., S, N2) complex from ``log x`` (..., N2) and steps (S,) real.

    Built as ``exp(s Re log x) (cos(s Im log x) + i sin(s Im log x))``: three real transcendental
    functions are several times cheaper than one complex ``exp`` on CPU (about 74 ns against a few
    ns per element here).
    """
    magnitude = torch.exp(log_x.real[..., None, :] * steps[:, None])
    angle = log_x.imag[..., None, :] * steps[:, None]
    return torch.complex(magnitude * torch.cos(angle), magnitude * torch.sin(angle))


def _tables(log_x: torch.Tensor, length: int, chunk: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(x^j for j < chunk, x^(c chunk) for each chunk c, number of chunks).

    The two tables cost (chunk + length / chunk) powers per mode, least near chunk = sqrt(length):
    the chunk is at most that (and at most ``chunk``).
    """
    chunk = max(1, min(chunk, length, math.isqrt(max(length - 1, 0)) + 1))
    n_chunks = -(-length // chunk)
    real = log_x.real.dtype
    table = powers(log_x, torch.arange(chunk, device=log_x.device, dtype=real))  # (..., chunk, N2)
    offsets = powers(log_x, torch.arange(n_chunks, device=log_x.device, dtype=real) * chunk)  # (..., n, N2)
    return table, offsets, n_chunks


def vandermonde_log(v: torch.Tensor, log_x: torch.Tensor, length: int, chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
    """:func:`vandermonde` given ``log x`` (e.g. ``dt * Lambda`` for ZOH), chunked over l.

    With ``x^(c chunk + j) = x^(c chunk) x^j``, the sum over the N2 modes is one matrix product
    per channel: ``(v x^(c chunk))`` (..., n_chunks, N2) times the table ``x^j`` (..., N2, chunk),
    of which only the real part is needed (two real products). Memory: the table and the output,
    never a (..., L, N2) tensor.
    """
    if length == 0:  # no terms: an empty kernel, still attached to v for autograd
        return (2 * (v * log_x.exp()).sum(-1, keepdim=True).real)[..., :0]
    table, offsets, _ = _tables(log_x, length, chunk)
    weighted = v[..., None, :] * offsets  # (..., n_chunks, N2)
    table_t = table.transpose(-1, -2)  # (..., N2, chunk)
    out = weighted.real @ table_t.real - weighted.imag @ table_t.imag  # Re(weighted @ table_t)
    return 2 * out.flatten(-2)[..., :length]


def vandermonde_transpose_log(u: torch.Tensor, log_x: torch.Tensor, chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
    """``sum_s u[..., s] x_n^(L-1-s)`` -> (..., N2) complex, given ``log x``: the transposed sum.

    This is the state a diagonal recurrence ``h_s = x h_(s-1) + u_s`` reaches after the L inputs
    of ``u`` (..., L) from ``h = 0``; ``log_x`` (..., N2) broadcasts against u's leading
    dimensions. The reversed input, cut into chunks (..., n_chunks, chunk), times the table
    ``x^j`` (..., chunk, N2) (two real products: u is real), then times ``x^(c chunk)`` and summed
    over the chunks: memory O(H chunk N2 + batch H n_chunks N2), never a (..., L, N2) tensor.
    """
    length = u.shape[-1]
    table, offsets, n_chunks = _tables(log_x, length, chunk)
    chunk = table.shape[-2]
    # Reversed, u_rev[..., l] multiplies x^l; padded to whole chunks.
    u_rev = F.pad(u.flip(-1), (0, n_chunks * chunk - length)).unflatten(-1, (n_chunks, chunk))
    u_rev = u_rev.to(table.real.dtype)
    parts = torch.complex(u_rev @ table.real, u_rev @ table.imag)  # (..., n_chunks, N2)
    return (parts * offsets).sum(-2)
