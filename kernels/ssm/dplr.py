"""S4's diagonal-plus-low-rank state matrices: the kernel through the truncated generating
function and Cauchy sums, the dense bilinear discretisation for the recurrent form, C~ for a
new kernel length, and the SSM applied to a sequence from a state and to its final state."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hybrids.kernels.dtypes import at_least_float32
from hybrids.kernels.ssm.cauchy import cauchy
from hybrids.kernels.ssm.fftconv import fft_conv
from hybrids.kernels.ssm.krylov import DenseStatePlan, dense_ssm_state


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
    """S4 convolution kernel of A = Lambda - P Q^*, bilinear step dt -> (..., H, length) real.

    Shapes: Lambda, C_tilde (H, N2) complex; B (..., H, N2) complex (leading dimensions give
    one kernel per input vector, e.g. one per initial state, see :func:`dplr_ssm`); P, Q
    (R, H, N2) complex (Q defaults to P); dt (H,). All vectors are the kept halves of
    conjugate-symmetric ones.

    ``C_tilde`` is ``C (I - A_bar^length)``: the kernel is evaluated through its truncated
    generating function at the roots of unity omega_k = exp(-2 pi i k / L), where

        K_hat(omega) = C_tilde (I - A_bar omega)^-1 B_bar = 2 / (1 + omega) C_tilde (g - A)^-1 B,
        g(omega) = 2 / dt (1 - omega) / (1 + omega),

    and (g - Lambda + P Q^*)^-1 is expanded with the Woodbury identity into Cauchy sums
    k_ab = sum_n a_n b_n / (g - Lambda_n). An inverse real FFT returns the kernel.
    """
    Q = P if Q is None else Q
    rank = P.shape[0]
    batch_shape = B.shape[:-2]
    B = B.reshape(-1, *B.shape[-2:])  # (S, H, N2): S input vectors
    n_inputs = B.shape[0]
    real_dtype = Lambda.real.dtype
    if length == 0:  # no taps: an empty kernel (the generating function has no roots of unity)
        return (C_tilde * B).real.sum(-1, keepdim=True)[..., :0].reshape(*batch_shape, *B.shape[-2:-1], 0)
    n_freq = length // 2 + 1
    k = torch.arange(n_freq, device=Lambda.device, dtype=real_dtype)
    omega = torch.exp(torch.complex(torch.zeros_like(k), -2 * torch.pi * k / length))  # (F,)
    # omega = -1 (k = L/2, L even) is a removable singularity: handled in closed form below.
    nyquist = length % 2 == 0
    regular = omega[:-1] if nyquist else omega
    g = (2 / dt[:, None]) * (1 - regular) / (1 + regular)  # (H, F')

    # Rows a in (C_tilde, conj Q_1..R), columns b in (B_1..S, P_1..R): all the Cauchy sums at once.
    a = torch.cat((C_tilde[None], Q.conj()), dim=0)  # (1 + R, H, N2)
    b = torch.cat((B, P), dim=0)  # (S + R, H, N2)
    v = a[:, None] * b[None, :]  # (1 + R, S + R, H, N2)
    r = cauchy(v, g, Lambda, backend=backend)  # (1 + R, S + R, H, F')
    k00, k01 = r[0, :n_inputs], r[0, n_inputs:]  # (S, H, F'), (R, H, F')
    k10, k11 = r[1:, :n_inputs], r[1:, n_inputs:]  # (R, S, H, F'), (R, R, H, F')
    if rank == 1:
        correction = k01[0] * k10[0] / (1 + k11[0, 0])  # (S, H, F')
    else:  # k01 (I + k11)^-1 k10 per (h, frequency)
        eye = torch.eye(rank, dtype=k11.dtype, device=k11.device)
        k11_m = k11.permute(2, 3, 0, 1) + eye  # (H, F', R, R)
        solved = torch.linalg.solve(k11_m, k10.permute(2, 3, 0, 1))  # (H, F', R, S)
        correction = torch.einsum("rhf,hfrs->shf", k01, solved)
    K_hat = 2 / (1 + regular) * (k00 - correction)  # (S, H, F')
    if nyquist:
        # At omega = -1: 2/(1 + omega) (g - A)^-1 -> dt/2 I, the low-rank part vanishes, so
        # K_hat(-1) = dt/2 * sum over all N modes of C_tilde B = dt * Re sum_half C_tilde B.
        last = dt * (C_tilde * B).sum(-1).real  # (S, H)
        K_hat = torch.cat((K_hat, last.to(K_hat.dtype)[..., None]), dim=-1)
    return torch.fft.irfft(K_hat, n=length).reshape(*batch_shape, -1, length)


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


def _dense_power(Lambda, P, dt, length, Q):
    """A_bar^length (H, N, N) of the bilinear DPLR system, in Lambda's dtype."""
    A_bar, _ = dplr_bilinear_dense(Lambda, P, torch.zeros_like(Lambda), dt, Q)
    return torch.linalg.matrix_power(A_bar, length)


