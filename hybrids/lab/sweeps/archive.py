"""Keep a sweep's records in the repository, so that a fresh checkout resumes it.

A sweep folder (``runs/sweeps/NAME``) is ignored by git: checkpoints are megabytes each. But
a sweep often outlives the machine it started on (a session's checkout is fresh each time), and
what it has learnt must not be lost with the checkpoints. ``save`` copies the records a sweep
decides and reports from into a small folder that can be committed (``results/runs/NAME``);
``restore`` copies them back into an empty or partial sweep folder, after which ``hybrids sweep``
skips every run that was done, pruned or failed, and successive halving keeps its decisions.

What is kept, per run folder: ``run.json`` (the plan), ``status.json`` (the outcome and
learning status), ``config.yaml`` (the resolved config), and each logger version's
``metrics.csv`` and ``hparams.yaml`` (the curves ``hybrids plot`` draws); at the sweep's top,
``sweep.yaml``, ``manifest.json`` and ``halving.json``. What is left out: checkpoints, the run's
lock and ``output.log``. A run that was paused at a halving rung or interrupted has no
checkpoint after a restore, so it trains again from step 0 into a new logger version (whose
steps replace the old version's in its curve, :func:`hybrids.lab.metrics_log.run_curve`); a
decision already recorded at a rung stands.

``restore`` never overwrites a file that is there: the sweep folder on disk is at least as new as
the archive it was saved to.

    python -m hybrids.lab.sweeps.archive save runs/sweeps/mqar_tuned_cpu results/runs/mqar_tuned_cpu
    python -m hybrids.lab.sweeps.archive restore results/runs/mqar_tuned_cpu runs/sweeps/mqar_tuned_cpu
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

from hybrids.lab.sweeps.halving import DECISIONS_FILE

RUN_FILES = ("run.json", "status.json", "config.yaml")
VERSION_FILES = ("metrics.csv", "hparams.yaml")
SWEEP_FILES = ("sweep.yaml", "manifest.json", DECISIONS_FILE)


def records(sweep_dir: Path) -> Iterator[Path]:
    """The files of a sweep folder worth keeping, relative to it (see the module's docstring)."""
    for name in SWEEP_FILES:
        if (sweep_dir / name).is_file():
            yield Path(name)
    for plan in sorted(sweep_dir.glob("*/run.json")):
        run = plan.parent
        for name in RUN_FILES:
            if (run / name).is_file():
                yield (run / name).relative_to(sweep_dir)
        for version in sorted(run.glob("logs/version_*")):
            for name in VERSION_FILES:
                if (version / name).is_file():
                    yield (version / name).relative_to(sweep_dir)


def save(sweep_dir: str | Path, archive_dir: str | Path) -> int:
    """Copy the records of ``sweep_dir`` into ``archive_dir`` (replacing older copies there);
    how many files were copied. Records the archive holds that the sweep folder no longer has
    (a run deleted from the sweep) are removed, so the archive mirrors the sweep."""
    sweep_dir, archive_dir = Path(sweep_dir), Path(archive_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"no sweep folder at {sweep_dir}")
    kept = set(records(sweep_dir))
    for relative in kept:
        target = archive_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(sweep_dir / relative, target)
    if archive_dir.is_dir():
        for stale in [p for p in archive_dir.rglob("*") if p.is_file() and p.relative_to(archive_dir) not in kept]:
            stale.unlink()
        for folder in sorted((p for p in archive_dir.rglob("*") if p.is_dir()), reverse=True):
            if not any(folder.iterdir()):
                folder.rmdir()
    return len(kept)


def restore(archive_dir: str | Path, sweep_dir: str | Path) -> int:
    """Copy an archive's records into ``sweep_dir`` where no file of that name is there yet;
    how many files were copied."""
    archive_dir, sweep_dir = Path(archive_dir), Path(sweep_dir)
    if not archive_dir.is_dir():
        raise FileNotFoundError(f"no archive at {archive_dir}")
    copied = 0
    for relative in records(archive_dir):
        target = sweep_dir / relative
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(archive_dir / relative, target)
        copied += 1
    return copied


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hybrids.lab.sweeps.archive", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("save", "restore"))
    parser.add_argument("source", type=Path, help="save: the sweep folder; restore: the archive")
    parser.add_argument("destination", type=Path, help="save: the archive; restore: the sweep folder")
    args = parser.parse_args(argv)
    try:
        count = (save if args.action == "save" else restore)(args.source, args.destination)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.action}: {count} file(s) {args.source} -> {args.destination}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
