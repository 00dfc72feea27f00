"""The sweep file, and its expansion into runs.

A sweep file (YAML)::

    name: mqar_cpu                      # folder name of the sweep (default: the file's stem)
    base: ../transformer.yaml           # the config every run starts from, relative to this
                                        # file; a list makes "base" an axis (named by file stem)
    settings:                           # dotted-key overrides applied to every run
      trainer.max_epochs: 4
    choices:                            # named override sets; a grid names them by label
      family:
        attention: {model.init_args.stack.pattern: A, model.init_args.stack.mixers: {A: {...}}}
        mamba: {model.init_args.stack.pattern: M, model.init_args.stack.mixers: {M: {...}}}
      task:
        mqar64x4: {data.init_args.seq_len: 64, data.init_args.num_kv_pairs: 4}
    grid:                               # a list of blocks; each expands to the product of
      - family: [attention, mamba]      # its axes, and the sweep is their union
        task: [mqar64x4]
        model.init_args.stack.d_model: [64, 128, 256]
      - family: [attention, mamba]      # a block may bring its own learning rates,
        task: [mqar128x8]               # which replace the sweep's lr list for its runs
        lr: [3.0e-3]
    lr: [1.0e-3, 3.0e-3]                # model.init_args.optim.lr, one axis ("default": the
                                        # protocol's grid, DEFAULT_LRS)
    weight_decay: default               # model.init_args.optim.weight_decay, one axis
                                        # ("default": DEFAULT_WEIGHT_DECAYS); a block may bring its own
    seeds: [0, 1]                       # one axis; each seed is written to every seed_keys key
    seed_keys: [seed_everything]
    tune: [lr, weight_decay]            # axes selected on validation (default: lr and weight_decay,
                                        # those of them that are axes)
    halving:                            # optional: successive halving over the tuned settings
      rungs: [0.125, 0.5]               # pause points, fractions of each run's budget
      keep: 0.5                         # fraction of a point's settings that go on at each rung
    match:                              # optional: solve a width per run to meet a size
      quantity: params                  # or state_size
      targets: [50000, 100000]          # one axis, "target"
      key: model.init_args.stack.d_model  # the integer solved for; per label of a choice:
      keys:                             # per label: a key, or a key with its own grid
        mamba: {key: model.init_args.stack.mixers.M.init_args.d_state, multiple_of: 1, range: [1, 256]}
      multiple_of: 8
      range: [8, 2048]
      tolerance: 0.05

A grid axis is either the name of a choice (its values are labels) or a dotted config key (its
values are scalars: a dict value belongs in ``choices``, where it gets a name). Overrides are
applied in this order: ``settings``, the choices in grid order, the dotted grid keys, ``lr``,
``weight_decay``, the seed, and last the solved size. Leaving ``lr`` and ``weight_decay`` out
keeps the base config's optimiser settings (one run per point and seed); the tuning protocol of
docs/sweeps.md writes ``lr: default`` and ``weight_decay: default``.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hybrids.lab.sweeps import overrides
from hybrids.lab.sweeps.halving import Halving
from hybrids.train.model_args import nest_config
from hybrids.lab.sweeps.naming import run_name

TOP_LEVEL = ("name", "base", "settings", "choices", "grid", "lr", "weight_decay", "seeds", "seed_keys", "tune", "match",
             "halving")
MATCH_KEYS = ("quantity", "targets", "key", "keys", "multiple_of", "range", "tolerance")
QUANTITIES = ("params", "state_size")
LR_KEY = "model.init_args.optim.lr"
WD_KEY = "model.init_args.optim.weight_decay"
# The tuning protocol's grid ("lr: default", "weight_decay: default"): each family's learning rate
# and weight decay chosen on validation among these six settings (docs/sweeps.md, "Tuning each
# family"). Three rates a factor ~3 apart around the 1e-3 that most of the zoo's runs learn at,
# and weight decay off or at AdamW's usual 0.1 (on matrices only, hybrids.train.optim).
DEFAULT_LRS = (3.0e-4, 1.0e-3, 3.0e-3)
DEFAULT_WEIGHT_DECAYS = (0.0, 0.1)
# Axes the sweep itself defines; a choice or a dotted key may not take these names.
OWN_AXES = ("seed", "lr", "weight_decay", "target", "base")
_SCALARS = (int, float, str, bool, type(None))


class SweepError(ValueError):
    """A sweep file that cannot be expanded; the message names the key at fault."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key, self.reason = key, message


