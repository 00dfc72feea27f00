"""The state-size rules each mixer class states in code (``state_size_rules``), evaluated for every
mixer setting of mixer_cases against the elements of the state ``step`` actually allocates, and
the table the docs render from them."""

import pytest
import torch

import hybrids.mixers as mixers
from hybrids.mixers import Mixer, StateSize, state_elements, state_size_table
from hybrids.mixers.state_size import applicable_row
from mixer_cases import D_MODEL, MIXER_CASES

BATCH = 2
EXPORTED = [c for c in (getattr(mixers, n) for n in mixers.__all__)
            if isinstance(c, type) and issubclass(c, Mixer) and c is not Mixer]


@pytest.mark.parametrize("case", MIXER_CASES)
@pytest.mark.parametrize("L", [0, 1, 40])
def test_the_rule_that_applies_counts_the_allocated_state(case, L):
    cls, kwargs = MIXER_CASES[case]
    torch.manual_seed(0)
    mixer = cls(D_MODEL, **kwargs).double().eval()
    applicable_row(mixer, L)  # exactly one row applies (raises otherwise)
    state = mixer.init_state(BATCH)
    with torch.no_grad():
        for x_t in torch.randn(L, BATCH, D_MODEL, dtype=torch.float64):
            _, state = mixer.step(x_t, state)
    assert state_elements(state) == BATCH * mixer.state_size(L)


def test_every_exported_mixer_states_its_rule_and_the_table_shows_every_row():
    table = state_size_table()
    for cls in EXPORTED:
        assert cls.state_size_rules, f"{cls.__name__} has no state_size_rules"
        for row in cls.state_size_rules:
            assert f"| `{cls.__name__}` |" in table and f"`{row.formula}`" in table
    rows = [line for line in table.splitlines()[2:] if line.startswith("| `")]
    assert len(rows) == sum(len(c.state_size_rules) for c in EXPORTED)


def test_every_case_is_covered_by_exactly_one_row_of_its_class():
    used = set()
    for case, (cls, kwargs) in MIXER_CASES.items():
        used.add((cls.__name__, applicable_row(cls(D_MODEL, **kwargs), 5).when))
    every = {(c.__name__, r.when) for c in EXPORTED for r in c.state_size_rules}
    assert every <= used, f"rows no case exercises: {sorted(every - used)}"


@pytest.mark.parametrize("formula", ["__import__('os')", "d_model.bit_length()", "[1][0]", "open('x')"])
def test_formulas_are_arithmetic_only(formula):
    with pytest.raises(ValueError, match="state-size formula"):
        StateSize(formula, "nothing")


def test_bad_sequence_lengths_and_unknown_names_are_refused():
    mixer = MIXER_CASES["mamba"][0](D_MODEL, **MIXER_CASES["mamba"][1])
    with pytest.raises(ValueError, match="seq_len"):
        mixer.state_size(-1)
    with pytest.raises(TypeError, match="seq_len"):
        mixer.state_size(2.5)

    class Broken(type(mixer)):
        state_size_rules = (StateSize("d_inner * no_such_attribute", "nothing"),)

    broken = Broken(D_MODEL, **MIXER_CASES["mamba"][1])
    with pytest.raises(NameError, match="no_such_attribute"):
        broken.state_size(3)
