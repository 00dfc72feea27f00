"""S4 and S4D: the convolution mode and the recurrent mode compute the same map.

Over 1024 steps, for every HiPPO measure (S4) and every initialisation and discretisation
(S4D): relative error at most 1e-4 in float32 and 1e-8 in float64.
"""

import pytest
import torch

from hybrids.mixers import S4, S4D
from helpers import relative_rms

LENGTH, H, N = 1024, 4, 16
TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-8}

CASES = {
    **{f"S4-{m}": (S4, {"measure": m, "l_max": LENGTH})
       for m in ("legs", "legt", "lagt", "fout")},
    **{f"S4D-{i}-{d}": (S4D, {"init": i, "discretization": d})
       for i in ("legs", "lin", "inv", "real") for d in ("zoh", "bilinear")},
}


relative_error = relative_rms


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("case", CASES)
def test_convolution_and_recurrence_agree_over_1024_steps(case, dtype):
    cls, kwargs = CASES[case]
    torch.manual_seed(0)
    mixer = cls(H, d_state=N, **kwargs).to(dtype).eval()
    x = torch.randn(2, LENGTH, H, dtype=dtype)
    with torch.no_grad():
        conv = mixer(x)
        state = mixer.init_state(2)
        steps = []
        for t in range(LENGTH):
            y, state = mixer.step(x[:, t], state)
            steps.append(y)
    error = relative_error(torch.stack(steps, 1), conv)
    assert error <= TOLERANCE[dtype], f"{case} {dtype}: relative error {error:.2e}"


def s4_double(seed=0, **kwargs):
    torch.manual_seed(seed)
    return S4(4, d_state=8, **kwargs).double().eval()


def test_s4_takes_l_max_from_the_first_input_and_grows_it_keeping_C():
    """l_max=None: the first input sets the kernel length; a 3x longer one doubles it twice.

    The random initial C is the output matrix itself, so a model attuned to 16 then grown to 64
    (C~_2L = C~_L (I + A_bar^L), twice) equals one attuned to 64 directly, and its outputs on
    the first 16 steps do not change.
    """
    x = torch.randn(2, 48, 4, dtype=torch.float64)
    grown, direct = s4_double(), s4_double()
    assert int(grown.l_max) == 0
    with torch.no_grad():
        early = grown(x[:, :16])
        assert int(grown.l_max) == 16
        y = grown(x)  # 3x longer: 16 -> 32 -> 64
        assert int(grown.l_max) == 64
        direct(torch.randn(1, 64, 4, dtype=torch.float64))
        assert int(direct.l_max) == 64
        assert relative_error(grown.C, direct.C) < 1e-10
        assert relative_error(y, direct(x)) < 1e-10
        assert relative_error(grown(x[:, :16]), early) < 1e-10
        # The recurrence recovers C with the current length: steps agree with forward.
        state, steps = grown.init_state(2), []
        for t in range(48):
            out, state = grown.step(x[:, t], state)
            steps.append(out)
    assert relative_error(torch.stack(steps, 1), y) < 1e-10


def test_step_before_any_forward_uses_C_itself():
    x = torch.randn(2, 13, 4, dtype=torch.float64)
    mixer = s4_double()
    with torch.no_grad():
        state, steps = mixer.init_state(2), []
        for t in range(13):
            out, state = mixer.step(x[:, t], state)
            steps.append(out)
        assert relative_error(torch.stack(steps, 1), mixer(x)) < 1e-10


def test_explicit_l_max_grows_with_one_warning():
    mixer = s4_double(l_max=16)
    assert int(mixer.l_max) == 16
    with pytest.warns(UserWarning, match="exceeds l_max=16; doubling the kernel length to 64"):
        mixer(torch.randn(1, 40, 4, dtype=torch.float64))
    assert int(mixer.l_max) == 64
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mixer(torch.randn(1, 100, 4, dtype=torch.float64))  # grows again, silently
    assert int(mixer.l_max) == 128
    # An explicit length equals None plus a first input of that length.
    implicit = s4_double()
    implicit(torch.randn(1, 16, 4, dtype=torch.float64))
    explicit = s4_double(l_max=16)
    assert relative_error(explicit.C, implicit.C) < 1e-6  # explicit's C~ went through float32


