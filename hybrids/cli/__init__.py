"""The ``hybrids`` command (and ``python -m hybrids``): one router over the subcommands.

    hybrids fit | validate | test | predict ...    train and evaluate (LightningCLI, :mod:`.fit`)
    hybrids generate ...                           continue a prompt from a checkpoint (:mod:`.generate`)
    hybrids sweep FILE ...                         run a sweep of many runs (:mod:`.sweep`)
    hybrids plot FOLDER ...                        tables and figures of runs and sweeps (:mod:`.plot`)
    hybrids convert --from_hf DIR --out OUT        a Hugging Face checkpoint as a config and weights (:mod:`.convert`)

Each subcommand's module is imported only when it runs, so ``hybrids sweep`` and ``hybrids plot``
do not load Lightning.
"""

from __future__ import annotations

import sys

COMMANDS = {
    "fit": "train a stack (LightningCLI: -c CONFIG, --model.*, --data.*, --trainer.*)",
    "validate": "evaluate a checkpoint on the validation set",
    "test": "evaluate a checkpoint on the test set (and its extra lengths)",
    "predict": "write a checkpoint's greedy predictions",
    "generate": "continue a prompt from a checkpoint, timing prefill and decode",
    "sweep": "train a sweep file's runs on equal terms (resumable)",
    "plot": "tables and figures of a folder of runs or sweeps",
    "convert": "a Hugging Face checkpoint folder as a config and weights the CLI loads",
}

USAGE = """usage: hybrids COMMAND [ARGS]    (hybrids COMMAND --help for a command's arguments)

commands:
{commands}

e.g.  hybrids fit -c configs/transformer.yaml
      hybrids test -c configs/transformer.yaml --ckpt_path last
      hybrids sweep configs/sweeps/mqar_cpu.yaml
"""


def usage() -> str:
    return USAGE.format(commands="\n".join(f"  {name:<9} {what}" for name, what in COMMANDS.items()))


def main() -> None:
    """Entry point of the ``hybrids`` console script and of ``python -m hybrids``."""
    command = sys.argv[1:2]
    if command in ([], ["-h"], ["--help"]):
        # Answered here, without loading torch or Lightning.
        print(usage(), end="")
        sys.exit(0 if command else 2)
    if command[0].startswith("-") and command[0] not in ("--version",):
        print(usage(), end="", file=sys.stderr)
        print(f"hybrids: error: the first argument is the command ({', '.join(COMMANDS)}), got {command[0]}", file=sys.stderr)
        sys.exit(2)
    if command == ["--version"]:
        from hybrids import __version__

        print(f"hybrids {__version__}")
        return
    if command[0] not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(command[0], list(COMMANDS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        print(usage(), end="", file=sys.stderr)
        print(f"hybrids: error: unknown command {command[0]!r}{hint}", file=sys.stderr)
        sys.exit(2)
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
    if command == ["convert"]:
        from hybrids.cli.convert import convert_main

        sys.exit(convert_main(sys.argv[2:]))
    from hybrids.cli.fit import fit_main

    fit_main()
