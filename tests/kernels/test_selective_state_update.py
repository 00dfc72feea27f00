"""selective_state_update stepped over a sequence against the reference selective scan."""

import importlib

import pytest
import torch

from hybrids.kernels import selective_state_update
from hybrids.kernels import BackendUnavailable
from hybrids.kernels.scan.reference import selective_scan_reference
from helpers import relative_rms

# The package exports the function under the module's name: fetch the module itself.
module = importlib.import_module("hybrids.kernels.scan.step")


def scan_inputs(batch, dim, d_state, length, groups, dtype=torch.float64):
    """Inputs of the scan; groups=0 means 3-D B, C (batch, d_state, L)."""
    shape_bc = (batch, d_state, length) if groups == 0 else (batch, groups, d_state, length)
    return {
        "u": torch.randn(batch, dim, length, dtype=dtype),
        "delta": 0.5 * torch.randn(batch, dim, length, dtype=dtype),
        "A": -torch.rand(dim, d_state, dtype=dtype) * 2 - 0.1,
        "B": torch.randn(shape_bc, dtype=dtype),
        "C": torch.randn(shape_bc, dtype=dtype),
        "D": torch.randn(dim, dtype=dtype),
        "z": torch.randn(batch, dim, length, dtype=dtype),
        "delta_bias": torch.randn(dim, dtype=dtype),
    }


def step_through(inputs, state, use, softplus, **kwargs):
    """Run selective_state_update token by token: outputs (batch, dim, L)."""
    outs = []
    for t in range(inputs["u"].shape[2]):
        outs.append(
            selective_state_update(
                state,
                inputs["u"][..., t],
                inputs["delta"][..., t],
                inputs["A"],
                inputs["B"][..., t],
                inputs["C"][..., t],
                D=inputs["D"] if "D" in use else None,
                z=inputs["z"][..., t] if "z" in use else None,
                dt_bias=inputs["delta_bias"] if "bias" in use else None,
                dt_softplus=softplus,
                **kwargs,
            )
        )
    return torch.stack(outs, dim=2)


OPTIONS = {
    "plain": ((), False),
    "D": (("D",), False),
    "D-z": (("D", "z"), False),
    "bias-softplus": (("bias",), True),
    "all": (("D", "z", "bias"), True),
}


@pytest.mark.parametrize("groups", [0, 1, 2, 3], ids=lambda g: "BC3d" if g == 0 else f"G{g}")
@pytest.mark.parametrize("option", OPTIONS)
def test_steps_equal_reference_scan(groups, option):
    use, softplus = OPTIONS[option]
    batch, dim, d_state, length = 2, 6, 4, 9
    inputs = scan_inputs(batch, dim, d_state, length, groups)
    if not softplus:  # keep the step positive without softplus
        inputs["delta"] = inputs["delta"].abs()
        inputs["delta_bias"] = inputs["delta_bias"].abs()
    state = torch.zeros(batch, dim, d_state, dtype=torch.float64)
    out = step_through(inputs, state, use, softplus)
    expected, last = selective_scan_reference(
        inputs["u"],
        inputs["delta"],
        inputs["A"],
        inputs["B"],
        inputs["C"],
        D=inputs["D"] if "D" in use else None,
        z=inputs["z"] if "z" in use else None,
        delta_bias=inputs["delta_bias"] if "bias" in use else None,
        delta_softplus=softplus,
        return_last_state=True,
    )
    assert relative_rms(out, expected) < 1e-12
    assert relative_rms(state, last) < 1e-12


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_heads_form_equals_channel_form(groups):
    """(batch, nheads, dim, dstate) with ngroups over heads = channels grouped the same way."""
    batch, nheads, headdim, d_state = 3, 4, 5, 6
    dim = nheads * headdim
    x = torch.randn(batch, nheads, headdim, dtype=torch.float64)
    dt = torch.randn(batch, nheads, headdim, dtype=torch.float64)
    z = torch.randn(batch, nheads, headdim, dtype=torch.float64)
    A = -torch.rand(nheads, headdim, d_state, dtype=torch.float64)
    B = torch.randn(batch, groups, d_state, dtype=torch.float64)
    C = torch.randn(batch, groups, d_state, dtype=torch.float64)
    D = torch.randn(nheads, headdim, dtype=torch.float64)
    dt_bias = torch.randn(nheads, headdim, dtype=torch.float64)
    state = torch.randn(batch, nheads, headdim, d_state, dtype=torch.float64)
    flat_state = state.reshape(batch, dim, d_state).clone()

    out = selective_state_update(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus=True)
    flat = selective_state_update(
        flat_state, x.reshape(batch, dim), dt.reshape(batch, dim), A.reshape(dim, d_state), B, C,
        D.reshape(dim), z.reshape(batch, dim), dt_bias.reshape(dim), dt_softplus=True,
    )
    assert out.shape == (batch, nheads, headdim)
    torch.testing.assert_close(out.reshape(batch, dim), flat, rtol=0, atol=1e-13)
    torch.testing.assert_close(state.reshape(batch, dim, d_state), flat_state, rtol=0, atol=1e-13)


