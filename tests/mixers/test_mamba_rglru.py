"""Mamba and the RG-LRU block against plain re-implementations; initialisation; names; errors.

The shared mixer contract (causality, forward vs step, state size) is in test_mixer_interface.py.
"""

import importlib
import math

import pytest
import torch
import torch.nn.functional as F

from hybrids.errors import ConfigError
from hybrids.kernels.scan.reference import selective_scan_reference
from hybrids.kernels import cpp_build
from hybrids.mixers import RGLRU, Mamba
from hybrids.model.mixer_specs import build_mixer

HAVE_CPP = cpp_build.unavailable_reason("selective_scan") is None and cpp_build.unavailable_reason("linear_recurrence") is None
needs_cpp = pytest.mark.skipif(not HAVE_CPP, reason="no C++ compiler here")
from helpers import assert_same_outputs_and_gradients, outputs_and_parameter_gradients, relative_rms

mamba_module = importlib.import_module("hybrids.mixers.mamba")
rglru_module = importlib.import_module("hybrids.mixers.rglru")


# --------------------------------------------------------------------------------------------
# Mamba


def plain_mamba(m: Mamba, x: torch.Tensor) -> torch.Tensor:
    """The Mamba block written out: nn.Conv1d cut to length, softplus step, the reference scan."""
    length = x.shape[1]
    u, z = (x @ m.in_proj.weight.T + (0 if m.in_proj.bias is None else m.in_proj.bias)).chunk(2, dim=-1)
    u = F.silu(m.conv1d(u.transpose(1, 2))[..., :length])  # (B, d_inner, L)
    proj = u.transpose(1, 2) @ m.x_proj.weight.T
    dt, B, C = proj[..., : m.dt_rank], proj[..., m.dt_rank : m.dt_rank + m.d_state], proj[..., m.dt_rank + m.d_state :]
    delta = F.softplus(dt @ m.dt_proj.weight.T + m.dt_proj.bias)  # (B, L, d_inner)
    A = -torch.exp(m.A_log)
    y = selective_scan_reference(u, delta.transpose(1, 2), A, B.transpose(1, 2), C.transpose(1, 2), m.D, z.transpose(1, 2))
    return y.transpose(1, 2) @ m.out_proj.weight.T + (0 if m.out_proj.bias is None else m.out_proj.bias)


MAMBA_SETTINGS = {
    "default": {"d_state": 4},
    "dtrank-conv3-bias": {"d_state": 3, "dt_rank": 2, "d_conv": 3, "bias": True, "expand": 1.5},
    "no-conv-bias": {"d_state": 5, "conv_bias": False, "d_conv": 2},
}


@pytest.mark.parametrize("setting", MAMBA_SETTINGS)
@pytest.mark.parametrize("scan_backend", [None, "reference"])
def test_mamba_equals_plain_reimplementation(setting, scan_backend):
    m = Mamba(16, scan_backend=scan_backend, **MAMBA_SETTINGS[setting]).double()
    x = torch.randn(2, 11, 16, dtype=torch.float64)
    with torch.no_grad():
        assert relative_rms(m(x), plain_mamba(m, x)) < 1e-12


def test_mamba_parameter_names_and_shapes_are_mamba_ssm_s():
    d_model, d_state, d_conv, expand = 32, 8, 4, 2
    m = Mamba(d_model, d_state=d_state, d_conv=d_conv, expand=expand)
    d_inner, dt_rank = expand * d_model, math.ceil(d_model / 16)
    expected = {
        "in_proj.weight": (2 * d_inner, d_model),
        "conv1d.weight": (d_inner, 1, d_conv),
        "conv1d.bias": (d_inner,),
        "x_proj.weight": (dt_rank + 2 * d_state, d_inner),
        "dt_proj.weight": (d_inner, dt_rank),
        "dt_proj.bias": (d_inner,),
        "A_log": (d_inner, d_state),
        "D": (d_inner,),
        "out_proj.weight": (d_model, d_inner),
    }
    assert {name: tuple(p.shape) for name, p in m.named_parameters()} == expected
    with_bias = {name for name, _ in Mamba(d_model, bias=True).named_parameters()}
    assert with_bias == set(expected) | {"in_proj.bias", "out_proj.bias"}
    assert m.state_size(100) == d_inner * (d_state + d_conv - 1)


