"""Cauchy and Vandermonde sums, and the S4 / S4D kernels against dense matrix powers."""

import pytest
import torch

from hybrids.kernels.ssm import (
    cauchy,
    cauchy_reference,
    conjugate_full,
    diagonal_kernel,
    dplr_kernel,
    vandermonde,
    vandermonde_reference,
)

C128 = torch.complex128


def random_system(H=3, N2=5, rank=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    real = -0.1 - torch.rand(H, N2, generator=g, dtype=torch.float64)
    imag = 4 * torch.randn(H, N2, generator=g, dtype=torch.float64)
    Lambda = torch.complex(real, imag)

    def c(*shape):
        return torch.complex(torch.randn(*shape, generator=g, dtype=torch.float64),
                             torch.randn(*shape, generator=g, dtype=torch.float64))

    P = 0.5 * c(rank, H, N2)
    dt = 0.01 + 0.1 * torch.rand(H, generator=g, dtype=torch.float64)
    return Lambda, P, c(H, N2), c(H, N2), dt


def dense_kernel(Lambda, P, B, C_tilde, dt, length, method="bilinear", Q=None):
    """K_l = C A_bar^l B_bar with C = C~ (I - A_bar^L)^-1, from the dense full-basis matrices.

    Written independently of the library: explicit dense A, explicit discretisation, powers.
    """
    Q = P if Q is None else Q
    Lf, Bf, Ctf = conjugate_full(Lambda), conjugate_full(B), conjugate_full(C_tilde)
    A = torch.diag_embed(Lf)
    for r in range(P.shape[0]):
        A = A - conjugate_full(P[r])[..., :, None] * conjugate_full(Q[r]).conj()[..., None, :]
    eye = torch.eye(A.shape[-1], dtype=C128)
    dtc = dt.to(C128)[:, None, None]
    if method == "bilinear":
        inv = torch.linalg.inv(eye - dtc / 2 * A)
        A_bar, B_bar = inv @ (eye + dtc / 2 * A), (inv @ (dtc * Bf[..., None]))[..., 0]
    else:  # zoh, diagonal A only
        A_bar = torch.matrix_exp(dtc * A)
        B_bar = (torch.linalg.solve(A, (A_bar - eye)) @ Bf[..., None])[..., 0]
    C = (Ctf[..., None, :] @ torch.linalg.inv(eye - torch.linalg.matrix_power(A_bar, length)))[..., 0, :]
    taps, x = [], B_bar
    for _ in range(length):
        taps.append((C * x).sum(-1))
        x = (A_bar @ x[..., None])[..., 0]
    K = torch.stack(taps, -1)
    assert K.imag.abs().max() < 1e-9 * max(1.0, K.real.abs().max()), "a real system has a real kernel"
    return K.real


def rel_err(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("chunk", [1, 3, 256])
def test_cauchy_chunked_matches_reference(chunk):
    Lambda, _, v, _, _ = random_system()
    z = torch.complex(torch.randn(17, dtype=torch.float64), torch.randn(17, dtype=torch.float64))
    expected = cauchy_reference(v, z, Lambda)
    assert expected.shape == (3, 17)
    assert rel_err(cauchy(v, z, Lambda, chunk=chunk), expected) < 1e-12


def test_cauchy_is_the_full_conjugate_sum():
    Lambda, _, v, _, _ = random_system(H=1)
    z = torch.complex(torch.randn(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64))
    full = (conjugate_full(v)[0][None] / (z[:, None] - conjugate_full(Lambda)[0][None])).sum(-1)
    assert rel_err(cauchy(v, z, Lambda)[0], full) < 1e-12


def test_cauchy_gradients_match_reference():
    Lambda, _, v, _, _ = random_system()
    v.requires_grad_(True)
    Lambda.requires_grad_(True)
    z = torch.complex(torch.randn(9, dtype=torch.float64), torch.randn(9, dtype=torch.float64))
    got = torch.autograd.grad(cauchy(v, z, Lambda, chunk=4).abs().sum(), (v, Lambda))
    want = torch.autograd.grad(cauchy_reference(v, z, Lambda).abs().sum(), (v, Lambda))
    for a, b in zip(got, want):
        assert rel_err(a, b) < 1e-10


@pytest.mark.parametrize("length", [1, 10, 300])
def test_vandermonde_chunked_matches_reference(length):
    Lambda, _, v, _, dt = random_system()
    x = torch.exp(dt[:, None] * Lambda)
    assert rel_err(vandermonde(v, x, length, chunk=64), vandermonde_reference(v, x, length)) < 1e-10


@pytest.mark.parametrize("length", [1, 2, 15, 16, 64, 101])
@pytest.mark.parametrize("rank", [1, 2])
def test_dplr_kernel_matches_dense_powers(length, rank):
    Lambda, P, B, C_tilde, dt = random_system(rank=rank, seed=length)
    expected = dense_kernel(Lambda, P, B, C_tilde, dt, length)
    for backend in (None, "reference"):
        got = dplr_kernel(Lambda, P, B, C_tilde, dt, length, backend=backend)
        assert got.shape == (3, length)
        assert rel_err(got, expected) < 1e-10, backend


def test_dplr_kernel_with_separate_Q():
    Lambda, P, B, C_tilde, dt = random_system(seed=5)
    Q = 0.3 * P.flip(-1)
    expected = dense_kernel(Lambda, P, B, C_tilde, dt, 32, Q=Q)
    assert rel_err(dplr_kernel(Lambda, P, B, C_tilde, dt, 32, Q=Q), expected) < 1e-10


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
@pytest.mark.parametrize("backend", [None, "reference"])
def test_diagonal_kernel_matches_dense_powers(method, backend):
    Lambda, P, B, C, dt = random_system(seed=9)
    length = 50
    got = diagonal_kernel(Lambda, B, C, dt, length, method, backend=backend)
    # With P = 0 and C~ = C (I - A_bar^L), the dense reference is the plain diagonal system.
    A_bar_L = (torch.exp(dt[:, None] * Lambda) if method == "zoh"
               else (1 + dt[:, None] * Lambda / 2) / (1 - dt[:, None] * Lambda / 2)) ** length
    expected = dense_kernel(Lambda, torch.zeros_like(P), B, C * (1 - A_bar_L), dt, length, method)
    assert rel_err(got, expected) < 1e-10


def test_float32_dplr_kernel_is_accurate():
    Lambda, P, B, C_tilde, dt = random_system(H=4, N2=32, seed=1)
    expected = dplr_kernel(Lambda, P, B, C_tilde, dt, 1024)
    got = dplr_kernel(Lambda.to(torch.complex64), P.to(torch.complex64), B.to(torch.complex64),
                      C_tilde.to(torch.complex64), dt.float(), 1024)
    assert rel_err(got.double(), expected) < 1e-4
