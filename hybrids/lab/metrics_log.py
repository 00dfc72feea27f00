"""The one reader of a run's metrics log: Lightning's CSVLogger files, ``<logs>/version_N/metrics.csv``.

Lightning writes one row per logging call and one column per metric ever logged, so a row is
sparse: the cells of the metrics that call did not log are empty. A figure's value is therefore
the last *filled* cell of its column, not the last row. A cell holding ``nan`` is filled (a
diverged loss was logged as NaN) and wins over an earlier finite value: a run must not look
healthier than its log says. A run resumed from its checkpoint logs into a new ``version_N``, so
the figures of a run's whole ``logs`` folder take each metric from the newest version that
logged it.

Used by the sweep runner (:mod:`hybrids.lab.sweeps.execute`, ``status.json``) and the analysis
(:mod:`hybrids.lab.analysis`); it sits beside both so that neither imports the other for it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

METRICS_FILE = "metrics.csv"
# Lightning's bookkeeping columns: counters, not figures of the run.
COUNTERS = ("epoch", "step")


def versions(logs: str | Path) -> list[Path]:
    """The ``version_N`` folders of a logger's folder, newest (highest N) first."""
    found = [p for p in Path(logs).glob("version_*") if p.is_dir() and p.name[8:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[8:]), reverse=True)


def newest_version(logs: str | Path) -> str | None:
    """The newest version folder, relative to the folder that holds ``logs`` (``logs/version_2``)."""
    found = versions(logs)
    return str(found[0].relative_to(Path(logs).parent)) if found else None


def _cells(version: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(values, filled) of one version's log: the cells as floats (NaN for an empty cell, a
    logged NaN and text alike) and which cells hold a number, NaN included. Both empty when the
    file is missing, empty, or holds only its header."""
    try:
        # As text first: pandas would read an empty cell and a logged "nan" as the same NaN.
        text = pd.read_csv(Path(version) / METRICS_FILE, dtype=str, keep_default_na=False)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return pd.DataFrame(), pd.DataFrame()
    values = text.apply(pd.to_numeric, errors="coerce").astype(float)
    logged_nan = text.apply(lambda column: column.str.strip().str.lower().isin(("nan", "+nan", "-nan"))).astype(bool)
    return values, values.notna() | logged_nan


def read_log(version: str | Path) -> pd.DataFrame:
    """One version's log as a table of floats, a row per logging call and a column per metric
    (``epoch`` and ``step`` included), NaN where that call did not log the metric; empty for a
    missing or empty file. For curves; figures come from :func:`last_values`."""
    return _cells(Path(version))[0]


def last_values(version: str | Path) -> dict[str, float]:
    """The last logged value of every metric of one ``version_N`` folder (``epoch`` and ``step``
    left out); {} for a missing or empty log."""
    values, filled = _cells(Path(version))
    last: dict[str, float] = {}
    for column in values.columns:
        if column in COUNTERS:
            continue
        logged = values[column][filled[column]]
        if len(logged):
            last[str(column)] = float(logged.iloc[-1])
    return last


def run_values(logs: str | Path) -> dict[str, float]:
    """The last logged value of every metric of a run's ``logs`` folder, over all its versions:
    a resumed run continues in a newer version, and what that did not log again comes from the
    versions before it."""
    merged: dict[str, float] = {}
    for version in reversed(versions(logs)):  # oldest first, so that newer values overwrite
        merged.update(last_values(version))
    return merged


def run_curve(logs: str | Path, metric: str) -> list[tuple[int, float]]:
    """(step, value) of every logged ``metric`` of a run's ``logs`` folder, over all its versions,
    by step (a step logged again by a resumed version takes the newer value); a logged NaN stays."""
    by_step: dict[int, float] = {}
    for version in reversed(versions(logs)):  # oldest first, so that newer values overwrite
        values, filled = _cells(version)
        if metric not in values or "step" not in values:
            continue
        rows = filled[metric] & values["step"].notna()
        for step, value in zip(values["step"][rows], values[metric][rows]):
            by_step[int(step)] = float(value)
    return sorted(by_step.items())


__all__ = ["COUNTERS", "METRICS_FILE", "last_values", "newest_version", "read_log", "run_curve", "run_values", "versions"]
