"""Training-step time of each run shape of a sweep, on the CPU: what a sweep's wall time is made of.

    python benchmarks/sweep_step_cpu.py                                      # mqar_cpu, one seed and lr
    python benchmarks/sweep_step_cpu.py configs/sweeps/mqar_cpu.yaml --match d64 --steps 10
    python benchmarks/sweep_step_cpu.py configs/sweeps/mqar_tuned_cpu.yaml --compile   # eager and compiled
    python benchmarks/sweep_step_cpu.py configs/sweeps/mqar_tuned_cpu.yaml --forced fft_conv=fft   # a backend's share

For every distinct (family, width, task) of the sweep (seed and learning rate do not change the
cost: the first run of each is taken), the run's model and data are built from its resolved
config and one training step (forward, cross-entropy on the labelled positions, backward, AdamW)
is timed on a fixed batch: median of ``--steps`` steps after ``--warmup``, one thread (each
sweep worker runs single-threaded), each family's steps taking turns with attention's at the same
point, so that "x attention" is a ratio of two medians measured side by side (a drift of the
machine's speed over a run, 10-15% here, would otherwise enter the ratios). Lightning's loop, validation, and start-up are not included:
compare this with a run's ``wall_s`` to see those. Rows are printed as a Markdown table, with
each row's time as a multiple of attention's at the same width and task (where the sweep has an
``attention`` family, with the attention time it was measured beside). ``--compile`` also times the step with the model compiled
(``nn.Module.compile``, inductor; the compilation itself, on the first steps, is not timed), eager
and compiled built alike and timed taking turns. ``--forced OP=NAME`` also times the step with
that op's backend forced (``HYBRIDS_<OP>_BACKEND=NAME`` set around each of its steps), taking
turns with the automatic choice (its own time, "auto", beside it): "forced / auto" is what the
automatic choice saves.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import os
import statistics
import time

import torch
import torch.nn.functional as F

from hybrids.lab.sweeps.spec import expand, load_sweep


def build(config: dict):
    def make(section: dict, **extra):
        module, _, name = section["class_path"].rpartition(".")
        return getattr(importlib.import_module(module), name)(**{**section.get("init_args", {}), **extra})

    data = make(config["data"])
    data.setup("fit")
    model_section = copy.deepcopy(config["model"])
    model_section["init_args"]["stack"]["vocab_size"] = data.vocab_size  # the CLI links it from the data
    model = make(model_section)
    inputs, labels = next(iter(data.train_dataloader()))[:2]
    return model, inputs, labels


def training_step(config: dict, compiled: bool = False):
    """A function running one training step of the run's model on a fixed batch."""
    torch.manual_seed(0)
    model, inputs, labels = build(config)
    if compiled:
        model(inputs)  # one eager call imports the kernels' modules, which a trace cannot
        model.compile()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step():
        logits = model(inputs)
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def forcing(step, variable: str, value: str):
    """``step`` run with the environment variable set (dispatchers read it at each call)."""

    def run():
        before = os.environ.get(variable)
        os.environ[variable] = value
        try:
            step()
        finally:
            if before is None:
                del os.environ[variable]
            else:
                os.environ[variable] = before

    return run


def median_seconds(steps: list, repeats: int, warmup: int) -> list[float]:
    """The median time of each step function, the functions taking turns step by step: a drift
    of the machine's speed during the measurement (other load, clock changes: 10-15% between
    runs minutes apart here) then touches all of them alike, and their ratios stay put."""
    for _ in range(warmup):
        for step in steps:
            step()
    times = [[] for _ in steps]
    for _ in range(repeats):
        for step, kept in zip(steps, times):
            start = time.perf_counter()
            step()
            kept.append(time.perf_counter() - start)
    return [statistics.median(kept) for kept in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", nargs="?", default="configs/sweeps/mqar_cpu.yaml")
    parser.add_argument("--match", default="", help="only run names containing this")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="time the compiled model too")
    parser.add_argument("--forced", metavar="OP=NAME", help="time each shape also with this kernel backend forced")
    args = parser.parse_args()
    if args.forced:
        op, _, name = args.forced.partition("=")
        if not op or not name:
            parser.error(f"--forced: expected OP=NAME (e.g. fft_conv=fft), got {args.forced!r}")
        from hybrids.kernels.dispatch import REGISTRY
        import hybrids.kernels  # noqa: F401  (registers every op)

        if op not in REGISTRY:
            parser.error(f"--forced: unknown op {op!r}; ops: {', '.join(sorted(REGISTRY))}")
        forced_variable = REGISTRY[op].env
        if os.environ.get(forced_variable):
            parser.error(f"--forced: {forced_variable} is set, so the automatic choice would not be timed; unset it")
    torch.set_num_threads(1)
    seen, attention = set(), {}
    print(f"{args.sweep}: one training step, median of {args.steps} after {args.warmup}, 1 thread; "
          "each family's steps alternate with attention's at the same point (x attention: the ratio of the two medians)")
    compiled_columns = " compiled ms / step | compiled / eager |" if args.compile else ""
    forced_columns = f" auto ms / step | {args.forced} ms / step | forced / auto |" if args.forced else ""
    print(f"| run shape | ms / step | attention ms / step | x attention |{compiled_columns}{forced_columns}")
    print("| --- | ---: | ---: | ---: |" + (" ---: | ---: |" if args.compile else "") + (" ---: | ---: | ---: |" if args.forced else ""))
    for plan in expand(load_sweep(args.sweep)):
        shape = "-".join(str(plan.axes[k]) for k in plan.axes if k not in ("lr", "weight_decay", "seed"))
        # Attention at the same point but the family: runs of the sweep list it first.
        point = tuple((k, v) for k, v in plan.axes.items() if k not in ("family", "lr", "weight_decay", "seed"))
        if plan.axes.get("family") == "attention":
            attention[point] = plan.config
        if shape in seen or args.match not in plan.name:
            continue
        seen.add(shape)
        if point in attention and plan.axes.get("family") != "attention":
            family, reference = median_seconds(
                [training_step(plan.config), training_step(attention[point])], args.steps, args.warmup)
            row = f"| {shape} | {family * 1e3:.1f} | {reference * 1e3:.1f} | {family / reference:.2f} |"
        else:
            (family,) = median_seconds([training_step(plan.config)], args.steps, args.warmup)
            ratio = "1.00" if plan.axes.get("family") == "attention" else "-"
            row = f"| {shape} | {family * 1e3:.1f} | {family * 1e3:.1f} | {ratio} |" if ratio == "1.00" else \
                f"| {shape} | {family * 1e3:.1f} | - | - |"
        if args.compile:
            eager, compiled = median_seconds(
                [training_step(plan.config), training_step(plan.config, compiled=True)], args.steps, args.warmup)
            row += f" {compiled * 1e3:.1f} | {compiled / eager:.2f} |"
        if args.forced:
            auto, forced = median_seconds(
                [training_step(plan.config), forcing(training_step(plan.config), forced_variable, name)],
                args.steps, args.warmup)
            row += f" {auto * 1e3:.1f} | {forced * 1e3:.1f} | {forced / auto:.2f} |"
        print(row, flush=True)


if __name__ == "__main__":
    main()
