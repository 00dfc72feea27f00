"""MAD scores (Poli et al. 2024): per family and task, the mean over the task's settings of the
reported test accuracy of each setting's chosen run.

A MAD sweep (configs/sweeps/mad_cpu.yaml) has one choice axis per MAD task (:data:`MAD_TASKS`),
whose labels are the task's settings (``base``, ``vocab64``...). Each (family, setting) is a point
of :func:`~hybrids.lab.analysis.sweeps.select_points`: its learning rate and weight decay chosen on
validation, its test accuracy reported as a mean over seeds. A task's score is the mean over its
settings of those figures; MAD itself takes the best test accuracy over the grid per setting, and
one seed (here the choice is made on validation and the test set only reported).

A score is only as final as its runs: each row says how many of its settings have a chosen run
still improving (:mod:`hybrids.learning_status`), and a score missing a setting (not run, or
nothing finished) is left out (NaN), not averaged over fewer settings. The overall score of a
family is the mean over the six tasks, given only when all six have a score.
"""

from __future__ import annotations

import math

import pandas as pd

from hybrids.lab.analysis.sweeps import column_name
from hybrids.learning_status import IMPROVING, SOLVED

MAD_TASKS = ("recall", "fuzzy_recall", "noisy_recall", "selective_copying", "compression", "memorization")


def mad_tasks_in(points: pd.DataFrame) -> list[str]:
    """The MAD task axes that ``points`` (or a sweep's run table) have values on."""
    return [t for t in MAD_TASKS if t in points.columns and points[t].notna().any()]


def _group_keys(points: pd.DataFrame) -> list[str]:
    """family, and the matched size's target when the sweep matched sizes (a score per target)."""
    return ["family", *(c for c in ("target",) if c in points.columns and points[c].notna().any())]


def mad_scores(points: pd.DataFrame, report: str = "test/acc") -> pd.DataFrame:
    """One row per (family[, target], task): ``score`` (mean of the settings' ``<report>_mean``;
    NaN when one is missing), ``score_sem`` (the settings' s.e.m.s combined, sqrt(sum sem^2) / n),
    ``settings`` (how many), ``missing`` (settings without a figure), ``improving`` (settings whose
    chosen runs are not all finished: some still improving or too short to tell), ``solved``
    (settings solved on every chosen seed), ``state_size`` and ``params`` (their range over the
    settings: a state can grow with the length), and ``per_setting`` (``label=figure`` pairs)."""
    mean_col, sem_col = f"{column_name(report)}_mean", f"{column_name(report)}_sem"
    rows = []
    for task in mad_tasks_in(points):
        part = points[points[task].notna()]
        keys = _group_keys(part)
        for key, group in part.groupby(keys, sort=False, dropna=False):
            key = key if isinstance(key, tuple) else (key,)
            values = pd.to_numeric(group[mean_col], errors="coerce")
            sems = pd.to_numeric(group.get(sem_col, pd.Series(math.nan, index=group.index)), errors="coerce")
            statuses = [str(s).split(",") if isinstance(s, str) and s else [] for s in group.get("learning_statuses", [])]
            missing = int(values.isna().sum())
            n = len(group)
            rows.append({
                **dict(zip(keys, key)),
                "task": task,
                "score": float(values.mean()) if missing == 0 else math.nan,
                "score_sem": float(math.sqrt((sems.fillna(0) ** 2).sum()) / n) if missing == 0 else math.nan,
                "settings": n,
                "missing": missing,
                "improving": sum(1 for s in statuses if not s or any(x != SOLVED and x != "plateaued" for x in s)),
                "still_improving": sum(1 for s in statuses if IMPROVING in s),
                "solved": sum(1 for s in statuses if s and all(x == SOLVED for x in s)),
                "state_size": _span(group.get("state_size")),
                "params": _span(group.get("params")),
                "per_setting": ", ".join(f"{label}={_fmt(v)}" for label, v in zip(group[task], values)),
            })
    return pd.DataFrame(rows)


def _span(column) -> str:
    if column is None:
        return "-"
    values = sorted({int(v) for v in pd.to_numeric(column, errors="coerce").dropna()})
    if not values:
        return "-"
    return f"{values[0]:,}" if len(values) == 1 else f"{values[0]:,}-{values[-1]:,}"


def _fmt(value: float) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def _cell(row: pd.Series) -> str:
    """"0.912 ± 0.010" and, when the score is not final, "(1/2 improving)"."""
    text = f"{_fmt(row['score'])} ± {_fmt(row['score_sem'])}" if not math.isnan(row["score"]) else \
        f"- ({row['missing']}/{row['settings']} missing)"
    if row["improving"]:
        text += f" ({row['improving']}/{row['settings']} not finished)"
    return text


def mad_markdown(scores: pd.DataFrame) -> str:
    """A family x task table of MAD scores (the overall mean when every task has one), then the
    per-task details: settings, state sizes, parameters, each setting's figure."""
    if scores.empty:
        return "(no MAD task in these runs)"
    keys = [k for k in ("family", "target") if k in scores.columns]
    tasks = [t for t in MAD_TASKS if t in set(scores["task"])]
    header = [*keys, *tasks, "overall"]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    for key, group in scores.groupby(keys, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        by_task = {row["task"]: row for _, row in group.iterrows()}
        cells = [_cell(by_task[t]) if t in by_task else "not run" for t in tasks]
        complete = len(by_task) == len(MAD_TASKS) and all(not math.isnan(by_task[t]["score"]) for t in MAD_TASKS)
        overall = _fmt(sum(by_task[t]["score"] for t in MAD_TASKS) / len(MAD_TASKS)) if complete else "-"
        if complete and any(by_task[t]["improving"] for t in MAD_TASKS):
            overall += " (not final)"
        lines.append("| " + " | ".join([*(str(k) for k in key), *cells, overall]) + " |")
    lines += ["", "| " + " | ".join([*keys, "task", "settings", "state size", "params", "per setting", "solved",
                                     "not finished"]) + " |",
              "| " + " | ".join("---" for _ in range(len(keys) + 6)) + " |"]
    for _, row in scores.iterrows():
        lines.append("| " + " | ".join([*(str(row[k]) for k in keys), row["task"], str(row["settings"]),
                                         row["state_size"], row["params"], row["per_setting"],
                                         f"{row['solved']}/{row['settings']}",
                                         f"{row['improving']}/{row['settings']}"]) + " |")
    return "\n".join(lines)
