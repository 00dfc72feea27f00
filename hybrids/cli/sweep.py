"""``hybrids sweep FILE``: expand a sweep, show or run it, and summarise what happened.

    hybrids sweep configs/sweeps/mqar_cpu.yaml --dry-run        # one line per run: params, state
    hybrids sweep configs/sweeps/mqar_cpu.yaml --workers 2      # run (or resume) it locally
    hybrids sweep configs/sweeps/mqar_cpu.yaml --launcher ray --ray-address auto
    hybrids plot runs/sweeps/mqar_cpu                            # tables and figures

The sweep folder (``--out``, default ``runs/sweeps/<name>``) gets ``sweep.yaml`` (the file as
given) and one folder per run (see :mod:`hybrids.lab.sweeps.execute`). Running again skips finished
runs, resumes interrupted ones from their last checkpoint and retries failed ones. Exit status:
0 all runs done; 1 some failed (the summary lists them); 2 a bad sweep file; 130 / 143 stopped by
SIGINT / SIGTERM (running runs saved their checkpoints).
"""

from __future__ import annotations

import argparse
import copy
import fnmatch
import hashlib
import json
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from hybrids.cli.keyed_argparse import KeyedArgumentParser, in_range, integer, number, text
from hybrids.lab.learning import budget_of, criterion_for, run_curve_of
from hybrids.lab.sweeps.execute import RunTask, execute_run, is_finished, mark_orphaned, read_json, write_json
from hybrids.lab.sweeps.halving import HalvingRun, run_halving
from hybrids.lab.sweeps.local import SweepInterrupted, run_locally
from hybrids.lab.sweeps.matching import Unmatched, solve_plan
from hybrids.lab.sweeps.measure import BuildError, measure
from hybrids.lab.sweeps.ray_launcher import LauncherUnavailable
from hybrids.lab.sweeps.spec import RunPlan, SweepError, expand, load_sweep
from hybrids.train.folders import unwritable
from hybrids.train.model_args import unnest

EXIT_FAILED, EXIT_BAD_SWEEP = 1, 2


# More concurrent runs, or threads per run, than any machine this runs on has cores for: a typo.
MAX_PARALLEL = 1024


def build_parser() -> argparse.ArgumentParser:
    parser = KeyedArgumentParser(
        prog="hybrids sweep", description="Expand a sweep file into runs and run them (resumable).",
    )
    count = in_range(integer, f"an integer in [1, {MAX_PARALLEL}]", lambda n: 1 <= n <= MAX_PARALLEL)
    parser.add_argument("file", type=text("a sweep file", any_bytes=True), help="the sweep YAML (see hybrids.lab.sweeps.spec)")
    parser.add_argument("--dry-run", action="store_true", help="list the runs with parameters and state size; train nothing")
    parser.add_argument("--workers", type=count, default=1, help="runs at once (local launcher; default 1)")
    parser.add_argument("--threads", type=count, default=1,
                        help="OpenMP/torch threads per run (default 1: concurrent runs with several threads each slow each other down)")
    parser.add_argument("--launcher", choices=("local", "ray"), default="local")
    parser.add_argument("--gpus", type=in_range(number, "a finite number >= 0", lambda g: 0 <= g < float("inf")), default=0.0,
                        help="GPUs each run reserves under --launcher ray (Ray hides the GPUs from a task that asks for none); "
                        "locally, runs see the machine's GPUs as they are")
    parser.add_argument("--ray-address", type=text("an address: 'auto', 'host:port' or 'ray://...'"), default=None,
                        help="Ray cluster to submit to ('auto', 'host:port', 'ray://...'); default: $RAY_ADDRESS, else a local Ray instance")
    parser.add_argument("--out", type=text("a folder"), default=None, help="the sweep folder (default runs/sweeps/<name>)")
    parser.add_argument("--only", type=text("a glob of run names"), action="append", default=[], metavar="GLOB",
                        help="run only the runs whose name matches (repeatable), e.g. 'attention-*'")
    return parser


