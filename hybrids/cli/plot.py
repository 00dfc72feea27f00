"""``hybrids plot SWEEP_DIR [SWEEP_DIR ...]``: a sweep's tables and figures as files, no Jupyter
needed. Several folders (sweeps run on the same terms, e.g. ``mqar_cpu`` and ``mqar_cpu_linear``)
are read as one table, so that all their families share the figures.

Writes into ``--out`` (default ``SWEEP_DIR/plots``; required with several folders): ``runs.csv`` (one row per run),
``points.csv`` (one row per selected point) and ``points.md`` (the same as Markdown),
``accuracy_vs_width.png/.pdf`` and
``accuracy_vs_state_size.png/.pdf``, and prints the points table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hybrids plot",
        description="Tables and figures of a sweep: tuned axes selected on validation, test figures reported.",
    )
    parser.add_argument("sweep_dirs", type=Path, nargs="+", metavar="SWEEP_DIR",
                        help="a sweep's folder (one sub-folder with a status.json per run); several are read as one")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write (default: SWEEP_DIR/plots; required with several folders)")
    parser.add_argument("--metric", default="val/acc", help="validation metric that selects the tuned axes")
    parser.add_argument("--mode", choices=("max", "min"), default="max", help="whether --metric is maximised")
    parser.add_argument("--report", default="test/acc", help="metric reported for the selected setting")
    parser.add_argument("--tuned", nargs="*", default=None,
                        help="tuned axes (default: those the runs list as tuned, e.g. lr)")
    return parser


def plot_main(argv: list[str]) -> int:
    """Run ``hybrids plot`` with ``argv`` (the arguments after "plot"); returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if len(args.sweep_dirs) > 1 and args.out is None:
        parser.error("--out is required with several sweep folders")
    # pandas and matplotlib load here, so that a typo in the arguments answers at once.
    from matplotlib.figure import Figure

    from hybrids.lab.analysis.lengths import accuracy_by_length, length_columns, plot_accuracy_vs_length
    from hybrids.lab.analysis.plots import plot_accuracy_vs_state_size, plot_accuracy_vs_width
    from hybrids.lab.analysis.sweeps import column_name, select_points, sweep_tables, tuned_axes
    from hybrids.lab.analysis.tables import points_markdown, points_text

    missing = [str(d) for d in args.sweep_dirs if not d.is_dir()]
    if missing:
        print(f"hybrids plot: no folder {', '.join(missing)}", file=sys.stderr)
        return 2
    table = sweep_tables(args.sweep_dirs)
    if table.empty:
        print(f"hybrids plot: no runs (*/status.json) in {', '.join(map(str, args.sweep_dirs))}", file=sys.stderr)
        return 1
    try:
        points = select_points(table, metric=args.metric, mode=args.mode, report=args.report, tuned=args.tuned)
    except ValueError as err:
        print(f"hybrids plot: {err}", file=sys.stderr)
        return 2
    out = args.out if args.out is not None else args.sweep_dirs[0] / "plots"
    out.mkdir(parents=True, exist_ok=True)
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
    extra = []
    if length_columns(table.columns):
        # Induction runs tested at several lengths: accuracy against length, the lr chosen on
        # --metric as for every other figure.
        by_length = accuracy_by_length(table, metric=args.metric, mode=args.mode, tuned=args.tuned)
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
    written = ", ".join([*(f"{n}.png/.pdf" for n in figures), "runs.csv", "points.csv", *extra])
    print(f"\nwrote {written} and points.md to {out}")
    return 0

