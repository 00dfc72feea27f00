"""Feature maps (identity, ELU + 1, FAVOR+, Taylor) and the mixers on the linear-attention kernel
(LinearAttention for linear attention / Performer / Based / RetNet, Mamba2, ShortConv), each
against a direct computation that does not use the kernel: the quadratic (L, L) form of
attention for LinearAttention, the SSD recurrence written out step by step for Mamba2. The
mixer contract itself (forward = prefill = steps, state sizes) is in test_mixer_interface.py."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hybrids.kernels import apply_rotary, rotary_cos_sin
from helpers import assert_same_outputs_and_gradients, outputs_and_parameter_gradients
from hybrids.kernels import cpp_build
from hybrids.mixers import LinearAttention, Mamba2, ShortConv
from hybrids.parts.feature_maps import FavorPlus, TaylorExp, build_feature_map, orthogonal_gaussian_rows

D = 16


# -- feature maps ---------------------------------------------------------------------------------


def test_taylor_features_are_the_second_order_expansion_of_the_softmax_kernel():
    q, k = torch.randn(2, 50, 4, dtype=torch.float64)
    phi = TaylorExp(4)
    s = (q * k).sum(-1) / 2  # q.k / sqrt(4)
    assert phi.out_dim == 1 + 4 + 16
    torch.testing.assert_close((phi(q) * phi(k)).sum(-1), 1 + s + s**2 / 2, rtol=1e-12, atol=1e-12)


def test_taylor_kernel_scores_are_the_features_dot_products_in_closed_form():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(3, 7, 5, generator=g, dtype=torch.float64), torch.randn(3, 9, 5, generator=g, dtype=torch.float64)
    phi = TaylorExp(5)
    torch.testing.assert_close(phi.kernel_scores(q, k), phi(q) @ phi(k).transpose(-1, -2), rtol=1e-12, atol=1e-12)
    assert FavorPlus(8).kernel_scores(q, k) is None  # no closed form: its features are random


def test_favor_features_are_the_formula_and_keys_equal_them_transposed_in_memory():
    """FAVOR+ as one augmented product and one exp equals exp(W x' - |x'|^2 / 2) / sqrt(m), and
    the keys are the same values stored as a (..., m, L) tensor."""
    g = torch.Generator().manual_seed(0)
    phi = FavorPlus(8, num_features=20, seed=0).double()
    x = torch.randn(2, 3, 11, 8, generator=g, dtype=torch.float64)
    xs = x * 8**-0.25
    formula = torch.exp(xs @ phi.projection.double().T - 0.5 * (xs * xs).sum(-1, keepdim=True)) / 20**0.5
    torch.testing.assert_close(phi(x), formula, rtol=1e-12, atol=1e-14)
    keys = phi.keys(x)
    torch.testing.assert_close(keys, formula, rtol=1e-12, atol=1e-14)
    assert keys.transpose(-1, -2).is_contiguous()


@pytest.mark.parametrize("length", [64, 150])  # one chunk; three, the last padded
def test_performer_over_several_chunks_equals_its_reference_kernel(length):
    torch.manual_seed(0)
    m = LinearAttention(D, heads=2, feature_map="favor", seed=0).double()
    x = torch.randn(2, length, D, dtype=torch.float64)
    out = outputs_and_parameter_gradients(m, x)
    m.kernel_backend = "reference"
    assert_same_outputs_and_gradients(out, outputs_and_parameter_gradients(m, x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kwargs", [{"normalize": False, "output_norm": True}, {"output_norm": True}])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_based_quadratic_form_variants(kwargs, dtype):
    """Unnormalised (output norm instead) and normalised with an output norm, in float64 and
    float32: the quadratic form equals the chunked kernel."""
    torch.manual_seed(0)
    m = LinearAttention(D, heads=2, feature_map="taylor", feature_dim=4, **kwargs).to(dtype)
    x = torch.randn(2, 40, D, dtype=dtype)
    assert m.quadratic_unavailable(40) is None
    quadratic = m(x)
    m.kernel_backend = "chunk"
    chunked = m(x)
    tol = 1e-11 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(quadratic, chunked, rtol=tol, atol=tol)


def test_based_trains_in_the_quadratic_form_up_to_its_length_limit(monkeypatch):
    """Based's map (Taylor) with no decay: forward from a zero state runs as masked attention on
    the closed-form scores up to QUADRATIC_MAX_LENGTH, with the chunked kernel's outputs and
    gradients; past it, with a decay, a forced backend or another map, the kernel runs."""
    import hybrids.mixers.linear_attention as module

    monkeypatch.delenv(module.LINEAR_BACKEND_ENV, raising=False)
    torch.manual_seed(0)
    m = LinearAttention(D, heads=2, feature_map="taylor", feature_dim=4).double()
    x = torch.randn(2, 23, D, dtype=torch.float64)
    assert m.quadratic_unavailable(23) is None
    assert m.quadratic_unavailable(module.QUADRATIC_MAX_LENGTH) is None
    assert "QUADRATIC_MAX_LENGTH" in m.quadratic_unavailable(module.QUADRATIC_MAX_LENGTH + 1)
    assert "closed-form" in LinearAttention(D, heads=2, feature_map="favor").quadratic_unavailable(23)
    assert "decay" in LinearAttention(D, heads=2, feature_map="taylor", decay="gla").quadratic_unavailable(23)
    assert "forced" in LinearAttention(D, heads=2, feature_map="taylor", kernel_backend="chunk").quadratic_unavailable(23)

    calls = []
    real = LinearAttention._quadratic
    monkeypatch.setattr(LinearAttention, "_quadratic", lambda self, x: calls.append(1) or real(self, x))
    quadratic = outputs_and_parameter_gradients(m, x)
    assert calls == [1]
    m.kernel_backend = "chunk"
    chunked = outputs_and_parameter_gradients(m, x)
    assert calls == [1]
    assert_same_outputs_and_gradients(quadratic, chunked, rtol=1e-11, atol=1e-12)
    m.kernel_backend = None
    monkeypatch.setattr(module, "QUADRATIC_MAX_LENGTH", 22)
    m(x)
    assert calls == [1]  # 23 > 22: the kernel


def favor_error(num_features: int, orthogonal: bool, draws: int = 24) -> float:
    """RMS relative error of FAVOR+'s estimate of exp(q.k / sqrt(d)) over 256 pairs, d = 8.

    The estimate's relative variance is (exp(|q' + k'|^2) - 1) / m for i.i.d. rows (q' = q /
    d^(1/4)): entries of scale 0.3 keep it near 0.65 / m, so that a few draws give a stable RMS
    (at larger norms the heavy tail of exp(|q' + k'|^2) makes the average noisy)."""
    gen = torch.Generator().manual_seed(0)
    q, k = (0.3 * torch.randn(2, 256, 8, generator=gen, dtype=torch.float64)).unbind(0)
    exact = torch.exp((q * k).sum(-1) / math.sqrt(8))
    errors = []
    for draw in range(draws):
        phi = FavorPlus(8, num_features, orthogonal=orthogonal).double()
        phi.redraw_(torch.Generator().manual_seed(100 + draw))
        estimate = (phi(q) * phi(k)).sum(-1)
        errors.append(((estimate - exact) / exact).pow(2).mean())
    return float(torch.stack(errors).mean().sqrt())


@pytest.mark.parametrize("orthogonal", [False, True])
def test_favor_converges_to_the_softmax_kernel_as_one_over_sqrt_m(orthogonal):
    ms = [16, 64, 256, 1024]
    errors = [favor_error(m, orthogonal) for m in ms]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    slope = (math.log(errors[-1]) - math.log(errors[0])) / (math.log(ms[-1]) - math.log(ms[0]))
    assert -0.65 < slope < -0.35, f"error ~ m^{slope:.2f}, expected about m^-0.5: {errors}"
    assert errors[-1] < 0.04


def test_orthogonal_features_estimate_better_than_independent_ones():
    # Measured: 0.095 against 0.107 at m = 64 (and lower at every m from 16 to 1024 here).
    assert favor_error(64, orthogonal=True, draws=40) < favor_error(64, orthogonal=False, draws=40)


def test_orthogonal_rows_are_orthogonal_within_a_block():
    rows = orthogonal_gaussian_rows(12, 8, torch.Generator().manual_seed(0))
    block = rows[:8] / rows[:8].norm(dim=1, keepdim=True)
    torch.testing.assert_close(block @ block.T, torch.eye(8, dtype=torch.float64), atol=1e-12, rtol=0)


def causal_softmax_attention(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def test_performer_attention_approaches_softmax_attention_as_features_grow():
    gen = torch.Generator().manual_seed(1)
    q, k, v = (0.5 * torch.randn(3, 1, 2, 40, 8, generator=gen, dtype=torch.float64)).unbind(0)
    exact = causal_softmax_attention(q, k, v)
    errors = []
    for m in (16, 4096):
        phi = FavorPlus(8, m, seed=3).double()
        fq, fk = phi(q), phi(k)
        weights = torch.tril(fq @ fk.transpose(-1, -2))
        approx = (weights @ v) / weights.sum(-1, keepdim=True)
        errors.append(float((approx - exact).norm() / exact.norm()))
    assert errors[1] < 0.05 and errors[1] < errors[0] / 4, errors


def test_feature_maps_refuse_unknown_names_and_bad_sizes():
    with pytest.raises(ValueError, match="feature_map: unknown 'relu'"):
        build_feature_map("relu", 4)
    with pytest.raises(ValueError, match="num_features"):
        FavorPlus(4, num_features=0)


# -- LinearAttention ------------------------------------------------------------------------------


def quadratic_linear_attention(mixer: LinearAttention, x: torch.Tensor) -> torch.Tensor:
    """The mixer as masked (L, L) attention with weights phi(q_i).phi(k_j) gamma^(i-j)."""
    batch, length, _ = x.shape
    h, f, p = mixer.heads, mixer.feature_dim, mixer.head_dim
    q = mixer.feature_map(mixer.q_proj(x).view(batch, length, h, f).transpose(1, 2))
    k = mixer.feature_map(mixer.k_proj(x).view(batch, length, h, f).transpose(1, 2))
    v = mixer.v_proj(x).view(batch, length, h, p).transpose(1, 2)
    if mixer.rotary:  # RetNet: q and k rotated by their positions
        cos, sin = rotary_cos_sin(torch.arange(length), f, mixer.rotary_base, dtype=x.dtype)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    if mixer.gk_proj is not None:  # GLA: weights sum_f q_if k_jf prod_{j < s <= i} alpha_sf
        log_alpha = F.logsigmoid(mixer.gk_proj(x)).view(batch, length, h, -1).transpose(1, 2) / mixer.gate_temperature
        b = log_alpha.cumsum(2)  # (B, H, L, F)
        gap = (b[:, :, :, None, :] - b[:, :, None, :, :]).clamp(max=0)  # (B, H, i, j, F); > 0 only above the diagonal
        weights = torch.tril(torch.einsum("bhif,bhjf,bhijf->bhij", q, k, gap.exp()))
    else:
        weights = torch.tril(q @ k.transpose(-1, -2))  # (B, H, L, L)
    if mixer.log_decay is not None:
        i = torch.arange(length, dtype=x.dtype)
        distance = (i[:, None] - i[None, :]).clamp(min=0)
        weights = weights * torch.exp(mixer.log_decay.to(x.dtype)[:, None, None] * distance)
    o = weights @ v
    if mixer.normalize:
        o = o / (weights.sum(-1, keepdim=True) + mixer.eps)
    o = o.transpose(1, 2)
    if mixer.norm is not None:
        o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + mixer.norm.eps) * mixer.norm.weight
    o = o.flatten(-2)
    if mixer.g_proj is not None:
        o = o * F.silu(mixer.g_proj(x))
    return mixer.o_proj(o)


@pytest.mark.parametrize("kwargs", [
    {"feature_map": "elu"},
    {"feature_map": "favor", "num_features": 24, "seed": 0},
    {"feature_map": "taylor", "feature_dim": 4},
    {"feature_map": "identity", "decay": "retnet", "gate": True},
    {"feature_map": "elu", "decay": "retnet", "output_norm": True, "bias": True},
    {"feature_map": "identity", "decay": "gla", "gate": True, "gate_rank": 4, "gate_temperature": 2.0},
    {"feature_map": "elu", "decay": "gla", "feature_dim": 3},
], ids=["elu", "favor", "taylor", "retnet", "elu-decay-norm", "gla", "gla-elu-normalised"])
def test_linear_attention_equals_its_quadratic_form(kwargs):
    torch.manual_seed(0)
    mixer = LinearAttention(D, heads=2, **kwargs).double().eval()
    x = torch.randn(2, 37, D, dtype=torch.float64)
    torch.testing.assert_close(mixer(x), quadratic_linear_attention(mixer, x), rtol=1e-10, atol=1e-10)


def test_normalisation_defaults_follow_positivity_and_identity_refuses_it():
    assert LinearAttention(D, feature_map="elu").normalize and LinearAttention(D, feature_map="elu").norm is None
    plain = LinearAttention(D, feature_map="identity")
    assert not plain.normalize and plain.norm is not None
    with pytest.raises(ValueError, match="normalize: the 'identity' map is not positive"):
        LinearAttention(D, feature_map="identity", normalize=True)
    with pytest.raises(ValueError, match="heads: must be a positive int dividing d_model=16"):
        LinearAttention(D, heads=3)
    with pytest.raises(ValueError, match="decay: unknown 'mamba'"):
        LinearAttention(D, decay="mamba")
    with pytest.raises(ValueError, match="gate_rank: must be a positive int"):
        LinearAttention(D, decay="gla", gate_rank=0)
    with pytest.raises(ValueError, match="gate_temperature: must be a finite number > 0"):
        LinearAttention(D, decay="gla", gate_temperature=0.0)


def test_gla_decays_depend_on_the_input_per_feature_and_stay_below_one():
    torch.manual_seed(0)
    mixer = LinearAttention(D, heads=2, feature_map="identity", decay="gla", gate=True)
    g = mixer._log_decay(torch.randn(3, 5, D))
    assert g.shape == (3, 2, 5, D // 2) and (g < 0).all()
    assert g.std(dim=(0, 2)).min() > 0, "the decay varies with the input"
    assert g.exp().min() > 0.9 ** (1 / 16) * 0.5, "tau = 16 keeps the decays near 1 at initialisation"


def test_retnet_decays_are_one_minus_powers_of_two():
    mixer = LinearAttention(D, heads=4, feature_map="identity", decay="retnet")
    torch.testing.assert_close(mixer.log_decay.exp(), torch.tensor([1 - 2**-5, 1 - 2**-6, 1 - 2**-7, 1 - 2**-8]))


def test_favor_redraws_in_training_only_when_asked():
    x = torch.randn(1, 5, D)
    fixed = LinearAttention(D, feature_map="favor", seed=0).train()
    before = fixed.feature_map.projection.clone()
    fixed(x)
    assert torch.equal(fixed.feature_map.projection, before)
    redrawn = LinearAttention(D, feature_map="favor", redraw=True, seed=0)
    before = redrawn.feature_map.projection.clone()
    redrawn.eval()(x)
    assert torch.equal(redrawn.feature_map.projection, before), "eval mode keeps the projection"
    redrawn.train()(x)
    assert not torch.equal(redrawn.feature_map.projection, before)
    assert "feature_map.projection" in redrawn.state_dict(), "the draw is saved with the model"


# -- Mamba2 ---------------------------------------------------------------------------------------


def ssd_step_by_step(m: Mamba2, x: torch.Tensor) -> torch.Tensor:
    """Mamba-2 written out from its equations, one position at a time, no kernels."""
    batch, length, _ = x.shape
    z, xbc, dt = m.in_proj(x).split([m.d_inner, m.conv_dim, m.nheads], dim=-1)
    xbc = F.silu(F.conv1d(xbc.transpose(1, 2), m.conv1d.weight, m.conv1d.bias, padding=m.d_conv - 1,
                          groups=m.conv_dim)[..., :length]).transpose(1, 2)
    xs, b, c = xbc.split([m.d_inner, m.ngroups * m.d_state, m.ngroups * m.d_state], dim=-1)
    xs = xs.view(batch, length, m.nheads, m.headdim)
    b = b.view(batch, length, m.ngroups, m.d_state)
    c = c.view(batch, length, m.ngroups, m.d_state)
    dt = F.softplus(dt + m.dt_bias)
    a = -torch.exp(m.A_log)
    group_of = torch.arange(m.nheads) // (m.nheads // m.ngroups)
    h = x.new_zeros(batch, m.nheads, m.headdim, m.d_state)  # mamba_ssm's (P, N) layout
    ys = []
    for t in range(length):
        bt, ct = b[:, t, group_of], c[:, t, group_of]  # (B, H, N)
        h = torch.exp(dt[:, t] * a)[..., None, None] * h + (dt[:, t, :, None] * xs[:, t])[..., None] * bt[:, :, None]
        ys.append((h * ct[:, :, None]).sum(-1) + m.D[:, None] * xs[:, t])
    y = torch.stack(ys, dim=1).flatten(-2)  # (B, L, d_inner)
    gated = (y * F.silu(z)).unflatten(-1, (m.ngroups, -1))
    normed = gated * torch.rsqrt(gated.pow(2).mean(-1, keepdim=True) + m.norm.eps)
    return m.out_proj(normed.flatten(-2) * m.norm.weight)


@pytest.mark.parametrize("kwargs", [{"d_state": 4, "headdim": 8}, {"d_state": 3, "headdim": 4, "ngroups": 2, "d_conv": 3}])
def test_mamba2_equals_the_ssd_recurrence_written_out(kwargs):
    torch.manual_seed(0)
    m = Mamba2(D, **kwargs).double()
    x = torch.randn(2, 29, D, dtype=torch.float64)
    torch.testing.assert_close(m(x), ssd_step_by_step(m, x), rtol=1e-10, atol=1e-10)


def test_mamba2_has_mamba_ssm_parameter_names_and_no_decay_on_the_ssm():
    m = Mamba2(32, d_state=8, headdim=16)
    names = {name for name, _ in m.named_parameters()}
    assert names == {"in_proj.weight", "conv1d.weight", "conv1d.bias", "dt_bias", "A_log", "D", "norm.weight",
                     "out_proj.weight"}
    assert m.in_proj.out_features == 2 * 64 + 2 * 8 + 4 and m.nheads == 4
    assert all(getattr(p, "_no_weight_decay", False) for p in (m.dt_bias, m.A_log, m.D))
    dt = F.softplus(m.dt_bias)
    assert (dt >= 1e-3 - 1e-7).all() and (dt <= 0.1 + 1e-7).all()
    assert (-torch.exp(m.A_log) <= -1).all() and (-torch.exp(m.A_log) >= -16).all()
    with pytest.raises(ValueError, match="headdim: must divide d_inner"):
        Mamba2(32, headdim=48)
    with pytest.raises(ValueError, match="ngroups: must divide the number of heads"):
        Mamba2(32, headdim=16, ngroups=3)


def test_mamba2_fused_path_is_not_taken_on_cpu():
    assert "CUDA" in Mamba2(32, headdim=16).fused_path_unavailable("cpu", torch.float32)


@pytest.mark.skipif(cpp_build.unavailable_reason("mamba_inner") is not None, reason="no C++ compiler here")
def test_mamba2_on_cpu_runs_the_fused_block_with_the_plain_path_s_gradients(monkeypatch):
    """On CPU, forward takes hybrids.kernels.mamba_block's Mamba-2 block unless a backend is
    forced or the fast path is off; outputs and every parameter's gradient are the path's on
    linear_attention."""
    import hybrids.mixers.mamba2 as mamba2_module

    for name in (mamba2_module.LINEAR_BACKEND_ENV, mamba2_module.CONV_BACKEND_ENV):
        monkeypatch.delenv(name, raising=False)
    torch.manual_seed(0)
    m = Mamba2(D, d_state=5, headdim=4, ngroups=2, d_conv=3).double()
    with torch.no_grad():
        m.D.add_(torch.randn_like(m.D))
    x = torch.randn(2, 37, D, dtype=torch.float64)
    zxbcdt, A = m.in_proj(x), -torch.exp(m.A_log)
    assert m.cpu_block_unavailable(zxbcdt, A) is None
    assert "use_fast_path" in Mamba2(D, headdim=8, use_fast_path=False).cpu_block_unavailable(zxbcdt, A)
    assert "forced" in Mamba2(D, headdim=8, kernel_backend="chunk").cpu_block_unavailable(zxbcdt, A)
    monkeypatch.setenv(mamba2_module.LINEAR_BACKEND_ENV, "chunk")
    assert "forced" in m.cpu_block_unavailable(zxbcdt, A)
    monkeypatch.delenv(mamba2_module.LINEAR_BACKEND_ENV)

    calls = []
    real = mamba2_module.mamba2_block_cpu
    monkeypatch.setattr(mamba2_module, "mamba2_block_cpu", lambda *a: calls.append(1) or real(*a))
    fused = outputs_and_parameter_gradients(m, x)
    assert calls == [1]
    m.use_fast_path = False
    plain = outputs_and_parameter_gradients(m, x)
    assert calls == [1]
    assert_same_outputs_and_gradients(fused, plain, rtol=1e-11, atol=1e-12)


def chunk_scan_combined_stand_in(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None,
                                 seq_idx=None, dt_softplus=False, dt_limit=(0.0, float("inf")),
                                 return_final_states=False):
    """mamba_ssm's ``mamba_chunk_scan_combined`` as its docstring states it (x (b, l, h, p), dt
    (b, l, h), A (h), B and C (b, l, g, n), D (h) or (h, p), dt_bias (h)), step by step."""
    batch, length, heads, headdim = x.shape
    groups, d_state = B.shape[2:]
    assert dt.shape == (batch, length, heads) and A.shape == (heads,) and C.shape == B.shape
    assert B.shape[:2] == (batch, length) and heads % groups == 0 and z is None and initial_states is None
    assert dt_bias is not None and dt_bias.shape == (heads,) and D is not None and D.shape in ((heads,), (heads, headdim))
    assert (A < 0).all(), "A is the negative decay rate, -exp(A_log)"
    assert seq_idx is None and dt_limit == (0.0, float("inf")) and not return_final_states, "not modelled here"
    dt = dt + dt_bias
    dt = F.softplus(dt) if dt_softplus else dt
    b, c = (t.repeat_interleave(heads // groups, dim=2) for t in (B, C))  # (b, l, h, n)
    h = x.new_zeros(batch, heads, headdim, d_state)
    ys = []
    for t in range(length):
        h = torch.exp(dt[:, t] * A)[..., None, None] * h + (dt[:, t, :, None] * x[:, t])[..., None] * b[:, t, :, None]
        ys.append((h * c[:, t, :, None]).sum(-1))
    y = torch.stack(ys, dim=1)
    return y + x * (D[:, None] if D.ndim == 1 else D)


@pytest.mark.parametrize("kwargs", [{"d_state": 4, "headdim": 8}, {"d_state": 3, "headdim": 4, "ngroups": 2}])
def test_mamba2_fused_path_passes_mamba_ssm_the_same_model(monkeypatch, kwargs):
    """The call into mamba_ssm's fused kernel (CUDA only) against a stand-in written from its
    documented contract: same output as the path on our kernel, and forward takes it when it can."""
    import hybrids.mixers.mamba2 as mamba2_module

    monkeypatch.setattr(mamba2_module, "_chunk_scan_combined", lambda: chunk_scan_combined_stand_in)
    torch.manual_seed(0)
    m = Mamba2(D, **kwargs).double()
    with torch.no_grad():  # away from their initial values (D = 1), so that a wrong mapping shows
        m.D.add_(torch.randn_like(m.D))
        m.dt_bias.add_(0.5 * torch.randn_like(m.dt_bias))
    x = torch.randn(2, 23, D, dtype=torch.float64)
    # 1e-8, not 1e-10: the fused call passes A = -exp(A_log) in float32, as mamba_ssm's Mamba2 does.
    torch.testing.assert_close(m._fused(x), m._parallel(x), rtol=1e-8, atol=1e-8)
    monkeypatch.setattr(Mamba2, "fused_path_unavailable", lambda self, device, dtype: None)
    calls = []
    monkeypatch.setattr(Mamba2, "_fused", lambda self, x: calls.append(x) or x)
    m(x)
    assert len(calls) == 1


# -- ShortConv ------------------------------------------------------------------------------------


def test_short_conv_is_a_gated_causal_depthwise_convolution():
    torch.manual_seed(0)
    m = ShortConv(D, d_conv=3).double()
    x = torch.randn(2, 11, D, dtype=torch.float64)
    u = m.in_proj(x).transpose(1, 2)
    conv = F.conv1d(u, m.conv1d.weight, m.conv1d.bias, padding=2, groups=D)[..., :11].transpose(1, 2)
    torch.testing.assert_close(m(x), m.out_proj(conv * m.proj(x)), rtol=1e-12, atol=1e-12)
