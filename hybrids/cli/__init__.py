"""The ``hybrids`` command (and ``python -m hybrids``): one router over the subcommands.

    hybrids fit | validate | test | predict ...    train and evaluate (LightningCLI, :mod:`.fit`)
    hybrids generate ...                           continue a prompt from a checkpoint (:mod:`.generate`)
    hybrids sweep FILE ...                         run a sweep of many runs (:mod:`.sweep`)
    hybrids plot FOLDER ...                        tables and figures of runs and sweeps (:mod:`.plot`)

Each subcommand's module is imported only when it runs, so ``hybrids sweep`` and ``hybrids plot``
do not load Lightning.
"""

from __future__ import annotations

import sys


def main() -> None:
    """Entry point of the ``hybrids`` console script and of ``python -m hybrids``."""
    command = sys.argv[1:2]
    if command == ["generate"]:
        from hybrids.cli.generate import generate_main

        generate_main(sys.argv[2:])
        return
    if command == ["sweep"]:
        from hybrids.cli.sweep import sweep_main

        sys.exit(sweep_main(sys.argv[2:]))
    if command == ["plot"]:
        from hybrids.cli.plot import plot_main

        sys.exit(plot_main(sys.argv[2:]))
    from hybrids.cli.fit import fit_main

    fit_main()
