"""HiPPO matrices (hybrids.kernels.ssm.hippo): formulas, normality, the NPLR half form, S4D inits."""

import math

import pytest
import torch

from helpers import relative_rms
from hybrids.kernels.ssm.hippo import (
    DIAGONAL_INITS,
    MEASURES,
    diagonal_init,
    nplr,
    rank_correction,
    reconstruct,
    transition,
)

# The rank each measure needs (legt's symmetric part has rank 2; see rank_correction).
RANK = {"legs": 1, "legt": 2, "lagt": 1, "fout": 1, "fourier2": 1}


def rel(x: torch.Tensor, y: torch.Tensor) -> float:
    """Relative Frobenius error of x against y."""
    return relative_rms(x, y)


def cases(sizes):
    # fourier2 is exactly fout at twice the rate (test_fourier2_is_fout_at_twice_the_rate), so
    # it skips the slow N = 256 cases.
    return [pytest.param(m, N, id=f"{m}-N{N}") for m in MEASURES for N in sizes if not (m == "fourier2" and N > 64)]


# ---------------------------------------------------------------------------------------------
# transition


def test_legs_matches_formula_entrywise():
    N = 8
    A, B = transition("legs", N)
    for n in range(N):
        assert B[n] == math.sqrt(2 * n + 1)
        for k in range(N):
            if n > k:
                expected = -math.sqrt(2 * n + 1) * math.sqrt(2 * k + 1)
            elif n == k:
                expected = -(n + 1)
            else:
                expected = 0.0
            assert A[n, k].item() == expected, (n, k)  # exactly: same IEEE operations
    assert torch.equal(A, torch.tril(A))


def test_small_matrices_by_hand():
    r3 = math.sqrt(3)
    A, B = transition("legt", 3)  # -r_n r_k / 2, (-1)^(n-k) above the diagonal
    expected = -0.5 * torch.tensor(
        [[1.0, -r3, math.sqrt(5)], [r3, 3.0, -r3 * math.sqrt(5)], [math.sqrt(5), r3 * math.sqrt(5), 5.0]],
        dtype=torch.float64,
    )
    torch.testing.assert_close(A, expected)
    torch.testing.assert_close(B, 0.5 * torch.tensor([1.0, r3, math.sqrt(5)], dtype=torch.float64))

    A, B = transition("lagt", 3)
    expected = torch.tensor([[-0.5, 0, 0], [-1, -0.5, 0], [-1, -1, -0.5]], dtype=torch.float64)
    torch.testing.assert_close(A, expected)
    torch.testing.assert_close(B, torch.ones(3, dtype=torch.float64))

    # fout (S4's): states 1, (dead sin 0), sqrt2 cos 2pi s, sqrt2 sin 2pi s over a window of
    # length 2, so frequency pi; A = D/2 - e e^T, B = e.
    A, B = transition("fout", 4)
    e = torch.tensor([1.0, 0.0, math.sqrt(2), 0.0], dtype=torch.float64)
    D = torch.zeros(4, 4, dtype=torch.float64)
    D[2, 3], D[3, 2] = -2 * math.pi, 2 * math.pi
    torch.testing.assert_close(A, D / 2 - torch.outer(e, e))
    torch.testing.assert_close(B, e)
    # fourier2 (S4's): the same basis over a window of length 1.
    A, B = transition("fourier2", 4)
    torch.testing.assert_close(A, D - 2 * torch.outer(e, e))
    torch.testing.assert_close(B, 2 * e)


@pytest.mark.parametrize("N", [2, 8, 64])
def test_fourier2_is_fout_at_twice_the_rate(N):
    """fourier2's A and B are twice fout's (its step dt is fout's 2 dt), P sqrt 2 times."""
    A, B = transition("fout", N)
    A2, B2 = transition("fourier2", N)
    torch.testing.assert_close(A2, 2 * A, rtol=0, atol=0)
    torch.testing.assert_close(B2, 2 * B, rtol=0, atol=0)
    torch.testing.assert_close(rank_correction("fourier2", N), math.sqrt(2) * rank_correction("fout", N))
    half, double = nplr("fout", N), nplr("fourier2", N)
    torch.testing.assert_close(double.Lambda, 2 * half.Lambda)


@pytest.mark.parametrize(("measure", "N"), cases([8, 64]))
def test_shapes_and_stability(measure, N):
    """Every eigenvalue of A has negative real part, but for FouT's dead state.

    legs and lagt are lower triangular, so their eigenvalues are the diagonal, -(n + 1) and
    -1/2 (lagt is one Jordan block, whose numerical eigenvalues would be ill-conditioned).
    FouT keeps the identically-zero basis function sin(0 s) so that its states pair up: state 1
    has a zero row and column and no input, hence one exact eigenvalue 0 that the input never
    excites; the other states are stable.
    """
    A, B = transition(measure, N)
    assert A.shape == (N, N) and B.shape == (N,) and A.dtype == B.dtype == torch.float64
    if measure in ("legs", "lagt"):
        assert torch.equal(A, torch.tril(A))
        eigenvalues = A.diagonal()
    else:
        if measure in ("fout", "fourier2"):
            assert not A[1].any() and not A[:, 1].any() and B[1] == 0
            keep = [i for i in range(N) if i != 1]
            A = A[keep][:, keep]
        eigenvalues = torch.linalg.eigvals(A)
    assert eigenvalues.real.max() < 0


