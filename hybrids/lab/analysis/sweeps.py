"""A sweep's runs as a table, and honest selection of the tuned settings of each point.

A sweep folder holds one folder per run, each with the ``status.json`` the sweep runner writes
(``<sweep_dir>/<run_name>/status.json``). :func:`sweep_table` reads them into one row per run;
:func:`select_points` turns that into one row per *point* (a setting of the axes that are neither
the seed nor tuned: family, task, width, ...).

Honest selection: the tuned axes (the learning rate, and any other listed under ``tuned``) are
chosen on the validation metric alone, averaged over the seeds that finished; the figure then
reported for the point is the *test* metric of the chosen setting, with its spread over seeds.
The test metric never takes part in the choice, so a reported figure is not the best of several
looks at the test set.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hybrids.lab.learning import learning_record, summary
from hybrids.learning_status import SOLVED
from hybrids.lab.run_status import as_seen
from hybrids.lab.ordering import order_key

SEED_AXIS = "seed"

# Figures every run has, whatever its axes: an axis of one of these names holds the same value
# (or, for "family", the sweep's short family name, which is the one the tables show).
DESCRIPTIVE = ["family", "mixers", "d_model", "seq_len", "num_kv_pairs", "vocab_size", "params", "state_size"]
TARGET = ["target_quantity", "target_value", "achieved"]
STANDARD_METRICS = ["val/acc", "val/loss", "test/acc", "test/loss"]
# Columns of a run's bookkeeping: an axis of one of these names gets an "axis_" prefix instead.
BOOKKEEPING = [
    "name", "sweep", "mixers", "status", "wall_s", "attempts", "returncode", "error", "log_dir", "run_dir",
    "axis_names", "tuned_axes", *TARGET,
]


def column_name(metric: str) -> str:
    """The table column of a metric: ``"val/acc"`` -> ``"val_acc"`` (a column name is kept)."""
    return metric.replace("/", "_")


def read_status(path: str | Path) -> dict[str, Any] | None:
    """The parsed ``status.json`` at ``path``, or None (with a warning naming it) if it cannot be
    read: a runner killed mid-write leaves a partial file, and one bad run must not hide the rest."""
    path = Path(path)
    try:
        status = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        warnings.warn(f"skipping {path}: {err}", stacklevel=2)
        return None
    if not isinstance(status, dict):
        warnings.warn(f"skipping {path}: not a JSON object", stacklevel=2)
        return None
    return status


def _scalar(value: Any) -> Any:
    """A value a table cell and a group key can hold: JSON lists and objects become their text."""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return value


def _number(value: Any) -> float:
    """A metric as a float; None, text and the like become NaN (a failed or diverged run)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _axis_column(axis: str, metric_columns: Iterable[str]) -> str:
    return f"axis_{axis}" if axis in BOOKKEEPING or axis in metric_columns else axis


def _metrics(status: dict[str, Any]) -> dict[str, float]:
    metrics = status.get("metrics")
    return {column_name(str(k)): _number(v) for k, v in metrics.items()} if isinstance(metrics, dict) else {}