def dplr_c_tilde(
    C: torch.Tensor, Lambda: torch.Tensor, P: torch.Tensor, dt: torch.Tensor, length: int, Q: torch.Tensor | None = None
) -> torch.Tensor:
    """S4's ``C~ = C (I - A_bar^length)`` -> (H, N2): the C that :func:`dplr_kernel` takes.

    C (H, N2) is the kept half of the output matrix; the product runs in the full basis of N
    modes (C_full = [C, conj C] times a conjugate-symmetric matrix stays conjugate-symmetric), so
    the kept half of the result is all there is. Dense, O(H N^3 log length).
    """
    C_full = conjugate_full(C)
    return (C_full - torch.einsum("hn,hnm->hm", C_full, _dense_power(Lambda, P, dt, length, Q)))[..., : C.shape[-1]]


def dplr_double_c_tilde(
    C_tilde: torch.Tensor,
    Lambda: torch.Tensor,
    P: torch.Tensor,
    dt: torch.Tensor,
    length: int,
    Q: torch.Tensor | None = None,
) -> torch.Tensor:
    """C~ for ``2 length`` from C~ for ``length``, the represented C unchanged -> (H, N2).

    ``I - A^2L = (I - A^L)(I + A^L)``, so ``C (I - A^2L) = C~_L (I + A^L)``: no inverse needed.
    """
    C_full = conjugate_full(C_tilde)
    return (C_full + torch.einsum("hn,hnm->hm", C_full, _dense_power(Lambda, P, dt, length, Q)))[..., : C_tilde.shape[-1]]


def dplr_ssm(
    u: torch.Tensor,
    Lambda: torch.Tensor,
    P: torch.Tensor,
    B: torch.Tensor,
    C_tilde: torch.Tensor,
    dt: torch.Tensor,
    l_max: int,
    D: torch.Tensor | None = None,
    Q: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    backend: str | None = None,
    precomputed: DplrPrecomputed | None = None,
):
    """Run S4's SSM over ``u`` from an optional state -> y (batch, H, L) [, final state].

    The system is A = Lambda - P Q^* with the bilinear step dt and output matrix
    C = C~ (I - A_bar^l_max)^-1 (so ``L <= l_max``), on the recurrence

        x_t = A_bar x_(t-1) + B_bar u_t,        y_t = C x_t + D u_t   (full basis, N modes)

    with x_(-1) = ``initial_state``. States are the kept halves (batch, H, N2) of conjugate-
    symmetric ones, as the S4 mixer's ``{"x": ...}``, in the complex dtype of Lambda. Shapes as
    :func:`dplr_kernel`; u (batch, H, L) real, D (H,). Returns y in u's dtype, and the state
    after the last input when ``output_final_state``.

    Backends (``backend=`` or ``HYBRIDS_DPLR_SSM_BACKEND``): ``"parallel"`` (the default) and
    ``"recurrent"``, the reference that steps the dense recurrence (:func:`dplr_ssm_recurrent`).

    ``precomputed`` (:func:`dplr_precompute` of the same system and ``l_max``) supplies what
    depends on the parameters alone, the kernel and the dense system with its powers, for
    inference with fixed parameters (no gradients flow to them through it).
    """
    from hybrids.kernels.ssm import DPLR_SSM

    if not u.is_floating_point():
        raise TypeError(f"u: expected a floating-point tensor (batch, H, L), got {u.dtype}")
    if u.ndim != 3 or u.shape[1] != Lambda.shape[-2]:
        raise ValueError(f"u: expected (batch, H={Lambda.shape[-2]}, L), got shape {tuple(u.shape)}")
    if DPLR_SSM.select(u.device, u.dtype, backend) == "recurrent":
        return dplr_ssm_recurrent(u, Lambda, P, B, C_tilde, dt, l_max, D, Q, initial_state, output_final_state)
    length = u.shape[-1]
    if length == 0:
        return _empty_result(u, Lambda, initial_state, output_final_state)
    if length > l_max:
        raise ValueError(f"sequence length {length} exceeds l_max={l_max}; C~ must be attuned to a length >= L")
    Q = P if Q is None else Q
    if initial_state is None:
        kernel = precomputed.kernel if precomputed is not None else dplr_kernel(Lambda, P, B, C_tilde, dt, l_max, Q)
        y = fft_conv(u, kernel[:, :length], D)
    else:
        # The state's share of y_t is C A_bar^t (A_bar x0): a kernel whose input vector is A_bar x0
        # instead of B_bar. Since (I - A_bar w)^-1 A_bar x0 = 2/(1+w) (g - A)^-1 (x0/dt + A x0/2),
        # it is dplr_kernel with B replaced by x0/dt + A x0/2, one row per batch element.
        x0 = initial_state.to(Lambda.dtype)  # (batch, H, N2)
        # Kept half of A_full x0_full: Q_full^* x0_full = 2 Re(Q^* x0) is real.
        coupling = 2 * torch.einsum("rhn,bhn->bhr", Q.conj(), x0).real.to(x0.dtype)  # (batch, H, R)
        A_x0 = Lambda * x0 - torch.einsum("rhn,bhr->bhn", P, coupling)
        inputs = torch.cat((B[None], x0 / dt[:, None] + A_x0 / 2), dim=0)  # (1 + batch, H, N2)
        kernels = dplr_kernel(Lambda, P, inputs, C_tilde, dt, l_max, Q)[..., :length]  # (1 + batch, H, L)
        work = torch.promote_types(at_least_float32(u.dtype), kernels.dtype)
        y = (fft_conv(u.to(work), kernels[0], D) + kernels[1:]).to(u.dtype)
    if not output_final_state:
        return y
    if precomputed is not None:
        A_bar, B_bar, plan = precomputed.A_bar, precomputed.B_bar, precomputed.plan
    else:
        A_bar, B_bar = dplr_bilinear_dense(Lambda, P, B, dt, Q)  # (H, N, N), (H, N)
        plan = None
    x0 = None if initial_state is None else conjugate_full(initial_state.to(A_bar.dtype))
    full = dense_ssm_state(A_bar, B_bar, u, x0, plan=plan)
    return y, full[..., : Lambda.shape[-1]]