def test_dtype_and_errors():
    A, B = transition("legs", 4, dtype=torch.float32)
    assert A.dtype == B.dtype == torch.float32
    with pytest.raises(ValueError, match="legs, legt, lagt, fout"):
        transition("legx", 4)
    with pytest.raises(ValueError, match="even"):
        transition("fout", 5)
    with pytest.raises(ValueError, match="positive"):
        transition("legs", 0)


# ---------------------------------------------------------------------------------------------
# rank_correction


@pytest.mark.parametrize(("measure", "N"), cases([8, 64, 256]))
def test_rank_correction_makes_A_normal(measure, N):
    A, _ = transition(measure, N)
    P = rank_correction(measure, N, RANK[measure])
    S = A + P.T @ P
    assert rel(S @ S.T, S.T @ S) < 1e-8
    # The particular normal form nplr relies on: sigma I + skew-symmetric.
    sigma = S.diagonal().mean()
    identity = torch.eye(N, dtype=S.dtype)
    torch.testing.assert_close(S + S.T, 2 * sigma * identity, rtol=0, atol=1e-10 * S.norm())
    assert sigma.item() == pytest.approx(-0.5 if measure == "legs" else 0.0, abs=1e-12)


def test_rank_correction_values():
    n = torch.arange(6, dtype=torch.float64)
    even = (n % 2 == 0).double()
    r2 = math.sqrt(2)
    expected = {
        "legs": torch.sqrt(n + 0.5)[None],
        "legt": torch.stack([even, 1 - even]) * torch.sqrt(n + 0.5),
        "lagt": torch.full((1, 6), math.sqrt(0.5), dtype=torch.float64),
        "fout": torch.tensor([[1, 0, r2, 0, r2, 0]], dtype=torch.float64),
        "fourier2": torch.tensor([[r2, 0, 2, 0, 2, 0]], dtype=torch.float64),
    }
    for measure, P in expected.items():
        torch.testing.assert_close(rank_correction(measure, 6, RANK[measure]), P, msg=measure)


def test_rank_correction_pads_and_refuses_too_small_a_rank():
    P = rank_correction("legs", 8, rank=3)
    assert P.shape == (3, 8) and not P[1:].any()
    with pytest.raises(ValueError, match="rank >= 2"):
        rank_correction("legt", 8, rank=1)


# ---------------------------------------------------------------------------------------------
# nplr


@pytest.mark.parametrize(("measure", "N"), cases([2, 4, 16, 64, 256]))
def test_nplr_half_representation(measure, N):
    A, B = transition(measure, N)
    result = nplr(measure, N, RANK[measure])
    Lambda, P, B_half, V = result
    M = N // 2
    assert Lambda.shape == (M,) and B_half.shape == (M,) and V.shape == (N, M)
    assert P.shape == (RANK[measure], M)
    assert all(t.dtype == torch.complex128 for t in result)

    assert rel(reconstruct(result), A) <= 1e-4
    # Real vectors come back from the kept half by conjugate symmetry: y = 2 Re(V V^* y).
    assert rel(2 * (V @ B_half).real, B) <= 1e-10
    torch.testing.assert_close(2 * (P @ V.T).real, rank_correction(measure, N, RANK[measure]))

    # [V, conj(V)] is unitary: V has orthonormal columns that are orthogonal to their conjugates.
    eye = torch.eye(M, dtype=V.dtype)
    torch.testing.assert_close(V.conj().T @ V, eye, rtol=0, atol=1e-10)
    torch.testing.assert_close(V.T @ V, torch.zeros_like(eye), rtol=0, atol=1e-10)

    # Columns of V are eigenvectors of S = A + P^T P.
    P_real = rank_correction(measure, N, RANK[measure]).to(V.dtype)
    S = A.to(V.dtype) + P_real.T @ P_real
    torch.testing.assert_close(S @ V, V * Lambda, rtol=0, atol=1e-10 * A.norm())

    # Lambda: real part sigma (-1/2 for legs, 0 for the skew-symmetric measures), imaginary
    # part >= 0 and ascending.
    expected_real = -0.5 if measure == "legs" else 0.0
    torch.testing.assert_close(Lambda.real, torch.full((M,), expected_real, dtype=torch.float64))
    assert (Lambda.imag >= 0).all() and (Lambda.imag.diff() >= 0).all()


