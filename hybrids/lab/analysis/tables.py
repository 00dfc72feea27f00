"""The selected points as a plain-text table (a terminal, a notebook's printed output) or as Markdown.

Formatted by hand, not by pandas: ``DataFrame.to_string`` separates columns by a single space
and right-aligns text (the text table promises two spaces, so that a line splits back into cells
that contain spaces, like "0.91 ± 0.01"), and ``DataFrame.to_markdown`` needs ``tabulate``,
which is not a dependency.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from hybrids.lab.analysis.mad_score import mad_tasks_in
from hybrids.lab.analysis.sweeps import column_name


def _cell(value: Any, spec: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        return str(value)


def _integer(value: Any) -> str:
    return "-" if _cell(value) == "-" else f"{int(value):,}"


def _rows(points: pd.DataFrame, report: str, tuned: Sequence[str]) -> list[list[str]]:
    """Header and one row of cells per point (see :func:`points_text`)."""
    col = column_name(report)
    tuned = [t for t in tuned if t in points]
    mad = mad_tasks_in(points)  # a MAD sweep: which task and setting each row is
    header = ["family", *(["task"] if mad else []), "seq_len", "kv", "width", "state size", "params", *tuned,
              f"{report} mean ± sem", "[min, max]", "seeds", "learning"]
    rows = [header]
    for _, p in points.iterrows():
        seeds = str(p.get("n_seeds", "-"))
        notes = [f"{int(p[key])} {word}" for key, word in (("n_failed", "failed"), ("n_pending", "pending"))
                 if p.get(key, 0) and not (isinstance(p.get(key), float) and math.isnan(p.get(key)))]
        if notes:  # a selection among unfinished runs may still change
            seeds += f" ({', '.join(notes)})"
        task = [next((f"{t}: {p[t]}" for t in mad if isinstance(p.get(t), str)), "-")] if mad else []
        rows.append([
            _cell(p.get("family")), *task, _integer(p.get("seq_len")), _integer(p.get("num_kv_pairs")),
            _integer(p.get("d_model")), _integer(p.get("state_size")), _integer(p.get("params")),
            *(_cell(p.get(t), "g") for t in tuned),
            f"{_cell(p.get(f'{col}_mean'), '.4f')} ± {_cell(p.get(f'{col}_sem'), '.4f')}",
            f"[{_cell(p.get(f'{col}_min'), '.4f')}, {_cell(p.get(f'{col}_max'), '.4f')}]",
            seeds,
            _cell(p.get("learning")) + (f"; {p['grid_edge']}" if isinstance(p.get("grid_edge"), str) and p.get("grid_edge") else ""),
        ])
    return rows


def points_text(points: pd.DataFrame, report: str = "test/acc", tuned: Sequence[str] = ("lr",)) -> str:
    """One line per point: family, seq_len, kv pairs, width, state size, params, the chosen tuned
    values, the reported metric's mean ± sem and [min, max] over seeds, the seeds counted
    (with the point's failed and pending runs, when any: a selection that may still change), and
    whether the chosen runs finished learning (solved, plateaued, still improving), with any
    tuned value chosen at an end of its grid by runs that did not solve the task.
    Columns are separated by two spaces or more, so each line splits back into its cells on runs
    of spaces."""
    lines = _rows(points, report, tuned)
    widths = [max(len(row[i]) for row in lines) for i in range(len(lines[0]))]
    text = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths)))
            for row in lines]
    text.insert(1, "-" * len(text[0]))
    return "\n".join(line.rstrip() for line in text)


def points_markdown(points: pd.DataFrame, report: str = "test/acc", tuned: Sequence[str] = ("lr",)) -> str:
    """The table of :func:`points_text` as a Markdown table (for a README or a report)."""
    rows = _rows(points, report, tuned)
    lines = ["| " + " | ".join(rows[0]) + " |", "| --- |" + " ---: |" * (len(rows[0]) - 1)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows[1:]]
    return "\n".join(lines)
