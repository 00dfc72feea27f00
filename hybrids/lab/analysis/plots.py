"""Figures of a sweep's selected points (the rows :func:`select_points` returns).

Both figures have one panel per task shape (seq_len, num_kv_pairs), as in zoology's Fig. 2, and
one colour per family, the same in every panel and figure. Error bars span the seeds' min to max
of the reported metric. A point whose runs had not finished learning (``learning``: still
improving, or too short to tell) is drawn hollow: its figure is about the budget. Pass ``fig`` (a ``matplotlib.figure.Figure``) to draw without pyplot,
e.g. headless in ``hybrids plot``; without it a pyplot figure is made, which a notebook shows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from hybrids.lab.analysis.sweeps import column_name


def pareto_frontier(
    state_sizes: Sequence[float], scores: Sequence[float], higher_is_better: bool = True
) -> list[int]:
    """Indices of the points on the frontier, by increasing state size: those that no other point
    dominates with a smaller-or-equal state and a better-or-equal score (of equal points, one is
    kept). Points with a NaN coordinate are never on it."""
    sign = 1.0 if higher_is_better else -1.0
    finite = [i for i in range(len(state_sizes)) if np.isfinite(state_sizes[i]) and np.isfinite(scores[i])]
    order = sorted(finite, key=lambda i: (state_sizes[i], -sign * scores[i], i))
    frontier, best = [], -math.inf
    for i in order:
        if sign * scores[i] > best:
            frontier.append(i)
            best = sign * scores[i]
    return frontier


def _panel_keys(points: pd.DataFrame) -> list[tuple[Any, Any]]:
    """Each point's (seq_len, num_kv_pairs), the panel it is drawn in."""
    return [(_plain(s), _plain(k)) for s, k in zip(_column(points, "seq_len"), _column(points, "num_kv_pairs"))]


def _panels(points: pd.DataFrame) -> list[tuple[Any, Any]]:
    """The panels, in increasing (seq_len, num_kv_pairs) order (missing values last)."""
    return sorted(set(_panel_keys(points)), key=lambda key: tuple((v is None, v or 0) for v in key))


def _column(points: pd.DataFrame, name: str) -> list[Any]:
    return list(points[name]) if name in points else [None] * len(points)


