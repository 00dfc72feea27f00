"""``hybrids plot SWEEP_DIR [SWEEP_DIR ...]``: a sweep's tables and figures as files, no Jupyter
needed. Several folders (sweeps run on the same terms, e.g. ``mqar_cpu`` and ``mqar_cpu_linear``)
are read as one table, so that all their families share the figures.

Writes into ``--out`` (default ``SWEEP_DIR/plots``; required with several folders): ``runs.csv``
(one row per run), ``points.csv`` (one row per selected point) and ``points.md`` (the same as
Markdown), ``accuracy_vs_width.png/.pdf``, ``accuracy_vs_state_size.png/.pdf`` and
``learning_curves.png/.pdf``, with ``--claims NAME`` the verdicts on a set of published
orderings (``claims.md``, :mod:`hybrids.lab.analysis.claims`), and prints the points table.

Exit status 0, or 2 with one ``error: <folder or option>: ...`` line and nothing written when there
is nothing to plot: a folder that is missing, a file or holds no runs, or runs none of which
finished (all failed, say), which would give empty figures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hybrids.cli.keyed_argparse import KeyedArgumentParser, text

# The claim sets of hybrids.lab.analysis.published, named here so that --help answers without
# loading pandas.
CLAIM_SETS = ("induction", "mad", "mqar", "selective_copying")


def _folder(value: str) -> Path:
    return Path(text("a folder", any_bytes=True)(value))


def _parser() -> argparse.ArgumentParser:
    parser = KeyedArgumentParser(
        prog="hybrids plot",
        description="Tables and figures of a sweep: tuned axes selected on validation, test figures reported.",
    )
    parser.add_argument("sweep_dirs", type=_folder, nargs="+", metavar="SWEEP_DIR",
                        help="a sweep's folder (one sub-folder with a status.json per run); several are read as one")
    parser.add_argument("--out", type=_folder, default=None,
                        help="where to write (default: SWEEP_DIR/plots; required with several folders)")
    parser.add_argument("--metric", type=text("a metric, e.g. val/acc"), default="val/acc",
                        help="validation metric that selects the tuned axes")
    parser.add_argument("--mode", choices=("max", "min"), default="max", help="whether --metric is maximised")
    parser.add_argument("--report", type=text("a metric, e.g. test/acc"), default="test/acc",
                        help="metric reported for the selected setting")
    parser.add_argument("--tuned", type=text("an axis name, e.g. lr"), nargs="*", default=None,
                        help="tuned axes (default: those the runs list as tuned, e.g. lr)")
    parser.add_argument("--claims", choices=sorted(CLAIM_SETS), default=None,
                        help="check a set of published orderings against the selected points "
                             "(hybrids.lab.analysis.published) and write claims.md")
    return parser


# Files a sweep writes, and how far below the sweep's folder each lies (its own, or a run's): one
# given in place of the folder most likely meant that folder, which the error names.
_FILES_OF_A_SWEEP = {"manifest.json": 0, "sweep.yaml": 0, "status.json": 1, "run.json": 1, "config.yaml": 1}


def folder_problem(path: Path) -> str | None:
    """Why ``path`` is not a folder to read runs from (missing, a file), or None."""
    if path.is_dir():
        return None
    if not path.exists():
        return "no such folder; give a sweep's folder (hybrids sweep writes runs/sweeps/<name>)"
    if path.name in _FILES_OF_A_SWEEP:
        folder = path.parent if _FILES_OF_A_SWEEP[path.name] == 0 else path.parent.parent
        return f"a file, not a folder; the sweep's folder would be {folder}"
    hint = ""
    if path.suffix in (".yaml", ".yml"):
        hint = " (a sweep file? its runs are in runs/sweeps/<name>, or where --out put them)"
    return f"a file, not a folder; give a sweep's folder{hint}"


def _status_counts(statuses) -> str:
    """"3 failed, 1 interrupted": each status and how many runs have it, most common first."""
    counts: dict[str, int] = {}
    for status in statuses:
        key = str(status) if isinstance(status, str) else "no status"
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{n} {key}" for key, n in sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def _error(key: str, message: str) -> int:
    print(f"error: {key}: {message}", file=sys.stderr)
    return 2


def plot_main(argv: list[str]) -> int:
    """Run ``hybrids plot`` with ``argv`` (the arguments after "plot"); returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if len(args.sweep_dirs) > 1 and args.out is None:
        parser.error("out: required with several sweep folders (where the plots of all of them go)")
    # pandas and matplotlib load here, so that a typo in the arguments answers at once.
    import math

    import pandas as pd
    from matplotlib.figure import Figure

    from hybrids.lab.analysis.curves import plot_learning_curves
    from hybrids.lab.analysis.lengths import accuracy_by_length, length_columns, plot_accuracy_vs_length
    from hybrids.lab.analysis.plots import plot_accuracy_vs_state_size, plot_accuracy_vs_width
    from hybrids.lab.analysis.sweeps import axis_names, column_name, select_points, sweep_table, tuned_axes
    from hybrids.lab.analysis.tables import points_markdown, points_text

    for folder in args.sweep_dirs:
        problem = folder_problem(folder)
        if problem:
            return _error(str(folder), problem)
    # Each folder on its own: one with no runs among several is a wrong path, not an empty part.
    tables = []
    for folder in args.sweep_dirs:
        table = sweep_table(folder)
        if table.empty:
            found = len(list(folder.glob("*/status.json")))
            return _error(str(folder), f"none of its {found} <run>/status.json is a readable run of the sweep (see the "
                          "warnings above)" if found else "no runs in it (no <run>/status.json); is it a sweep's "
                          "folder? hybrids sweep FILE writes runs/sweeps/<name>")
        tables.append(table)
    table = pd.concat(tables, ignore_index=True) if len(tables) > 1 else tables[0]
    where = ", ".join(map(str, args.sweep_dirs))
    known = [c for c in table.columns if c.startswith(("train_", "val_", "test_"))]
    for flag, metric in (("metric", args.metric), ("report", args.report)):
        if column_name(metric) not in table:
            return _error(flag, f"no metric {metric!r} in the runs of {where}; they log "
                          f"{', '.join(k.replace('_', '/', 1) for k in known)}")
    missing = [t for t in args.tuned or [] if t not in axis_names(table)]
    if missing:
        return _error("tuned", f"{', '.join(missing)}: not an axis of the runs of {where}; their axes are "
                      f"{', '.join(a for a in axis_names(table) if a != 'seed')}")
    # Figures from runs that finished with a finite --metric, or none: empty figures and a
    # table of dashes would pass for a result.
    done = table["status"] == "done"
    finite = done & pd.to_numeric(table[column_name(args.metric)], errors="coerce").map(math.isfinite)
    if not finite.any():
        statuses = ["done without a finite " + args.metric if d else s for d, s in zip(done, table["status"])]
        return _error(where, f"no finished run among {len(table)} ({_status_counts(statuses)}); nothing to plot: "
                      "see each run's status.json and output.log, or run the sweep (again) to finish them")
    try:
        points = select_points(table, metric=args.metric, mode=args.mode, report=args.report, tuned=args.tuned)
    except ValueError as err:  # the runs' own axis lists disagree with their columns (hand-edited files)
        return _error(where, str(err))
    # Induction runs tested at several lengths: accuracy against length, the lr chosen on
    # --metric as for every other figure.
    by_length = None
    if length_columns(table.columns):
        by_length = accuracy_by_length(table, metric=args.metric, mode=args.mode, tuned=args.tuned)
    checked = None
    if args.claims:  # checked before anything is written: a claim that cannot choose its rows is an error
        from hybrids.lab.analysis.claims import Results, check, claims_markdown
        from hybrids.lab.analysis.published import CLAIMS

        try:
            checked = check(CLAIMS[args.claims], Results(points, column_name(args.report), by_length))
        except ValueError as err:  # a claim's family has several rows here (another task, say)
            return _error("claims", f"{args.claims}: {err}")
    out = args.out if args.out is not None else args.sweep_dirs[0] / "plots"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a file in the way, a read-only folder
        why = "a file is in the way" if out.exists() and not out.is_dir() else err.strerror or str(err)
        return _error("out" if args.out is not None else str(out), f"cannot write the plots to {out}: {why}")
    table.to_csv(out / "runs.csv", index=False)
    points.to_csv(out / "points.csv", index=False)
    # The frontier's direction follows the reported metric (a loss or bits per byte: lower is
    # better), not --mode: selecting on val/loss while reporting test/acc keeps accuracy's.
    lower_is_better = any(word in column_name(args.report) for word in ("loss", "bpb", "ppl", "perplexity"))
    figures = {
        "accuracy_vs_width": plot_accuracy_vs_width(points, report=args.report, fig=Figure()),
        "accuracy_vs_state_size": plot_accuracy_vs_state_size(
            points, report=args.report, fig=Figure(), higher_is_better=not lower_is_better
        ),
    }
    # The chosen settings' validation curves, each seed a line: solved, plateaued or still
    # climbing, as the table's learning column says in words.
    figures["learning_curves"] = plot_learning_curves(table, points, fig=Figure())
    extra = []
    if by_length is not None:
        by_length.to_csv(out / "lengths.csv", index=False)
        fig = Figure()
        plot_accuracy_vs_length(by_length, ax=fig.add_subplot())
        figures["accuracy_vs_length"] = fig
        extra.append("lengths.csv")
    for name, fig in figures.items():
        fig.set_size_inches(4.0 * len(fig.axes) + 1.5, 3.4)
        fig.tight_layout()
        for suffix in ("png", "pdf"):
            fig.savefig(out / f"{name}.{suffix}", dpi=150)
    tuned = args.tuned if args.tuned is not None else tuned_axes(table)
    (out / "points.md").write_text(points_markdown(points, report=args.report, tuned=tuned) + "\n")
    print(points_text(points, report=args.report, tuned=tuned))
    from hybrids.lab.analysis.mad_score import mad_markdown, mad_scores, mad_tasks_in

    if mad_tasks_in(points):  # a MAD sweep: the score per family and task
        scores = mad_scores(points, report=args.report)
        scores.to_csv(out / "mad_scores.csv", index=False)
        (out / "mad_scores.md").write_text(mad_markdown(scores) + "\n")
        print("\nMAD scores (mean over each task's settings of " + args.report + "):")
        print(mad_markdown(scores).split("\n\n")[0])
        extra += ["mad_scores.csv", "mad_scores.md"]
    if checked is not None:
        (out / "claims.md").write_text(claims_markdown(checked) + "\n")
        print(f"\npublished orderings ({args.claims}):")
        for claim, verdict in checked:
            print(f"  {verdict.outcome:>14}  {claim.source}: {claim.statement}")
        extra.append("claims.md")
    written = ", ".join([*(f"{n}.png/.pdf" for n in figures), "runs.csv", "points.csv", *extra])
    print(f"\nwrote {written} and points.md to {out}")
    return 0

