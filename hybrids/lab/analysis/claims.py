"""Published orderings checked against a sweep's selected points, each with a verdict a reader
can trust: *reproduced*, *not reproduced*, *undecided* (a run that decides it was still learning),
*not testable* (the task at this scale cannot tell, e.g. both sides already solve it) or *not run*
(a row is missing or has runs pending).

A claim compares rows of :func:`hybrids.lab.analysis.select_points` (one row per family and
setting, the tuned axes chosen on validation, test figures over seeds). Rows are named by family:
the sweep's ``family`` axis, or for sweeps over base config files the ``base`` axis. The rules
(docs/sweeps.md, "Published orderings"):

- Two rows differ when their test means differ by more than the noise, ``2 sqrt(sem_a^2 +
  sem_b^2)`` (about a 95% interval of the difference; a single seed has no spread and counts 0).
- "A beats B" is *reproduced* when A is ahead by more than the noise and B finished learning
  (solved or plateaued: more steps would not move B); *not reproduced* when A is not ahead and A
  finished (more steps would not move A); *not testable* when both solve the task (no room for a
  gap at this difficulty); otherwise *undecided*. "A is at least as good as B" is
  the same with "not behind by more than the noise". A row whose seeds were still improving can
  therefore still decide a claim in the direction its learning would not change.
- "A solves the task" needs every chosen seed solved (the task's threshold, 0.99 accuracy).
- MAD claims compare MAD scores (:func:`mad_score_at_least`): the mean over a task's settings,
  or over the six tasks, of the chosen runs' test figures; a task counts as finished when every
  setting's chosen runs finished learning.
- Length claims (induction heads) read :func:`hybrids.lab.analysis.accuracy_by_length`: the
  accuracy of the chosen seeds at each evaluation length.

The verdict is mechanical; a results page adds the measured cause of a claim that did not
reproduce (recipe, budget, a missing piece of the design), which no rule can know.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from hybrids.lab.analysis.mad_score import MAD_TASKS, mad_scores
from hybrids.learning_status import SOLVED

REPRODUCED, NOT_REPRODUCED, UNDECIDED = "reproduced", "not reproduced", "undecided"
NOT_TESTABLE, NOT_RUN = "not testable", "not run"


@dataclass(frozen=True)
class Verdict:
    outcome: str   # REPRODUCED, NOT_REPRODUCED, UNDECIDED, NOT_TESTABLE or NOT_RUN
    evidence: str  # the figures it rests on, e.g. "gla 0.99 ± 0.00 (solved 3/3) vs retnet 0.25 ..."


@dataclass(frozen=True)
class Results:
    """What claims read: the selected points (``select_points``), the name of the reported metric's
    columns (``"test_acc"`` for ``test_acc_mean`` ...), and for length claims the frame of
    ``accuracy_by_length`` (None when the sweep tested one length)."""

    points: pd.DataFrame
    report: str = "test_acc"
    lengths: pd.DataFrame | None = None


@dataclass(frozen=True)
class Claim:
    source: str      # who published it, and where: "Zoology (Arora et al., ICLR 2024), Fig. 2"
    statement: str   # the claim, in words
    test: Callable[[Results], Verdict]


@dataclass(frozen=True)
class _Row:
    name: str
    mean: float
    sem: float
    n_seeds: int
    statuses: tuple[str, ...]  # learning status of each chosen seed

    @property
    def finished(self) -> bool:
        """Every chosen seed solved or plateaued: more steps would not move the row."""
        return all(s in (SOLVED, "plateaued") for s in self.statuses)

    @property
    def solved(self) -> bool:
        return all(s == SOLVED for s in self.statuses)

    def text(self) -> str:
        learned = ", ".join(f"{s} {self.statuses.count(s)}/{self.n_seeds}" for s in dict.fromkeys(self.statuses))
        spread = "" if math.isnan(self.sem) else f" ± {self.sem:.4f}"
        return f"{self.name} {self.mean:.4f}{spread} ({learned})"


def _label(where: dict[str, Any]) -> str:
    return ", ".join(f"{k.replace('d_model', 'width')} {v}" for k, v in where.items())


def _rows(frame: pd.DataFrame, name: str, where: dict[str, Any]) -> pd.DataFrame:
    mask = pd.Series(False, index=frame.index)
    for column in ("family", "base"):
        if column in frame:
            mask |= frame[column].astype(str) == name
    for key, value in where.items():
        if key not in frame:
            return frame.iloc[0:0]
        mask &= frame[key] == value
    return frame[mask]


def _row(results: Results, name: str, where: dict[str, Any]) -> _Row | str:
    """The one selected point of ``name`` at ``where``, or why there is none to compare."""
    found = _rows(results.points, name, where)
    label = f"{name}" + (f" at {_label(where)}" if where else "")
    if found.empty:
        return f"{label}: no such row"
    if len(found) > 1:
        raise ValueError(f"{label}: {len(found)} rows; name the axes that tell them apart (e.g. d_model)")
    point = found.iloc[0]
    pending, seeds = int(point.get("n_pending", 0) or 0), int(point.get("n_seeds", 0) or 0)
    if pending or not seeds:
        return f"{label}: {pending} run(s) pending" if pending else f"{label}: no finished run"
    listed = point.get("learning_statuses")
    statuses = tuple(listed.split(",")) if isinstance(listed, str) and listed else ()
    if len(statuses) != seeds:
        statuses = ("unknown",) * seeds
    sem = point.get(f"{results.report}_sem")
    return _Row(label, float(point[f"{results.report}_mean"]), float(sem) if sem is not None else math.nan, seeds, statuses)


def _noise(a: _Row, b: _Row) -> float:
    sems = [s if math.isfinite(s) else 0.0 for s in (a.sem, b.sem)]
    return 2 * math.sqrt(sems[0] ** 2 + sems[1] ** 2)


def _order(a: _Row, b: _Row, strict: bool) -> Verdict:
    gap, noise = a.mean - b.mean, _noise(a, b)
    holds = gap > noise if strict else gap >= -noise
    evidence = f"{a.text()} vs {b.text()}: difference {gap:+.4f}, noise {noise:.4f}"
    if strict and a.solved and b.solved:
        return Verdict(NOT_TESTABLE, f"{evidence}; both solve the task, which leaves no room for a gap")
    if holds and b.finished:
        return Verdict(REPRODUCED, evidence)
    if not holds and a.finished:
        return Verdict(NOT_REPRODUCED, evidence)
    still = b.name if holds else a.name
    return Verdict(UNDECIDED, f"{evidence}; {still} was still learning")


def beats(a: str, b: str, strict: bool = True, **where) -> Callable[[Results], Verdict]:
    """``a`` ahead of ``b`` by more than the noise (``strict``), or not behind by more than it."""
    def test(results: Results) -> Verdict:
        rows = [_row(results, name, where) for name in (a, b)]
        missing = [r for r in rows if isinstance(r, str)]
        if missing:
            return Verdict(NOT_RUN, "; ".join(missing))
        return _order(rows[0], rows[1], strict)
    return test


def at_least(a: str, b: str, **where) -> Callable[[Results], Verdict]:
    return beats(a, b, strict=False, **where)


def grows(name: str, axis: str, low: Any, high: Any, **where) -> Callable[[Results], Verdict]:
    """``name`` better at ``axis = high`` than at ``axis = low`` by more than the noise; not testable
    where it already solves the task at ``low`` (nothing left to grow)."""
    def test(results: Results) -> Verdict:
        rows = [_row(results, name, {**where, axis: value}) for value in (high, low)]
        missing = [r for r in rows if isinstance(r, str)]
        if missing:
            return Verdict(NOT_RUN, "; ".join(missing))
        if rows[1].solved:
            return Verdict(NOT_TESTABLE, f"{rows[1].text()}: solved already, nothing left to grow")
        return _order(rows[0], rows[1], strict=True)
    return test


def solves(name: str, **where) -> Callable[[Results], Verdict]:
    """Every chosen seed of ``name`` solved the task."""
    def test(results: Results) -> Verdict:
        row = _row(results, name, where)
        if isinstance(row, str):
            return Verdict(NOT_RUN, row)
        if row.solved:
            return Verdict(REPRODUCED, row.text())
        return Verdict(NOT_REPRODUCED if row.finished else UNDECIDED, row.text())
    return test


def _combine(verdicts: Sequence[Verdict]) -> Verdict:
    """Every part must hold: not reproduced if one part is not, reproduced if all are; otherwise
    not run, undecided or not testable, the first of those any part is."""
    outcomes = [v.outcome for v in verdicts]
    outcome = next((o for o in (NOT_REPRODUCED, NOT_RUN, UNDECIDED, NOT_TESTABLE) if o in outcomes), REPRODUCED)
    return Verdict(outcome, "; ".join(dict.fromkeys(v.evidence for v in verdicts)))


def all_of(*tests: Callable[[Results], Verdict]) -> Callable[[Results], Verdict]:
    """Every part must hold (:func:`_combine`)."""
    return lambda results: _combine([t(results) for t in tests])


def _mad_row(results: Results, name: str, task: str | None) -> _Row | str:
    """``name``'s MAD score as a row: on ``task``, or overall (the mean over the six tasks). Its
    "seeds" are the tasks: each task counts solved (every setting solved), plateaued (every
    setting finished learning) or not finished; the spread combines the tasks' s.e.m.s, a
    single-seed setting's counted 0 (``score_sem_lower``)."""
    label = f"{name} MAD score" + (f" on {task}" if task else " (mean of the six tasks)")
    mine = _rows(results.points, name, {})
    if mine.empty:
        return f"{label}: no such row"
    if task is not None and task in mine.columns:
        mine = mine[mine[task].notna()]  # a per-task claim waits only for that task's runs
    pending = int(pd.to_numeric(mine.get("n_pending", pd.Series(dtype=float)), errors="coerce").fillna(0).sum())
    if pending:
        return f"{label}: {pending} run(s) pending"
    scores = mad_scores(results.points, report=results.report)
    scores = scores[scores["family"].astype(str) == name] if not scores.empty else scores
    if scores.empty:
        return f"{label}: no MAD task in its runs"
    sizes = [k for k in ("target", "d_model") if k in scores.columns and scores[k].nunique() > 1]
    if sizes:
        raise ValueError(f"{label}: scores at several {sizes[0]}s; compare one sweep size at a time")
    by_task = {row["task"]: row for _, row in scores.iterrows()}
    tasks = [task] if task else list(MAD_TASKS)
    missing = [t for t in tasks if t not in by_task or math.isnan(by_task[t]["score"])]
    if missing:
        return f"{label}: no score on {', '.join(missing)}"
    chosen = [by_task[t] for t in tasks]
    # A single-seed setting's unknown spread counts 0, as in _noise, without hiding the others'.
    sem = math.sqrt(sum(row["score_sem_lower"] ** 2 for row in chosen)) / len(chosen)
    statuses = tuple(SOLVED if row["solved"] == row["settings"] else "plateaued" if not row["not_finished"]
                     else "not finished" for row in chosen)
    return _Row(label, sum(row["score"] for row in chosen) / len(chosen), sem, len(chosen), statuses)