def test_l_max_is_in_the_state_dict():
    x = torch.randn(2, 50, 4, dtype=torch.float64)
    mixer = s4_double()
    mixer(x[:, :20])
    mixer(x)  # 20 -> 40 -> 80
    state = mixer.state_dict()
    assert int(state["l_max"]) == 80
    loaded = s4_double(seed=1)
    loaded.load_state_dict(state)
    assert int(loaded.l_max) == 80
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), mixer(x), rtol=0, atol=0)
        y, _ = loaded.step(x[:, 0], loaded.init_state(2))
        torch.testing.assert_close(y, mixer(x)[:, 0], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("cls", [S4, S4D])
def test_initial_B_is_clipped_as_in_s4(cls):
    clipped, exact = cls(2, d_state=64), cls(2, d_state=64, B_clip=None)
    B, B_exact = torch.view_as_complex(clipped.B.double()), torch.view_as_complex(exact.B.double())
    assert B.imag.abs().max() <= 2 and B_exact.imag.abs().max() > 10
    assert int((B != B_exact).all(0).sum()) == 11  # of LegS's 32 modes, in every channel
    assert (B[0].abs() ** 2).sum().item() == pytest.approx(74.87, abs=0.01)


@pytest.mark.parametrize("cls,kwargs,argument", [
    (S4, {"d_state": 7}, "d_state"),
    (S4, {"measure": "legx"}, "measure"),
    (S4, {"measure": "legt", "rank": 1}, "rank"),
    (S4, {"d_state": 8, "rank": 9}, "rank"),  # more than d_state: accepted silently before (issue 26)
    (S4, {"rank": 1.5}, "rank"),
    (S4, {"l_max": 0}, "l_max"),
    (S4, {"B_clip": 0.0}, "B_clip"),
    (S4D, {"B_clip": -1.0}, "B_clip"),
    (S4D, {"init": "linear"}, "init"),
    (S4D, {"discretization": "euler"}, "discretization"),
    (S4D, {"dt_min": 0.2, "dt_max": 0.1}, "dt_min"),
])
def test_bad_arguments_name_themselves(cls, kwargs, argument):
    with pytest.raises(ValueError, match=f"^{argument}:"):
        cls(4, **kwargs)


def test_rank_is_bounded_by_d_state_not_by_the_modes():
    """Each row of P is a real d_state-vector (P and conj P in the full basis), so the correction
    reaches rank d_state, not d_state / 2: every rank up to d_state is accepted, beyond refused."""
    from hybrids.kernels.ssm.dplr import conjugate_full

    N = 8
    P = torch.randn(N, 1, N // 2, dtype=torch.complex128)
    full = conjugate_full(P)
    correction = torch.einsum("rhn,rhm->hnm", full, full.conj())[0]
    assert torch.linalg.matrix_rank(correction) == N  # a rank above N / 2 adds something
    S4(2, d_state=N, rank=N)
    with pytest.raises(ValueError, match=rf"^rank: must be <= d_state \({N}\).*got {N + 1}$"):
        S4(2, d_state=N, rank=N + 1)


def test_ssm_parameters_skip_weight_decay_and_dt_is_in_range():
    mixer = S4(64, d_state=8)
    no_decay = {name for name, p in mixer.named_parameters() if getattr(p, "_no_weight_decay", False)}
    assert no_decay == {"log_dt", "log_neg_real", "imag", "P", "B"}
    dt = mixer.log_dt.exp()
    assert dt.min() >= 1e-3 and dt.max() <= 1e-1


@pytest.mark.parametrize("cls", [S4, S4D])
def test_bfloat16_parameters_compute_in_float32_internally(cls):
    torch.manual_seed(0)
    mixer = cls(8, d_state=8, **({"l_max": 32} if cls is S4 else {}))
    x = torch.randn(2, 32, 8)
    expected = mixer(x)
    low = mixer.to(torch.bfloat16)
    got = low(x.bfloat16())
    assert got.dtype == torch.bfloat16
    assert relative_error(got, expected) < 0.05  # bf16 rounding of weights and activations
    y, _ = low.step(x[:, 0].bfloat16(), low.init_state(2))
    assert relative_error(y, got[:, 0]) < 0.05


@pytest.mark.parametrize("cls,kwargs", [(S4, {"measure": "legs"}), (S4, {"measure": "legt"}), (S4, {"measure": "fout"}),
                                        (S4D, {"discretization": "zoh"}), (S4D, {"discretization": "bilinear"})])
def test_ssm_op_state_is_the_recurrent_state(cls, kwargs):
    """What a prefill would do: the op over a prompt from zero, then ``step`` from its final
    state, and the op over the rest from a state, all give forward's outputs."""
    torch.manual_seed(0)
    mixer = cls(4, d_state=8, **kwargs).double().eval()
    x = torch.randn(2, 37, 4, dtype=torch.float64)
    with torch.no_grad():
        whole = mixer(x)
        u = x.transpose(1, 2)
        y_prompt, x_prompt = mixer._ssm(u[..., :20], None, True)
        state, steps = {"x": x_prompt}, []
        for t in range(20, 37):
            out, state = mixer.step(x[:, t], state)
            steps.append(out)
        y_rest, _ = mixer._ssm(u[..., 20:], x_prompt, True)
    assert relative_error(mixer._output(y_prompt.transpose(1, 2)), whole[:, :20]) < 1e-10
    assert relative_error(torch.stack(steps, 1), whole[:, 20:]) < 1e-10
    assert relative_error(mixer._output(y_rest.transpose(1, 2)), whole[:, 20:]) < 1e-10
