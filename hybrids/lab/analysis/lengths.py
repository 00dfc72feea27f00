"""Accuracy against evaluation length (induction heads trained at one length, tested at longer ones).

The Lightning module logs ``test/acc@L`` for every test length of a data module that declares
``test_lengths`` (:class:`hybrids.data.InductionHeads`). This module gathers those figures:

- from a sweep's table (:func:`hybrids.lab.analysis.sweep_table`, columns ``test_acc@L``): per point,
  the learning rate chosen on validation at the training length, then the accuracy at every
  length of the chosen setting's seeds, with their spread (:func:`accuracy_by_length`);
- from single runs' CSV logs (:func:`run_lengths`);

and draws accuracy against length, one line per family (:func:`plot_accuracy_vs_length`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

from hybrids.lab.analysis.runs import load_runs
from hybrids.lab.analysis.sweeps import select_points
from hybrids.lab.metrics_log import last_values

_LENGTH_COLUMN = re.compile(r"^test[/_]acc@(\d+)$")


def length_columns(columns) -> dict[int, str]:
    """{length: column} of the ``test/acc@L`` (or ``test_acc@L``) columns, by length."""
    found = {int(m.group(1)): c for c in columns if (m := _LENGTH_COLUMN.match(str(c)))}
    return dict(sorted(found.items()))


def accuracy_by_length(
    table: pd.DataFrame, metric: str = "val/acc", mode: str = "max", tuned=None
) -> pd.DataFrame:
    """One row per (point, length): the point's columns as :func:`select_points` gives them
    (family, d_model, params, state_size, chosen lr, ...), ``length``, and the test accuracy at
    that length of the chosen setting's seeds: ``acc_mean``, ``acc_std``, ``acc_sem``,
    ``acc_min``, ``acc_max``, ``n_seeds``. The choice is made once per point on ``metric`` (at
    the training length), never on a test figure; a length where no seed was evaluated (skipped
    for memory) has NaN figures."""
    lengths = length_columns(table.columns)
    if not lengths:
        raise ValueError("no test/acc@L columns in the table: were the runs tested at several lengths?")
    frames = []
    for length, column in lengths.items():
        points = select_points(table, metric=metric, mode=mode, report=column.replace("_", "/", 1), tuned=tuned)
        renamed = {f"{column}_{k}": f"acc_{k}" for k in ("mean", "std", "sem", "min", "max")}
        points = points.rename(columns=renamed)
        points.insert(0, "length", length)
        frames.append(points)
    out = pd.concat(frames, ignore_index=True)
    keys = [c for c in ("family", "d_model", "seq_len") if c in out]
    return out.sort_values([*keys, "length"], kind="stable").reset_index(drop=True)


def run_lengths(root: str | Path) -> pd.DataFrame:
    """Single runs below ``root`` (CSV logs of ``hybrids fit ... test_after_fit`` or ``hybrids
    test``): one row per (run, length) with family, params, state_size, seq_len and ``acc``."""
    rows: list[dict[str, Any]] = []
    for run in load_runs(root, metric="test/acc"):
        logged = last_values(run.path)
        for length, column in length_columns(logged).items():
            rows.append({"run": run.name, "family": run.family, "params": run.params,
                         "state_size": run.state_size, "seq_len": run.seq_len, "length": length,
                         "acc": logged[column]})
    return pd.DataFrame(rows)


def plot_accuracy_vs_length(frame: pd.DataFrame, ax=None, title: str | None = None):
    """Test accuracy against evaluation length (log2 axis), one line per family; error bars span
    the seeds' min to max when the frame has them (:func:`accuracy_by_length`); a dotted line
    marks the training length. Returns the axes."""
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(6, 4))
    value = "acc_mean" if "acc_mean" in frame else "acc"
    group = [c for c in ("family", "d_model") if c in frame and frame[c].nunique() > 1] or ["family"]
    for key, rows in frame.groupby(group, sort=True):
        rows = rows.sort_values("length")
        label = " ".join(str(k) for k in (key if isinstance(key, tuple) else (key,)))
        if "acc_min" in rows:
            below, above = rows[value] - rows["acc_min"], rows["acc_max"] - rows[value]
            ax.errorbar(rows["length"], rows[value], yerr=[below.fillna(0), above.fillna(0)], marker="o",
                        capsize=3, label=label)
        else:
            ax.plot(rows["length"], rows[value], marker="o", label=label)
    if "seq_len" in frame and frame["seq_len"].notna().any():
        for trained in sorted(frame["seq_len"].dropna().unique()):
            ax.axvline(trained, color="grey", linestyle=":", linewidth=1)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("evaluation length (tokens; dotted: training length)")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "Induction heads: accuracy vs evaluation length")
    return ax