@dataclass
class DplrPrecomputed:
    """What :func:`dplr_ssm` needs of the parameters alone (see :func:`dplr_precompute`)."""

    kernel: torch.Tensor  # (H, l_max) real
    A_bar: torch.Tensor  # (H, N, N) complex, the dense bilinear system
    B_bar: torch.Tensor  # (H, N)
    plan: DenseStatePlan  # Krylov matrix and powers of A_bar for the final state


@torch.no_grad()
def dplr_precompute(
    Lambda: torch.Tensor,
    P: torch.Tensor,
    B: torch.Tensor,
    C_tilde: torch.Tensor,
    dt: torch.Tensor,
    l_max: int,
    Q: torch.Tensor | None = None,
) -> DplrPrecomputed:
    """The kernel of length ``l_max`` and the dense system of S4's SSM, computed once, for
    :func:`dplr_ssm` calls with fixed parameters (prefilling prompt after prompt): a prefill then
    costs an FFT convolution and the final state's contraction, not a kernel and log2(L) dense
    matrix products."""
    Q = P if Q is None else Q
    A_bar, B_bar = dplr_bilinear_dense(Lambda, P, B, dt, Q)
    kernel = dplr_kernel(Lambda, P, B, C_tilde, dt, l_max, Q)
    return DplrPrecomputed(kernel, A_bar, B_bar, DenseStatePlan(A_bar, B_bar))


def dplr_ssm_recurrent(
    u: torch.Tensor,
    Lambda: torch.Tensor,
    P: torch.Tensor,
    B: torch.Tensor,
    C_tilde: torch.Tensor,
    dt: torch.Tensor,
    l_max: int,
    D: torch.Tensor | None = None,
    Q: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
):
    """:func:`dplr_ssm` by stepping the dense recurrence, one Python step per input: the reference.

    Builds A_bar, B_bar densely (full basis) and C = C~ (I - A_bar^l_max)^-1 by a solve.
    """
    A_bar, B_bar = dplr_bilinear_dense(Lambda, P, B, dt, Q)  # (H, N, N), (H, N)
    eye = torch.eye(A_bar.shape[-1], dtype=A_bar.dtype, device=A_bar.device)
    C = torch.linalg.solve((eye - torch.linalg.matrix_power(A_bar, l_max)).mT, conjugate_full(C_tilde)[..., None])[..., 0]
    batch, H, length = u.shape
    x = (torch.zeros(batch, H, A_bar.shape[-1], dtype=A_bar.dtype, device=u.device) if initial_state is None
         else conjugate_full(initial_state.to(A_bar.dtype)))
    outputs = []
    for t in range(length):
        x = torch.einsum("hnm,bhm->bhn", A_bar, x) + B_bar * u[..., t, None].to(A_bar.dtype)
        outputs.append((C * x).sum(-1).real)  # C_full x_full is real by conjugate symmetry
    y = torch.stack(outputs, dim=-1) if outputs else u.new_zeros(u.shape, dtype=A_bar.real.dtype)
    if D is not None:
        y = y + u * D[:, None]
    y = y.to(u.dtype)
    return (y, x[..., : Lambda.shape[-1]]) if output_final_state else y


def _empty_result(u, Lambda, initial_state, output_final_state):
    """An empty sequence: no outputs, and the state it started from (zero if none)."""
    y = u.clone()
    if not output_final_state:
        return y
    if initial_state is None:
        return y, torch.zeros(u.shape[0], *Lambda.shape, dtype=Lambda.dtype, device=u.device)
    return y, initial_state.to(Lambda.dtype)
