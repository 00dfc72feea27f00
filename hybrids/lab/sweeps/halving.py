"""Successive halving over the tuned settings of each point of a sweep.

A *point* is a setting of every axis but the seed and the tuned ones (family, task, width...);
its *settings* are the values of the tuned axes (learning rate x weight decay). Trained to the
end, every setting of every point costs a whole budget. Halving trains them all only to the
first *rung* (a fraction of the budget), ranks each point's settings there on validation, lets
the best ``keep`` fraction go on to the next rung, and so on; the survivors of the last rung
train to the end, and the sweep's usual selection (``hybrids.lab.analysis.select_points``)
chooses among them. With rungs at 1/8 and 1/2 and keep 1/2, the six settings of the default
grid cost 6/8 + 3 x 3/8 + 2 x 1/2 = 2.9 budgets instead of 6.

What keeps the selection honest:

- every decision looks at the validation metric only (the task's criterion, ``val/acc``
  maximised, unless the sweep names another), at the same step for every setting of the point
  (the first validation at or after the rung: the settings share the budget and the validation
  schedule);
- a setting's score is the mean over its seeds; a seed that failed or diverged counts as the
  worst, and ranking puts first the settings with the most seeds scored (as the final
  selection does), then the better mean, ties going to the lower tuned values;
- a run that is dropped is marked ``pruned`` in its ``status.json``, never ``done``: the
  analysis selects among ``done`` runs only, so a pruned run cannot be chosen however good its
  last figure looked;
- a run is paused at a rung by ``hybrids fit --pause_at_step N`` (exit status 75), which saves
  its checkpoint as a stop by a signal does; the next rung resumes it exactly (same batches,
  same learning-rate schedule: the schedule is set by the budget, not by the pause), so a
  survivor's curve is the curve of an uninterrupted run;
- decisions are written to ``halving.json`` in the sweep folder and reused when the sweep is
  run again, so a resumed sweep never re-decides (nor changes its mind) on a point; a decision
  records the configs it was made on (their hashes), and one made on runs the sweep file has
  since changed is made again.

A run solved before a rung (``--stop_when_solved``) is done; its final figure is its score.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybrids.lab.ordering import order_key
from hybrids.train.callbacks import Paused

# Exit status of `hybrids fit --pause_at_step N` paused at its rung (the CLI's, one definition).
EXIT_PAUSED = Paused.exit_code
DECISIONS_FILE = "halving.json"


@dataclass(frozen=True)
class Halving:
    """The sweep file's ``halving`` entry (checked by ``hybrids.lab.sweeps.spec``)."""

    rungs: tuple[float, ...]  # fractions of each run's budget, increasing, in (0, 1)
    keep: float  # fraction of a point's settings that go on at each rung, in (0, 1)
    metric: str | None = None  # None: the task's criterion (hybrids.lab.learning.criterion_for)
    mode: str | None = None


def rung_steps(budget: int, rungs: Sequence[float]) -> list[int]:
    """The optimiser steps at which the runs of a ``budget``-step run pause: ``ceil(f * budget)``
    for each rung fraction ``f``, at least 1, below the budget, without repeats."""
    steps = sorted({max(1, math.ceil(f * budget)) for f in rungs})
    return [s for s in steps if s < budget]


def kept_count(settings: int, keep: float) -> int:
    """How many of ``settings`` go on: ``ceil(keep * settings)``, at least one."""
    return max(1, math.ceil(keep * settings - 1e-9))


def rank_settings(scores: Mapping[tuple, Sequence[float | None]], mode: str) -> list[tuple]:
    """The settings best first: most seeds with a finite score, then the better mean score
    (``mode`` "max" or "min"), then the lower tuned values."""
    def key(setting: tuple) -> tuple:
        finite = [s for s in scores[setting] if s is not None and math.isfinite(s)]
        mean = sum(finite) / len(finite) if finite else math.nan
        ordered = -mean if mode == "max" else mean
        return (-len(finite), ordered if finite else math.inf, [order_key(v) for v in setting])

    return sorted(scores, key=key)


def score_at(curve: Sequence[tuple[int, float]], step: int) -> float | None:
    """The validation value at the last validated step <= ``step`` of a run's curve ((step,
    value) pairs, steps counting optimiser steps done); None if there is none or it is not finite."""
    values = [v for s, v in curve if s <= step]
    if not values or not math.isfinite(values[-1]):
        return None
    return values[-1]


