"""Sweeps: one YAML file expands into many training runs, run locally or on Ray, resumable.

``hybrids sweep FILE`` (:mod:`hybrids.sweeps.command`) reads a sweep file
(:mod:`hybrids.sweeps.spec`), expands its grid into runs with readable names
(:mod:`hybrids.sweeps.naming`), solves widths for matched sizes where asked
(:mod:`hybrids.sweeps.matching`, measuring built models with :mod:`hybrids.sweeps.measure`),
writes one folder per run, and executes each run as a ``hybrids fit`` subprocess
(:mod:`hybrids.sweeps.execute`) with a local pool (:mod:`hybrids.sweeps.local`) or Ray tasks
(:mod:`hybrids.sweeps.ray_launcher`). :mod:`hybrids.analysis` reads what the runs leave behind.
"""

from hybrids.sweeps.spec import RunPlan, SweepError, SweepSpec, expand, load_sweep

__all__ = ["RunPlan", "SweepError", "SweepSpec", "expand", "load_sweep"]