@pytest.mark.parametrize("dt_min,dt_max,floor", [(1e-3, 0.1, 1e-4), (1e-2, 0.5, 1e-4), (1e-5, 1e-3, 1e-4)])
def test_mamba_initialisation(dt_min, dt_max, floor):
    torch.manual_seed(1)
    m = Mamba(64, d_state=16, dt_min=dt_min, dt_max=dt_max, dt_init_floor=floor, dt_scale=2.0)
    dt = F.softplus(m.dt_proj.bias.double())
    assert dt.min() >= max(dt_min, floor) * (1 - 1e-5) and dt.max() <= dt_max * (1 + 1e-5)
    # log-uniform: the log-steps spread over most of the range
    span = math.log(dt_max) - math.log(max(dt_min, floor))
    assert dt.log().max() - dt.log().min() > 0.8 * span
    bound = m.dt_rank**-0.5 * 2.0
    assert m.dt_proj.weight.abs().max() <= bound and m.dt_proj.weight.abs().max() > 0.5 * bound
    A = -torch.exp(m.A_log)
    torch.testing.assert_close(A, -torch.arange(1.0, 17.0).expand(m.d_inner, -1))
    torch.testing.assert_close(m.D.detach(), torch.ones(m.d_inner))


def test_mamba_constant_dt_init():
    m = Mamba(32, dt_rank=4, dt_init="constant")
    torch.testing.assert_close(m.dt_proj.weight.detach(), torch.full_like(m.dt_proj.weight, 0.5))


def test_ssm_parameters_are_excluded_from_weight_decay():
    """hybrids.train.module decays parameters with ndim >= 2 unless marked ``_no_weight_decay``."""
    m = Mamba(16).double()  # the marks survive a dtype change
    decayed = {n for n, p in m.named_parameters() if p.ndim >= 2 and not getattr(p, "_no_weight_decay", False)}
    assert decayed == {"in_proj.weight", "conv1d.weight", "x_proj.weight", "dt_proj.weight", "out_proj.weight"}
    assert all(getattr(p, "_no_weight_decay", False) for p in (m.A_log, m.D, m.dt_proj.bias))
    assert getattr(RGLRU(16).double().Lambda, "_no_weight_decay", False)


def test_mamba_calls_the_scan_without_backend_unless_configured(monkeypatch):
    seen = []
    real = mamba_module.selective_scan

    def spy(*args, **kwargs):
        seen.append(kwargs.get("backend", "absent"))
        return real(*args, **kwargs)

    monkeypatch.setattr(mamba_module, "selective_scan", spy)
    x = torch.randn(1, 5, 16)
    Mamba(16, d_state=2, use_fast_path=False)(x)  # not the fused CPU block, which calls no scan
    Mamba(16, d_state=2, scan_backend="reference")(x)
    assert seen == ["absent", "reference"]


@needs_cpp
def test_mamba_on_cpu_runs_the_fused_block_with_the_plain_path_s_gradients(monkeypatch):
    """On CPU, forward takes hybrids.kernels.mamba_block (no scan call) unless a backend is
    forced or the fast path is off; its outputs and every parameter's gradient are the plain
    path's."""
    for name in (mamba_module.SCAN_BACKEND_ENV, mamba_module.CONV_BACKEND_ENV):
        monkeypatch.delenv(name, raising=False)
    torch.manual_seed(0)
    m = Mamba(16, d_state=4, bias=True, expand=1.5).double()
    x = torch.randn(2, 19, 16, dtype=torch.float64)
    xz, A = m.in_proj(x), -torch.exp(m.A_log)
    assert m.cpu_block_unavailable(xz, A) is None
    assert "use_fast_path" in Mamba(16, use_fast_path=False).cpu_block_unavailable(xz.float(), A.float())
    assert "forced" in Mamba(16, scan_backend="cpu").cpu_block_unavailable(xz.float(), A.float())
    assert "float32 or float64" in m.cpu_block_unavailable(xz.to(torch.bfloat16), A)
    monkeypatch.setenv(mamba_module.CONV_BACKEND_ENV, "torch")
    assert "forced" in m.cpu_block_unavailable(xz, A)
    monkeypatch.delenv(mamba_module.CONV_BACKEND_ENV)

    calls = []
    real = mamba_module.mamba_block_cpu
    monkeypatch.setattr(mamba_module, "mamba_block_cpu", lambda *a: calls.append(1) or real(*a))
    fused = outputs_and_parameter_gradients(m, x)
    assert calls == [1]
    m.use_fast_path = False
    plain = outputs_and_parameter_gradients(m, x)
    assert calls == [1]
    assert_same_outputs_and_gradients(fused, plain, rtol=1e-12, atol=1e-13)


