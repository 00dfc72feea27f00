"""A stack too large for the machine is refused before any weight is allocated, keyed at the
argument that makes it large; the count it compares is the stack's real parameter count."""

import pytest

from hybrids.errors import ConfigError
from hybrids.model import HybridLM, StackConfig
from hybrids.model.size_check import check_stack_fits, count_parameters, layers_per_letter

MIXERS = {"A": {"class_path": "hybrids.mixers.Attention", "init_args": {"heads": 2}},
          "M": {"class_path": "hybrids.mixers.Mamba"}, "R": {"class_path": "hybrids.mixers.RGLRU"}}


@pytest.mark.parametrize("settings", [
    {}, {"pattern": "MA", "n_layers": 5}, {"pattern": "RMA", "n_layers": 4, "tie_embeddings": False, "mlp_expand": 0},
    {"pattern": "AM", "reversible": True, "mlp": "gelu"},
])
def test_the_count_is_the_built_stacks(settings):
    config = StackConfig(vocab_size=50, d_model=32, mixers=MIXERS, **settings)
    assert sum(count_parameters(config)) == sum(p.numel() for p in HybridLM(config).parameters())


def test_layers_per_letter_is_the_pattern_repeated_and_cut():
    assert layers_per_letter("MMA", 7) == {"M": 5, "A": 2}  # MMAMMAM
    assert layers_per_letter("MA", None) == {"M": 1, "A": 1}
    assert layers_per_letter("A", 10**15) == {"A": 10**15}  # arithmetic: no list of 10^15 letters


@pytest.mark.parametrize("settings, key", [
    ({"d_model": 10**12}, "d_model"),
    ({"n_layers": 10**12}, "n_layers"),
    ({"vocab_size": 10**11}, "vocab_size"),
    ({"d_model": 4096, "n_layers": 4}, "d_model"),  # blocks of 4096^2 weights, a vocabulary of 64
])
def test_a_stack_that_does_not_fit_is_refused_at_its_argument(settings, key):
    config = StackConfig(**{"vocab_size": 64, **settings})
    with pytest.raises(ConfigError) as refused:
        check_stack_fits(config, copies=4, what="training's weights", available=10**9)
    assert refused.value.key == key
    assert "more than the 1.0 GB of memory available" in refused.value.message


def test_a_stack_that_fits_is_built():
    check_stack_fits(StackConfig(vocab_size=64, d_model=64), copies=4, available=10**9)


def test_hybrid_lm_refuses_before_allocating(monkeypatch):
    monkeypatch.setattr("hybrids.model.size_check.available_memory", lambda device: 10**6)
    with pytest.raises(ConfigError, match="d_model: a stack of 2 layers of width 512"):
        HybridLM(StackConfig(vocab_size=64, d_model=512))


def test_a_mixer_made_large_by_its_own_arguments_is_named():
    mixers = {"A": {"class_path": "hybrids.mixers.Mamba", "init_args": {"d_state": 10**8}}}
    with pytest.raises(ConfigError) as refused:
        check_stack_fits(StackConfig(vocab_size=64, d_model=32, pattern="A", mixers=mixers), available=10**9)
    assert refused.value.key == "mixers.A.init_args"
    assert refused.value.message.startswith("Mamba(d_model=32, d_state=100000000) holds about")
