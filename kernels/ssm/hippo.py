r"""HiPPO state matrices and their S4 (normal plus low-rank) and S4D (diagonal) forms.

A HiPPO system is the linear ODE

    dx/dt = A x + B u,        x: (N,) state,  u: scalar input,  A: (N, N),  B: (N,)

whose state ``x(t)`` holds the coefficients of the input's history ``s -> u(t - s)``, ``s >= 0``,
in a basis of functions of the lag s that is orthonormal under a measure (Gu et al. 2020, "HiPPO:
Recurrent Memory with Optimal Polynomial Projections"; Gu et al. 2022, "How to Train Your HiPPO").
S4 (Gu et al. 2022, "Efficiently Modeling Long Sequences with Structured State Spaces") uses
``(A, B)`` as a time-invariant SSM and writes A in normal-plus-low-rank (NPLR) form; S4D (Gu et
al. 2022, "On the Parameterization and Initialization of Diagonal State Space Models") drops the
low-rank part and keeps a diagonal.

Conventions used throughout (the ones of S4's code and of "How to Train Your HiPPO"):

* A carries its minus sign: the system is ``dx/dt = A x + B u`` with A stable, where the HiPPO
  paper writes ``dx/dt = -A x + B u``.
* States are coefficients in an *orthonormal* basis, so Legendre states carry the
  ``sqrt(2n + 1)`` normalisation on both sides of A (A is similar to HiPPO's un-normalised one).
* Index ``n`` is the row (the state being updated) and ``k`` the column, ``n, k = 0 .. N-1``,
  and ``r_n = sqrt(2n + 1)``.

The measures (derivations in the docstrings of ``_legs`` .. ``_fourier`` below)::

    legs      A[n, k] = -r_n r_k (n > k),  -(n + 1) (n = k),  0 (n < k)   B[n] = r_n
    legt      A[n, k] = -r_n r_k / 2 * (1 if n >= k else (-1)^(n - k))     B[n] = r_n / 2
    lagt      A[n, k] = -1 (n > k),  -1/2 (n = k),  0 (n < k)               B[n] = 1
    fout      A = D / 2 - e e^T, D skew-symmetric with blocks of 2 pi k     B = e
    fourier2  A = D - 2 e e^T                                               B = 2 e

Which convention each follows (all checked against state-spaces/s4's ``transition``, whose
names they take): ``legs`` is S4's and HTTYH's LegS; ``legt`` is S4's ``legt``, HiPPO's LegT
over a window of length theta = 2 (S4 halves A and B "for timescale correctness"); ``lagt`` is
S4's ``lagt`` (beta = 1); ``fout`` is S4's ``fout`` (also called ``fourier`` there), the Fourier
basis over a window of length 2 like ``legt``; ``fourier2`` is S4's ``fourier2``, the same basis
over a window of length 1, i.e. exactly twice fout's A and B (and sqrt 2 times its P): fourier2
at step dt is fout at step 2 dt. (Earlier versions of this module called fourier2 ``fout``.)

Clipping B. state-spaces/s4's ``nplr`` clips the imaginary part of B in the modes' basis to
[-2, 2] by default (``B_clip=2.0``), for every measure, and its S4D-LegS takes that clipped B;
:func:`nplr` and :func:`diagonal_init` offer it as ``B_clip`` but default to no clipping (the
exact change of basis); the S4 and S4D mixers pass 2.0. The clip acts on the phases that
``torch.linalg.eigh`` gives the eigenvectors, as in S4; the kept modes here are the conjugates of
S4's (imaginary parts >= 0 rather than <= 0), and for legs, legt and lagt (checked at N = 16, 64,
256) each mode's B has the same |Re| and |Im| as S4's, so the same modes are clipped: at N = 64,
11 of LegS's 32 (sum |B|^2 over the kept modes 2048 -> 74.9), 3 of LegT's, 1 of LagT's. It is a
no-op for fout and fourier2 whatever the phases (every mode has |B| = 1 resp. 2, or less).

Normal plus low rank. For each measure there is a real ``P: (rank, N)`` such that

    S = A + P^T P = sigma I + K,        sigma real,  K real skew-symmetric (K^T = -K),

so S is normal: ``P^T P = sigma I - (A + A^T) / 2`` cancels the symmetric part of A up to a
multiple of the identity. Hence ``S = V diag(Lambda) V^*`` with V unitary and
``Lambda = sigma + i omega`` where ``omega`` are the eigenvalues of the Hermitian ``-i K``.
Because S is real, its eigenpairs come in conjugate pairs; :func:`nplr` keeps one of each pair
(``N // 2`` modes), which is what S4's kernels consume.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "DIAGONAL_INITS",
    "MEASURES",
    "NPLR",
    "diagonal_init",
    "nplr",
    "rank_correction",
    "reconstruct",
    "required_rank",
    "transition",
]

# Every builder works in float64 and callers cast at the end: these matrices are built once at
# initialisation, and the eigendecomposition of a (256, 256) HiPPO matrix needs the precision.
_WORK = torch.float64


def _legs(N: int) -> tuple[Tensor, Tensor, Tensor]:
    r"""HiPPO-LegS: Legendre polynomials under the scaled measure (uniform on ``[0, t]``).

    In the HiPPO paper the system is time-varying, ``dx/dt = (A x + B u) / t``; S4 drops the
    ``1/t`` and "How to Train Your HiPPO" shows that the time-invariant system projects the
    history onto exponentially warped Legendre polynomials. In the orthonormal basis::

        A[n, k] = -sqrt(2n+1) sqrt(2k+1)   (n > k)
                = -(n + 1)                  (n = k)
                = 0                         (n < k)
        B[n]    = sqrt(2n+1)

    Rank-1 correction ``P[0, n] = sqrt(n + 1/2)``, so ``(P^T P)[n, k] = sqrt(2n+1) sqrt(2k+1) / 2``:
    below the diagonal ``A + P^T P`` is ``-r_n r_k / 2``, above it ``+r_n r_k / 2``, and on the
    diagonal ``-(n + 1) + n + 1/2 = -1/2``. So ``S = -I/2 + K`` with K skew-symmetric.
    """
    n = torch.arange(N, dtype=_WORK)
    r = torch.sqrt(2 * n + 1)  # (N,)
    A = -torch.tril(torch.outer(r, r), diagonal=-1) - torch.diag(n + 1)  # (N, N)
    P = torch.sqrt(n + 0.5)[None, :]  # (1, N)
    return A, r, P


def _legt(N: int) -> tuple[Tensor, Tensor, Tensor]:
    r"""HiPPO-LegT: Legendre polynomials under the translated measure (uniform on a window).

    The state holds ``x_n(t) = (1/theta) int_0^theta u(t - s) g_n(s) ds`` with the orthonormal
    basis ``g_n(s) = sqrt(2n+1) P_n(1 - 2 s / theta)`` of the lag s (``g_n(0) = sqrt(2n+1)`` at
    the present, ``(-1)^n sqrt(2n+1)`` at the far end). Differentiating under the integral,
    using ``P_n' = sum_{k < n, n - k odd} (2k+1) P_k`` and approximating the input that leaves
    the window by its reconstruction ``u(t - theta) ~ sum_k x_k g_k(theta)``, gives::

        A[n, k] = -sqrt(2n+1) sqrt(2k+1) / theta * (1           if n >= k
                                                    (-1)^(n-k)  if n < k)
        B[n]    = sqrt(2n+1) / theta

    This is HiPPO's LegT conjugated by ``diag((-1)^n)`` (its basis runs the other way along
    the window) and normalised; S4's ``legt`` halves A and B, i.e. ``theta = 2``, used here.

    The symmetric part of A is ``-r_n r_k / 2`` where ``n - k`` is even and 0 where it is odd,
    i.e. ``-(p_even p_even^T + p_odd p_odd^T)`` with ``p_even[n] = r_n / sqrt(2)`` for even n
    (0 for odd n) and ``p_odd`` the other way round. The rank-2 correction
    ``P = [p_even; p_odd]`` cancels it exactly, leaving ``S = K`` skew-symmetric (sigma = 0).
    A rank-1 P cannot give ``S = sigma I + K`` here for N >= 4, because
    ``sigma I - (A + A^T)/2`` then has rank at least 2.
    """
    idx = torch.arange(N)
    r = torch.sqrt(2 * idx.to(_WORK) + 1)  # (N,)
    gap = idx[:, None] - idx[None, :]  # (N, N): n - k
    sign = torch.where((gap < 0) & (gap % 2 == 1), -1.0, 1.0).to(_WORK)  # (-1)^(n-k) above diag
    A = -0.5 * torch.outer(r, r) * sign  # (N, N)
    B = 0.5 * r  # (N,)
    even = (idx % 2 == 0).to(_WORK)
    P = torch.stack([r * even, r * (1 - even)]) / math.sqrt(2)  # (2, N)
    return A, B, P


def _lagt(N: int) -> tuple[Tensor, Tensor, Tensor]:
    r"""HiPPO-LagT: Laguerre functions under an exponentially decaying measure.

    The state holds ``x_n(t) = int_0^inf u(t - s) l_n(s) ds`` in the Laguerre functions
    ``l_n(s) = L_n(s) exp(-s/2)``, orthonormal on ``[0, inf)``. With ``l_n(0) = 1`` and
    ``L_n' = -sum_{k < n} L_k`` one gets ``l_n' = -sum_{k < n} l_k - l_n / 2``, hence::

        A[n, k] = -1 (n > k),  -1/2 (n = k),  0 (n < k)
        B[n]    = 1

    This is S4's ``lagt``. HiPPO's original LagT, ``x_n = int_0^inf u(t - s) L_n(s) e^{-s} ds``
    with L_n orthonormal under the measure ``e^{-s} ds``, has -1 on the diagonal instead.

    Rank-1 correction ``P[0, n] = sqrt(1/2)``: adding ``P^T P = 1/2`` everywhere leaves
    ``-1/2`` below, ``0`` on and ``+1/2`` above the diagonal, a skew-symmetric S (sigma = 0).
    """
    A = 0.5 * torch.eye(N, dtype=_WORK) - torch.tril(torch.ones(N, N, dtype=_WORK))
    B = torch.ones(N, dtype=_WORK)
    P = torch.full((1, N), math.sqrt(0.5), dtype=_WORK)
    return A, B, P


def _fourier(N: int, theta: float) -> tuple[Tensor, Tensor, Tensor]:
    r"""HiPPO-FouT: truncated Fourier basis under the translated measure (uniform on a window).

    The state holds ``x_n(t) = (1/theta) int_0^theta u(t - s) p_n(s / theta) ds`` in the real
    Fourier basis of the lag over a window of length theta, in cos/sin pairs
    ``k = 0 .. N/2 - 1`` (so N must be even), orthonormal on ``[0, 1]``::

        p_{2k}(s) = sqrt(2) cos(2 pi k s)   (p_0 = 1),
        p_{2k+1}(s) = sqrt(2) sin(2 pi k s) (p_1 = 0: kept so the states pair up),

    as in "How to Train Your HiPPO" and S4's code. Differentiating, ``p_{2k}' = -2 pi k p_{2k+1}``
    and ``p_{2k+1}' = 2 pi k p_{2k}`` give the skew-symmetric block-diagonal D with
    ``D[2k, 2k+1] = -2 pi k`` and ``D[2k+1, 2k] = 2 pi k``, plus boundary terms
    ``e (u(t) - u(t - theta))`` with ``e[n] = p_n(0) = p_n(1)`` (1, 0, sqrt 2, 0, sqrt 2, 0, ...),
    all divided by theta. The Fourier series of the window jumps at its ends and converges there
    to the mean of both sides, ``e^T x ~ (u(t) + u(t - theta)) / 2``; substituting
    ``u(t - theta) ~ 2 e^T x - u(t)``::

        A = (D - 2 e e^T) / theta,        B = 2 e / theta.

    ``theta = 2`` is S4's ``fout`` (frequencies ``pi k``, ``A = D/2 - e e^T``, ``B = e``), the
    window length its ``legt`` also uses; ``theta = 1`` is S4's ``fourier2`` ("orthonormal on
    [0, 1]": frequencies ``2 pi k``, twice fout's A and B).

    Rank-1 correction ``P = sqrt(2 / theta) e`` gives ``S = D / theta`` skew-symmetric
    (sigma = 0). State 1 (``p_1 = 0``) has a zero row and column in A and ``B[1] = 0``: a dead
    state that the input never reaches, so A has one exact zero eigenvalue; all others have
    negative real part. S has the exact double eigenvalue 0 on ``span(e_0, e_1)`` (the ``k = 0``
    block).
    """
    k = torch.arange(N // 2)
    e = torch.zeros(N, dtype=_WORK)  # basis values at both ends of the window
    e[0::2] = math.sqrt(2)
    e[0] = 1
    D = torch.zeros(N, N, dtype=_WORK)
    D[2 * k + 1, 2 * k] = 2 * math.pi * k.to(_WORK)
    D[2 * k, 2 * k + 1] = -2 * math.pi * k.to(_WORK)
    A = (D - 2 * torch.outer(e, e)) / theta  # (N, N)
    P = math.sqrt(2 / theta) * e[None, :]  # (1, N)
    return A, 2 * e / theta, P


def _fout(N: int) -> tuple[Tensor, Tensor, Tensor]:
    """S4's ``fout``: :func:`_fourier` over a window of length 2."""
    return _fourier(N, theta=2.0)