def test_heads_form_with_2d_B_C_is_one_group():
    batch, nheads, headdim, d_state = 2, 3, 2, 4
    args = (
        torch.randn(batch, nheads, headdim), torch.rand(batch, nheads, headdim), -torch.rand(nheads, headdim, d_state),
    )
    B, C = torch.randn(batch, d_state), torch.randn(batch, d_state)
    s1, s2 = torch.randn(batch, nheads, headdim, d_state), None
    s2 = s1.clone()
    out1 = selective_state_update(s1, *args, B, C)
    out2 = selective_state_update(s2, *args, B[:, None], C[:, None])
    torch.testing.assert_close(out1, out2)
    torch.testing.assert_close(s1, s2)


def test_state_math_in_float32_with_low_precision_inputs():
    """bfloat16 x with a float32 state: out in bfloat16, the state stays float32 and accurate."""
    batch, dim, d_state, length = 2, 8, 4, 20
    inputs = scan_inputs(batch, dim, d_state, length, 0, dtype=torch.float32)
    for key in ("u", "delta", "z"):
        inputs[key] = inputs[key].bfloat16()
    state = torch.zeros(batch, dim, d_state)
    out = step_through(inputs, state, ("D", "z", "bias"), True)
    assert out.dtype == torch.bfloat16 and state.dtype == torch.float32
    exact = {k: v.double() for k, v in inputs.items()}
    expected, last = selective_scan_reference(
        exact["u"], exact["delta"], exact["A"], exact["B"], exact["C"], exact["D"], exact["z"],
        exact["delta_bias"], True, return_last_state=True,
    )
    assert relative_rms(state.double(), last) < 1e-5  # float32 accumulation, not bfloat16
    assert relative_rms(out.double(), expected) < 1e-2  # the output rounds to bfloat16


BATCH, DIM, N = 2, 6, 4


def args(**changes):
    base = {
        "state": torch.zeros(BATCH, DIM, N),
        "x": torch.randn(BATCH, DIM),
        "dt": torch.rand(BATCH, DIM),
        "A": -torch.rand(DIM, N),
        "B": torch.randn(BATCH, N),
        "C": torch.randn(BATCH, N),
    }
    base.update(changes)
    return base


BAD = {
    "state-ndim": (args(state=torch.zeros(BATCH, DIM)), "state:"),
    "x": (args(x=torch.randn(BATCH, DIM + 1)), "x:"),
    "dt": (args(dt=torch.randn(BATCH, DIM, 1)), "dt:"),
    "z": (args(z=torch.randn(BATCH + 1, DIM)), "z:"),
    "A": (args(A=torch.randn(DIM, N + 1)), "A:"),
    "B-dstate": (args(B=torch.randn(BATCH, N + 1)), "B:"),
    "B-groups": (args(B=torch.randn(BATCH, 4, N)), "B:"),
    "C-batch": (args(C=torch.randn(BATCH + 1, N)), "C:"),
    "D": (args(D=torch.randn(DIM + 1)), "D:"),
    "dt_bias": (args(dt_bias=torch.randn(1, DIM)), "dt_bias:"),
    "heads-D": (
        {"state": torch.zeros(2, 3, 4, N), "x": torch.randn(2, 3, 4), "dt": torch.rand(2, 3, 4),
         "A": -torch.rand(3, 4, N), "B": torch.randn(2, 2, N), "C": torch.randn(2, N)},
        "B:",
    ),
    "backend": (args(backend="triton"), "backend:"),
}


@pytest.mark.parametrize("name", BAD)
def test_bad_arguments_name_the_argument(name):
    kwargs, message = BAD[name]
    with pytest.raises(ValueError) as info:
        selective_state_update(**kwargs)
    assert message in str(info.value)


def test_unknown_backend_in_environment(monkeypatch):
    monkeypatch.setenv(module.BACKEND_ENV, "fast")
    with pytest.raises(ValueError, match=module.BACKEND_ENV):
        selective_state_update(**args())


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_forced_extension_that_cannot_run_says_how_to_get_it(how, monkeypatch):
    kwargs = args(backend="extension") if how == "argument" else args()
    if how == "environment":
        monkeypatch.setenv(module.BACKEND_ENV, "extension")
    with pytest.raises(BackendUnavailable) as info:
        selective_state_update(**kwargs)
    if module._extension() is None:
        assert "pip install -e '.[cuda]'" in str(info.value)
    else:
        assert "CUDA" in str(info.value)
