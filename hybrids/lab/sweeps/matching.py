"""Matched sizes: the width that brings a run's parameter count or state size to a target.

Both figures grow with width (d_model, a mixer's expansion or state size), so the integer key
is found by bisection over multiples of ``multiple_of`` in ``[low, high]``: the smallest value
whose figure reaches the target and the one below it are both measured, and the closer wins. A
run whose best width misses the target by more than the tolerance is not run: the sweep reports
it as unmatched, with the nearest figure it could reach.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

from hybrids.lab.sweeps import overrides
from hybrids.lab.sweeps.measure import BuildError, Figures, measure
from hybrids.lab.sweeps.spec import Match, RunPlan


class Unmatched(ValueError):
    """No width meets the target within the tolerance."""


def solve(
    config: Mapping[str, Any], key: str, quantity: str, target: float, grid: tuple[int, int, int],
    tolerance: float, figure: Callable[[Mapping[str, Any]], Figures] = measure,
) -> tuple[int, int]:
    """(value of ``key``, achieved figure) closest to ``target``, searching ``grid`` = (multiple_of,
    low, high); raises Unmatched (nothing within ``tolerance``) or BuildError."""
    step, low, high = grid
    lo_k, hi_k = -(-low // step), high // step  # candidates k * step, k in [lo_k, hi_k]
    if lo_k > hi_k:
        raise Unmatched(f"{key}: no multiple of {step} in [{low}, {high}]")

    def value_at(k: int) -> int:
        trial = copy.deepcopy(dict(config))
        overrides.set_dotted(trial, key, k * step)
        result = getattr(figure(trial), quantity)
        if result is None:
            raise BuildError(f"{quantity} is unknown for this model (a mixer has no state_size)")
        return result

    # Smallest k whose figure reaches the target (hi_k + 1 if none does).
    lo, hi = lo_k, hi_k + 1
    while lo < hi:
        mid = (lo + hi) // 2
        if value_at(mid) >= target:
            hi = mid
        else:
            lo = mid + 1
    candidates = [k for k in (lo - 1, lo) if lo_k <= k <= hi_k]
    best_k = min(candidates, key=lambda k: (abs(value_at(k) - target), k))
    achieved = value_at(best_k)
    error = abs(achieved - target) / target
    if error > tolerance:
        raise Unmatched(
            f"{quantity} target {target:,.0f}: the nearest is {achieved:,} at {key}={best_k * step} "
            f"({error:.1%} off, tolerance {tolerance:.0%}); widen its range or change its multiple_of"
        )
    return best_k * step, achieved


def solve_plan(plan: RunPlan, match: Match, figure: Callable[[Mapping[str, Any]], Figures] = measure) -> None:
    """Set the solved value in ``plan.config`` and record it (and the achieved figure) in
    ``plan.target``; Unmatched / BuildError propagate."""
    target = plan.target
    assert target is not None
    grid = (target["multiple_of"], *target["range"])  # the key's own, from Match.solving
    value, achieved = solve(plan.config, target["key"], target["quantity"], target["value"], grid, match.tolerance, figure)
    overrides.set_dotted(plan.config, target["key"], value)
    target.update(solved=value, achieved=achieved)