def point_label(axes: Mapping[str, Any], tuned: Iterable[str]) -> str:
    """The point of a run (its axes but the seed and the tuned ones), as stable text."""
    tuned = set(tuned)
    return json.dumps({k: v for k, v in axes.items() if k != "seed" and k not in tuned}, sort_keys=True, default=str)


def setting_of(axes: Mapping[str, Any], tuned: Sequence[str]) -> tuple:
    return tuple(axes.get(t) for t in tuned)


def setting_label(setting: tuple, tuned: Sequence[str]) -> str:
    return ", ".join(f"{t}={v}" for t, v in zip(tuned, setting))


@dataclass
class Decisions:
    """``halving.json``: per point and rung, the scores seen and the settings kept."""

    path: Path
    points: dict[str, dict[str, Any]]

    @classmethod
    def load(cls, folder: Path) -> Decisions:
        path = folder / DECISIONS_FILE
        try:
            points = json.loads(path.read_text()).get("points", {})
        except (OSError, ValueError, AttributeError):
            points = {}
        return cls(path, points if isinstance(points, dict) else {})

    def get(self, point: str, rung: int) -> dict[str, Any] | None:
        return self.points.get(point, {}).get(str(rung))

    def record(self, point: str, rung: int, decision: dict[str, Any]) -> None:
        self.points.setdefault(point, {})[str(rung)] = decision
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(json.dumps({"points": self.points}, indent=1, default=str))
        temporary.replace(self.path)


@dataclass
class HalvingRun:
    """One run as the halving loop sees it."""

    name: str
    run_dir: Path
    axes: dict[str, Any]
    budget: int
    metric: str
    mode: str
    config_hash: str | None = None  # the run's config (run.json); decisions are kept per configs


def decide(
    runs: Sequence[HalvingRun], tuned: Sequence[str], rung: int, step: int, keep: float,
    reached: Callable[[HalvingRun], int | None], curve: Callable[[HalvingRun], list[tuple[int, float]]],
) -> dict[str, Any] | None:
    """The decision at ``rung`` (pause step ``step``) for one point's live ``runs``, or None while
    a run has not got there (it is still to run, or was interrupted). ``reached(run)``: the step
    up to which the run's score counts (its pause step, its last step if it ended, 0 if it
    failed), None if it has not reached the rung. The decision: the scores per setting, the
    settings kept and those dropped (labels)."""
    scores: dict[tuple, list[float | None]] = {}
    for run in runs:
        up_to = reached(run)
        if up_to is None:
            return None
        # A run that paused past the rung (it resumed from a checkpoint beyond it after an
        # interruption) is scored at the rung like the others: its last validation <= step.
        scores.setdefault(setting_of(run.axes, tuned), []).append(score_at(curve(run), min(up_to, step)) if up_to else None)
    mode = runs[0].mode
    ranked = rank_settings(scores, mode)
    n_keep = kept_count(len(ranked), keep)
    return {
        "rung": rung, "step": step, "metric": runs[0].metric, "mode": mode,
        "scores": {setting_label(s, tuned): scores[s] for s in ranked},
        "kept": [setting_label(s, tuned) for s in ranked[:n_keep]],
        "dropped": [setting_label(s, tuned) for s in ranked[n_keep:]],
    }


def reached(status: Mapping[str, Any] | None, step: int, curve: Sequence[tuple[int, float]]) -> int | None:
    """How far a run's score counts for the rung at ``step`` (``decide``'s ``reached``): done: its
    last validated step (a run solved early is scored by its final figure); paused at or after
    the rung (or pruned there, by a decision being made again): the step it paused at; failed: 0
    (scored as the worst); else None (not there yet)."""
    status = status or {}
    state = status.get("status")
    if state == "done":
        return curve[-1][0] if curve else 0
    if state == "failed":
        return 0
    paused_at = status.get("paused_at")
    if state in ("paused", "pruned") and isinstance(paused_at, int) and paused_at >= step:
        return paused_at
    if state == "pruned" and not isinstance(paused_at, int):
        return 0  # it failed before it could pause, and was pruned with its setting
    return None


