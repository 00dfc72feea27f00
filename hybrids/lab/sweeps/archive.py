"""Keep a sweep's records in the repository, so that a fresh checkout resumes it.

A sweep folder (``runs/sweeps/NAME``) is ignored by git: checkpoints are megabytes each. But
a sweep often outlives the machine it started on (a session's checkout is fresh each time), and
what it has learnt must not be lost with the checkpoints. ``save`` copies the records a sweep
decides and reports from into a small folder that can be committed (``results/runs/NAME``);
``restore`` copies them back into a fresh sweep folder, after which ``hybrids sweep`` skips every
run that was done or pruned, and successive halving keeps its decisions.

What is kept, per run folder: ``run.json`` (the plan), ``status.json`` (the outcome and
learning status), ``config.yaml`` (the resolved config), and each logger version's
``metrics.csv`` and ``hparams.yaml`` (the curves ``hybrids plot`` draws); at the sweep's top,
``sweep.yaml``, ``manifest.json`` and ``halving.json``. What is left out: checkpoints, the run's
lock and ``output.log``. A status saved while its run was running is archived as interrupted
(no process will ever finish it there).

What is restored: the sweep's files, and the whole record of each run that ended done or pruned.
A run that was paused at a halving rung, interrupted or failed has no checkpoint to resume from,
so only its plan is restored and it trains again from its first step, as a run never started
would (its archived curve would otherwise mix with the new one); a decision already recorded at
a rung stands.

Neither side overwrites newer records with older ones: ``restore`` leaves alone a run the sweep
folder already has a status for (and any file already there), and ``save`` never replaces an
archived run's status with none, nor deletes a run the sweep file still lists.

    python -m hybrids.lab.sweeps.archive save runs/sweeps/mqar_tuned_cpu results/runs/mqar_tuned_cpu
    python -m hybrids.lab.sweeps.archive restore results/runs/mqar_tuned_cpu runs/sweeps/mqar_tuned_cpu
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

RUN_FILES = ("run.json", "status.json", "config.yaml")
VERSION_FILES = ("metrics.csv", "hparams.yaml")
# hybrids.lab.sweeps.halving.DECISIONS_FILE (a test checks they agree; importing it here would
# load torch and Lightning for a file name).
SWEEP_FILES = ("sweep.yaml", "manifest.json", "halving.json")
# A run with one of these outcomes is over: its record is restored whole.
ENDED = ("done", "pruned")


def run_records(run: Path) -> Iterator[Path]:
    """The files of one run folder worth keeping (absolute paths)."""
    for name in RUN_FILES:
        if (run / name).is_file():
            yield run / name
    for version in sorted(run.glob("logs/version_*")):
        for name in VERSION_FILES:
            if (version / name).is_file():
                yield version / name


def records(sweep_dir: Path) -> Iterator[Path]:
    """The files of a sweep folder worth keeping, relative to it (see the module's docstring)."""
    for name in SWEEP_FILES:
        if (sweep_dir / name).is_file():
            yield Path(name)
    for plan in sorted(sweep_dir.glob("*/run.json")):
        for path in run_records(plan.parent):
            yield path.relative_to(sweep_dir)


def _read_json(path: Path) -> dict | None:
    # hybrids.lab.sweeps.execute.read_json, without importing the runner (pandas, Lightning).
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _listed_runs(sweep_dir: Path) -> set[str] | None:
    manifest = _read_json(sweep_dir / "manifest.json")
    runs = manifest.get("runs") if manifest else None
    return set(runs) if isinstance(runs, list) else None


def save(sweep_dir: str | Path, archive_dir: str | Path) -> int:
    """Copy the records of ``sweep_dir`` into ``archive_dir``; how many files were copied.

    The archive mirrors the sweep folder, with two exceptions that keep newer records: a run the
    archive has a status for and the sweep folder has none keeps its archived record, and an
    archived run that the sweep folder lacks is deleted only if the sweep's manifest no longer
    lists it (a run taken out of the sweep file)."""
    sweep_dir, archive_dir = Path(sweep_dir), Path(archive_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"no sweep folder at {sweep_dir}")
    kept = set(records(sweep_dir))
    # Runs the archive has an outcome for and the sweep folder has none (restored as a plan
    # only, or not run here yet): their archived record stays until the sweep folder has its own.
    keep_archived = set()
    for archived in archive_dir.glob("*/status.json") if archive_dir.is_dir() else ():
        if not (sweep_dir / archived.parent.name / "status.json").is_file():
            keep_archived.add(archived.parent.name)
    copied = 0
    for relative in kept:
        if relative.parts[0] in keep_archived:
            continue
        target = archive_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        status = _read_json(sweep_dir / relative) if relative.name == "status.json" else None
        if status is not None and status.get("status") == "running":
            # Saved mid-run: in the archive no process will ever finish it.
            status = {**status, "status": "interrupted", "note": "saved to the archive while it was running"}
            target.write_text(json.dumps(status, indent=1, default=str))
        else:
            shutil.copy2(sweep_dir / relative, target)
        copied += 1
    if archive_dir.is_dir():
        listed = _listed_runs(sweep_dir)
        for stale in [p for p in archive_dir.rglob("*") if p.is_file()]:
            relative = stale.relative_to(archive_dir)
            run = relative.parts[0] if len(relative.parts) > 1 else None
            if relative in kept:
                continue
            if run is not None:
                here = (sweep_dir / run).is_dir()
                if not here and listed is not None and run not in listed:
                    stale.unlink()  # taken out of the sweep file
                    continue
                if run in keep_archived or not here:
                    continue  # newer than what the sweep folder has of it, or not here at all
            stale.unlink()
        for folder in sorted((p for p in archive_dir.rglob("*") if p.is_dir()), reverse=True):
            if not any(folder.iterdir()):
                folder.rmdir()
    return copied


def restore(archive_dir: str | Path, sweep_dir: str | Path) -> int:
    """Copy an archive's records into ``sweep_dir`` (see the module's docstring); how many
    files were copied."""
    archive_dir, sweep_dir = Path(archive_dir), Path(sweep_dir)
    if not archive_dir.is_dir():
        raise FileNotFoundError(f"no archive at {archive_dir}")
    copied = 0

    def copy(source: Path, target: Path) -> None:
        nonlocal copied
        if target.exists():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        copied += 1

    for name in SWEEP_FILES:
        if (archive_dir / name).is_file():
            copy(archive_dir / name, sweep_dir / name)
    for plan in sorted(archive_dir.glob("*/run.json")):
        run = plan.parent
        local = sweep_dir / run.name
        if (local / "status.json").exists():
            continue  # the sweep folder has its own record of this run
        status = _read_json(run / "status.json")
        ended = status is not None and status.get("status") in ENDED
        for path in run_records(run) if ended else [p for p in (run / "run.json", run / "config.yaml") if p.is_file()]:
            copy(path, local / path.relative_to(run))
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