@dataclass(frozen=True)
class Match:
    """Solve an integer config key per run so that ``quantity`` is within ``tolerance`` of the target."""

    quantity: str
    targets: tuple[float, ...]
    key: str = "model.init_args.stack.d_model"
    # choice label -> (key solved instead, its multiple_of, low, high)
    keys: Mapping[str, tuple[str, int, int, int]] = field(default_factory=dict)
    multiple_of: int = 8
    low: int = 8
    high: int = 2048
    tolerance: float = 0.05

    def solving(self, axes: Mapping[str, Any]) -> tuple[str, int, int, int]:
        """(key, multiple_of, low, high) for a run with these axis values."""
        for value in axes.values():
            if isinstance(value, str) and value in self.keys:
                return self.keys[value]
        return self.key, self.multiple_of, self.low, self.high


@dataclass
class RunPlan:
    """One run of a sweep: its name, the axis values that define it, and its resolved config."""

    name: str
    axes: dict[str, Any]
    config: dict[str, Any]
    tuned: tuple[str, ...]
    target: dict[str, Any] | None = None  # {"quantity", "value", "key"}, then "solved", "achieved"
    sweep: str | None = None
    family: str | None = None  # the mixer classes of its layers (hybrids.lab.analysis.mixer_family)
    figures: Any = None  # hybrids.lab.sweeps.measure.Figures once measured


@dataclass
class SweepSpec:
    name: str
    path: Path
    bases: dict[str, dict[str, Any]]  # label -> loaded base config
    settings: dict[str, Any]
    choices: dict[str, dict[str, dict[str, Any]]]
    grid: list[dict[str, list[Any]]]
    lrs: list[float] | None
    seeds: list[int]
    seed_keys: list[str]
    tune: list[str]
    match: Match | None
    weight_decays: list[float] | None = None
    halving: Halving | None = None


