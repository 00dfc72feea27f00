"""S4 and S4D: the convolution mode and the recurrent mode compute the same map.

Over 1024 steps, for every HiPPO measure (S4) and every initialisation and discretisation
(S4D): relative error at most 1e-4 in float32 and 1e-8 in float64.
"""

import pytest
import torch

from hybrids.mixers import S4, S4D

LENGTH, H, N = 1024, 4, 16
TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-8}

CASES = {
    **{f"S4-{m}": (S4, {"measure": m, "l_max": LENGTH})
       for m in ("legs", "legt", "lagt", "fout")},
    **{f"S4D-{i}-{d}": (S4D, {"init": i, "discretization": d})
       for i in ("legs", "lin", "inv", "real") for d in ("zoh", "bilinear")},
}


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want.double()).norm() / want.double().norm())


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


def test_s4_rejects_sequences_longer_than_l_max():
    mixer = S4(4, d_state=8, l_max=16)
    mixer(torch.randn(1, 16, 4))
    with pytest.raises(ValueError, match="l_max"):
        mixer(torch.randn(1, 17, 4))


@pytest.mark.parametrize("cls,kwargs,argument", [
    (S4, {"d_state": 7}, "d_state"),
    (S4, {"measure": "legx"}, "measure"),
    (S4, {"measure": "legt", "rank": 1}, "rank"),
    (S4D, {"init": "linear"}, "init"),
    (S4D, {"discretization": "euler"}, "discretization"),
    (S4D, {"dt_min": 0.2, "dt_max": 0.1}, "dt_min"),
])
def test_bad_arguments_name_themselves(cls, kwargs, argument):
    with pytest.raises(ValueError, match=f"^{argument}:"):
        cls(4, **kwargs)


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
