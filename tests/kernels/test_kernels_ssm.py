"""Cauchy and Vandermonde sums, and the S4 / S4D kernels against dense matrix powers."""

import pytest
import torch

from helpers import relative_rms
from hybrids.kernels.ssm import (
    cauchy,
    cauchy_reference,
    conjugate_full,
    dense_ssm_state,
    diagonal_kernel,
    diagonal_ssm,
    dplr_bilinear_dense,
    dplr_c_tilde,
    dplr_double_c_tilde,
    dplr_kernel,
    dplr_ssm,
    krylov_matrix,
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
    return relative_rms(a, b)


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


# ---------------------------------------------------------------------------------------------
# The SSM over a sequence from an initial state, returning the final state (diagonal_ssm,
# dplr_ssm), against the recurrence stepped here, written independently of the library.


def random_states(batch, H, N2, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.complex(torch.randn(batch, H, N2, generator=g, dtype=torch.float64),
                         torch.randn(batch, H, N2, generator=g, dtype=torch.float64))


def step_diagonal(u, Lambda, B, C, dt, D, method, x0):
    """x_t = A_bar x_(t-1) + B_bar u_t, y_t = 2 Re(C x_t) + D u_t, one step at a time."""
    dtL = dt[:, None] * Lambda
    if method == "zoh":
        A_bar, B_bar = torch.exp(dtL), (torch.exp(dtL) - 1) / Lambda * B
    else:
        A_bar, B_bar = (1 + dtL / 2) / (1 - dtL / 2), dt[:, None] * B / (1 - dtL / 2)
    x = x0 if x0 is not None else torch.zeros(u.shape[0], *Lambda.shape, dtype=C128)
    ys = []
    for t in range(u.shape[-1]):
        x = A_bar * x + B_bar * u[..., t, None]
        ys.append(2 * (C * x).sum(-1).real + D * u[..., t])
    return torch.stack(ys, -1), x


def step_dplr(u, Lambda, P, B, C_tilde, dt, l_max, D, x0, Q=None):
    """The dense full-basis recurrence with C = C~ (I - A_bar^l_max)^-1, one step at a time."""
    Q = P if Q is None else Q
    A = torch.diag_embed(conjugate_full(Lambda))
    for r in range(P.shape[0]):
        A = A - conjugate_full(P[r])[..., :, None] * conjugate_full(Q[r]).conj()[..., None, :]
    eye = torch.eye(A.shape[-1], dtype=C128)
    dtc = dt.to(C128)[:, None, None]
    inv = torch.linalg.inv(eye - dtc / 2 * A)
    A_bar, B_bar = inv @ (eye + dtc / 2 * A), (inv @ (dtc * conjugate_full(B)[..., None]))[..., 0]
    C = (conjugate_full(C_tilde)[..., None, :] @ torch.linalg.inv(eye - torch.linalg.matrix_power(A_bar, l_max)))[..., 0, :]
    N2 = Lambda.shape[-1]
    x = conjugate_full(x0) if x0 is not None else torch.zeros(u.shape[0], Lambda.shape[0], 2 * N2, dtype=C128)
    ys = []
    for t in range(u.shape[-1]):
        x = (A_bar @ x[..., None])[..., 0] + B_bar * u[..., t, None]
        ys.append((C * x).sum(-1).real + D * u[..., t])
    return torch.stack(ys, -1), x[..., :N2]


def diagonal_case(seed, batch=2, H=3, N2=5, L=37):
    Lambda, _, B, C, dt = random_system(H=H, N2=N2, seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    u = torch.randn(batch, H, L, generator=g, dtype=torch.float64)
    D = torch.randn(H, generator=g, dtype=torch.float64)
    return u, Lambda, B, C, dt, D


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
@pytest.mark.parametrize("length", [1, 2, 37, 300])
@pytest.mark.parametrize("with_state", [False, True], ids=["zero-state", "initial-state"])
def test_diagonal_ssm_matches_the_recurrence(method, length, with_state):
    u, Lambda, B, C, dt, D = diagonal_case(seed=length, L=length)
    x0 = random_states(2, 3, 5, seed=length) if with_state else None
    y_want, x_want = step_diagonal(u, Lambda, B, C, dt, D, method, x0)
    for backend in ("recurrent", None):
        y, x = diagonal_ssm(u, Lambda, B, C, dt, D, method, initial_state=x0, output_final_state=True, backend=backend)
        assert y.shape == (2, 3, length) and x.shape == (2, 3, 5) and x.dtype == C128
        assert rel_err(y, y_want) < 1e-10, backend
        assert rel_err(x, x_want) < 1e-10, backend
    # Asking for the final state does not change the outputs.
    assert torch.equal(diagonal_ssm(u, Lambda, B, C, dt, D, method, initial_state=x0), y)


@pytest.mark.parametrize("length,l_max", [(1, 1), (1, 8), (16, 16), (37, 37), (37, 50)])
@pytest.mark.parametrize("rank", [1, 2])
@pytest.mark.parametrize("with_state", [False, True], ids=["zero-state", "initial-state"])
def test_dplr_ssm_matches_the_recurrence(length, l_max, rank, with_state):
    Lambda, P, B, C_tilde, dt = random_system(rank=rank, seed=length + l_max)
    u, *_, D = diagonal_case(seed=length, L=length)
    x0 = random_states(2, 3, 5, seed=l_max) if with_state else None
    y_want, x_want = step_dplr(u, Lambda, P, B, C_tilde, dt, l_max, D, x0)
    for backend in (None, "recurrent"):
        y, x = dplr_ssm(u, Lambda, P, B, C_tilde, dt, l_max, D, initial_state=x0, output_final_state=True,
                        backend=backend)
        assert y.shape == (2, 3, length) and x.shape == (2, 3, 5) and x.dtype == C128
        assert rel_err(y, y_want) < 1e-10, backend
        assert rel_err(x, x_want) < 1e-10, backend


def test_dplr_ssm_with_separate_Q_and_a_too_long_input():
    Lambda, P, B, C_tilde, dt = random_system(seed=6)
    Q = 0.3 * P.flip(-1)
    u, *_, D = diagonal_case(seed=6, L=20)
    x0 = random_states(2, 3, 5, seed=6)
    y_want, x_want = step_dplr(u, Lambda, P, B, C_tilde, dt, 24, D, x0, Q=Q)
    y, x = dplr_ssm(u, Lambda, P, B, C_tilde, dt, 24, D, Q=Q, initial_state=x0, output_final_state=True)
    assert rel_err(y, y_want) < 1e-10 and rel_err(x, x_want) < 1e-10
    with pytest.raises(ValueError, match="l_max"):
        dplr_ssm(u, Lambda, P, B, C_tilde, dt, 19, D)


@pytest.mark.parametrize("chunk", [1, 3, 4, 256])
def test_dense_ssm_state_chunks_and_folds_exactly(chunk):
    Lambda, P, B, _, dt = random_system(seed=2)
    A_bar, B_bar = dplr_bilinear_dense(Lambda, P, B, dt)
    u, *_ = diagonal_case(seed=2, L=23)
    x0 = conjugate_full(random_states(2, 3, 5, seed=2))
    x = x0
    for t in range(u.shape[-1]):
        x = (A_bar @ x[..., None])[..., 0] + B_bar * u[..., t, None]
    assert rel_err(dense_ssm_state(A_bar, B_bar, u, x0, chunk=chunk), x) < 1e-10
    columns = krylov_matrix(A_bar, B_bar, 5)
    assert rel_err(columns[..., 0], (torch.linalg.matrix_power(A_bar, 4) @ B_bar[..., None])[..., 0]) < 1e-12


@pytest.mark.parametrize("op", ["diagonal", "dplr"])
def test_chunked_evaluation_equals_the_whole_sequence(op):
    Lambda, P, B, C, dt = random_system(seed=11)
    u, *_, D = diagonal_case(seed=11, L=37)

    def run(piece, state):
        if op == "diagonal":
            return diagonal_ssm(piece, Lambda, B, C, dt, D, "bilinear", initial_state=state, output_final_state=True)
        return dplr_ssm(piece, Lambda, P, B, C, dt, 40, D, initial_state=state, output_final_state=True)

    y_whole, x_whole = run(u, None)
    for cuts in ([10, 30], [36], [1, 2]):
        state, ys = None, []
        for piece in torch.tensor_split(u, cuts, dim=-1):
            y, state = run(piece, state)
            ys.append(y)
        assert rel_err(torch.cat(ys, -1), y_whole) < 1e-10, cuts
        assert rel_err(state, x_whole) < 1e-10, cuts


@pytest.mark.parametrize("op", ["diagonal-zoh", "diagonal-bilinear", "dplr"])
def test_ssm_op_gradients_match_autograd_of_the_recurrence(op):
    Lambda, P, B, C, dt = random_system(H=2, N2=3, seed=4)
    u, *_, D = diagonal_case(seed=4, batch=2, H=2, L=9)
    x0 = random_states(2, 2, 3, seed=4)
    inputs = [u, Lambda, P, B, C, dt, D, x0]
    for t in inputs:
        t.requires_grad_(True)
    g = torch.Generator().manual_seed(5)
    w_y = torch.randn(2, 2, 9, generator=g, dtype=torch.float64)
    w_x = random_states(2, 2, 3, seed=5)

    def loss(y, x):
        return (w_y * y).sum() + (w_x.conj() * x).real.sum()

    if op == "dplr":
        got = loss(*dplr_ssm(u, Lambda, P, B, C, dt, 12, D, initial_state=x0, output_final_state=True))
        want = loss(*step_dplr(u, Lambda, P, B, C, dt, 12, D, x0))
    else:
        method = op.split("-")[1]
        got = loss(*diagonal_ssm(u, Lambda, B, C, dt, D, method, initial_state=x0, output_final_state=True))
        want = loss(*step_diagonal(u, Lambda, B, C, dt, D, method, x0))
    grads = torch.autograd.grad(got, inputs, allow_unused=True)
    expected = torch.autograd.grad(want, inputs, allow_unused=True)
    for name, a, b in zip(["u", "Lambda", "P", "B", "C", "dt", "D", "x0"], grads, expected):
        if b is None:
            assert a is None or not a.any(), name  # P does not enter the diagonal system
            continue
        assert rel_err(a, b) < 1e-9, name


@pytest.mark.parametrize("op", ["diagonal", "dplr"])
def test_ssm_ops_on_an_empty_sequence_return_the_initial_state(op):
    Lambda, P, B, C, dt = random_system(seed=3)
    u = torch.zeros(2, 3, 0, dtype=torch.float64)
    x0 = random_states(2, 3, 5, seed=3)
    if op == "diagonal":
        y, x = diagonal_ssm(u, Lambda, B, C, dt, initial_state=x0, output_final_state=True)
    else:
        y, x = dplr_ssm(u, Lambda, P, B, C, dt, 8, initial_state=x0, output_final_state=True)
    assert y.shape == (2, 3, 0) and torch.equal(x, x0)


def test_c_tilde_doubling_keeps_the_represented_C():
    Lambda, P, _, C, dt = random_system(seed=8)
    C_16 = dplr_c_tilde(C, Lambda, P, dt, 16)
    assert rel_err(dplr_double_c_tilde(C_16, Lambda, P, dt, 16), dplr_c_tilde(C, Lambda, P, dt, 32)) < 1e-12