def run_halving(
    runs: Sequence[HalvingRun], tuned: Sequence[str], halving: Halving, folder: Path,
    launch: Callable[[list[tuple[HalvingRun, int | None]]], None],
    read_status: Callable[[Path], dict[str, Any] | None],
    write_status: Callable[[Path, dict[str, Any]], None],
    curve_of: Callable[[HalvingRun], list[tuple[int, float]]],
    log: Callable[[str], None] = print,
) -> None:
    """Train ``runs`` rung by rung (module docstring). ``launch`` trains a batch of (run, pause
    step or None for the end) and returns when all have stopped (it raises to stop the sweep);
    runs already past a point are not launched again, and decisions already in ``halving.json``
    are kept, so calling this again resumes where it stopped."""
    decisions = Decisions.load(folder)
    points: dict[str, list[HalvingRun]] = {}
    for run in runs:
        points.setdefault(point_label(run.axes, tuned), []).append(run)
    # The pause steps of each point, from its longest budget (a point's runs share one).
    steps = {point: rung_steps(max(r.budget for r in members), halving.rungs) for point, members in points.items()}
    alive = dict(points)
    rung = 0
    while alive:
        batch: list[tuple[HalvingRun, int | None]] = []
        for point, members in alive.items():
            pause = steps[point][rung] if rung < len(steps[point]) else None
            for run in members:
                status = read_status(run.run_dir) or {}
                pruned_at = status.get("pruned_at")
                if status.get("status") == "pruned" and (pause is None or (isinstance(pruned_at, int) and pruned_at < pause)):
                    # Alive past the rung that pruned it: the decision that did was made on configs
                    # the sweep file has changed since, and was made again. Paused where it stopped.
                    status = {**status, "status": "paused", "note": "pruned by a decision made on older configs"}
                    write_status(run.run_dir, status)
                if status.get("status") == "pruned":
                    continue  # at this rung, by a decision on record
                if status.get("status") == "done":
                    continue
                if pause is not None and reached(status, pause, []) is not None and status.get("status") != "failed":
                    continue  # paused at or past this rung already
                batch.append((run, pause))
        if batch:
            pausing = any(p is not None for _, p in batch)
            log(f"halving: rung {rung + 1} of {1 + max(len(s) for s in steps.values())}: {len(batch)} run(s) to train "
                + ("to their pause step" if pausing else "to the end"))
            launch(batch)
        following: dict[str, list[HalvingRun]] = {}
        for point, members in alive.items():
            if rung >= len(steps[point]):
                continue  # trained to the end
            hashes = sorted(str(r.config_hash) for r in members)
            decision = decisions.get(point, rung)
            if decision is not None and (decision.get("configs", hashes) != hashes or not _scored_all(decision, members, tuned)):
                decision = None  # made on runs whose configs the sweep file has changed since
            if decision is None:
                decision = decide(members, tuned, rung, steps[point][rung], halving.keep,
                                  lambda run: reached(read_status(run.run_dir), steps[point][rung], curve_of(run)), curve_of)
                if decision is None:
                    continue  # a run did not get there (interrupted, say): decided by a later sweep
                decision["configs"] = hashes
                decisions.record(point, rung, decision)
            kept = set(decision["kept"])
            survivors = [r for r in members if setting_label(setting_of(r.axes, tuned), tuned) in kept]
            for run in members:
                if run not in survivors:
                    _prune(run, decision, read_status, write_status)
            following[point] = survivors
        alive = following
        rung += 1


def _scored_all(decision: Mapping[str, Any], members: Sequence[HalvingRun], tuned: Sequence[str]) -> bool:
    """Whether ``decision`` scored exactly the point's runs now, as many per setting: a decision
    recorded before decisions kept their configs must still be made again when the sweep file
    grows the grid (another learning rate) or the seeds."""
    scores = decision.get("scores")
    if not isinstance(scores, dict):
        return False
    counts: dict[str, int] = {}
    for run in members:
        label = setting_label(setting_of(run.axes, tuned), tuned)
        counts[label] = counts.get(label, 0) + 1
    return counts == {label: len(values) if isinstance(values, list) else -1 for label, values in scores.items()}


def _prune(run: HalvingRun, decision: Mapping[str, Any], read_status, write_status) -> None:
    status = read_status(run.run_dir) or {}
    if status.get("status") == "pruned":
        return
    write_status(run.run_dir, {
        **status, "status": "pruned", "pruned_at": decision["step"],
        "note": f"dropped by successive halving at rung {decision['rung'] + 1} (step {decision['step']}, "
                f"{decision['metric']} {decision['mode']}imised over seeds): kept {decision['kept']}",
    })
