"""Read finished runs from their CSV logs and compare recurrent state size against accuracy.

A run is a folder written by the CLI's CSVLogger (``runs/<name>/version_N``) holding
``metrics.csv`` (with the ``params``, ``state_size`` and ``seq_len`` rows logged at the start of
``fit`` and the ``val/acc`` of each validation) and ``hparams.yaml`` (the model's arguments);
the log is read by :mod:`hybrids.lab.metrics_log`. :func:`runs_table` is formatted by hand
because ``DataFrame.to_string`` right-aligns text, so it would not be shorter for the same table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hybrids.lab.metrics_log import METRICS_FILE, last_values
from hybrids.model.config import DEFAULT_MIXERS
from hybrids.model.mixer_specs import expand_pattern


@dataclass
class Run:
    """One finished training run."""

    path: Path
    family: str  # the mixer classes of its layers, in pattern order: "Attention", "Mamba+Attention"
    accuracy: float  # the last logged value of the accuracy metric
    state_size: int  # recurrent state elements per sequence at seq_len
    params: int
    seq_len: int
    hparams: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.path.parent.name}/{self.path.name}"


def mixer_family(hparams: dict[str, Any]) -> str:
    """``"A+B"``: the class names of the mixers the run's layers use, each once, in the order of
    their first layer (pattern ``"SA"`` gives ``"S4+Attention"``, ``"AS"`` ``"Attention+S4"``:
    which mixer comes first is part of the design)."""
    mixers = hparams.get("mixers") or DEFAULT_MIXERS
    letters = expand_pattern(hparams.get("pattern", "A"), hparams.get("n_layers"), mixers)
    names = [str(mixers[letter].get("class_path", "?")).rpartition(".")[2] for letter in letters]
    return "+".join(dict.fromkeys(names))


def load_run(path: str | Path, metric: str = "val/acc") -> Run | None:
    """The run in ``path`` (a ``version_N`` folder), or None if it has no finished ``fit`` figures."""
    path = Path(path)
    hparams_file = path / "hparams.yaml"
    if not hparams_file.exists():
        return None
    logged = last_values(path)
    figures = {key: logged.get(key) for key in (metric, "state_size", "params", "seq_len")}
    if any(value is None for value in figures.values()):
        return None
    hparams = yaml.safe_load(hparams_file.read_text()) or {}
    return Run(
        path=path,
        family=mixer_family(hparams),
        accuracy=figures[metric],
        state_size=int(figures["state_size"]),
        params=int(figures["params"]),
        seq_len=int(figures["seq_len"]),
        hparams=hparams,
    )


def load_runs(root: str | Path, metric: str = "val/acc") -> list[Run]:
    """Every finished run below ``root``, sorted by family then state size.

    A run that was later resumed (``--ckpt_path last`` logs ``resumed_from``) is left out: its
    continuation holds the final figures.
    """
    root = Path(root)
    runs = [r for r in (load_run(p.parent, metric) for p in sorted(root.rglob(METRICS_FILE))) if r is not None]
    superseded: set[Path] = set()
    for continuation in runs:
        resumed = continuation.hparams.get("resumed_from")
        if resumed:
            superseded |= _resumed_runs(continuation, Path(resumed), runs)
    runs = [r for r in runs if r.path not in superseded]
    return sorted(runs, key=lambda r: (r.family, r.state_size, r.name))


def _resumed_runs(continuation: Run, checkpoint: Path, runs: list[Run]) -> set[Path]:
    """The run(s) a continuation resumed from ``checkpoint``.

    The checkpoint usually lies in the resumed run's folder (``<name>/version_N/checkpoints/``),
    perhaps recorded relative to another working directory: match the run whose last two folders
    appear in the checkpoint's path. A checkpoint kept elsewhere (``--checkpoint.dirpath``) is
    matched through the run identity instead: the earlier runs of the continuation's identity.
    """
    parts = checkpoint.parts
    pairs = {parts[i : i + 2] for i in range(len(parts) - 1)}
    found = {r.path for r in runs if r is not continuation and r.path.parts[-2:] in pairs}
    identity = continuation.hparams.get("identity")
    if not found and identity:
        found = {
            r.path for r in runs
            if r is not continuation and r.hparams.get("identity") == identity and _version(r) < _version(continuation)
        }
    return found


def _version(run: Run) -> int:
    name = run.path.name
    return int(name.removeprefix("version_")) if name.startswith("version_") and name[8:].isdigit() else -1


def runs_table(runs: list[Run]) -> str:
    """A plain-text table of the runs, one line each."""
    header = f"{'run':<28} {'family':<24} {'seq_len':>7} {'state size':>12} {'params':>10} {'accuracy':>8}"
    lines = [header, "-" * len(header)]
    for r in runs:
        lines.append(
            f"{r.name:<28} {r.family:<24} {r.seq_len:>7} {r.state_size:>12,} {r.params:>10,} {r.accuracy:>8.4f}"
        )
    return "\n".join(lines)


def plot_state_size_vs_accuracy(runs: list[Run], ax=None, title: str | None = None):
    """Accuracy against recurrent state size (log x), one series per mixer family. Returns the axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    seq_lens = sorted({r.seq_len for r in runs})
    series = sorted({(r.family, r.seq_len) for r in runs})
    for family, seq_len in series:
        members = sorted((r for r in runs if (r.family, r.seq_len) == (family, seq_len)), key=lambda r: r.state_size)
        label = family if len(seq_lens) == 1 else f"{family}, seq_len {seq_len}"
        ax.plot([r.state_size for r in members], [r.accuracy for r in members], "o-", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("recurrent state size (elements per sequence)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title or f"MQAR: state size vs accuracy (seq_len {', '.join(map(str, seq_lens))})")
    if series:
        ax.legend()
    return ax


__all__ = ["Run", "load_run", "load_runs", "mixer_family", "plot_state_size_vs_accuracy", "runs_table"]