def fake_mamba_inner_fn(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, out_proj_weight,
                        out_proj_bias, A, B=None, C=None, D=None, delta_bias=None, delta_softplus=True):
    """mamba_ssm's ``mamba_inner_fn`` contract, written from its reference ``mamba_inner_ref``
    with plain torch ops: lets the CPU check what Mamba.forward hands to the fused block."""
    assert B is None and C is None  # B and C come from x_proj inside the block
    fake_mamba_inner_fn.calls += 1
    L, d_state = xz.shape[-1], A.shape[-1]
    x, z = xz.chunk(2, dim=1)
    x = F.silu(F.conv1d(F.pad(x, (conv1d_weight.shape[-1] - 1, 0)), conv1d_weight, conv1d_bias, groups=x.shape[1]))
    x_dbl = F.linear(x.transpose(1, 2), x_proj_weight)  # (b, L, dt_rank + 2 d_state)
    rank = delta_proj_weight.shape[1]
    delta = (x_dbl[..., :rank] @ delta_proj_weight.t()).transpose(1, 2)
    B_ = x_dbl[..., rank : rank + d_state].transpose(1, 2)
    C_ = x_dbl[..., rank + d_state :].transpose(1, 2)
    y = selective_scan_reference(x, delta, A, B_, C_, D, z, delta_bias, delta_softplus)
    return F.linear(y.transpose(1, 2), out_proj_weight, out_proj_bias)


def test_mamba_fused_path_conditions_and_arguments(monkeypatch):
    """Where the fused block may run, forward hands it arguments that give the plain path's
    output (checked on CPU with a stand-in that follows mamba_ssm's reference); everywhere else
    forward says why not."""
    fake_mamba_inner_fn.calls = 0
    monkeypatch.setattr(mamba_module, "_mamba_inner_fn", lambda: fake_mamba_inner_fn)
    for name in (mamba_module.SCAN_BACKEND_ENV, mamba_module.CONV_BACKEND_ENV):
        monkeypatch.delenv(name, raising=False)
    torch.manual_seed(0)
    m = Mamba(16, d_state=4, bias=True).double()
    assert m.fused_path_unavailable("cuda", torch.float32) is None
    assert "CUDA" in m.fused_path_unavailable("cpu", torch.float32)
    assert "float32, float16 and bfloat16" in m.fused_path_unavailable("cuda", torch.float64)
    assert "use_fast_path" in Mamba(16, use_fast_path=False).fused_path_unavailable("cuda", torch.float32)
    assert "forced" in Mamba(16, scan_backend="torch").fused_path_unavailable("cuda", torch.float32)
    assert "d_conv=5" in Mamba(16, d_conv=5).fused_path_unavailable("cuda", torch.float32)
    monkeypatch.setenv(mamba_module.SCAN_BACKEND_ENV, "torch")
    assert "forced" in m.fused_path_unavailable("cuda", torch.float32)
    monkeypatch.delenv(mamba_module.SCAN_BACKEND_ENV)
    monkeypatch.setattr(mamba_module, "_mamba_inner_fn", lambda: None)
    assert "not installed" in m.fused_path_unavailable("cuda", torch.float32)

    # The plumbing: let the stand-in run on CPU (float32, as the CUDA kernels would).
    monkeypatch.setattr(mamba_module, "_mamba_inner_fn", lambda: fake_mamba_inner_fn)
    monkeypatch.setattr(mamba_module, "_FUSED_DEVICES", ("cuda", "cpu"))
    m = m.float()
    x = torch.randn(2, 11, 16)
    fused = m(x)
    assert fake_mamba_inner_fn.calls == 1
    plain = plain_mamba(m, x)
    assert relative_rms(fused, plain) < 1e-5