def _plain(value: Any) -> Any:
    """A cell as a plain Python value; NaN and None alike become None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value


def _panel_rows(points: pd.DataFrame, panel: tuple[Any, Any]) -> pd.DataFrame:
    return points[[key == panel for key in _panel_keys(points)]]


def _panel_title(panel: tuple[Any, Any]) -> str:
    seq_len, kv = panel
    parts = ([f"seq_len {seq_len}"] if seq_len is not None else []) + ([f"{kv} kv pairs"] if kv is not None else [])
    return ", ".join(parts) or "all runs"


def _colours(points: pd.DataFrame) -> dict[str, Any]:
    """One colour per family, fixed by the sorted family names so every panel agrees."""
    from matplotlib import colormaps

    families = sorted({str(f) for f in points["family"]}) if "family" in points else []
    # tab10 while it lasts; beyond ten families tab20, so that no two families share a colour
    # (up to twenty), e.g. the two CPU sweeps read together (eleven families).
    cycle = colormaps["tab10" if len(families) <= 10 else "tab20"].colors
    return {family: cycle[i % len(cycle)] for i, family in enumerate(families)}


def _axes_grid(points: pd.DataFrame, fig, width: float = 4.0, height: float = 3.4):
    """The figure and one axes per panel, side by side, sharing the y axis."""
    panels = _panels(points) or [(None, None)]
    if fig is None:
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=(width * len(panels) + 1.5, height))
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    return fig, panels, list(axes)


def _family_rows(points: pd.DataFrame, axes: list, panels: list):
    """(axes, family, colour, the family's points in that panel) for every non-empty pair, with
    the colours of :func:`_colours`; the loop both figures share."""
    colours = _colours(points)
    for ax, panel in zip(axes, panels):
        rows = _panel_rows(points, panel)
        for family, colour in colours.items():
            members = rows[rows["family"].astype(str) == family]
            if not members.empty:
                yield ax, family, colour, members


def _spread(rows: pd.DataFrame, report_col: str) -> tuple[np.ndarray, np.ndarray]:
    """The seeds' mean, and the (below, above) error bar lengths from min to max."""
    mean = rows[f"{report_col}_mean"].to_numpy(dtype=float)
    low = np.nan_to_num(mean - rows[f"{report_col}_min"].to_numpy(dtype=float))
    high = np.nan_to_num(rows[f"{report_col}_max"].to_numpy(dtype=float) - mean)
    return mean, np.vstack([low, high])


def _unfinished(rows: pd.DataFrame) -> np.ndarray:
    """Which points come from runs that had not finished learning (some seed still improving, or
    validated too rarely to tell): drawn hollow, since their figure is about the budget."""
    if "learning" not in rows:
        return np.zeros(len(rows), dtype=bool)
    text = rows["learning"].astype(str)
    return (text.str.contains("still improving") | text.str.contains("too short")).to_numpy()


def _mark_unfinished(ax, x: np.ndarray, y: np.ndarray, unfinished: np.ndarray, colour) -> None:
    if unfinished.any():
        ax.scatter(x[unfinished], y[unfinished], s=36, facecolors="white", edgecolors=[colour], linewidths=1.5,
                   zorder=3)


def _finish(fig, axes, report: str, xlabel: str, colours: dict[str, Any], title: str | None,
            any_unfinished: bool = False):
    for ax in axes:
        ax.set_xlabel(xlabel)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel(f"{report} (mean over seeds, min–max)")
    if column_name(report).endswith("acc"):
        axes[0].set_ylim(0, 1.02)
    if colours:
        handles, labels = [], []
        for ax in axes:
            for handle, label in zip(*ax.get_legend_handles_labels()):
                if label in colours and label not in labels:
                    handles.append(handle)
                    labels.append(label)
        if any_unfinished:
            from matplotlib.lines import Line2D

            handles.append(Line2D([], [], marker="o", linestyle="", markerfacecolor="white", markeredgecolor="grey"))
            labels.append("open: not finished learning")
        axes[-1].legend(handles, labels, loc="best", fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()


def _short_count(value: float, _position: Any = None) -> str:
    """1200 -> "1.2k", 20000 -> "20k", 3e6 -> "3M": tick labels short enough not to collide."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"


def _log_state_axis(ax) -> None:
    """A log x axis labelled at 1, 2 and 5 times each power of ten only: state sizes often span
    less than a decade, where matplotlib's default labels every minor tick and they overlap."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(_short_count))
    ax.xaxis.set_minor_formatter(NullFormatter())


def plot_accuracy_vs_width(
    points: pd.DataFrame, report: str = "test/acc", fig=None, title: str | None = None
):
    """Reported metric against model width (d_model, log2 axis), one line per family, one panel
    per (seq_len, num_kv_pairs): zoology's Fig. 2. Returns the figure."""
    report_col = column_name(report)
    fig, panels, axes = _axes_grid(points, fig)
    for ax, family, colour, members in _family_rows(points, axes, panels):
        members = members[np.isfinite(members[f"{report_col}_mean"].to_numpy(dtype=float))].sort_values("d_model")
        if members.empty:
            continue
        mean, yerr = _spread(members, report_col)
        widths = members["d_model"].to_numpy(dtype=float)
        ax.errorbar(widths, mean, yerr=yerr, fmt="o-", capsize=3, color=colour, label=family)
        _mark_unfinished(ax, widths, mean, _unfinished(members), colour)
    for ax, panel in zip(axes, panels):
        rows = _panel_rows(points, panel)
        widths = sorted({int(w) for w in rows["d_model"].dropna()}) if "d_model" in rows else []
        ax.set_xscale("log", base=2)
        if widths:
            ax.set_xticks(widths, [str(w) for w in widths])
            ax.minorticks_off()
        ax.set_title(_panel_title(panel))
    _finish(fig, axes, report, "model width (d_model)", _colours(points), title, _unfinished(points).any())
    return fig


def plot_accuracy_vs_state_size(
    points: pd.DataFrame,
    report: str = "test/acc",
    fig=None,
    title: str | None = None,
    higher_is_better: bool = True,
):
    """Reported metric against recurrent state size (log axis): each family's points with error
    bars, and its Pareto frontier (the best score reached with at most that much state) as a step
    line; one panel per (seq_len, num_kv_pairs). Returns the figure."""
    report_col = column_name(report)
    fig, panels, axes = _axes_grid(points, fig)
    for ax, family, colour, members in _family_rows(points, axes, panels):
        mean, yerr = _spread(members, report_col)
        state = members["state_size"].to_numpy(dtype=float)
        shown = np.isfinite(mean) & np.isfinite(state) & (state > 0)
        if not shown.any():
            continue
        ax.errorbar(state[shown], mean[shown], yerr=yerr[:, shown], fmt="o", capsize=3, color=colour,
                    label=family, alpha=0.8)
        _mark_unfinished(ax, state[shown], mean[shown], _unfinished(members)[shown], colour)
        front = pareto_frontier(state[shown], mean[shown], higher_is_better)
        ax.step(state[shown][front], mean[shown][front], where="post", color=colour, linewidth=1.5)
    for ax, panel in zip(axes, panels):
        _log_state_axis(ax)
        ax.set_title(_panel_title(panel))
    _finish(fig, axes, report, "recurrent state size (elements per sequence)", _colours(points), title,
            _unfinished(points).any())
    return fig
