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
from hybrids.learning_status import IMPROVING, PLATEAUED, SOLVED

MAD_TASKS = ("recall", "fuzzy_recall", "noisy_recall", "selective_copying", "compression", "memorization")


def mad_tasks_in(points: pd.DataFrame) -> list[str]:
    """The MAD task axes that ``points`` (or a sweep's run table) have values on."""
    return [t for t in MAD_TASKS if t in points.columns and points[t].notna().any()]


def _group_keys(points: pd.DataFrame, task: str) -> list[str]:
    """What a score is kept apart by: the family, and the matched size's target where the sweep
    matched sizes (the width solved for it may differ between settings), else the width."""
    size = "target" if "target" in points.columns and points["target"].notna().any() else "d_model"
    return [c for c in ("family", size) if c in points.columns and points[c].notna().any()]


def _not_finished(statuses: object) -> bool:
    """Whether a setting's chosen runs are not all finished learning: some still improving, too
    short to tell, unknown, or no chosen run at all."""
    if not isinstance(statuses, str) or not statuses:
        return True
    return any(status not in (SOLVED, PLATEAUED) for status in statuses.split(","))


def mad_scores(points: pd.DataFrame, report: str = "test/acc") -> pd.DataFrame:
    """One row per (family[, target], task): ``score`` (mean of the settings' ``<report>_mean``;
    NaN when a setting has no figure, or is absent while another family of the sweep ran it),
    ``score_sem`` (the settings' s.e.m.s combined, sqrt(sum sem^2) / n; NaN when a setting has a
    single seed), ``score_sem_lower`` (the same with a single seed's spread counted 0), ``settings`` (the task's settings in the sweep), ``missing`` (settings without a
    figure), ``not_finished`` (settings whose chosen runs did not all finish learning: still
    improving, too short to tell, or not run), ``still_improving``, ``solved`` (settings solved on
    every chosen seed), ``state_size`` and ``params`` (their range over the settings: a state
    can grow with the length), and ``per_setting`` (``label=figure`` pairs).

    Raises ValueError when a family has two points at one setting that no axis tells apart (the
    score would average them silently)."""
    mean_col, sem_col = f"{column_name(report)}_mean", f"{column_name(report)}_sem"
    rows = []
    for task in mad_tasks_in(points):
        part = points[points[task].notna()]
        labels = list(dict.fromkeys(part[task]))  # every setting of the task that the sweep has
        keys = _group_keys(part, task)
        for key, group in part.groupby(keys, sort=False, dropna=False) if keys else [((), part)]:
            key = key if isinstance(key, tuple) else (key,)
            if group[task].duplicated().any():
                raise ValueError(f"{task}: {dict(zip(keys, key))} has several points at one setting; "
                                 "give the axis that tells them apart")
            by_label = {label: row for label, (_, row) in zip(group[task], group.iterrows())}
            values = [pd.to_numeric(by_label[l][mean_col], errors="coerce") if l in by_label else math.nan
                      for l in labels]
            sems = [pd.to_numeric(by_label[l].get(sem_col, math.nan), errors="coerce") if l in by_label else math.nan
                    for l in labels]
            statuses = [by_label[l].get("learning_statuses") if l in by_label else None for l in labels]
            missing = sum(1 for v in values if math.isnan(v))
            n = len(labels)
            complete = missing == 0
            rows.append({
                **dict(zip(keys, key)),
                "task": task,
                "score": sum(values) / n if complete else math.nan,
                "score_sem": math.sqrt(sum(e**2 for e in sems)) / n if complete else math.nan,
                # The same with a single-seed setting's unknown spread counted 0 (the claims' rule):
                # one seed lost in one setting then keeps the other settings' spread.
                "score_sem_lower": math.sqrt(sum(e**2 for e in sems if math.isfinite(e))) / n if complete else math.nan,
                "settings": n,
                "missing": missing,
                "not_finished": sum(1 for s in statuses if _not_finished(s)),
                "still_improving": sum(1 for s in statuses if isinstance(s, str) and IMPROVING in s.split(",")),
                "solved": sum(1 for s in statuses if isinstance(s, str) and s and all(x == SOLVED for x in s.split(","))),
                "state_size": _span(group.get("state_size")),
                "params": _span(group.get("params")),
                "per_setting": ", ".join(f"{label}={_fmt(v)}" for label, v in zip(labels, values)),
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
    """"0.912 ± 0.010" and, when the score is not final, "(1/2 not finished)"; "± n/a" when a
    setting has one seed."""
    if math.isnan(row["score"]):
        text = f"- ({row['missing']}/{row['settings']} missing)"
    else:
        spread = "n/a" if math.isnan(row["score_sem"]) else _fmt(row["score_sem"])
        text = f"{_fmt(row['score'])} ± {spread}"
    if row["not_finished"]:
        text += f" ({row['not_finished']}/{row['settings']} not finished)"
    return text


def mad_markdown(scores: pd.DataFrame) -> str:
    """A family x task table of MAD scores (the overall mean when every task has one), then the
    per-task details: settings, state sizes, parameters, each setting's figure."""
    if scores.empty:
        return "(no MAD task in these runs)"
    keys = [k for k in ("family", "target", "d_model") if k in scores.columns and scores[k].notna().any()]
    tasks = [t for t in MAD_TASKS if t in set(scores["task"])]
    header = [*keys, *tasks, "overall"]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    for key, group in scores.groupby(keys, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        by_task = {row["task"]: row for _, row in group.iterrows()}
        cells = [_cell(by_task[t]) if t in by_task else "not run" for t in tasks]
        complete = len(by_task) == len(MAD_TASKS) and all(not math.isnan(by_task[t]["score"]) for t in MAD_TASKS)
        overall = _fmt(sum(by_task[t]["score"] for t in MAD_TASKS) / len(MAD_TASKS)) if complete else "-"
        if complete and any(by_task[t]["not_finished"] for t in MAD_TASKS):
            overall += " (not final)"
        lines.append("| " + " | ".join([*(str(k) for k in key), *cells, overall]) + " |")
    lines += ["", "| " + " | ".join([*keys, "task", "settings", "state size", "params", "per setting", "solved",
                                     "not finished"]) + " |",
              "| " + " | ".join("---" for _ in range(len(keys) + 6)) + " |"]
    for _, row in scores.iterrows():
        lines.append("| " + " | ".join([*(str(row[k]) for k in keys), row["task"], str(row["settings"]),
                                         row["state_size"], row["params"], row["per_setting"],
                                         f"{row['solved']}/{row['settings']}",
                                         f"{row['not_finished']}/{row['settings']}"]) + " |")
    return "\n".join(lines)
