"""S4's diagonal-plus-low-rank state matrices: the kernel through the truncated generating
function and Cauchy sums, and the dense bilinear discretisation for the recurrent form."""

from __future__ import annotations

import torch

from hybrids.kernels.ssm.cauchy import cauchy



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
