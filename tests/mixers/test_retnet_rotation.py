"""RetNet's rotation (Sun et al. 2023, eq. 5): Q_n = X_n W_Q e^{i n theta}, K_m = X_m W_K
e^{-i m theta}, so the retention score of query n and key m is Re(q~_n conj(k~_m) e^{i(n-m)theta}),
decayed by gamma^(n-m). The mixer's output is checked against that definition written with
complex numbers, pair by pair; forward / prefill / step parity with the rotation (positions
carried in the state) runs in the shared interface tests (tests/mixer_cases.py: "retnet")."""

import pytest
import torch

from hybrids.mixers import LinearAttention


def retention_by_definition(mixer: LinearAttention, x: torch.Tensor) -> torch.Tensor:
    """o (B, H, L, P): sum over m <= n of gamma_h^(n-m) Re(q~_n . conj(k~_m) e^{i(n-m)theta}) v_m,
    q~ = q[:F/2] + i q[F/2:] (the rotate-half pairs), theta_j = base^(-2j/F)."""
    batch, length, _ = x.shape
    heads, f, p = mixer.heads, mixer.feature_dim, mixer.head_dim
    scale = f ** -0.25  # the identity map's phi(x) = x / F^(1/4)
    q = (mixer.q_proj(x) * scale).view(batch, length, heads, f).transpose(1, 2)
    k = (mixer.k_proj(x) * scale).view(batch, length, heads, f).transpose(1, 2)
    v = mixer.v_proj(x).view(batch, length, heads, p).transpose(1, 2)
    qc, kc = torch.complex(q[..., : f // 2], q[..., f // 2:]), torch.complex(k[..., : f // 2], k[..., f // 2:])
    theta = mixer.rotary_base ** (-torch.arange(0, f, 2, dtype=torch.float64) / f)  # (F/2,)
    n = torch.arange(length, dtype=torch.float64)
    distance = n[:, None] - n[None, :]  # (L, L): n - m
    phase = torch.exp(1j * distance[..., None] * theta)  # (L, L, F/2)
    scores = torch.einsum("bhnj,bhmj,nmj->bhnm", qc, kc.conj(), phase).real
    gamma = mixer.log_decay.double().exp()  # (H,)
    decay = gamma[:, None, None] ** distance.clamp(min=0) * (distance >= 0)  # (H, L, L), causal
    return torch.einsum("bhnm,hnm,bhmp->bhnp", scores, decay, v)


def test_retnet_is_its_definition_with_the_rotation():
    torch.manual_seed(0)
    mixer = LinearAttention(32, heads=2, feature_map="identity", decay="retnet", gate=True).double()
    assert mixer.rotary  # on by default for RetNet's decay
    x = torch.randn(2, 23, 32, dtype=torch.float64)
    with torch.no_grad():
        expected = mixer._output(retention_by_definition(mixer, x), x)
        torch.testing.assert_close(mixer(x), expected, rtol=1e-10, atol=1e-10)


def test_the_rotation_makes_a_difference_and_can_be_turned_off():
    torch.manual_seed(0)
    rotated = LinearAttention(32, heads=2, feature_map="identity", decay="retnet").double()
    plain = LinearAttention(32, heads=2, feature_map="identity", decay="retnet", rotary=False).double()
    plain.load_state_dict(rotated.state_dict(), strict=False)  # same weights: the rotation adds only its marker
    x = torch.randn(1, 40, 32, dtype=torch.float64)
    with torch.no_grad():
        difference = (rotated(x) - plain(x)).norm() / plain(x).norm()
    assert difference > 0.1


@pytest.mark.parametrize("kwargs, on", [
    ({"feature_map": "identity", "decay": "gla"}, False), ({"feature_map": "identity", "decay": None}, False),
    ({"feature_map": "identity", "decay": "gla", "rotary": True}, True),
    ({"feature_map": "elu", "decay": "retnet"}, False),  # RetNet's decay on a positive map: not RetNet
])
def test_rotation_defaults(kwargs, on):
    assert LinearAttention(16, heads=2, **kwargs).rotary is on


def test_rotation_needs_the_identity_map():
    with pytest.raises(ValueError, match="^rotary: rotates q and k, which only the identity map allows"):
        LinearAttention(16, heads=2, feature_map="elu", rotary=True)
    with pytest.raises(ValueError, match="^rotary: needs an even feature_dim"):
        LinearAttention(16, heads=2, feature_map="identity", feature_dim=3, decay="retnet")


def test_a_later_start_is_the_same_retention():
    """Only distances matter: the same tokens prefilled from position 10^6 (a long stream carried
    across segments) give the same outputs as from 0, to float64 rounding of the angles."""
    torch.manual_seed(0)
    mixer = LinearAttention(32, heads=2, feature_map="identity", decay="retnet").double()
    x = torch.randn(1, 17, 32, dtype=torch.float64)
    with torch.no_grad():
        start = mixer.init_state(1)
        later = {**start, "position": 10**6}
        torch.testing.assert_close(mixer.prefill(x, later)[0], mixer.prefill(x, start)[0], rtol=1e-8, atol=1e-8)


def test_a_document_boundary_empties_only_its_row():
    torch.manual_seed(0)
    mixer = LinearAttention(32, heads=2, feature_map="identity", decay="retnet").double()
    x = torch.randn(2, 9, 32, dtype=torch.float64)
    with torch.no_grad():
        _, state = mixer.prefill(x)
        reset = mixer.reset_state(state, torch.tensor([True, False]))
        assert reset["S"][0].abs().max() == 0 and torch.equal(reset["S"][1], state["S"][1])
        assert reset["position"] == state["position"] == 9
        # The emptied row continues as a fresh sequence would, wherever the position stands.
        y = torch.randn(2, 5, 32, dtype=torch.float64)
        torch.testing.assert_close(mixer.prefill(y, reset)[0][0], mixer(y[:1])[0], rtol=1e-8, atol=1e-8)


def test_a_checkpoint_trained_without_the_rotation_is_refused():
    from hybrids.errors import ConfigError
    from hybrids.train.module import LanguageModel

    spec = {"class_path": "hybrids.mixers.LinearAttention",
            "init_args": {"heads": 2, "feature_map": "identity", "decay": "retnet"}}
    model = LanguageModel(stack={"vocab_size": 16, "d_model": 16, "pattern": "R", "n_layers": 1, "mixers": {"R": spec}})
    old = {k: v for k, v in model.state_dict().items() if not k.endswith("rotation_base")}
    with pytest.raises(ConfigError, match="trained without the rotation .* add rotary: false"):
        model.check_checkpoint_weights(old)
    model.check_checkpoint_weights(model.state_dict())
