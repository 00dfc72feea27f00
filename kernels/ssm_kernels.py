"""Structured state-space kernels: the Cauchy and Vandermonde sums behind S4 and S4D.

Both are sums over N/2 state modes kept by conjugate symmetry: a real system has its complex
modes in conjugate pairs, so every sum over the full N modes is the kept half plus its conjugate.

- ``cauchy(v, z, w)[..., l] = sum_n v_n / (z_l - w_n) + conj(v_n) / (z_l - conj(w_n))``
- ``vandermonde(v, x, L)[..., l] = 2 Re sum_n v_n x_n^l``

Shapes: ``v, w, x`` (..., N2) complex, ``z`` (Lz,) complex. Each function has a plain reference
that materialises the (..., Lz, N2) tensor of terms, and a chunked path that never holds more
than ``chunk`` points of it at once (memory O(... * chunk * N2) instead of O(... * L * N2)).
``backend=None`` picks the chunked path; ``"reference"`` forces the plain one.
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


def cauchy(
    v: torch.Tensor, z: torch.Tensor, w: torch.Tensor, backend: str | None = None, chunk: int = DEFAULT_CHUNK
) -> torch.Tensor:
    """``sum_n v_n / (z_l - w_n) + conj(v_n) / (z_l - conj(w_n))`` -> (..., Lz).

    v, w: (..., N2); z: (..., Lz), its leading dimensions broadcast against v's (so each channel
    may have its own evaluation points).
    """
    if backend == "reference":
        return cauchy_reference(v, z, w)
    if backend not in (None, "chunked"):
        raise ValueError(f"unknown cauchy backend {backend!r}; use None, 'chunked' or 'reference'")
    parts = [_cauchy_pairs(v, z[..., i : i + chunk], w) for i in range(0, z.shape[-1], chunk)]
    return torch.cat(parts, dim=-1)


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
    if backend == "reference":
        return vandermonde_reference(v, x, length)
    if backend not in (None, "chunked"):
        raise ValueError(f"unknown vandermonde backend {backend!r}; use None, 'chunked' or 'reference'")
    return vandermonde_log(v, torch.log(x), length, chunk=chunk)


def vandermonde_log(v: torch.Tensor, log_x: torch.Tensor, length: int, chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
    """:func:`vandermonde` given ``log x`` (e.g. ``dt * Lambda`` for ZOH), chunked over l.

    One table ``x^j`` for j < chunk is built with ``exp``; chunk c then uses
    ``x^(c chunk + j) = x^(c chunk) x^j``, one complex product per term instead of an ``exp``.
    """
    chunk = min(chunk, length)
    steps = torch.arange(chunk, device=log_x.device, dtype=log_x.real.dtype)
    table = torch.exp(log_x[..., None, :] * steps[:, None])  # (..., chunk, N2)
    out = []
    for start in range(0, length, chunk):
        offset = torch.exp(log_x * start)[..., None, :]  # x^start, (..., 1, N2)
        width = min(chunk, length - start)
        out.append(2 * torch.einsum("...n,...ln->...l", v, offset * table[..., :width, :]).real)
    return torch.cat(out, dim=-1)


# -- S4D: diagonal state matrices --------------------------------------------------------------

DISCRETISATIONS = ("zoh", "bilinear")


def discretize_diagonal(
    Lambda: torch.Tensor, B: torch.Tensor, dt: torch.Tensor, method: str = "zoh"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Discrete (A_bar, B_bar) of the diagonal system dx/dt = Lambda x + B u with step dt.

    Lambda, B: (H, N2) complex; dt: (H,) real. ZOH: A_bar = exp(dt Lambda),
    B_bar = (A_bar - 1) / Lambda * B. Bilinear: A_bar = (1 + dt/2 Lambda) / (1 - dt/2 Lambda),
    B_bar = dt B / (1 - dt/2 Lambda).
    """
    dt_lambda = dt[:, None] * Lambda
    if method == "zoh":
        A_bar = torch.exp(dt_lambda)
        return A_bar, torch.expm1(dt_lambda) / Lambda * B
    if method == "bilinear":
        half = dt_lambda / 2
        return (1 + half) / (1 - half), dt[:, None] * B / (1 - half)
    raise ValueError(f"unknown discretisation {method!r}; use one of {DISCRETISATIONS}")


def diagonal_kernel(
    Lambda: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    dt: torch.Tensor,
    length: int,
    method: str = "zoh",
    backend: str | None = None,
) -> torch.Tensor:
    """S4D convolution kernel ``K[h, l] = 2 Re sum_n C_n B_bar_n A_bar_n^l`` -> (H, length) real."""
    A_bar, B_bar = discretize_diagonal(Lambda, B, dt, method)
    if backend == "reference":
        return vandermonde_reference(C * B_bar, A_bar, length)
    if method == "zoh":  # log A_bar is dt * Lambda exactly: no complex log needed
        return vandermonde_log(C * B_bar, dt[:, None] * Lambda, length)
    return vandermonde(C * B_bar, A_bar, length, backend=backend)