def _run_row(status: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    metrics = _metrics(status)
    axes = status.get("axes") or {}
    axes = axes if isinstance(axes, dict) else {}
    tuned = status.get("tuned") or []
    tuned = [str(t) for t in tuned] if isinstance(tuned, list) else []
    row: dict[str, Any] = {
        "name": status.get("name", run_dir.name),
        "sweep": status.get("sweep"),
        "family": status.get("family"),
        "mixers": status.get("family"),
    }
    row.update({key: status.get(key) for key in DESCRIPTIVE[2:]})
    columns = {axis: _axis_column(axis, metrics) for axis in axes}
    row.update({columns[axis]: _scalar(value) for axis, value in axes.items()})
    target = status.get("target")
    if isinstance(target, dict):
        row.update(target_quantity=target.get("quantity"), target_value=target.get("value"),
                   achieved=target.get("achieved"))
    row["status"] = status.get("status")
    # Solved, plateaued or still improving: from status.json, or worked out from the run's files
    # for a run whose status.json predates it.
    learning = status.get("learning")
    if not isinstance(learning, dict):
        learning = learning_record(run_dir, finished=status.get("status") == "done") or {}
    row["learning"] = learning.get("status")
    row["solved_step"] = learning.get("solved_step")
    row.update(metrics)
    row.update({key: status.get(key) for key in ("wall_s", "attempts", "returncode", "error", "log_dir")})
    row["run_dir"] = str(run_dir)
    # Which columns are axes and which are tuned travels with each row (as text, so that it
    # survives a round trip through runs.csv) rather than in DataFrame.attrs, which many pandas
    # operations drop.
    row["axis_names"] = ",".join(columns.values())
    row["tuned_axes"] = ",".join(columns.get(t, t) for t in tuned)
    return row


def _manifest(sweep_dir: Path) -> set[str] | None:
    path = sweep_dir / "manifest.json"
    if not path.is_file():
        return None
    try:
        return set(json.loads(path.read_text())["runs"])
    except (OSError, ValueError, KeyError, TypeError):
        warnings.warn(f"{path} is unreadable; reading every run folder", stacklevel=3)
        return None


def sweep_tables(sweep_dirs) -> pd.DataFrame:
    """:func:`sweep_table` of several sweep folders as one table (sweeps run on the same terms,
    e.g. ``mqar_cpu`` and ``mqar_cpu_linear``); the ``sweep`` column tells them apart."""
    tables = [t for t in (sweep_table(d) for d in sweep_dirs) if not t.empty]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def sweep_table(sweep_dir: str | Path) -> pd.DataFrame:
    """One row per run of the sweep in ``sweep_dir``, read from its ``*/status.json`` files.

    Columns: name, sweep, family (the sweep's short family name when it has a family axis, else
    the mixer classes), mixers (the mixer classes, e.g. "Mamba+SparseAttention"), one column per
    axis, d_model, seq_len, num_kv_pairs, vocab_size, params, state_size, target_quantity /
    target_value / achieved (when the sweep matched sizes), status, one column per metric with
    "/" written "_" (val_acc, val_loss, test_acc, test_loss always; any others as logged), wall_s,
    attempts, returncode, error, log_dir, run_dir, and axis_names / tuned_axes (comma-separated
    column names, which :func:`select_points` reads). Missing keys give empty cells; an unreadable
    ``status.json`` is skipped with a warning; a run recorded as running on this host whose lock
    no process holds is shown as interrupted (:mod:`hybrids.lab.run_status`). Where the sweep
    wrote ``manifest.json`` (the runs its file expands to now), folders not listed there, left by
    an edited-out setting, are left out with a warning, so that they never enter a selection.
    """
    sweep_dir = Path(sweep_dir)
    listed = _manifest(sweep_dir)
    rows, logged, unlisted = [], [], []
    for path in sorted(sweep_dir.glob("*/status.json")):
        if listed is not None and path.parent.name not in listed:
            unlisted.append(path.parent.name)
            continue
        status = read_status(path)
        if status is not None:
            # A "running" run that no process runs (its sweep was killed) is shown interrupted.
            status = as_seen(path.parent, status)
            rows.append(_run_row(status, path.parent))
            logged += _metrics(status)
    if unlisted:
        warnings.warn(
            f"{sweep_dir}: {len(unlisted)} run folder(s) not in the sweep file any more are left out: "
            + ", ".join(unlisted[:5]) + (" ..." if len(unlisted) > 5 else ""), stacklevel=2,
        )
    table = pd.DataFrame(rows)
    axis_columns = list(dict.fromkeys(c for r in rows for c in r["axis_names"].split(",") if c))
    metric_columns = list(dict.fromkeys([column_name(m) for m in STANDARD_METRICS] + logged))
    head = ["name", "sweep", "family", "mixers"]
    order = (
        head + [c for c in axis_columns if c not in head] + [c for c in DESCRIPTIVE if c not in head]
        + (TARGET if any("target_quantity" in r for r in rows) else []) + ["status"] + metric_columns
        + ["wall_s", "attempts", "returncode", "error", "log_dir", "run_dir", "axis_names", "tuned_axes"]
    )
    order = list(dict.fromkeys(order))
    table = table.reindex(columns=order + [c for c in table.columns if c not in order])
    for column in metric_columns:
        table[column] = pd.to_numeric(table[column], errors="coerce")
    return table


def _names(table: pd.DataFrame, column: str) -> list[str]:
    """The ordered union of a comma-separated names column over the table's rows."""
    if column not in table:
        return []
    return list(dict.fromkeys(n for cell in table[column].dropna() for n in str(cell).split(",") if n))


def axis_names(table: pd.DataFrame) -> list[str]:
    """The columns of ``table`` that are axes of its runs (seed and tuned axes included)."""
    return _names(table, "axis_names")


def tuned_axes(table: pd.DataFrame) -> list[str]:
    """The columns of ``table`` that its runs list as tuned (selected on validation), e.g. ["lr"]."""
    return _names(table, "tuned_axes")


def _groups(frame: pd.DataFrame, by: list[str]):
    """(key tuple, rows) for each distinct value of ``by``, in order of first appearance; missing
    values form their own group (an axis one family lacks is still a point)."""
    if not by:
        yield (), frame
        return
    for key, rows in frame.groupby(by, dropna=False, sort=False):
        yield (key if isinstance(key, tuple) else (key,)), rows


def _first(rows: pd.DataFrame, column: str) -> Any:
    if column not in rows:
        return None
    values = rows[column].dropna()
    return values.iloc[0] if len(values) else None


def candidates(
    table: pd.DataFrame, metric: str = "val/acc", tuned: Sequence[str] | None = None
) -> pd.DataFrame:
    """One row per (point, setting of the tuned axes): the validation ``metric`` averaged over
    the seeds that finished with a finite value (``<metric>_mean``, ``n_seeds``). This is what
    :func:`select_points` chooses from; it also shows how sensitive each point is to its tuning."""
    metric_col = _metric_column(table, metric)
    point_axes, tuned = _split_axes(table, tuned)
    rows = []
    for key, point in _groups(table, point_axes):
        for setting, runs in _settings(_finished(point, metric_col), tuned):
            rows.append({
                **dict(zip(point_axes, key)), **dict(zip(tuned, setting)),
                f"{metric_col}_mean": runs[metric_col].mean(), "n_seeds": len(runs),
            })
    return pd.DataFrame(rows)


def _metric_column(table: pd.DataFrame, metric: str) -> str:
    column = column_name(metric)
    if column not in table:
        known = [c for c in table.columns if c.startswith(("train_", "val_", "test_"))]
        raise ValueError(f"no metric {metric!r} (column {column!r}) in the sweep's runs; they log {known}")
    return column


def _split_axes(table: pd.DataFrame, tuned: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """(the axes that define a point, the tuned axes): every axis is one or the other, or the seed."""
    axes = axis_names(table)
    tuned = list(tuned) if tuned is not None else tuned_axes(table)
    missing = [t for t in tuned if t not in table]
    if missing:
        raise ValueError(f"tuned axes {missing} are not columns of the table")
    return [a for a in axes if a != SEED_AXIS and a not in tuned], tuned


def _finished(runs: pd.DataFrame, metric_col: str) -> pd.DataFrame:
    """The runs that count for selection: done, with a finite validation metric (a diverged run's
    NaN must never win, nor drag a mean to NaN)."""
    done = runs[runs["status"] == "done"]
    return done[np.isfinite(done[metric_col].to_numpy(dtype=float))]


def _settings(runs: pd.DataFrame, tuned: list[str]):
    """(tuned values, runs) for each setting of the tuned axes, lowest values first."""
    groups = list(_groups(runs, tuned))
    return sorted(groups, key=lambda item: [order_key(v) for v in item[0]])


def _choose(settings: list[tuple[tuple, pd.DataFrame]], metric_col: str, mode: str):
    """The best setting: first the one with the most seeds finished with a finite validation
    metric (a learning rate at which one seed diverged or failed must not win on its other
    seeds alone), then the best mean validation metric. Ties (means equal to within 1e-12) go
    to the first in ``settings``: the lowest tuned values, compared axis by axis in the order
    the tuned axes are listed (so the lower learning rate when only lr is tuned): a
    deterministic rule that does not look at the test metric."""
    best = None
    for setting, runs in settings:
        score = runs[metric_col].mean()
        if best is None or len(runs) > len(best[1]) or (len(runs) == len(best[1]) and _better(score, best[2], mode)):
            best = (setting, runs, score)
    return best


def _better(score: float, best: float, mode: str) -> bool:
    if abs(score - best) <= 1e-12:
        return False
    return score > best if mode == "max" else score < best


def seed_statistics(values: Iterable[float]) -> dict[str, float]:
    """n, mean, std (ddof=1), sem (std / sqrt(n)), min and max of the finite ``values``; the spread
    is NaN for a single seed, and everything but n is NaN for none."""
    x = pd.Series(list(values), dtype=float)
    x = x[np.isfinite(x)]
    # pandas' std and sem use ddof=1 and give NaN below two values, as every reduction does for none.
    stats = x.agg(["mean", "std", "sem", "min", "max"])
    return {"n": len(x), **{name: float(value) for name, value in stats.items()}}


def select_points(
    table: pd.DataFrame,
    metric: str = "val/acc",
    mode: str = "max",
    report: str = "test/acc",
    tuned: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per point of the sweep: its tuned axes chosen on validation, its test figure reported.

    A point is a setting of every axis except the seed and the tuned ones (``tuned``, default:
    the axes the runs list as tuned, e.g. ``["lr"]``). Within a point, each setting of the tuned
    axes is scored by ``metric`` (default "val/acc") averaged over its seeds that are done with a
    finite value; the best score by ``mode`` ("max", or "min" for a loss or bits per byte) wins,
    ties going to the lowest tuned values (the lower lr). Only the validation metric is looked
    at: the ``report`` metric (default "test/acc") of the chosen setting's seeds is what the row
    reports, as ``<report>_mean``, ``_std`` (ddof=1), ``_sem`` (std / sqrt(n)), ``_min`` and
    ``_max``, with ``n_seeds`` (NaN spread for one seed).

    Also in each row: the point's axes, the chosen tuned values (columns named after the tuned
    axes), family, mixers, d_model, seq_len, num_kv_pairs, vocab_size, params, state_size (and
    the target columns when present) of the chosen runs, ``<metric>_mean`` of the chosen
    setting, ``n_settings`` (settings with a score), and the point's ``n_runs``, ``n_failed``
    (status "failed"), ``n_diverged`` (done but with a non-finite ``metric``), ``n_pruned``
    (dropped by successive halving: only runs that are done are ever chosen from),
    ``n_pending`` (none of those: running, paused, interrupted), ``learning`` (whether the chosen
    seeds finished learning; ``learning_statuses``: each seed's status, comma-separated) and
    ``grid_edge`` (:func:`grid_edge`: a tuned value chosen at an end of the grid by runs that did
    not solve the task). A point where nothing finished is kept with NaN figures.
    """
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', not {mode!r}")
    metric_col, report_col = _metric_column(table, metric), _metric_column(table, report)
    point_axes, tuned = _split_axes(table, tuned)
    if table.empty:
        return pd.DataFrame()
    rows = [
        _point_row(point, dict(zip(point_axes, key)), tuned, metric_col, report_col, mode)
        for key, point in _groups(table, point_axes)
    ]
    points = pd.DataFrame(rows)
    if points.empty:
        return points
    order = [c for c in ("family", "seq_len", "num_kv_pairs", "d_model", "state_size", "params") if c in points]
    return points.sort_values(order, key=lambda column: column.map(order_key), kind="stable").reset_index(drop=True)


def _point_row(
    point: pd.DataFrame, axes: dict[str, Any], tuned: list[str], metric_col: str, report_col: str, mode: str
) -> dict[str, Any]:
    finished = _finished(point, metric_col)
    settings = list(_settings(finished, tuned))
    chosen = _choose(settings, metric_col, mode)
    setting, runs = (chosen[0], chosen[1]) if chosen else ((None,) * len(tuned), point)
    done = point["status"] == "done"
    stats = seed_statistics(runs[report_col] if chosen else [])
    descriptive = [*DESCRIPTIVE, *(c for c in TARGET if c in point)]
    row: dict[str, Any] = {**axes}
    row.update({c: _first(runs, c) for c in descriptive if c not in axes})
    row.update(dict(zip(tuned, setting)))
    row[f"{metric_col}_mean"] = chosen[2] if chosen else math.nan
    row.update({f"{report_col}_{k}": stats[k] for k in ("mean", "std", "sem", "min", "max")})
    row["n_seeds"] = stats["n"]
    row["n_settings"] = len(settings)
    row["n_runs"] = len(point)
    row["n_failed"] = int((point["status"] == "failed").sum())
    row["n_diverged"] = int(done.sum()) - len(finished)
    # Dropped by successive halving (hybrids.lab.sweeps.halving): never selected, as not done.
    row["n_pruned"] = int((point["status"] == "pruned").sum())
    row["n_pending"] = len(point) - int(done.sum()) - row["n_failed"] - row["n_pruned"]
    # Whether the chosen setting's seeds finished learning: a figure from runs still improving
    # says more about the budget than about the architecture.
    chosen_runs = runs if chosen else point.iloc[0:0]
    row["learning"] = summary(chosen_runs.get("learning", []), chosen_runs.get("solved_step", []))
    # One status per chosen seed, comma-separated (hybrids.lab.analysis.claims reads them).
    row["learning_statuses"] = ",".join(
        s if isinstance(s, str) else "unknown" for s in chosen_runs.get("learning", pd.Series([], dtype=object))
    )
    row["grid_edge"] = grid_edge(point, tuned, setting, chosen_runs.get("learning", [])) if chosen else ""
    return row


def grid_edge(point: pd.DataFrame, tuned: Sequence[str], setting: Sequence[Any], learning: Iterable[Any]) -> str:
    """Which tuned axes were chosen at an end of the values the point tried (every run counts,
    pruned ones too), e.g. ``"lr at the grid's top"``, when the chosen runs did not all solve the
    task: the best value may then lie outside the grid, and the grid should be widened before the
    row is compared. Axes with fewer than three values tried (weight decay's {0, 0.1}) are never
    flagged: every choice among two is an end. "" when nothing is flagged."""
    learning = list(learning)
    if learning and all(status == SOLVED for status in learning):
        return ""
    notes = []
    for axis, value in zip(tuned, setting):
        tried = sorted({v for v in point[axis].dropna()}, key=order_key) if axis in point else []
        if len(tried) < 3 or value is None:
            continue
        if value == tried[-1]:
            notes.append(f"{axis} at the grid's top")
        elif value == tried[0]:
            notes.append(f"{axis} at the grid's bottom")
    return "; ".join(notes)
