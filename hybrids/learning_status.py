"""Whether a run finished learning, read from its validation curve (docs/sweeps.md, "Did it
finish learning?").

A comparison drawn from runs that were still improving is about the budget, not the
architectures. Every run is therefore given one of three statuses, by a rule stated once:

- **solved**: the validation metric reached the task's threshold (``val/acc >= 0.99`` on the
  synthetic tasks); the step is the first validation that reached it.
- **plateaued**: not solved, and over the last quarter of its budget the best validation figure
  improved on the best before that quarter by less than ``margin`` (0.01 accuracy by default).
- **still improving**: neither: more steps might change the figure, so no ordering is claimed
  from it.

A run validated too rarely to compare the last quarter with what came before (no validation in
one of the two parts) is ``too short to tell``. The rule reads only the curve and the budget, so
the sweep runner (``status.json``), ``hybrids plot`` and the notebooks give the same answer.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable

SOLVED, PLATEAUED, IMPROVING, TOO_SHORT = "solved", "plateaued", "still improving", "too short to tell"
STATUSES = (SOLVED, PLATEAUED, IMPROVING, TOO_SHORT)


@dataclasses.dataclass(frozen=True)
class Criterion:
    """What "finished learning" means for a task.

    metric: the validation metric read (``val/acc``); mode: ``"max"`` if higher is better.
    threshold: solved once the metric reaches it (None: the task is never solved, e.g. bits per
    byte, and a run is plateaued or still improving). margin: the least gain of the best figure
    over the last ``window`` of the budget that counts as still improving.
    """

    metric: str = "val/acc"
    mode: str = "max"
    threshold: float | None = 0.99
    margin: float = 0.01
    window: float = 0.25

    def __post_init__(self) -> None:
        if self.mode not in ("max", "min"):
            raise ValueError(f"mode: 'max' or 'min', got {self.mode!r}")
        if not (isinstance(self.margin, (int, float)) and self.margin > 0):
            raise ValueError(f"margin: must be a number > 0, got {self.margin!r}")
        if not (isinstance(self.window, (int, float)) and 0 < self.window < 1):
            raise ValueError(f"window: must be in (0, 1), got {self.window!r}")

    def reached(self, value: float) -> bool:
        if self.threshold is None or not math.isfinite(value):
            return False
        return value >= self.threshold if self.mode == "max" else value <= self.threshold

    def best(self, values: Iterable[float]) -> float:
        """The best finite value (NaN if none): a diverged validation is never the best."""
        finite = [v for v in values if math.isfinite(v)]
        if not finite:
            return math.nan
        return max(finite) if self.mode == "max" else min(finite)


@dataclasses.dataclass(frozen=True)
class LearningStatus:
    status: str  # one of STATUSES
    solved_step: int | None  # the first validation step at the threshold (solved runs)
    best: float  # the best validation figure (NaN if none was finite)
    gain: float | None  # the best figure's gain over the last window (None when solved or too short)

    def __str__(self) -> str:
        if self.status == SOLVED:
            return f"solved at step {self.solved_step:,}"
        return self.status


def learning_status(curve: Iterable[tuple[int, float]], budget: int, criterion: Criterion = Criterion()) -> LearningStatus:
    """The status of a run whose validation ``curve`` is ``(step, value)`` pairs and whose budget
    was ``budget`` optimiser steps (its ``max_steps``; a solved run may have stopped before)."""
    points = sorted((int(step), float(value)) for step, value in curve)
    best = criterion.best(v for _, v in points)
    for step, value in points:
        if criterion.reached(value):
            return LearningStatus(SOLVED, step, best, None)
    cut = budget * (1 - criterion.window)
    before = [v for s, v in points if s <= cut]
    after = [v for s, v in points if s > cut]
    if not before or not after:
        return LearningStatus(TOO_SHORT, None, best, None)
    earlier = criterion.best(before)
    if not math.isfinite(earlier):
        # Nothing finite before the last quarter: any finite figure since is a gain.
        gain = math.inf if math.isfinite(best) else 0.0
    else:
        gain = (best - earlier) if criterion.mode == "max" else (earlier - best)
    # Improved by at least the margin: still improving; by less (or not at all): plateaued.
    return LearningStatus(IMPROVING if gain >= criterion.margin else PLATEAUED, None, best, gain)
