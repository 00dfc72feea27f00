"""Analysis of finished runs: single runs from their CSV logs, and sweeps from their status files.

- :mod:`hybrids.lab.analysis.runs`: runs read from the CLI's CSV logs (``load_runs``), state size vs
  accuracy of single runs.
- :mod:`hybrids.lab.analysis.sweeps`: a sweep's runs as a pandas table (``sweep_table``) and the
  tuned axes of each point selected on validation with test figures reported (``select_points``).
- :mod:`hybrids.lab.analysis.plots`: accuracy vs width and vs state size (with Pareto frontiers).
- :mod:`hybrids.lab.analysis.lengths`: accuracy vs evaluation length (``test/acc@L``, induction heads),
  from sweeps (``accuracy_by_length``) or single runs (``run_lengths``).
- :mod:`hybrids.lab.analysis.claims`: published orderings checked against selected points
  (reproduced, not reproduced, undecided, not testable, not run); the claims themselves in
  :mod:`hybrids.lab.analysis.published`.
- :mod:`hybrids.cli.plot`: ``hybrids plot SWEEP_DIR``, writing the tables and figures.

pandas and matplotlib load with this package, never with ``import hybrids``.
"""

from hybrids.lab.analysis.lengths import accuracy_by_length, length_columns, plot_accuracy_vs_length, run_lengths
from hybrids.lab.analysis.plots import pareto_frontier, plot_accuracy_vs_state_size, plot_accuracy_vs_width
from hybrids.lab.analysis.runs import Run, load_run, load_runs, mixer_family, plot_state_size_vs_accuracy, runs_table
from hybrids.lab.analysis.sweeps import (
    axis_names,
    candidates,
    column_name,
    read_status,
    seed_statistics,
    select_points,
    sweep_table,
    sweep_tables,
    tuned_axes,
)
from hybrids.lab.analysis.tables import points_markdown, points_text

__all__ = [
    "Run",
    "accuracy_by_length",
    "axis_names",
    "candidates",
    "column_name",
    "load_run",
    "length_columns",
    "load_runs",
    "mixer_family",
    "pareto_frontier",
    "plot_accuracy_vs_length",
    "plot_accuracy_vs_state_size",
    "plot_accuracy_vs_width",
    "plot_state_size_vs_accuracy",
    "points_markdown",
    "points_text",
    "read_status",
    "run_lengths",
    "runs_table",
    "seed_statistics",
    "select_points",
    "sweep_table",
    "sweep_tables",
    "tuned_axes",
]
