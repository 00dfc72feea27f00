"""Whether each run of a sweep finished learning (the rule: :mod:`hybrids.learning_status`), from
the files a run leaves: its ``config.yaml`` (the task, whose data module states its criterion, and
the budget, ``trainer.max_steps``) and its metrics log (the validation curve).

Written into ``status.json`` by the sweep runner when a run ends, and computed the same way by the
analysis for runs whose status predates it, so every table of a sweep can say, beside each
figure, whether it came from runs that were solved, plateaued or still improving.
"""

from __future__ import annotations

import importlib
import math
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


def budget_of(config: Mapping[str, Any], curve: list[tuple[int, float]], finished: bool = True) -> int | None:
    """The run's budget in optimiser steps: ``trainer.max_steps``; for a run bounded by epochs,
    ``max_epochs`` times the optimiser steps of an epoch where the data module's arguments give
    it (``num_train_examples`` / ``batch_size``, ``limit_train_batches``,
    ``accumulate_grad_batches``), else, for a run that finished, the last step it validated at
    (it trained its whole budget); None otherwise."""
    trainer = config.get("trainer") or {}
    trainer = trainer if isinstance(trainer, Mapping) else {}
    steps = trainer.get("max_steps")
    if _count(steps):
        return steps
    per_epoch = _steps_per_epoch(config, trainer)
    epochs = trainer.get("max_epochs")
    if per_epoch and _count(epochs):
        return per_epoch * epochs
    return curve[-1][0] if curve and finished else None


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _steps_per_epoch(config: Mapping[str, Any], trainer: Mapping[str, Any]) -> int | None:
    data = config.get("data") or {}
    init_args = data.get("init_args") if isinstance(data, Mapping) else None
    if not isinstance(init_args, Mapping):
        return None
    examples, batch = init_args.get("num_train_examples"), init_args.get("batch_size")
    if not (_count(examples) and _count(batch)):
        return None
    batches = -(-examples // batch)
    limit = trainer.get("limit_train_batches")
    if _count(limit):
        batches = min(batches, limit)
    elif isinstance(limit, float) and 0 < limit <= 1:
        batches = max(int(batches * limit), 1)
    accumulate = trainer.get("accumulate_grad_batches")
    return -(-batches // accumulate) if _count(accumulate) else batches


def _config(run_dir: Path) -> dict[str, Any] | None:
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    return config if isinstance(config, dict) else None


def run_curve_of(run_dir: str | Path, metric: str | None = None) -> list[tuple[int, float]]:
    """(optimiser steps done, value) of every validation of the run in ``run_dir`` (a sweep's run
    folder), for ``metric`` (default: its task's criterion's); [] without a readable config."""
    run_dir = Path(run_dir)
    if metric is None:
        config = _config(run_dir)
        if config is None:
            return []
        metric = criterion_for(config).metric
    # Lightning logs a validation run after N steps at step N - 1 (learning_record below).
    return [(step + 1, value) for step, value in run_curve(run_dir / "logs", metric)]


def learning_record(run_dir: str | Path, finished: bool = True) -> dict[str, Any] | None:
    """``{"status", "solved_step", "best", "gain", "metric", "budget"}`` for the run in ``run_dir``
    (a sweep's run folder: ``config.yaml`` and ``logs/``), or None without a readable config.
    ``finished``: whether the run ended normally (else its last step is not its budget).

    Steps count optimiser steps done: Lightning logs a validation run after N steps at step
    N - 1, so the log's steps are shifted by one, as the CLI's "solved at step N" reads."""
    run_dir = Path(run_dir)
    config = _config(run_dir)
    if config is None:
        return None
    criterion = criterion_for(config)
    curve = run_curve_of(run_dir, criterion.metric)
    budget = budget_of(config, curve, finished)
    status = learning_status(curve, budget or 0, criterion)
    finite = lambda value: value if isinstance(value, float) and math.isfinite(value) else None  # noqa: E731
    return {"status": status.status, "solved_step": status.solved_step, "best": finite(status.best),
            "gain": finite(status.gain), "metric": criterion.metric, "budget": budget}


def summary(statuses: Iterable[Any], solved_steps: Iterable[Any] = ()) -> str:
    """One cell for a point's runs: ``"solved (3/3, steps 400-900)"``, ``"plateaued 2/3, still
    improving 1/3"``; ``"-"`` for none."""
    statuses = [s if isinstance(s, str) else "unknown" for s in statuses]
    if not statuses or all(s == "unknown" for s in statuses):
        return "-"
    n = len(statuses)
    counts = {s: statuses.count(s) for s in (SOLVED, PLATEAUED, IMPROVING, TOO_SHORT, "unknown") if s in statuses}
    steps = sorted(int(s) for s in solved_steps if isinstance(s, (int, float)) and s == s)
    if counts.get(SOLVED) == n:
        span = f"step {steps[0]:,}" if len(set(steps)) == 1 else f"steps {steps[0]:,}-{steps[-1]:,}" if steps else ""
        return f"solved ({n}/{n}{', ' + span if span else ''})"
    return ", ".join(f"{status} {count}/{n}" for status, count in counts.items())
