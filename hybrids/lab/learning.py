"""Whether each run of a sweep finished learning (the rule: :mod:`hybrids.learning_status`), from
the files a run leaves: its ``config.yaml`` (the task, whose data module states its criterion, and
the budget, ``trainer.max_steps``) and its metrics log (the validation curve).

Written into ``status.json`` by the sweep runner when a run ends, and computed the same way by the
analysis for runs whose status predates it, so every table of a sweep can say, beside each
figure, whether it came from runs that were solved, plateaued or still improving.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from hybrids.lab.metrics_log import run_curve
from hybrids.learning_status import IMPROVING, PLATEAUED, SOLVED, TOO_SHORT, Criterion, learning_status


def criterion_for(config: Mapping[str, Any]) -> Criterion:
    """The criterion of the run's data module (``data.class_path``'s ``criterion``), or the
    default (``val/acc >= 0.99``) where the class cannot be imported or states none."""
    data = config.get("data") or {}
    class_path = data.get("class_path") if isinstance(data, Mapping) else None
    try:
        module, _, name = str(class_path).rpartition(".")
        criterion = getattr(getattr(importlib.import_module(module), name), "criterion", None)
    except (ImportError, AttributeError, ValueError):
        criterion = None
    return criterion if isinstance(criterion, Criterion) else Criterion()


def budget_of(config: Mapping[str, Any], curve: list[tuple[int, float]]) -> int | None:
    """The run's budget in optimiser steps: ``trainer.max_steps``, or, for a run bounded by
    epochs, the last step it validated at (it trained its whole budget); None without either."""
    trainer = config.get("trainer") or {}
    steps = trainer.get("max_steps") if isinstance(trainer, Mapping) else None
    if isinstance(steps, int) and not isinstance(steps, bool) and steps > 0:
        return steps
    return curve[-1][0] if curve else None


def learning_record(run_dir: str | Path) -> dict[str, Any] | None:
    """``{"status", "solved_step", "best", "gain", "metric", "budget"}`` for the run in ``run_dir``
    (a sweep's run folder: ``config.yaml`` and ``logs/``), or None without a readable config."""
    run_dir = Path(run_dir)
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(config, dict):
        return None
    criterion = criterion_for(config)
    curve = run_curve(run_dir / "logs", criterion.metric)
    budget = budget_of(config, curve)
    status = learning_status(curve, budget or 0, criterion)
    return {"status": status.status, "solved_step": status.solved_step,
            "best": None if status.best != status.best else status.best, "gain": status.gain,
            "metric": criterion.metric, "budget": budget}


def summary(statuses: Iterable[Any], solved_steps: Iterable[Any] = ()) -> str:
    """One cell for a point's runs: ``"solved (3/3, steps 400-900)"``, ``"plateaued 2/3, still
    improving 1/3"``; ``"-"`` for none."""
    statuses = [s for s in statuses if isinstance(s, str)]
    if not statuses:
        return "-"
    n = len(statuses)
    counts = {s: statuses.count(s) for s in (SOLVED, PLATEAUED, IMPROVING, TOO_SHORT) if s in statuses}
    steps = sorted(int(s) for s in solved_steps if isinstance(s, (int, float)) and s == s)
    if counts.get(SOLVED) == n:
        span = f"step {steps[0]:,}" if len(set(steps)) == 1 else f"steps {steps[0]:,}-{steps[-1]:,}" if steps else ""
        return f"solved ({n}/{n}{', ' + span if span else ''})"
    return ", ".join(f"{status} {count}/{n}" for status, count in counts.items())
