"""Learning curves of a sweep's chosen settings: the validation metric against optimiser steps.

For every point of :func:`hybrids.lab.analysis.sweeps.select_points` (a family at a width and
task, with the setting chosen on validation), the finished runs of the chosen setting, one per
seed, each drawn as a line of its family's colour, with a dot where it solved. One panel per
(task, width). It shows what a results table can only label: whether a run was still climbing
when its budget ended, and how far apart the seeds are.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from hybrids.lab.analysis.plots import _colours
from hybrids.lab.learning import run_curve_of


def _axes_of(table: pd.DataFrame) -> list[str]:
    """The runs' axis columns but the seed (what makes a point and its setting)."""
    names: list[str] = []
    for value in table.get("axis_names", pd.Series(dtype=str)).dropna():
        for name in str(value).split(","):
            if name and name != "seed" and name not in names:
                names.append(name)
    return names


def _same(a: Any, b: Any) -> bool:
    if pd.isna(a) and pd.isna(b):
        return True
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


def chosen_runs(table: pd.DataFrame, points: pd.DataFrame) -> list[tuple[pd.Series, pd.DataFrame]]:
    """(point, its chosen setting's finished runs) for every point with a chosen setting."""
    axes = [a for a in _axes_of(table) if a in points.columns]
    done = table[table["status"] == "done"]
    found = []
    for _, point in points.iterrows():
        if any(pd.isna(point[a]) for a in axes if a in ("lr", "weight_decay")):
            continue  # nothing chosen yet (no finished setting)
        mask = pd.Series(True, index=done.index)
        for axis in axes:
            mask &= done[axis].map(lambda value, want=point[axis]: _same(value, want))
        found.append((point, done[mask]))
    return found


def _panel(point: pd.Series) -> tuple[Any, Any]:
    return (point.get("task"), point.get("d_model"))


def _panel_order(key: tuple[Any, Any]) -> tuple:
    """Tasks by name, widths by number (64 before 128)."""
    task, width = key
    try:
        width_key = (0, float(width), "")
    except (TypeError, ValueError):
        width_key = (1, 0.0, str(width))
    return (str(task), width_key)


def plot_learning_curves(table: pd.DataFrame, points: pd.DataFrame, metric: str | None = None, fig=None):
    """The figure: one panel per (task, width), a line per run of each point's chosen setting.
    ``metric`` None takes each run's own criterion's (val/acc for the synthetic tasks)."""
    chosen = chosen_runs(table, points)
    panels = sorted({_panel(p) for p, _ in chosen}, key=_panel_order) or [(None, None)]
    if fig is None:
        import matplotlib.pyplot as plt

        fig = plt.figure()
    axes = list(fig.subplots(1, len(panels), sharey=True, squeeze=False)[0])
    colours = _colours(points)
    labelled = set()
    for point, runs in chosen:
        ax = axes[panels.index(_panel(point))]
        family = str(point["family"])
        for _, run in runs.iterrows():
            curve = run_curve_of(run["run_dir"], metric)
            if not curve:
                continue
            steps, values = zip(*curve)
            label = family if (family, ax) not in labelled else None
            labelled.add((family, ax))
            ax.plot(steps, values, color=colours.get(family), linewidth=1.0, alpha=0.8, label=label)
            solved = run.get("solved_step")
            if solved is not None and not pd.isna(solved):
                at = [v for s, v in curve if s == int(solved)]
                if at:
                    ax.plot([int(solved)], at, "o", color=colours.get(family), markersize=3)
    for ax, (task, width) in zip(axes, panels):
        ax.set_title(", ".join(str(part) for part in ((task if task is not None else None),
                                                       (f"width {width}" if width is not None else None)) if part))
        ax.set_xlabel("optimiser steps")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel(metric or "validation metric")
    fig.suptitle("chosen setting of each family: one line per seed, a dot where it solved", fontsize="small")
    handles, labels = [], []
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    if handles:
        axes[-1].legend(handles, labels, loc="lower right", fontsize="x-small")
    return fig


__all__ = ["chosen_runs", "plot_learning_curves"]