def _mapping(value: Any, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SweepError(key, f"must be a mapping, got {value!r}")
    return dict(value)


def _entry(value: Any, name: str, known: tuple[str, ...]) -> dict[str, Any]:
    """A top-level entry that is a mapping of ``known`` keys (match, halving)."""
    value = _mapping(value, name)
    for key in value:
        if key not in known:
            raise SweepError(f"{name}.{key}", f"unknown key; known: {known}")
    return value


def _list(value: Any, key: str, example: str = "") -> list[Any]:
    if not isinstance(value, list) or not value:
        raise SweepError(key, f"must be a non-empty list{f' ({example})' if example else ''}, got {value!r}")
    return value


def _where(mark: Any) -> str:
    """A YAML mark as people count: lines and columns from 1 (PyYAML counts from 0)."""
    return f"line {mark.line + 1}, column {mark.column + 1}"


def read_yaml(path: Path, key: str, shown: str = "") -> Any:
    """The YAML document in ``path``. A file that is not YAML (an unclosed bracket, a tab in the
    indentation) or cannot be read is a SweepError naming ``key`` and the place the parser
    stopped, so that the CLI prints one line instead of the parser's traceback."""
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        if "'\\t'" in problem:  # PyYAML writes the tab it stopped at as repr() does
            problem += " (YAML indents with spaces, never tabs)"
        context, context_mark = getattr(err, "context", None), getattr(err, "context_mark", None)
        if context and context_mark is not None:
            problem += f" ({context} from {_where(context_mark)})"
        place = " ".join(p for p in (shown, _where(mark) if mark is not None else "") if p)
        raise SweepError(key, f"{place + ': ' if place else ''}not valid YAML: {problem}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SweepError(key, f"cannot read {shown or 'it'}: {err}") from None


def _check_overrides(mapping: Mapping[str, Any], key: str) -> dict[str, Any]:
    mapping = _mapping(mapping, key)
    for name in mapping:
        problem = overrides.check_key(name)
        if problem:
            raise SweepError(f"{key}.{name}", problem)
    return mapping


def _load_base(path_text: Any, sweep_path: Path, key: str) -> tuple[str, dict[str, Any]]:
    if not isinstance(path_text, str):
        raise SweepError(key, f"must be the path of a config file, got {path_text!r}")
    path = (sweep_path.parent / path_text).resolve()
    if not path.is_file():
        raise SweepError(key, f"{path_text} not found (looked at {path}; paths are relative to the sweep file)")
    config = read_yaml(path, key, path_text) or {}
    if not isinstance(config, dict):
        raise SweepError(key, f"{path_text} does not hold a config mapping")
    # A base in the flat spelling of older configs is nested first, so that overrides (nested by
    # overrides.nest_key) patch into the same place instead of beside it.
    config, _ = nest_config(config)
    return path.stem, config


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and check a sweep file; SweepError names what is wrong."""
    path = Path(path)
    # Key "FILE": the file as a whole; the CLI names the file itself instead of the key.
    if path.is_dir():
        raise SweepError("FILE", "is a folder; give the sweep's YAML file (e.g. configs/sweeps/mqar_cpu.yaml)")
    if not path.is_file():
        raise SweepError("FILE", "not found")
    raw = read_yaml(path, "FILE") or {}
    if not isinstance(raw, Mapping):
        raise SweepError("FILE", "does not hold a mapping of sweep keys (name, base, grid, ...)")
    for key in raw:
        if key not in TOP_LEVEL:
            close = difflib.get_close_matches(str(key), TOP_LEVEL, n=1)
            raise SweepError(str(key), "unknown key" + (f"; did you mean {close[0]!r}?" if close else f"; known: {TOP_LEVEL}"))

    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise SweepError("name", f"must be a plain folder name, got {name!r}")

    base_value = raw.get("base")
    if base_value is None:
        raise SweepError("base", "missing: name the config every run starts from (e.g. ../transformer.yaml)")
    base_list = base_value if isinstance(base_value, list) else [base_value]
    if not base_list:
        # An empty list of bases is an axis with no values: the sweep would have no runs at all.
        raise SweepError("base", "empty list; name the config every run starts from (base: ../transformer.yaml), "
                         "or several to make the base an axis")
    bases: dict[str, dict[str, Any]] = {}
    for i, item in enumerate(base_list):
        label, config = _load_base(item, path, f"base[{i}]" if isinstance(base_value, list) else "base")
        if label in bases:
            raise SweepError("base", f"two base configs share the name {label!r}")
        bases[label] = config

    settings = _check_overrides(raw.get("settings"), "settings")
    choices: dict[str, dict[str, dict[str, Any]]] = {}
    for axis, options in _mapping(raw.get("choices"), "choices").items():
        if "." in axis or axis in OWN_AXES:
            raise SweepError(f"choices.{axis}", f"a choice needs a plain name other than {', '.join(OWN_AXES)}")
        options = _mapping(options, f"choices.{axis}")
        if not options:
            raise SweepError(f"choices.{axis}", "has no labels")
        choices[axis] = {str(label): _check_overrides(o, f"choices.{axis}.{label}") for label, o in options.items()}

    grid = _check_grid(raw.get("grid"), choices)
    lrs = _check_lrs(raw["lr"], "lr") if "lr" in raw else None
    weight_decays = _check_weight_decays(raw["weight_decay"], "weight_decay") if "weight_decay" in raw else None
    seeds = _list(raw.get("seeds", [0]), "seeds", "e.g. seeds: [0, 1]; leave it out for seed 0 alone")
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise SweepError("seeds", f"seeds must be integers >= 0, got {seed!r}")
    if len(set(seeds)) != len(seeds):
        raise SweepError("seeds", f"repeated seed in {seeds}")
    seed_keys = _list(raw.get("seed_keys", ["seed_everything"]), "seed_keys",
                      "the config keys each seed is written to; leave it out for [seed_everything]")
    for key in seed_keys:
        problem = overrides.check_key(key)
        if problem:
            raise SweepError("seed_keys", problem)
        if key == "data.init_args.seed":
            raise SweepError(
                "seed_keys",
                "data.init_args.seed draws the data sets (validation seed + 2, test seed + 1), so neighbouring "
                "seeds would validate on each other's test sets; use data.init_args.order_seed for the batch order",
            )
    match = _check_match(raw.get("match"), choices)

    if match is not None:
        solved = {match.key, *(entry[0] for entry in match.keys.values())}
        for i, block in enumerate(grid):
            both = sorted(solved & set(block))
            if both:
                raise SweepError(f"grid[{i}]", f"{both} are solved by match; they cannot also be grid axes")
    axes = _all_axis_names(grid, lrs, weight_decays, match, bases)
    tune = raw.get("tune", [a for a in ("lr", "weight_decay") if a in axes])
    if not isinstance(tune, list):
        raise SweepError("tune", f"must be a list of axis names, got {tune!r}")
    for axis in tune:
        if axis not in axes:
            raise SweepError("tune", f"{axis!r} is not an axis of this sweep (axes: {sorted(axes)})")
        if axis == "seed":
            raise SweepError("tune", "seeds are averaged over, not selected")
    halving = check_halving(raw.get("halving"), tune)
    return SweepSpec(name, path, bases, settings, choices, grid, lrs, seeds, seed_keys, tune, match, weight_decays, halving)


def _check_grid(value: Any, choices: Mapping[str, Any]) -> list[dict[str, list[Any]]]:
    if value is None:
        return [{}]
    if isinstance(value, list) and not value:
        # The union of no blocks is no runs: a sweep that would exit 0 having trained nothing.
        raise SweepError("grid", "empty; write at least one block of axes (grid: [{family: [attention, mamba]}]), "
                         "or leave grid out for one run of the base config per lr and seed")
    blocks = value if isinstance(value, list) else [value]
    checked = []
    for i, block in enumerate(blocks):
        where = f"grid[{i}]"
        block = _mapping(block, where)
        for axis, values in block.items():
            if axis == "lr":
                block[axis] = _check_lrs(values, f"{where}.lr")
                continue
            if axis == "weight_decay":
                block[axis] = _check_weight_decays(values, f"{where}.weight_decay")
                continue
            values = _list(values, f"{where}.{axis}")
            if axis in choices:
                for label in values:
                    if str(label) not in choices[axis]:
                        close = difflib.get_close_matches(str(label), list(choices[axis]), n=1)
                        hint = f"; did you mean {close[0]!r}?" if close else f"; defined: {sorted(choices[axis])}"
                        raise SweepError(f"{where}.{axis}", f"no choice labelled {label!r}" + hint)
                block[axis] = [str(label) for label in values]
            else:
                problem = overrides.check_key(axis)
                if problem:
                    raise SweepError(f"{where}.{axis}", problem + f"; nor is it a choice ({sorted(choices)})")
                for item in values:
                    if not isinstance(item, _SCALARS):
                        raise SweepError(
                            f"{where}.{axis}",
                            f"values of a dotted key must be scalars, got {item!r}: put structured values "
                            "under choices, where each gets a label",
                        )
            if len(set(map(repr, values))) != len(values):
                raise SweepError(f"{where}.{axis}", f"repeated value in {values}")
        checked.append(block)
    return checked


def _check_lrs(value: Any, where: str) -> list[float]:
    return _optimiser_values(value, where, DEFAULT_LRS, "[1.0e-3, 3.0e-3]", "learning rates must be positive numbers",
                             lambda lr: 0 < lr < math.inf)


def _check_weight_decays(value: Any, where: str) -> list[float]:
    return _optimiser_values(value, where, DEFAULT_WEIGHT_DECAYS, "[0.0, 0.1]",
                             "weight decays must be finite numbers >= 0", lambda decay: 0 <= decay < math.inf)


def _optimiser_values(value: Any, where: str, default, example: str, rule: str, ok) -> list[float]:
    """An optimiser axis (lr, weight_decay): "default" (the protocol's grid) or a list of distinct
    numbers that ``ok`` accepts."""
    if value == "default":
        return list(default)
    values = _list(value, where, f"e.g. {example}, or default; leave it out to keep the base config's")
    for number in values:
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not ok(number):
            raise SweepError(where, f"{rule}, got {number!r}")
    if len(set(values)) != len(values):
        raise SweepError(where, f"repeated value in {values}")
    return [float(number) for number in values]


def _check_match(value: Any, choices: Mapping[str, Any]) -> Match | None:
    if value is None:
        return None
    value = _entry(value, "match", MATCH_KEYS)
    quantity = value.get("quantity")
    if quantity not in QUANTITIES:
        raise SweepError("match.quantity", f"must be one of {QUANTITIES}, got {quantity!r}")
    targets = _list(value.get("targets"), "match.targets", "the sizes to match, e.g. [50000, 100000]")
    for target in targets:
        if isinstance(target, bool) or not isinstance(target, (int, float)) or target <= 0:
            raise SweepError("match.targets", f"targets must be positive numbers, got {target!r}")
    labels = {label for options in choices.values() for label in options}
    key = value.get("key", Match.key)
    problem = overrides.check_key(key)
    if problem:
        raise SweepError("match.key", problem)
    multiple_of, low, high = _match_grid(value, "match", Match.multiple_of, Match.low, Match.high)
    keys: dict[str, tuple[str, int, int, int]] = {}
    for label, entry in _mapping(value.get("keys"), "match.keys").items():
        where = f"match.keys.{label}"
        if str(label) not in labels:
            raise SweepError(where, f"no choice is labelled {label!r}")
        if isinstance(entry, str):
            entry = {"key": entry}
        entry = _mapping(entry, where)
        unknown = set(entry) - {"key", "multiple_of", "range"}
        if unknown:
            raise SweepError(where, f"unknown keys {sorted(unknown)}; a label takes key, multiple_of, range")
        problem = overrides.check_key(entry.get("key"))
        if problem:
            raise SweepError(f"{where}.key", problem)
        keys[str(label)] = (entry["key"], *_match_grid(entry, where, multiple_of, low, high))
    tolerance = value.get("tolerance", Match.tolerance)
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 < tolerance < 1:
        raise SweepError("match.tolerance", f"must be in (0, 1), got {tolerance!r}")
    return Match(quantity, tuple(float(t) for t in targets), key, keys, multiple_of, low, high, float(tolerance))


def _match_grid(value: Mapping[str, Any], where: str, multiple_of: int, low: int, high: int) -> tuple[int, int, int]:
    """(multiple_of, low, high) of a match entry, defaults from the enclosing one."""
    multiple_of = value.get("multiple_of", multiple_of)
    bounds = value.get("range", [low, high])
    if not isinstance(bounds, list) or len(bounds) != 2:
        raise SweepError(f"{where}.range", f"must be [low, high], got {bounds!r}")
    low, high = bounds
    for name, number in (("multiple_of", multiple_of), ("range", low), ("range", high)):
        if isinstance(number, bool) or not isinstance(number, int) or number <= 0:
            raise SweepError(f"{where}.{name}", f"must be positive integers, got {number!r}")
    if low > high:
        raise SweepError(f"{where}.range", f"low {low} is above high {high}")
    return multiple_of, low, high


HALVING_KEYS = ("rungs", "keep", "metric", "mode")


def check_halving(value: Any, tune: list[str]) -> Halving | None:
    """The ``halving`` entry: rungs (fractions of the budget in (0, 1), increasing), keep (the
    fraction of a point's settings that go on, in (0, 1)), and optionally the metric and mode to
    rank them by (default: the task's criterion, e.g. val/acc maximised)."""
    if value is None:
        return None
    value = _entry(value, "halving", HALVING_KEYS)
    if not tune:
        raise SweepError("halving", "nothing is tuned: halving drops the worse settings of the tuned axes "
                         "(lr, weight_decay), so give at least one of them several values")
    rungs = _list(value.get("rungs"), "halving.rungs", "fractions of each run's budget, e.g. [0.125, 0.5]")
    for rung in rungs:
        if isinstance(rung, bool) or not isinstance(rung, (int, float)) or not 0 < rung < 1:
            raise SweepError("halving.rungs", f"each rung is a fraction of the budget in (0, 1), got {rung!r}")
    if any(b <= a for a, b in zip(rungs, rungs[1:])):
        raise SweepError("halving.rungs", f"must increase, got {rungs}")
    keep = value.get("keep", 0.5)
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 < keep < 1:
        raise SweepError("halving.keep", f"must be a fraction in (0, 1), got {keep!r}")
    metric, mode = value.get("metric"), value.get("mode")
    if metric is not None and (not isinstance(metric, str) or not metric.startswith("val/")):
        # Decisions look at validation only: a test metric here would choose on the test set.
        raise SweepError("halving.metric", f"must be a validation metric (val/...), such as val/loss, got {metric!r}")
    if mode is not None and mode not in ("max", "min"):
        raise SweepError("halving.mode", f"must be max or min, got {mode!r}")
    if (metric is None) != (mode is None):
        raise SweepError("halving", "give metric and mode together (or neither: the task's criterion)")
    return Halving(tuple(float(r) for r in rungs), float(keep), metric, mode)


def axis_name(axis: str) -> str:
    """The short name of a grid axis: a choice's name, or a dotted key's last component."""
    return axis.rsplit(".", 1)[-1]


def _all_axis_names(grid, lrs, weight_decays, match, bases) -> set[str]:
    names = {axis_name(a) for block in grid for a in block if a not in ("lr", "weight_decay")} | {"seed"}
    if lrs or any("lr" in block for block in grid):
        names.add("lr")
    if weight_decays or any("weight_decay" in block for block in grid):
        names.add("weight_decay")
    if match:
        names.add("target")
    if len(bases) > 1:
        names.add("base")
    return names


def expand(spec: SweepSpec) -> list[RunPlan]:
    """Every run of the sweep, in a stable order, sizes not yet solved (see matching)."""
    plans: list[RunPlan] = []
    lrs = spec.lrs or [None]
    decays = spec.weight_decays or [None]
    targets = spec.match.targets if spec.match else (None,)
    for block_index, block in enumerate(spec.grid):
        block = dict(block)
        block_lrs = block.pop("lr", None) or lrs
        block_decays = block.pop("weight_decay", None) or decays
        short = {axis: axis_name(axis) for axis in block}
        reserved = set(OWN_AXES) & {s for a, s in short.items() if a not in spec.choices}
        if reserved:
            raise SweepError(f"grid[{block_index}]", f"a dotted key ending in {sorted(reserved)} would be named like "
                             "the sweep's own axis; use seeds / lr / weight_decay / match, or a choice")
        clash = {s for s in short.values() if list(short.values()).count(s) > 1}
        if clash:
            raise SweepError(f"grid[{block_index}]", f"axes {sorted(clash)} have the same short name; use choices")
        for base_label, base in spec.bases.items():
            for combination in itertools.product(*block.values()):
                for target, lr, decay, seed in itertools.product(targets, block_lrs, block_decays, spec.seeds):
                    plans.append(_plan(spec, base_label, base, block, short, combination, target, lr, decay, seed))
    if not plans:  # every axis is checked non-empty above; this keeps "no runs" from ever passing as success
        raise SweepError("grid", "expands to no runs")
    names: dict[str, int] = {}
    for plan in plans:
        names[plan.name] = names.get(plan.name, 0) + 1
    repeated = sorted(n for n, count in names.items() if count > 1)
    if repeated:
        raise SweepError("grid", f"runs with the same name (the blocks overlap?): {repeated[:5]}")
    return plans


def _plan(spec, base_label, base, block, short, combination, target, lr, decay, seed) -> RunPlan:
    config = copy.deepcopy(base)
    axes: dict[str, Any] = {}
    if len(spec.bases) > 1:
        axes["base"] = base_label
    try:
        overrides.apply(config, spec.settings)
        values = dict(zip(block, combination))
        for axis, value in values.items():  # choices first, in grid order
            if axis in spec.choices:
                overrides.apply(config, spec.choices[axis][value])
        for axis, value in values.items():
            if axis not in spec.choices:
                overrides.set_dotted(config, axis, value)
        axes.update({short[axis]: value for axis, value in values.items()})
        if target is not None:
            axes["target"] = int(target) if float(target).is_integer() else target
        if lr is not None:
            overrides.set_dotted(config, LR_KEY, lr)
            axes["lr"] = lr
        if decay is not None:
            overrides.set_dotted(config, WD_KEY, decay)
            axes["weight_decay"] = decay
        for key in spec.seed_keys:
            overrides.set_dotted(config, key, seed)
        axes["seed"] = seed
    except KeyError as err:
        raise SweepError("grid", str(err.args[0])) from err
    plan_target = None
    if target is not None:
        key, multiple_of, low, high = spec.match.solving(axes)
        plan_target = {"quantity": spec.match.quantity, "value": target, "key": key,
                       "multiple_of": multiple_of, "range": [low, high]}
    name = run_name(axes, spec.match.quantity if spec.match else None)
    return RunPlan(name=name, axes=axes, config=config, tuned=tuple(spec.tune), target=plan_target, sweep=spec.name)
