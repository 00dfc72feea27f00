"""Sweeps: one YAML file expands into many training runs, run locally or on Ray, resumable.

``hybrids sweep FILE`` (:mod:`hybrids.cli.sweep`) reads a sweep file
(:mod:`hybrids.lab.sweeps.spec`), expands its grid into runs with readable names
(:mod:`hybrids.lab.sweeps.naming`), solves widths for matched sizes where asked
(:mod:`hybrids.lab.sweeps.matching`, measuring built models with :mod:`hybrids.lab.sweeps.measure`),
writes one folder per run, and executes each run as a ``hybrids fit`` subprocess
(:mod:`hybrids.lab.sweeps.execute`) with a local pool (:mod:`hybrids.lab.sweeps.local`) or Ray tasks
(:mod:`hybrids.lab.sweeps.ray_launcher`). :mod:`hybrids.lab.analysis` reads what the runs leave behind;
:mod:`hybrids.lab.sweeps.archive` keeps those records in the repository across machines.
"""

from hybrids.lab.sweeps.spec import RunPlan, SweepError, SweepSpec, expand, load_sweep

__all__ = ["RunPlan", "SweepError", "SweepSpec", "expand", "load_sweep"]