def sweep_main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        spec = load_sweep(args.file)
        plans = expand(spec)
    except SweepError as err:
        # One line: the file, then the key at fault (or, for the file as a whole, just the file).
        print(f"error: {args.file}: {err.reason if err.key == 'FILE' else err}", file=sys.stderr)
        return EXIT_BAD_SWEEP
    all_plans, all_names = plans, [plan.name for plan in plans]
    if args.only:
        plans = [p for p in plans if any(fnmatch.fnmatchcase(p.name, pattern) for pattern in args.only)]
        if not plans:
            print(f"error: only: no run matches {' or '.join(args.only)}; the runs are "
                  f"{', '.join(all_names[:8])}{' ...' if len(all_names) > 8 else ''}", file=sys.stderr)
            return EXIT_BAD_SWEEP
    problems = prepare(plans, spec.match)
    if spec.halving is not None and args.only:
        # Halving ranks the settings of a point against one another: a part of a point would be
        # decided on without the rest, for good.
        from hybrids.lab.sweeps.halving import point_label

        chosen = {point_label(p.axes, spec.tune) for p in plans}
        whole = sum(point_label(p.axes, spec.tune) in chosen for p in all_plans)
        if whole != len(plans):
            print(f"error: only: with halving, select whole points (every learning rate, weight decay and seed of a "
                  f"family and setting, e.g. 'mamba-d64-*'): {len(plans)} runs match, their points have {whole}",
                  file=sys.stderr)
            return EXIT_BAD_SWEEP
    if spec.halving is not None:
        unbounded = [p.name for p in plans if budget_of(p.config, [], finished=False) is None]
        if unbounded:
            print(f"error: {args.file}: halving: the runs' budget in steps is unknown ({unbounded[0]}"
                  f"{' and others' if len(unbounded) > 1 else ''}): set trainer.max_steps, or max_epochs with the data's "
                  "num_train_examples and batch_size", file=sys.stderr)
            return EXIT_BAD_SWEEP
    if args.dry_run:
        print_dry_run(plans, problems)
        if spec.halving is not None:
            print(halving_plan(spec, [p for p in plans if p.name not in problems]))
        return EXIT_BAD_SWEEP if problems else 0

    out = Path(args.out or Path("runs") / "sweeps" / spec.name).resolve()
    problem = unwritable(out)
    if problem:
        print(f"error: {'out' if args.out else 'file'}: the sweep folder {out} cannot be written: {problem}", file=sys.stderr)
        return EXIT_BAD_SWEEP
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(spec.path, out / "sweep.yaml")
    # The runs of the sweep as the file stands (all of them, --only or not): hybrids.lab.analysis
    # reads only these, so that folders of an edited-out setting do not join the selection.
    write_json(out / "manifest.json", {"sweep": spec.name, "runs": all_names})
    run_dirs = [write_run_folder(out, plan, problems.get(plan.name)) for plan in plans]
    warn_stale(out, set(all_names))
    mark_orphans(out, all_names)
    todo = [d for d, plan in zip(run_dirs, plans) if plan.name not in problems and not is_finished(d)
            and not (spec.halving is not None and (current_status(d) or {}).get("status") == "pruned")]
    skipped = len(plans) - len(todo) - len(problems)
    print(f"hybrids sweep {spec.name}: {len(plans)} runs in {out}; {skipped} finished before, "
          f"{len(problems)} cannot be built, {len(todo)} to run ({args.launcher}, "
          f"{args.workers if args.launcher == 'local' else 'cluster'} at once, {args.threads} thread(s) each)", flush=True)

    progress = Progress(len(todo))
    start = time.monotonic()
    interrupted = None
    try:
        if spec.halving is None:
            launch([RunTask(str(d), threads=args.threads) for d in todo], args, progress)
        else:
            halve(spec, [(p, d) for p, d in zip(plans, run_dirs) if p.name not in problems], out, args, progress)
    except SweepInterrupted as stop:
        interrupted = stop.signum
    except LauncherUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_SWEEP
    wall = time.monotonic() - start
    statuses = [read_json(d / "status.json") or {"name": d.name, "status": "pending"} for d in run_dirs]
    print_summary(statuses, out, wall)
    if interrupted is not None:
        print(f"hybrids sweep: stopped by {SweepInterrupted(interrupted)}; run the same command again to resume", file=sys.stderr)
        return 128 + interrupted
    return 0 if all(s.get("status") in ("done", "pruned") for s in statuses) else EXIT_FAILED