# --------------------------------------------------------------------------------------------
# RG-LRU


def plain_rglru(m: RGLRU, x: torch.Tensor, floor: float = 0.0) -> torch.Tensor:
    """Griffin's recurrent block with the RG-LRU as a direct loop over time (no scan)."""
    length = x.shape[1]
    rec, gate = (x @ m.in_proj.weight.T + m.in_proj.bias).chunk(2, dim=-1)
    rec = m.conv1d(rec.transpose(1, 2))[..., :length].transpose(1, 2)  # (B, L, d_rnn)

    def block_diagonal(layer, v):
        blocks = v.unflatten(-1, (m.heads, m.d_rnn // m.heads))
        return torch.stack([blocks[..., h, :] @ layer.weight[h] for h in range(m.heads)], dim=-2).flatten(-2) + layer.bias

    r, i = torch.sigmoid(block_diagonal(m.gate_a, rec)), torch.sigmoid(block_diagonal(m.gate_x, rec))
    a = torch.sigmoid(m.Lambda)
    h = torch.zeros(x.shape[0], m.d_rnn, dtype=x.dtype)
    hs = []
    for t in range(length):
        a_t = a ** (m.c * r[:, t])
        if floor:
            a_t = a_t.clamp(max=math.exp(-floor))
        h = a_t * h + torch.sqrt(1 - a_t**2) * (i[:, t] * rec[:, t])
        hs.append(h)
    hs = torch.stack(hs, dim=1)
    return (F.gelu(gate) * hs) @ m.out_proj.weight.T + m.out_proj.bias


RGLRU_SETTINGS = {
    "default": {},
    "heads-wide": {"d_rnn": 24, "heads": 4},
    "conv1-c4": {"d_conv": 1, "c": 4.0, "a_min": 0.5, "a_max": 0.9},
}


@pytest.mark.parametrize("setting", RGLRU_SETTINGS)
@pytest.mark.parametrize("scan_backend", [None, "reference", pytest.param("cpu", marks=needs_cpp)])
def test_rglru_equals_direct_recurrence(setting, scan_backend):
    """None: the linear-recurrence kernel (CPU); a scan backend: the selective-scan path."""
    m = RGLRU(16, scan_backend=scan_backend, **RGLRU_SETTINGS[setting]).double()
    if scan_backend is not None or HAVE_CPP:
        assert m._uses_recurrence(torch.device("cpu"), torch.float64) == (scan_backend is None)
    x = torch.randn(2, 11, 16, dtype=torch.float64)
    with torch.no_grad():
        assert relative_rms(m(x), plain_rglru(m, x)) < 1e-11


@needs_cpp
@pytest.mark.parametrize("setting", RGLRU_SETTINGS)
def test_rglru_recurrence_and_scan_paths_have_the_same_gradients(setting):
    torch.manual_seed(3)
    on_recurrence = RGLRU(16, **RGLRU_SETTINGS[setting]).double()
    on_scan = RGLRU(16, scan_backend="cpu", **RGLRU_SETTINGS[setting]).double()
    on_scan.load_state_dict(on_recurrence.state_dict())
    x = torch.randn(2, 13, 16, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(2, 13, 16, dtype=torch.float64)
    grads = []
    for m in (on_recurrence, on_scan):
        params = [x, *m.parameters()]
        grads.append(torch.autograd.grad((m(x) * weights).sum(), params))
    for (name, _), a, b in zip([("x", None), *on_recurrence.named_parameters()], *grads):
        assert relative_rms(a, b) < 1e-10, name


def test_rglru_recurrence_path_prefill_carries_the_state():
    """Chunked prefill on the recurrence path equals one pass, and its state feeds step."""
    torch.manual_seed(4)
    m = RGLRU(16).double()
    x = torch.randn(2, 12, 16, dtype=torch.float64)
    with torch.no_grad():
        whole, state = m.prefill(x)
        first, middle = m.prefill(x[:, :5])
        second, end = m.prefill(x[:, 5:], middle)
        assert relative_rms(torch.cat((first, second), dim=1), whole) < 1e-12
        for key in state:
            assert relative_rms(end[key], state[key]) < 1e-12, key
        stepped, _ = m.step(x[:, 5], middle)
        assert relative_rms(stepped, second[:, 0]) < 1e-10


@pytest.mark.parametrize("scan_backend", [None, "reference"])
def test_rglru_step_floor_where_the_decay_is_nearly_one(scan_backend):
    """With a ~ 1 the scan's step would vanish; the floor on -log a_t (both paths) keeps it
    finite and a_t <= exp(-floor)."""
    m = RGLRU(16, scan_backend=scan_backend).double()
    with torch.no_grad():
        m.Lambda.fill_(40.0)  # softplus(-40) ~ 4e-18: every step below the floor
        x = torch.randn(2, 9, 16, dtype=torch.float64)
        y = m(x)
        assert torch.isfinite(y).all()
        assert relative_rms(y, plain_rglru(m, x, floor=rglru_module.DELTA_FLOOR)) < 1e-9


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_rglru_gradients_stay_finite_when_the_recurrence_gate_closes(dtype):
    """A gate r_t that rounds to 0 (float16 at a bias of -18) gives a_t = 1, where
    sqrt(1 - a_t^2) has an infinite slope: the floor keeps every gradient finite."""
    m = RGLRU(16).to(dtype)
    with torch.no_grad():
        m.gate_a.bias.fill_(-120.0)
    x = torch.randn(2, 9, 16, dtype=dtype)
    m(x).float().square().sum().backward()
    for name, p in m.named_parameters():
        assert torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("a_min,a_max,c", [(0.9, 0.999, 8.0), (0.5, 0.6, 2.0)])
def test_rglru_initialisation(a_min, a_max, c):
    torch.manual_seed(2)
    m = RGLRU(64, a_min=a_min, a_max=a_max, c=c)
    a_c = torch.sigmoid(m.Lambda.double()) ** c
    assert a_c.min() >= a_min - 1e-6 and a_c.max() <= a_max + 1e-6
    assert a_c.max() - a_c.min() > 0.8 * (a_max - a_min)  # spread over the range
    assert m.d_rnn == round(4 * 64 / 3)
    assert m.state_size(10) == m.d_rnn * m.d_conv


def test_rglru_parameters():
    names = {n: tuple(p.shape) for n, p in RGLRU(16, d_rnn=24, heads=4).named_parameters()}
    assert names == {
        "in_proj.weight": (48, 16),
        "in_proj.bias": (48,),
        "conv1d.weight": (24, 1, 4),
        "conv1d.bias": (24,),
        "gate_a.weight": (4, 6, 6),
        "gate_a.bias": (24,),
        "gate_x.weight": (4, 6, 6),
        "gate_x.bias": (24,),
        "Lambda": (24,),
        "out_proj.weight": (16, 24),
        "out_proj.bias": (16,),
    }


# --------------------------------------------------------------------------------------------
# both


@pytest.mark.parametrize(
    "mixer",
    [
        lambda: Mamba(16, d_state=4, bias=True),
        lambda: Mamba(16, d_state=4, dt_rank=2, d_conv=2),
        lambda: RGLRU(16),
        lambda: RGLRU(16, d_rnn=12, heads=3),
    ],
    ids=["mamba-bias", "mamba-dtrank", "rglru", "rglru-heads"],
)
def test_gradients_reach_every_parameter(mixer):
    m = mixer()
    x = torch.randn(2, 7, 16, requires_grad=True)
    m(x).square().sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().max() > 0, f"no gradient reaches {name}"
    assert x.grad.abs().max() > 0


BAD = {
    "mamba-d_state": (Mamba, {"d_state": 0}, "d_state"),
    "mamba-d_conv": (Mamba, {"d_conv": 0}, "d_conv"),
    "mamba-expand": (Mamba, {"expand": 0}, "expand"),
    "mamba-dt_rank": (Mamba, {"dt_rank": "big"}, "dt_rank"),
    "mamba-dt_rank-0": (Mamba, {"dt_rank": 0}, "dt_rank"),
    "mamba-dt_min": (Mamba, {"dt_min": 0.5, "dt_max": 0.1}, "dt_min"),
    "mamba-dt_init": (Mamba, {"dt_init": "uniform"}, "dt_init"),
    "mamba-dt_init_floor": (Mamba, {"dt_init_floor": -1.0}, "dt_init_floor"),
    "mamba-scan_backend": (Mamba, {"scan_backend": "fast"}, "scan_backend"),
    "rglru-d_rnn": (RGLRU, {"d_rnn": 0}, "d_rnn"),
    "rglru-d_conv": (RGLRU, {"d_conv": 0}, "d_conv"),
    "rglru-heads": (RGLRU, {"d_rnn": 20, "heads": 3}, "heads"),
    "rglru-c": (RGLRU, {"c": 0.0}, "c"),
    "rglru-a_min": (RGLRU, {"a_min": 0.99, "a_max": 0.9}, "a_min"),
    "rglru-a_max-1": (RGLRU, {"a_max": 1.0}, "a_max"),
    "rglru-scan_backend": (RGLRU, {"scan_backend": "fast"}, "scan_backend"),
}


@pytest.mark.parametrize("name", BAD)
def test_bad_arguments_name_the_argument(name):
    cls, kwargs, arg = BAD[name]
    with pytest.raises(ValueError) as info:
        cls(16, **kwargs)
    assert str(info.value).startswith(f"{arg}: ")


def test_bad_argument_in_a_config_names_the_key():
    spec = {"class_path": "hybrids.mixers.RGLRU", "init_args": {"d_rnn": 20, "heads": 3}}
    with pytest.raises(ConfigError) as info:
        build_mixer(spec, 16, "model.init_args.stack.mixers.R")
    assert "model.init_args.stack.mixers.R.init_args.heads" in str(info.value)


def test_falcon_mamba_norms_normalise_dt_b_and_c_without_weights():
    torch.manual_seed(0)
    mixer = Mamba(16, d_state=4, dt_rank=3, ssm_input_norm_eps=1e-3).double()
    u = torch.randn(2, 5, mixer.d_inner, dtype=torch.float64)
    raw = mixer.x_proj(u).split([3, 4, 4], dim=-1)
    for got, part in zip(mixer._ssm_inputs(u), raw):
        torch.testing.assert_close(got, part / torch.sqrt(part.pow(2).mean(-1, keepdim=True) + 1e-3))
    plain = Mamba(16, d_state=4, dt_rank=3).double()
    plain.load_state_dict(mixer.state_dict())
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    assert not torch.allclose(plain(x), mixer(x)), "the norms change the output"
    with pytest.raises(ValueError, match="ssm_input_norm_eps"):
        Mamba(16, ssm_input_norm_eps=0.0)


def test_rglru_unscaled_first_input_leaves_only_the_first_token_unscaled():
    torch.manual_seed(0)
    options = {"d_rnn": 12, "heads": 3, "delta_floor": 1e-30}
    plain = RGLRU(16, **options).double()
    griffin = RGLRU(16, unscaled_first_input=True, **options).double()
    griffin.load_state_dict(plain.state_dict())
    conv_out = torch.randn(2, 6, 12, dtype=torch.float64)
    a, scaled = plain._recurrence_inputs(conv_out, first=True)
    _, unscaled = griffin._recurrence_inputs(conv_out, first=True)
    torch.testing.assert_close(unscaled[:, 1:], scaled[:, 1:])
    torch.testing.assert_close(unscaled[:, 0], scaled[:, 0] / torch.sqrt(1 - a[:, 0] ** 2))
    _, later = griffin._recurrence_inputs(conv_out, first=False)  # a prefill continuing a sequence
    torch.testing.assert_close(later, scaled)
    x = torch.randn(2, 6, 16, dtype=torch.float64)
    assert griffin.init_state(2)["position"] == 0 and griffin.prefill(x)[1]["position"] == 6
    with pytest.raises(ValueError, match="delta_floor"):
        RGLRU(16, delta_floor=0.0)
    with pytest.raises(ValueError, match="gate_activation"):
        RGLRU(16, gate_activation="relu")