def _fourier2(N: int) -> tuple[Tensor, Tensor, Tensor]:
    """S4's ``fourier2``: :func:`_fourier` over a window of length 1 (twice fout's A and B)."""
    return _fourier(N, theta=1.0)


_BUILDERS = {"legs": _legs, "legt": _legt, "lagt": _lagt, "fout": _fout, "fourier2": _fourier2}
MEASURES: tuple[str, ...] = tuple(_BUILDERS)


def _build(measure: str, N: int) -> tuple[Tensor, Tensor, Tensor]:
    """(A (N, N), B (N,), P (rank, N)) in float64, after checking the arguments."""
    if measure not in _BUILDERS:
        raise ValueError(f"unknown HiPPO measure {measure!r}; valid measures: {', '.join(MEASURES)}")
    if not isinstance(N, int) or N < 1:
        raise ValueError(f"N must be a positive int, got {N!r}")
    if measure in ("fout", "fourier2") and N % 2:
        raise ValueError(f"measure {measure!r} needs an even N (cos/sin pairs), got N={N}")
    return _BUILDERS[measure](N)


def required_rank(measure: str, N: int = 4) -> int:
    """The smallest rank of :func:`rank_correction` for ``measure`` at size N (legt: 2, others: 1)."""
    return _build(measure, N)[2].shape[0]


