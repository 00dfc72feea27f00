"""State sizes as data: each mixer class states its rule once, as formulas; everything else reads it.

A mixer class lists :class:`StateSize` rows in ``state_size_rules``: a formula in ``L`` (tokens
seen) and the mixer's own attributes, the condition under which the row applies, and what the
state holds, in words. ``Mixer.state_size(L)`` evaluates the one row that applies
(:func:`evaluate`), the docs render every class's rows as a table (:func:`state_size_table`, called
by the docs site's hook), and the tests compare the evaluated figure with the elements of the
state ``step`` actually allocates. So the formula a reader sees is the code that counts, and a
count that drifts from the allocation fails a test.

Formulas are Python expressions restricted to arithmetic, comparisons, ``min``, ``max``, ``L``
and attribute names of the mixer (no builtins, no calls other than those two, no attribute access
or subscripts). The restriction guards against mistakes in a rule a mixer's author writes; it is
not a sandbox for untrusted text (``9 ** 9 ** 9`` would still run for ever).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import operator
from collections.abc import Iterable
from typing import Any

_FUNCTIONS = {"min": min, "max": max}
_ALLOWED_NODES = (
    ast.Expression, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.Call, ast.Name, ast.Load,
    ast.Constant, ast.Add, ast.Sub, ast.Mult, ast.FloorDiv, ast.Mod, ast.Pow, ast.USub, ast.Not,
    ast.And, ast.Or, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Is, ast.IsNot,
)


@dataclasses.dataclass(frozen=True)
class StateSize:
    """One row of a mixer's state-size rule.

    Attributes:
        formula: elements of state one sequence holds after ``L`` tokens, e.g.
            ``"d_inner * (d_state + d_conv - 1)"``; a complex element counts as two.
        kept: what those elements are, in words (shown in the docs' table).
        when: ``"always"``, or a condition on the mixer's attributes; exactly one row of a class
            must apply to any instance.
    """

    formula: str
    kept: str
    when: str = "always"

    def __post_init__(self) -> None:
        _compiled(self.formula)
        if self.when != "always":
            _compiled(self.when)


@functools.lru_cache(maxsize=None)
def _compiled(expression: str):
    tree = ast.parse(expression, mode="eval")
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED_NODES):
            raise ValueError(f"state-size formula {expression!r}: {type(node).__name__} is not allowed")
        if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS):
            raise ValueError(f"state-size formula {expression!r}: only min() and max() may be called")
    return compile(tree, f"<state size: {expression}>", "eval")


class _Names(dict):
    """Names of a formula: ``L``, ``min``, ``max``, then the mixer's attributes."""

    def __init__(self, mixer: Any, seq_len: int) -> None:
        super().__init__(L=seq_len, **_FUNCTIONS)
        self.mixer = mixer

    def __missing__(self, name: str) -> Any:
        try:
            return getattr(self.mixer, name)
        except AttributeError:
            raise NameError(f"{type(self.mixer).__name__}.state_size_rules use {name!r}, "
                            f"which the mixer does not have") from None


def _value(expression: str, mixer: Any, seq_len: int) -> Any:
    return eval(_compiled(expression), {"__builtins__": {}}, _Names(mixer, seq_len))  # noqa: S307 (checked AST)


def applicable_row(mixer: Any, seq_len: int = 0) -> StateSize:
    """The one row of ``type(mixer).state_size_rules`` whose condition holds for ``mixer``."""
    rules = getattr(type(mixer), "state_size_rules", ())
    if not rules:
        raise NotImplementedError(f"{type(mixer).__name__} states no state_size_rules "
                                  f"(list StateSize rows, or override state_size)")
    rows = [r for r in rules if r.when == "always" or _value(r.when, mixer, seq_len)]
    if len(rows) != 1:
        raise RuntimeError(f"{type(mixer).__name__}: {len(rows)} state_size_rules apply "
                           f"({', '.join(r.when for r in rows) or 'none'}); exactly one must")
    return rows[0]


def evaluate(mixer: Any, seq_len: int) -> int:
    """Elements of state one sequence of ``mixer`` holds after ``seq_len`` tokens."""
    if isinstance(seq_len, bool):
        raise TypeError(f"seq_len: expected a non-negative integer, got {seq_len!r}")
    try:
        seq_len = operator.index(seq_len)
    except TypeError:
        raise TypeError(f"seq_len: expected a non-negative integer, got {seq_len!r}") from None
    if seq_len < 0:
        raise ValueError(f"seq_len: expected a non-negative integer, got {seq_len}")
    return int(_value(applicable_row(mixer, seq_len).formula, mixer, seq_len))


def state_size_table(classes: Iterable[type] | None = None) -> str:
    """A Markdown table of every row of every class's ``state_size_rules`` (by default the
    mixers :mod:`hybrids.mixers` exports), as the docs show it."""
    if classes is None:
        import hybrids.mixers as mixers

        classes = [c for c in (getattr(mixers, n) for n in mixers.__all__)
                   if isinstance(c, type) and getattr(c, "state_size_rules", ())]
    lines = ["| mixer | when | `state_size(L)` | what is kept |", "| --- | --- | --- | --- |"]
    for cls in classes:
        for row in cls.state_size_rules:
            when = "always" if row.when == "always" else f"`{row.when}`"
            lines.append(f"| `{cls.__name__}` | {when} | `{row.formula}` | {row.kept} |")
    return "\n".join(lines) + "\n"