@pytest.mark.parametrize("measure,frequency", [("fout", math.pi), ("fourier2", 2 * math.pi)])
@pytest.mark.parametrize("N", [2, 8, 64])
def test_nplr_zero_pair(N, measure, frequency):
    """FouT's S has the double eigenvalue 0 on span(e_0, e_1): one kept mode, imaginary part 0."""
    Lambda, _, _, V = nplr(measure, N)
    assert Lambda[0] == 0 and (Lambda[1:].imag > 0).all()
    # The combined mode and its conjugate project onto span(e_0, e_1): v v^* + conj(v v^*).
    projector = torch.zeros(N, N, dtype=torch.float64)
    projector[0, 0] = projector[1, 1] = 1
    torch.testing.assert_close(2 * (V[:, :1] @ V[:, :1].conj().T).real, projector)
    # The other kept frequencies are pi k (fout) or 2 pi k (fourier2), k = 1 .. N/2 - 1.
    torch.testing.assert_close(Lambda[1:].imag, frequency * torch.arange(1, N // 2, dtype=torch.float64))


def test_nplr_errors_and_dtype():
    with pytest.raises(ValueError, match="even"):
        nplr("legs", 7)
    with pytest.raises(ValueError, match="rank >= 2"):
        nplr("legt", 8)
    assert all(t.dtype == torch.complex64 for t in nplr("legs", 8, dtype=torch.float32))


# ---------------------------------------------------------------------------------------------
# diagonal_init


def test_diagonal_init_values():
    N = 8
    n = torch.arange(N // 2, dtype=torch.float64)
    ones = torch.ones(N // 2, dtype=torch.complex128)
    expected = {
        "lin": torch.complex(torch.full_like(n, -0.5), math.pi * n),
        "inv": torch.complex(torch.full_like(n, -0.5), N / math.pi * (N / (2 * n + 1) - 1)),
        "real": torch.complex(-(n + 1), torch.zeros_like(n)),
    }
    for kind, Lambda in expected.items():
        got_Lambda, got_B = diagonal_init(kind, N)
        torch.testing.assert_close(got_Lambda, Lambda, msg=kind)
        torch.testing.assert_close(got_B, ones, msg=kind)
    # Hand values: S4D-Inv at n = 0 is -1/2 + i (N/pi)(N - 1) = -1/2 + i 56/pi.
    assert diagonal_init("inv", 8)[0][0].imag.item() == pytest.approx(56 / math.pi)

    Lambda, B = diagonal_init("legs", N)
    full = nplr("legs", N)
    torch.testing.assert_close(Lambda, full.Lambda)
    torch.testing.assert_close(B, full.B)
    # N = 2: S = [[-1/2, sqrt3/2], [-sqrt3/2, -1/2]], eigenvalue -1/2 + i sqrt3/2.
    expected = torch.tensor([complex(-0.5, math.sqrt(3) / 2)], dtype=torch.complex128)
    torch.testing.assert_close(diagonal_init("legs", 2)[0], expected)


@pytest.mark.parametrize("kind", DIAGONAL_INITS)
def test_diagonal_init_rejects_odd_N(kind):
    with pytest.raises(ValueError, match="even"):
        diagonal_init(kind, 5)
    assert diagonal_init(kind, 4, dtype=torch.float32)[0].dtype == torch.complex64


def test_diagonal_init_rejects_unknown_kind():
    with pytest.raises(ValueError, match="legs, lin, inv, real"):
        diagonal_init("s4d", 4)


# ---------------------------------------------------------------------------------------------
# B_clip (state-spaces/s4's default 2.0)


def test_b_clip_matches_s4_figures_for_legs_n64():
    """At N = 64 LegS, clipping Im(B) to +-2 touches 11 of the 32 modes: sum |B|^2 2048 -> 74.9."""
    exact = nplr("legs", 64)
    clipped = nplr("legs", 64, B_clip=2.0)
    assert int((exact.B.imag.abs() > 2).sum()) == 11
    assert (exact.B.abs() ** 2).sum().item() == pytest.approx(2048, rel=1e-12)  # ||B_real||^2 / 2
    assert (clipped.B.abs() ** 2).sum().item() == pytest.approx(74.87, abs=0.01)
    assert clipped.B.imag.abs().max() <= 2
    torch.testing.assert_close(clipped.B.real, exact.B.real, rtol=0, atol=0)
    for field in ("Lambda", "P", "V"):
        assert torch.equal(getattr(clipped, field), getattr(exact, field))
    # S4D-LegS takes the same clipped B; the other S4D inits have B = 1, untouched.
    assert torch.equal(diagonal_init("legs", 64, B_clip=2.0)[1], clipped.B)
    assert torch.equal(diagonal_init("inv", 64, B_clip=2.0)[1], diagonal_init("inv", 64)[1])


@pytest.mark.parametrize("measure,count", [("legt", 3), ("lagt", 1), ("fout", 0), ("fourier2", 0)])
def test_b_clip_counts_of_the_other_measures(measure, count):
    B = nplr(measure, 64, RANK[measure]).B
    assert int((B.imag.abs() > 2).sum()) == count
    with pytest.raises(ValueError, match="B_clip"):
        nplr(measure, 64, RANK[measure], B_clip=0.0)