# -- S4: diagonal plus low rank ----------------------------------------------------------------


def dplr_kernel(
    Lambda: torch.Tensor,
    P: torch.Tensor,
    B: torch.Tensor,
    C_tilde: torch.Tensor,
    dt: torch.Tensor,
    length: int,
    Q: torch.Tensor | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """S4 convolution kernel of A = Lambda - P Q^*, bilinear step dt -> (H, length) real.

    Shapes: Lambda, B, C_tilde (H, N2) complex; P, Q (R, H, N2) complex (Q defaults to P);
    dt (H,). All vectors are the kept halves of conjugate-symmetric ones.

    ``C_tilde`` is ``C (I - A_bar^length)``: the kernel is evaluated through its truncated
    generating function at the roots of unity omega_k = exp(-2 pi i k / L), where

        K_hat(omega) = C_tilde (I - A_bar omega)^-1 B_bar = 2 / (1 + omega) C_tilde (g - A)^-1 B,
        g(omega) = 2 / dt (1 - omega) / (1 + omega),

    and (g - Lambda + P Q^*)^-1 is expanded with the Woodbury identity into Cauchy sums
    k_ab = sum_n a_n b_n / (g - Lambda_n). An inverse real FFT returns the kernel.
    """
    Q = P if Q is None else Q
    rank = P.shape[0]
    real_dtype = Lambda.real.dtype
    n_freq = length // 2 + 1
    k = torch.arange(n_freq, device=Lambda.device, dtype=real_dtype)
    omega = torch.exp(torch.complex(torch.zeros_like(k), -2 * torch.pi * k / length))  # (F,)
    # omega = -1 (k = L/2, L even) is a removable singularity: handled in closed form below.
    nyquist = length % 2 == 0
    regular = omega[:-1] if nyquist else omega
    g = (2 / dt[:, None]) * (1 - regular) / (1 + regular)  # (H, F')

    # Rows a in (C_tilde, conj Q_1..R), columns b in (B, P_1..R): all (1 + R)^2 Cauchy sums at once.
    a = torch.cat((C_tilde[None], Q.conj()), dim=0)  # (1 + R, H, N2)
    b = torch.cat((B[None], P), dim=0)  # (1 + R, H, N2)
    v = a[:, None] * b[None, :]  # (1 + R, 1 + R, H, N2)
    r = cauchy(v, g, Lambda, backend=backend)  # (1 + R, 1 + R, H, F')
    k00, k01, k10, k11 = r[0, 0], r[0, 1:], r[1:, 0], r[1:, 1:]
    if rank == 1:
        correction = k01[0] * k10[0] / (1 + k11[0, 0])
    else:  # (I + k11)^-1 k10 per (h, frequency)
        eye = torch.eye(rank, dtype=k11.dtype, device=k11.device)
        k11_m = k11.permute(2, 3, 0, 1) + eye  # (H, F', R, R)
        solved = torch.linalg.solve(k11_m, k10.permute(1, 2, 0)[..., None])[..., 0]  # (H, F', R)
        correction = (k01.permute(1, 2, 0) * solved).sum(-1)
    K_hat = 2 / (1 + regular) * (k00 - correction)  # (H, F')
    if nyquist:
        # At omega = -1: 2/(1 + omega) (g - A)^-1 -> dt/2 I, the low-rank part vanishes, so
        # K_hat(-1) = dt/2 * sum over all N modes of C_tilde B = dt * Re sum_half C_tilde B.
        last = dt * (C_tilde * B).sum(-1).real
        K_hat = torch.cat((K_hat, last.to(K_hat.dtype)[:, None]), dim=-1)
    return torch.fft.irfft(K_hat, n=length)


def conjugate_full(half: torch.Tensor) -> torch.Tensor:
    """(..., N2) kept modes -> (..., 2 N2) with their conjugates appended."""
    return torch.cat((half, half.conj()), dim=-1)


def dplr_bilinear_dense(
    Lambda: torch.Tensor, P: torch.Tensor, B: torch.Tensor, dt: torch.Tensor, Q: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense bilinear discretisation of A = Lambda - P Q^* in the full basis of N = 2 N2 modes.

    Returns A_bar (H, N, N) = (I - dt/2 A)^-1 (I + dt/2 A) and B_bar (H, N) = (I - dt/2 A)^-1 dt B.
    O(H N^3): for the recurrent mode and for tests, not for training.
    """
    Q = P if Q is None else Q
    P_full, Q_full = conjugate_full(P), conjugate_full(Q)  # (R, H, N)
    A = torch.diag_embed(conjugate_full(Lambda)) - torch.einsum("rhn,rhm->hnm", P_full, Q_full.conj())
    eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
    half_step = (dt / 2).to(A.dtype)[:, None, None]
    left = eye - half_step * A
    A_bar = torch.linalg.solve(left, eye + half_step * A)
    B_bar = torch.linalg.solve(left, (dt.to(A.dtype)[:, None] * conjugate_full(B))[..., None])[..., 0]
    return A_bar, B_bar