def mad_score_at_least(a: str, b: str, task: str | None = None) -> Callable[[Results], Verdict]:
    """``a``'s MAD score (:mod:`hybrids.lab.analysis.mad_score`) not behind ``b``'s by more than the
    noise, on ``task`` or overall (the six tasks' mean; "not run" until every task has a score).
    Each row counts as finished when every setting of every task it covers finished learning."""
    def test(results: Results) -> Verdict:
        rows = [_mad_row(results, name, task) for name in (a, b)]
        missing = [r for r in rows if isinstance(r, str)]
        if missing:
            return Verdict(NOT_RUN, "; ".join(missing))
        return _order(rows[0], rows[1], strict=False)
    return test


def on_frontier(name: str, among: Sequence[str]) -> Callable[[Results], Verdict]:
    """``name`` lies on the accuracy-state frontier: for each of its rows (every width), no row of
    ``among`` with at most its state size is ahead of it by more than the noise."""
    def test(results: Results) -> Verdict:
        missing = [f"{n}: no such row" for n in (name, *among) if _rows(results.points, n, {}).empty]
        if missing:  # a family not run yet could be ahead
            return Verdict(NOT_RUN, "; ".join(missing))
        parts = []
        for _, point in _rows(results.points, name, {}).iterrows():
            mine = _row(results, name, _width(point))
            if isinstance(mine, str):
                return Verdict(NOT_RUN, mine)
            rivals = 0
            for other in among:
                for _, candidate in _rows(results.points, other, {}).iterrows():
                    if candidate["state_size"] > point["state_size"]:
                        continue
                    rival = _row(results, other, _width(candidate))
                    if isinstance(rival, str):
                        return Verdict(NOT_RUN, rival)
                    verdict = _order(mine, rival, strict=False)
                    parts.append(Verdict(verdict.outcome, f"{verdict.evidence} (state {int(candidate['state_size']):,} "
                                                          f"<= {int(point['state_size']):,})"))
                    rivals += 1
            if not rivals:
                parts.append(Verdict(REPRODUCED, f"{mine.text()}: no row with as small a state"))
        return _combine(parts)
    return test


