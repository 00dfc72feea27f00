"""The state-size table of the README, row by row, against every mixer setting of mixer_cases.

Each row names a mixer class, a condition on its attributes ("always" or a Python expression)
and a formula in ``L`` and the mixer's attributes. For every case exactly one row must apply;
its formula must equal ``mixer.state_size(L)`` and the elements of the state ``step`` allocates.
"""

import re
from pathlib import Path

import pytest
import torch

from hybrids.mixers import state_elements
from mixer_cases import D_MODEL, MIXER_CASES

README = Path(__file__).resolve().parents[1] / "README.md"
BATCH = 2


def table_rows() -> list[tuple[str, str, str]]:
    text = README.read_text()
    start = text.index("<!-- state-size table")
    end = text.index("<!-- end of state-size table -->")
    rows = []
    for line in text[start:end].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        rows.append(tuple(re.sub(r"^`(.*)`$", r"\1", c) for c in cells[:3]))
    return rows


class Attributes(dict):
    """Names in a formula resolve to L, then to the mixer's attributes."""

    def __init__(self, mixer, L):
        super().__init__(L=L, min=min, max=max)
        self.mixer = mixer

    def __missing__(self, name):
        if hasattr(self.mixer, name):
            return getattr(self.mixer, name)
        raise NameError(f"the table uses {name!r}, which {type(self.mixer).__name__} does not have")


def evaluate(expression: str, mixer, L: int):
    return eval(expression, {"__builtins__": {}, "min": min, "max": max}, Attributes(mixer, L))


def test_the_table_is_there_and_names_every_mixer_class():
    classes = {row[0] for row in table_rows()}
    assert classes >= {cls.__name__ for cls, _ in MIXER_CASES.values()}


@pytest.mark.parametrize("case", MIXER_CASES)
@pytest.mark.parametrize("L", [0, 1, 40])
def test_formula_matches_state_size_and_allocated_state(case, L):
    cls, kwargs = MIXER_CASES[case]
    torch.manual_seed(0)
    mixer = cls(D_MODEL, **kwargs).double().eval()
    rows = [r for r in table_rows() if r[0] == cls.__name__ and (r[1] == "always" or evaluate(r[1], mixer, L))]
    assert len(rows) == 1, f"{case}: {len(rows)} rows of the README's state-size table apply"
    expected = evaluate(rows[0][2], mixer, L)
    assert mixer.state_size(L) == expected
    state = mixer.init_state(BATCH)
    with torch.no_grad():
        for x_t in torch.randn(L, BATCH, D_MODEL, dtype=torch.float64):
            _, state = mixer.step(x_t, state)
    assert state_elements(state) == BATCH * expected
