"""Run names that a person can read and that stay the same from one expansion to the next.

A name is built from the run's axis values alone (never from its index), in a fixed order:
base config, family, width, task, any other axis, size target, learning rate, weight decay, seed::

    mamba-d64-mqar64x4-lr1e-3-s0
    mamba-d64-mqar64x4-lr1e-3-wd0.1-s0      (weight decay tuned too)
    attention-p100k-mqar64x4-lr3e-3-s1      (a parameter-count target of 100,000)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# Axes with a place and a prefix of their own; any other axis keeps grid order, after "task".
LEADING = ("base", "family")
MIDDLE = ("d_model", "task")
TRAILING = ("target", "lr", "weight_decay", "seed")
PREFIX = {"d_model": "d", "lr": "lr", "weight_decay": "wd", "seed": "s"}
QUANTITY_PREFIX = {"params": "p", "state_size": "state"}
_UNSAFE = re.compile(r"[^A-Za-z0-9._+=-]")


def compact_number(value: float | int) -> str:
    """``0.001 -> "1e-3"``, ``0.05 -> "5e-2"``, ``100000 -> "100k"``, ``64 -> "64"``, ``0.5 -> "0.5"``."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) >= 1):
        number = int(value)
        for unit, size in (("M", 1_000_000), ("k", 1_000)):
            if abs(number) >= size and number % (size // 10) == 0:
                text = f"{number / size:.1f}".removesuffix(".0")
                return text + unit
        return str(number)
    if value != 0 and abs(value) < 0.1:
        mantissa, exponent = f"{value:.3e}".split("e")
        mantissa = mantissa.rstrip("0").rstrip(".")
        return f"{mantissa}e{int(exponent)}"
    return f"{value:.4g}"


def _piece(axis: str, value: Any, quantity: str | None) -> str:
    if axis in LEADING or axis == "task":
        return str(value)
    if axis == "target":
        return QUANTITY_PREFIX.get(quantity or "", "target") + compact_number(value)
    if axis in PREFIX:
        return PREFIX[axis] + (compact_number(value) if isinstance(value, (int, float)) else str(value))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{axis}{compact_number(value)}"
    return f"{axis}-{value}"


def ordered_axes(axes: Mapping[str, Any]) -> list[str]:
    """The axes of a run in naming order."""
    others = [a for a in axes if a not in LEADING + MIDDLE + TRAILING]
    order = [a for a in LEADING if a in axes] + [a for a in MIDDLE if a in axes] + others
    return order + [a for a in TRAILING if a in axes]


def run_name(axes: Mapping[str, Any], quantity: str | None = None) -> str:
    """The run's folder name. ``quantity``: what a ``target`` axis counts (params, state_size)."""
    pieces = [_piece(axis, axes[axis], quantity) for axis in ordered_axes(axes)]
    return _UNSAFE.sub("_", "-".join(pieces)) or "run"