def _width(point: pd.Series) -> dict[str, Any]:
    return {"d_model": point["d_model"]} if "d_model" in point else {}


def _learnt_lengths(results: Results, name: str) -> pd.DataFrame | Verdict:
    """``name``'s accuracy by evaluation length, sorted, where it solved the task at the training
    length; else the verdict that settles a length claim (its learning, or nothing to read)."""
    trained = solves(name)(results)
    if trained.outcome != REPRODUCED:
        return Verdict(trained.outcome, f"at the training length: {trained.evidence}")
    if results.lengths is None:
        return Verdict(NOT_RUN, "no test/acc@L figures: the sweep tested one length")
    rows = _rows(results.lengths, name, {})
    if rows.empty:
        return Verdict(NOT_RUN, f"{name}: no such row")
    return rows.sort_values("length")


def extrapolates(name: str, factor: int, threshold: float = 0.99) -> Callable[[Results], Verdict]:
    """``name`` solves the task at the training length and keeps ``threshold`` accuracy (mean over
    the chosen seeds) at every tested length up to ``factor`` times it."""
    def test(results: Results) -> Verdict:
        rows = _learnt_lengths(results, name)
        if isinstance(rows, Verdict):
            return rows
        limit = factor * int(rows["seq_len"].iloc[0])
        upto = rows[rows["length"] <= limit]
        figures = ", ".join(f"{int(r.length):,}: {r.acc_mean:.3f}" for r in upto.itertuples())
        if upto["length"].max() < limit or upto["acc_mean"].isna().any():
            return Verdict(NOT_RUN, f"{name}: tested to {int(upto['length'].max()):,} of {limit:,} ({figures})")
        held = bool((upto["acc_mean"] >= threshold).all())
        return Verdict(REPRODUCED if held else NOT_REPRODUCED, f"{name} at length {figures}")
    return test