def launch(tasks: list[RunTask], args: argparse.Namespace, progress: Progress) -> None:
    """Run ``tasks`` with the chosen launcher; SweepInterrupted when a signal stopped them."""
    if args.launcher != "ray":
        run_locally(tasks, execute_run, workers=args.workers, on_result=progress)
        return
    from hybrids.lab.sweeps.ray_launcher import run_on_ray

    received: list[int] = []

    def stop_driver(signum, frame):  # SIGTERM / SIGHUP end the driver as Ctrl-C does:
        received.append(signum)      # run_on_ray cancels its tasks, which stop their runs
        raise KeyboardInterrupt

    previous = {signum: signal.signal(signum, stop_driver) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        run_on_ray(tasks, execute_run, address=args.ray_address, cpus_per_task=args.threads,
                   gpus_per_task=args.gpus, on_result=progress)
    except KeyboardInterrupt:
        raise SweepInterrupted(received[0] if received else signal.SIGINT) from None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def halve(spec, plans_and_dirs: list[tuple[RunPlan, Path]], out: Path, args: argparse.Namespace, progress: Progress) -> None:
    """The sweep's runs through successive halving (hybrids.lab.sweeps.halving)."""
    runs = []
    for plan, run_dir in plans_and_dirs:
        criterion = criterion_for(plan.config)
        metric = spec.halving.metric or criterion.metric
        mode = spec.halving.mode or criterion.mode
        runs.append(HalvingRun(plan.name, run_dir, plan.axes, budget_of(plan.config, [], finished=False), metric, mode,
                               config_hash(plan.config)))

    def batch(items: list[tuple[HalvingRun, int | None]]) -> None:
        progress.total = progress.count + len(items)
        launch([RunTask(str(run.run_dir), threads=args.threads, pause_at=pause) for run, pause in items], args, progress)

    run_halving(runs, list(spec.tune), spec.halving, out, batch, current_status,
                lambda run_dir, status: write_json(run_dir / "status.json", status),
                lambda run: run_curve_of(run.run_dir, run.metric), log=lambda line: print(line, flush=True))


def halving_plan(spec, plans: list[RunPlan]) -> str:
    """The dry run's account of successive halving: pause steps, settings kept, and the cost in
    whole budgets against training every setting to the end (solved runs stop earlier still)."""
    from hybrids.lab.sweeps.halving import kept_count, point_label, rung_steps, setting_of

    points: dict[str, set] = {}
    budgets: dict[str, int] = {}
    for plan in plans:
        point = point_label(plan.axes, spec.tune)
        points.setdefault(point, set()).add(setting_of(plan.axes, spec.tune))
        budgets[point] = max(budgets.get(point, 0), budget_of(plan.config, [], finished=False) or 0)
    seeds, full, halved, lines = len(spec.seeds), 0.0, 0.0, set()
    for point, settings in points.items():
        steps, budget, n = rung_steps(budgets[point], spec.halving.rungs), budgets[point], len(settings)
        ends, previous = [*steps, budget], 0
        for end in ends:
            halved += n * seeds * (end - previous) / budget
            previous, n = end, kept_count(n, spec.halving.keep)
        full += len(settings) * seeds
        lines.add(f"pauses at steps {steps} of {budget}")
    if not full:
        return "halving: no run can be built"
    return (f"halving: {'; '.join(sorted(lines))}; keep {spec.halving.keep:g} of the settings at each: "
            f"at most {halved:,.1f} run-budgets instead of {full:,.0f} ({halved / full:.0%})")


def current_status(run_dir: Path) -> dict[str, Any] | None:
    """The run's status.json, or None where it belongs to an older config of the run."""
    status, plan = read_json(run_dir / "status.json"), read_json(run_dir / "run.json")
    if status and plan and status.get("config_hash") not in (None, plan.get("config_hash")):
        return None
    return status


def mark_orphans(out: Path, names: list[str]) -> list[str]:
    """Runs of the sweep whose status.json says "running" though no process runs them (a sweep
    killed outright cannot record how its runs ended): marked interrupted, so that the summary
    and hybrids plot say so, and resumed below like any interrupted run. A run another live
    sweep is running holds its lock and is left alone. Every run of the file is checked, --only
    or not: the status of each should be true."""
    marked = [name for name in names if (out / name).is_dir() and mark_orphaned(out / name) is not None]
    if marked:
        print(f"warning: {len(marked)} run(s) were recorded as running, but no process was running them "
              f"(a sweep killed before it could record how they ended): marked interrupted; they resume from "
              f"their last checkpoint: {', '.join(marked[:8])}" + (" ..." if len(marked) > 8 else ""),
              file=sys.stderr, flush=True)
    return marked


def warn_stale(out: Path, names: set[str]) -> None:
    """Run folders the sweep file no longer expands to (an edited grid): hybrids plot reads every
    run folder, so say which ones would be mixed in."""
    stale = sorted(p.parent.name for p in out.glob("*/run.json") if p.parent.name not in names)
    if stale:
        print(f"warning: {len(stale)} run folder(s) in {out} are not in the sweep file any more and would "
              f"appear in hybrids plot; delete them if they do not belong: {', '.join(stale[:8])}"
              + (" ..." if len(stale) > 8 else ""), file=sys.stderr, flush=True)


def config_hash(config: dict[str, Any]) -> str:
    """A run's config as a short hash; the model's arguments compared flat (as sweeps wrote them
    before the stack and optimiser were nested) and the logger left out, so a sweep written
    before either change keeps resuming."""
    model = config.get("model")
    if isinstance(model, dict) and isinstance(model.get("init_args"), dict):
        config = {**config, "model": {**model, "init_args": unnest(model["init_args"])}}
    trainer = config.get("trainer")
    if isinstance(trainer, dict) and "logger" in trainer:
        # The sweep replaces every run's logger (write_run_folder): the base config's is moot.
        config = {**config, "trainer": {k: v for k, v in trainer.items() if k != "logger"}}
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def prepare(plans: list[RunPlan], match) -> dict[str, str]:
    """Solve matched sizes and measure every run (in place); run name -> problem, for runs that
    cannot be built or matched."""
    from hybrids.lab.analysis import mixer_family

    problems: dict[str, str] = {}
    for plan in plans:
        try:
            if plan.target is not None:
                solve_plan(plan, match)
            figures = measure(plan.config)
        except (Unmatched, BuildError) as err:
            problems[plan.name] = str(err)
            plan.figures = None
            continue
        plan.figures = figures
        model_args = (plan.config.get("model") or {}).get("init_args") or {}
        plan.family = mixer_family(unnest(model_args))
    return problems


def run_record(plan: RunPlan) -> dict[str, Any]:
    """run.json: what defines the run and the figures of its model (status.json repeats them)."""
    figures = plan.figures
    return {
        "name": plan.name,
        "sweep": plan.sweep,
        "axes": plan.axes,
        "tuned": list(plan.tuned),
        "family": plan.family,
        "d_model": figures.d_model if figures else None,
        "seq_len": figures.seq_len if figures else None,
        "num_kv_pairs": figures.num_kv_pairs if figures else None,
        "vocab_size": figures.vocab_size if figures else None,
        "params": figures.params if figures else None,
        "state_size": figures.state_size if figures else None,
        "target": plan.target,
        "config_hash": config_hash(plan.config),
    }


def write_run_folder(out: Path, plan: RunPlan, problem: str | None) -> Path:
    run_dir = out / plan.name
    run_dir.mkdir(parents=True, exist_ok=True)
    config = copy.deepcopy(plan.config)
    trainer = config.setdefault("trainer", {})
    # The sweep reads the CSV logs of each run from its own folder, whatever the base config logs to.
    trainer["logger"] = {"class_path": "lightning.pytorch.loggers.CSVLogger",
                         "init_args": {"save_dir": str(run_dir), "name": "logs"}}
    trainer.setdefault("enable_progress_bar", False)
    record = run_record(plan)
    _adopt_equivalent_status(run_dir, config, record["config_hash"])
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    write_json(run_dir / "run.json", record)
    if problem is not None:
        write_json(run_dir / "status.json", {**record, "status": "failed", "error": problem, "metrics": {}, "attempts": 0})
    return run_dir


def _adopt_equivalent_status(run_dir: Path, config: dict[str, Any], new_hash: str) -> None:
    """A run recorded under an older hash of the same config keeps its status.

    The hash has changed meaning twice (model arguments compared flat, the base logger left out):
    a run whose written config is the same run under today's comparison is not run again."""
    status = read_json(run_dir / "status.json")
    old_config = run_dir / "config.yaml"
    if not status or status.get("config_hash") in (None, new_hash) or not old_config.exists():
        return
    try:
        written = yaml.safe_load(old_config.read_text())
    except (OSError, yaml.YAMLError):
        return
    if isinstance(written, dict) and config_hash(written) == config_hash(config):
        write_json(run_dir / "status.json", {**status, "config_hash": new_hash})


def print_dry_run(plans: list[RunPlan], problems: dict[str, str]) -> None:
    width = max((len(p.name) for p in plans), default=10)
    header = f"{'run':<{width}}  {'family':<28} {'params':>11} {'state size':>11}  target"
    print(header)
    print("-" * len(header))
    for plan in plans:
        if plan.name in problems:
            print(f"{plan.name:<{width}}  cannot run: {problems[plan.name]}")
            continue
        f = plan.figures
        state = f"{f.state_size:,}" if f.state_size is not None else "unknown"
        target = ""
        if plan.target:
            t = plan.target
            target = f"{t['quantity']} {t['value']:,.0f} -> {t['achieved']:,} ({t['key'].rsplit('.', 1)[-1]}={t['solved']})"
        print(f"{plan.name:<{width}}  {plan.family:<28} {f.params:>11,} {state:>11}  {target}")
    print(f"{len(plans)} runs, {len(problems)} cannot run")


class Progress:
    """One line per finished run, as the runs finish."""

    def __init__(self, total: int) -> None:
        self.total, self.count = total, 0

    def __call__(self, task: RunTask, status: dict[str, Any]) -> None:
        record_launcher_failure(Path(task.run_dir), status)
        self.count += 1
        name = status.get("name") or Path(task.run_dir).name
        print(f"[{self.count}/{self.total}] {name}: {_outcome(status)}", flush=True)


def record_launcher_failure(run_dir: Path, result: dict[str, Any]) -> None:
    """A run that failed before it could write its own status (a Ray worker lost, the launcher's
    own error) gets the failure written here, so that the summary shows it."""
    if result.get("status") != "failed":
        return
    current = read_json(run_dir / "status.json") or {}
    if current.get("status") in (None, "running"):
        plan = read_json(run_dir / "run.json") or {"name": run_dir.name}
        write_json(run_dir / "status.json", {**plan, **current, "status": "failed", "error": result.get("error"),
                                              "metrics": current.get("metrics") or {}})


def _outcome(status: dict[str, Any]) -> str:
    metrics = status.get("metrics") or {}
    if status.get("status") == "done":
        learning = _learning(status)
        return (f"done, val acc {metrics.get('val/acc', float('nan')):.4f}, test acc "
                f"{metrics.get('test/acc', float('nan')):.4f}{', ' + learning if learning else ''} "
                f"({status.get('wall_s', 0):.0f} s)")
    if status.get("status") == "paused":
        return (f"paused after the validation at step {status.get('paused_at')}, val acc "
                f"{metrics.get('val/acc', float('nan')):.4f} ({status.get('wall_s', 0):.0f} s)")
    return f"{status.get('status')}: {status.get('error')}"


def print_summary(statuses: list[dict[str, Any]], out: Path, wall: float) -> None:
    counts: dict[str, int] = {}
    for s in statuses:
        counts[s.get("status", "?")] = counts.get(s.get("status", "?"), 0) + 1
    width = max((len(str(s.get("name"))) for s in statuses), default=10)
    print(f"\n{'run':<{width}}  {'status':<11} {'val acc':>8} {'test acc':>8} {'params':>10} {'state':>10} {'wall s':>7}"
          "  learning")
    for s in statuses:
        m = s.get("metrics") or {}
        val, test = m.get("val/acc"), m.get("test/acc")
        print(f"{str(s.get('name')):<{width}}  {str(s.get('status')):<11} "
              f"{'' if val is None else f'{val:.4f}':>8} {'' if test is None else f'{test:.4f}':>8} "
              f"{_count(s.get('params')):>10} {_count(s.get('state_size')):>10} {s.get('wall_s') or 0:>7.0f}"
              f"  {_learning(s)}")
    failed = [s for s in statuses if s.get("status") not in ("done", "pending", "pruned")]
    pruned = [s for s in statuses if s.get("status") == "pruned"]
    if pruned:
        print(f"\npruned by successive halving (never selected; the decisions: {out / 'halving.json'}): "
              + ", ".join(str(s.get("name")) for s in pruned[:6]) + (" ..." if len(pruned) > 6 else ""))
    if failed:
        print("\nnot done:")
        for s in failed:
            print(f"  {s.get('name')}: {s.get('status')}: {s.get('error')}")
    print(f"\n{', '.join(f'{n} {k}' for k, n in sorted(counts.items()))}; this invocation took {wall:.0f} s; "
          f"tables and figures: hybrids plot {out}")


def _learning(status: dict[str, Any]) -> str:
    """"solved at step 400", "plateaued", "still improving" (hybrids.learning_status); "" if unknown."""
    learning = status.get("learning")
    if not isinstance(learning, dict) or not learning.get("status"):
        return ""
    if learning["status"] == "solved" and learning.get("solved_step") is not None:
        return f"solved at step {learning['solved_step']:,}"
    return str(learning["status"])


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else ""