def _require_even(N: int, what: str) -> None:
    # The half representation keeps N // 2 conjugate pairs; an odd N leaves one real mode that
    # has no partner, and 2 Re(V ...) over N // 2 columns has rank at most N - 1.
    if not isinstance(N, int) or N < 2 or N % 2:
        raise ValueError(f"{what} needs an even N >= 2 (modes come in conjugate pairs), got N={N!r}")


def transition(measure: str, N: int, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """The continuous-time HiPPO system ``dx/dt = A x + B u`` of a measure.

    Args:
        measure: one of ``"legs"``, ``"legt"``, ``"lagt"``, ``"fout"``, ``"fourier2"`` (see the
            module docstring for the formulas and conventions).
        N: state size; ``"fout"`` and ``"fourier2"`` need it even.
        dtype: real dtype of the result (built in float64, then cast).

    Returns:
        ``A: (N, N)`` and ``B: (N,)``, real.
    """
    A, B, _ = _build(measure, N)
    return A.to(dtype), B.to(dtype)


def rank_correction(measure: str, N: int, rank: int = 1, dtype: torch.dtype = torch.float64) -> Tensor:
    """The real low-rank ``P`` that makes ``S = A + P^T P`` normal (``sigma I`` + skew-symmetric).

    ``P^T P`` is ``sum_r outer(P[r], P[r])``. The measures need::

        legs  rank 1   P[0, n] = sqrt(n + 1/2)                         sigma = -1/2
        legt  rank 2   P[0, n] = sqrt(n + 1/2) for even n, 0 for odd n  sigma = 0
                       P[1, n] = sqrt(n + 1/2) for odd n, 0 for even n
        lagt  rank 1   P[0, n] = sqrt(1/2)                             sigma = 0
        fout  rank 1   P[0] = e = (1, 0, sqrt 2, 0, sqrt 2, 0, ...)       sigma = 0
        fourier2       P[0] = sqrt(2) e = (sqrt 2, 0, 2, 0, 2, 0, ...)  (rank 1, sigma = 0)

    Args:
        measure, N: as for :func:`transition`.
        rank: rows of the result; rows beyond what the measure needs are zero.
        dtype: real dtype of the result.

    Returns:
        ``P: (rank, N)``, real.

    Raises:
        ValueError: if ``rank`` is smaller than the measure needs (2 for ``"legt"``).
    """
    _, _, P = _build(measure, N)
    if rank < P.shape[0]:
        raise ValueError(f"measure {measure!r} needs rank >= {P.shape[0]}, got rank={rank}")
    padding = torch.zeros(rank - P.shape[0], N, dtype=_WORK)
    return torch.cat([P, padding]).to(dtype)


class NPLR(NamedTuple):
    r"""Half of the conjugate-symmetric NPLR form of a real HiPPO matrix (M = N // 2 modes).

    With ``S = A + P^T P = V_full diag(Lambda_full) V_full^*`` and the full basis
    ``V_full = [V, conj(V)]`` (unitary), the real A, B and P are recovered as::

        A = 2 Re(V diag(Lambda) V^*) - Q^T Q,   Q = 2 Re(P V^T)   (the real P, (rank, N))
        B = 2 Re(V B)

    (see :func:`reconstruct`). In the full eigenbasis, ``V_full^* A V_full = diag(Lambda_full)
    - p p^*`` with ``p = [P, conj(P)]^T`` of shape (N, rank): the form S4's Cauchy kernel uses.
    """

    Lambda: Tensor
    """(M,) complex: eigenvalues of S with imaginary part >= 0, sorted by imaginary part."""
    P: Tensor
    """(rank, M) complex: the low-rank term in the eigenbasis, ``P_real @ conj(V)``."""
    B: Tensor
    """(M,) complex: the input matrix in the eigenbasis, ``V^* B_real``."""
    V: Tensor
    """(N, M) complex: orthonormal eigenvectors of S, also orthogonal to their conjugates."""


def _real_pairs(W: Tensor) -> Tensor:
    r"""Complex columns ``(q_{2j} + i q_{2j+1}) / sqrt 2`` from the null space spanned by W.

    ``W: (N, z)`` spans the eigenspace of S for eigenvalue ``sigma`` (``omega = 0``). As S is
    real, that space is spanned by z real orthonormal vectors q, read off the left singular
    vectors of ``[Re W, Im W]`` (N, 2z). Each pair q, q' gives ``v = (q + i q') / sqrt 2``
    with ``v^* conj(v) = 0`` and ``v v^* + conj(v) v^T = q q^T + q' q'^T``, so the pair is
    represented by one kept mode and its conjugate, like the ``omega > 0`` modes. z is even
    because N is even and the ``omega != 0`` eigenvalues pair up as ``+-omega``.
    """
    z = W.shape[1]
    Q = torch.linalg.svd(torch.cat([W.real, W.imag], dim=1), full_matrices=False).U[:, :z]  # (N, z)
    return torch.complex(Q[:, 0::2], Q[:, 1::2]) / math.sqrt(2)  # (N, z // 2)


def nplr(
    measure: str, N: int, rank: int = 1, dtype: torch.dtype = torch.float64, B_clip: float | None = None
) -> NPLR:
    r"""The S4 normal-plus-low-rank form of a HiPPO matrix, half of each conjugate pair kept.

    ``S = A + P^T P`` is ``sigma I + K`` with K real skew-symmetric (:func:`rank_correction`).
    Rather than a general (non-Hermitian) eigensolver, which loses orthogonality of V on
    clustered eigenvalues, the eigenpairs come from the Hermitian ``H = -i K``::

        H = U diag(omega) U^*   (torch.linalg.eigh: U exactly unitary, omega real)
        S = U diag(sigma + i omega) U^*,    sigma = mean(diag(S)).

    K is taken as ``(S - S^T) / 2`` so that H is Hermitian to the last bit, and a sigma below
    the rounding tolerance is set to 0 (legt, lagt, fout, fourier2). Since K is real,
    ``omega`` and ``-omega`` share conjugate eigenvectors; the kept modes are

    * every ``omega > tol`` (``tol = N * eps * ||A||_F``), in ascending order;
    * the eigenvalue ``omega = 0`` (up to tol) has real eigenvectors, which have no distinct
      conjugate partner: the z-dimensional null space of K is given a real orthonormal basis,
      whose vectors are combined in pairs into ``z / 2`` complex eigenvectors
      ``(q + i q') / sqrt 2`` with eigenvalue ``sigma`` (placed first, imaginary part 0). Of the
      measures only ``"fout"`` and ``"fourier2"`` have such a pair (their constant and dead
      states); ``"legt"`` and ``"lagt"`` have a zero eigenvalue only for odd N, which is
      rejected.

    Args:
        measure, N, rank: as for :func:`rank_correction` (``"legt"`` needs ``rank=2``). N must
            be even: with odd N an unpaired real mode cannot be written with N // 2 conjugate
            pairs.
        dtype: real dtype; the result is its complex counterpart (computed in float64).
        B_clip: clip ``Im(B)`` to ``[-B_clip, B_clip]`` (state-spaces/s4 uses 2.0, see the
            module docstring); None (default) keeps the exact ``V^* B`` that
            ``2 Re(V B) = B_real`` inverts.

    Returns:
        :class:`NPLR` with ``Lambda (M,)``, ``P (rank, M)``, ``B (M,)``, ``V (N, M)``,
        ``M = N // 2``.
    """
    _require_even(N, "nplr")
    A, B, _ = _build(measure, N)
    P = rank_correction(measure, N, rank)  # (rank, N)
    S = A + P.T @ P  # (N, N), normal
    K = (S - S.T) / 2  # (N, N), skew-symmetric
    omega, U = torch.linalg.eigh(-1j * K)  # (N,), (N, N), omega ascending

    tol = N * torch.finfo(_WORK).eps * torch.linalg.matrix_norm(A)
    sigma = S.diagonal().mean()
    # legt, lagt, fout and fourier2 have sigma = 0 exactly; do not let rounding make Re(Lambda) positive.
    sigma = torch.where(sigma.abs() <= tol, 0.0, sigma)
    positive, zero = omega > tol, omega.abs() <= tol
    if int((omega < -tol).sum()) != int(positive.sum()):  # a real skew K pairs them exactly
        raise RuntimeError(f"nplr({measure!r}, {N}): eigenvalues of S did not pair up as +-omega")
    V = torch.cat([_real_pairs(U[:, zero]), U[:, positive]], dim=1)  # (N, M)
    zero_pairs = int(zero.sum()) // 2
    omega_kept = torch.cat([torch.zeros(zero_pairs, dtype=_WORK), omega[positive]])  # (M,)
    Lambda = torch.complex(sigma.expand_as(omega_kept), omega_kept)  # (M,)

    complex_dtype = dtype.to_complex()
    B_half = V.conj().T @ B.to(V.dtype)  # (M,)
    if B_clip is not None:
        B_half = _clip_imag(B_half, B_clip)
    P_half = P.to(V.dtype) @ V.conj()  # (rank, M)
    return NPLR(*(t.to(complex_dtype) for t in (Lambda, P_half, B_half, V)))


def _clip_imag(B: Tensor, bound: float) -> Tensor:
    """B with its imaginary part clamped to [-bound, bound] (the real part kept)."""
    if not bound > 0:
        raise ValueError(f"B_clip must be positive or None, got {bound}")
    return torch.complex(B.real, B.imag.clamp(-bound, bound))


def reconstruct(nplr_result: NPLR) -> Tensor:
    r"""The real ``A: (N, N)`` rebuilt from the half representation of :func:`nplr`.

    Conjugate symmetry makes every real vector ``y = V V^* y + conj(V) V^T y = 2 Re(V V^* y)``,
    so the real low-rank rows are ``Q[r] = 2 Re(V P[r])`` (``Q = 2 Re(P V^T)``, (rank, N)) and::

        S = V diag(Lambda) V^* + conj(V diag(Lambda) V^*) = 2 Re(V diag(Lambda) V^*)
        A = S - Q^T Q.

    The low-rank term is not ``2 Re(V P^T conj(P) V^*)``: ``Q[r] Q[r]^T`` also has the cross
    terms ``2 Re(V P[r] P[r]^T V^T)``, which only vanish by accident.
    """
    Lambda, P, _, V = nplr_result
    S = 2 * ((V * Lambda) @ V.conj().T).real  # (N, N)
    Q = 2 * (P @ V.T).real  # (rank, N)
    return S - Q.T @ Q


DIAGONAL_INITS: tuple[str, ...] = ("legs", "lin", "inv", "real")


def diagonal_init(
    kind: str, N: int, dtype: torch.dtype = torch.float64, B_clip: float | None = None
) -> tuple[Tensor, Tensor]:
    r"""S4D initialisations of a diagonal SSM: ``Lambda (N//2,)`` and ``B (N//2,)``, complex.

    For ``n = 0 .. N/2 - 1`` (each mode stands for itself and its conjugate, as in :func:`nplr`)::

        legs  S4D-LegS: Lambda, B = nplr("legs", N).Lambda, nplr("legs", N).B
                        (the diagonal of S4-LegS with the low-rank term dropped)
        lin   S4D-Lin:  Lambda_n = -1/2 + i pi n,                        B_n = 1
        inv   S4D-Inv:  Lambda_n = -1/2 + i (N / pi) (N / (2n + 1) - 1), B_n = 1
        real  S4D-Real: Lambda_n = -(n + 1),                             B_n = 1

    Args:
        kind: one of :data:`DIAGONAL_INITS`.
        N: state size, even (N // 2 kept modes).
        dtype: real dtype; the results have its complex counterpart.
        B_clip: as for :func:`nplr`; only S4D-LegS has a B with an imaginary part to clip (as in
            state-spaces/s4, whose S4D-LegS takes the clipped B of its ``nplr``).
    """
    if kind not in DIAGONAL_INITS:
        raise ValueError(f"unknown diagonal init {kind!r}; valid kinds: {', '.join(DIAGONAL_INITS)}")
    _require_even(N, "diagonal_init")
    if kind == "legs":
        Lambda, _, B, _ = nplr("legs", N, dtype=dtype, B_clip=B_clip)
        return Lambda, B
    n = torch.arange(N // 2, dtype=_WORK)
    real = torch.full_like(n, -0.5)
    if kind == "lin":
        imag = math.pi * n
    elif kind == "inv":
        imag = N / math.pi * (N / (2 * n + 1) - 1)
    else:  # "real"
        real, imag = -(n + 1), torch.zeros_like(n)
    complex_dtype = dtype.to_complex()
    return torch.complex(real, imag).to(complex_dtype), torch.ones(N // 2, dtype=complex_dtype)
