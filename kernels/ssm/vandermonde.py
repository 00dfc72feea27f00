"""Vandermonde sums with conjugate pairs, the core of the S4D (diagonal) kernel::

    vandermonde(v, x, L)[..., l] = 2 Re sum_n v_n x_n^l        for l < L

``v, x`` (..., N2) complex. Backends: ``"reference"`` materialises the (..., L, N2) powers;
``"chunked"`` (the default) builds one table of ``chunk`` powers and never holds more.
"""

from __future__ import annotations

import torch

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

    if VANDERMONDE.select(x.device, None, backend) == "reference":
        return vandermonde_reference(v, x, length)
    return vandermonde_log(v, torch.log(x), length, chunk=chunk)


def vandermonde_log(v: torch.Tensor, log_x: torch.Tensor, length: int, chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
    """:func:`vandermonde` given ``log x`` (e.g. ``dt * Lambda`` for ZOH), chunked over l.

    One table ``x^j`` for j < chunk is built with ``exp``; chunk c then uses
    ``x^(c chunk + j) = x^(c chunk) x^j``, one complex product per term instead of an ``exp``.
    """
    if length == 0:  # no terms: an empty kernel, still attached to v for autograd
        return (2 * (v * log_x.exp()).sum(-1, keepdim=True).real)[..., :0]
    chunk = min(chunk, length)
    steps = torch.arange(chunk, device=log_x.device, dtype=log_x.real.dtype)
    table = torch.exp(log_x[..., None, :] * steps[:, None])  # (..., chunk, N2)
    out = []
    for start in range(0, length, chunk):
        offset = torch.exp(log_x * start)[..., None, :]  # x^start, (..., 1, N2)
        width = min(chunk, length - start)
        out.append(2 * torch.einsum("...n,...ln->...l", v, offset * table[..., :width, :]).real)
    return torch.cat(out, dim=-1)


def vandermonde_transpose_log(u: torch.Tensor, log_x: torch.Tensor, chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
    """``sum_s u[..., s] x_n^(L-1-s)`` -> (..., N2) complex, given ``log x``: the transposed sum.

    This is the state a diagonal recurrence ``h_s = x h_(s-1) + u_s`` reaches after the L inputs
    of ``u`` (..., L) from ``h = 0``; ``log_x`` (..., N2) broadcasts against u's leading
    dimensions. Like :func:`vandermonde_log`, it holds one table of ``chunk`` powers (..., chunk,
    N2) and never a (..., L, N2) tensor: with u (batch, H, L) and x (H, N2), memory is
    O(H chunk N2 + batch H N2).
    """
    length = u.shape[-1]
    chunk = max(1, min(chunk, length))
    steps = torch.arange(chunk, device=log_x.device, dtype=log_x.real.dtype)
    table = torch.exp(log_x[..., None, :] * steps[:, None])  # x^j, (..., chunk, N2)
    # Reversed, u_rev[..., l] multiplies x^l.
    u_rev = u.flip(-1).to(log_x.dtype)
    total = None
    for start in range(0, length, chunk):
        width = min(chunk, length - start)
        powers = torch.exp(log_x * start)[..., None, :] * table[..., :width, :]  # x^(start + j)
        part = torch.einsum("...l,...ln->...n", u_rev[..., start : start + width], powers)
        total = part if total is None else total + part
    return total