def fails_beyond(name: str, factor: int, threshold: float = 0.99) -> Callable[[Results], Verdict]:
    """``name`` solves the task at the training length but falls below ``threshold`` at every
    tested length beyond ``factor`` times it (a model that never learnt the task has nothing to
    lose: undecided or not reproduced, by its learning status)."""
    def test(results: Results) -> Verdict:
        rows = _learnt_lengths(results, name)
        if isinstance(rows, Verdict):
            return rows
        beyond = rows[(rows["length"] > factor * int(rows["seq_len"].iloc[0])) & rows["acc_mean"].notna()]
        if beyond.empty:
            return Verdict(NOT_RUN, f"{name}: no length tested beyond {factor}x the training length")
        figures = ", ".join(f"{int(r.length):,}: {r.acc_mean:.3f}" for r in beyond.itertuples())
        failed = bool((beyond["acc_mean"] < threshold).all())
        return Verdict(REPRODUCED if failed else NOT_REPRODUCED, f"{name} at length {figures}")
    return test


def check(claims: Sequence[Claim], results: Results) -> list[tuple[Claim, Verdict]]:
    return [(claim, claim.test(results)) for claim in claims]


def claims_markdown(checked: Sequence[tuple[Claim, Verdict]]) -> str:
    """The verdicts as a Markdown table: source, claim, verdict, the figures it rests on."""
    lines = ["| source | claim | verdict | figures |", "| --- | --- | --- | --- |"]
    for claim, verdict in checked:
        cells = (claim.source, claim.statement, f"**{verdict.outcome}**", verdict.evidence)
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)
