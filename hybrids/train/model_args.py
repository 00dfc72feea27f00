"""``LanguageModel``'s arguments in their two spellings: nested (the current one) and flat (runs,
configs and sweep files written before the stack and the optimiser became dataclasses).

Nested, as the CLI reads it::

    model:
      class_path: hybrids.LanguageModel
      init_args:
        stack: {d_model: 64, pattern: MA, mixers: {...}}     # StackConfig
        optim: {lr: 3.0e-3, weight_decay: 0.1}               # OptimConfig
        max_loss: 1.0e4

Flat, as configs were written before, and as ``hparams.yaml`` still records them (one level,
readable by the analysis of old and new runs alike)::

    model: {class_path: hybrids.LanguageModel, init_args: {d_model: 64, pattern: MA, lr: 3.0e-3}}

:func:`nest` turns the flat spelling into the nested one (the CLI and the sweep files accept old
configs through it, with a note); :func:`flatten` turns either into the flat one with every
default filled in (run identities are computed on it, so a run keeps its identity across the
change, and old checkpoints keep resuming).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from hybrids.model.config import StackConfig
from hybrids.train.optim import OptimConfig

# argument of LanguageModel -> the dataclass it takes
GROUPS: dict[str, type] = {"stack": StackConfig, "optim": OptimConfig}
# flat key -> the group it now lives in
FLAT_KEYS: dict[str, str] = {f.name: group for group, cls in GROUPS.items() for f in dataclasses.fields(cls)}


def defaults(cls: type) -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


def nest(init_args: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(``init_args`` with its flat stack and optimiser keys moved under ``stack`` / ``optim``,
    the keys moved). Keys already nested are kept; a key given both ways keeps the nested value."""
    nested = {k: (dataclasses.asdict(v) if k in GROUPS and dataclasses.is_dataclass(v) else v)
              for k, v in init_args.items() if k not in FLAT_KEYS}
    moved = []
    for key, value in init_args.items():
        if key in FLAT_KEYS:
            group = nested.get(FLAT_KEYS[key])
            group = dict(group) if isinstance(group, Mapping) else {}
            group.setdefault(key, value)
            nested[FLAT_KEYS[key]] = group
            moved.append(key)
    return nested, moved


def flatten(init_args: Mapping[str, Any]) -> dict[str, Any]:
    """Either spelling as the flat one, every stack and optimiser field present (defaults filled
    in; ``vocab_size`` only where given)."""
    nested, _ = nest(init_args)
    flat = {k: v for k, v in nested.items() if k not in GROUPS}
    for group, cls in GROUPS.items():
        value = nested.get(group)
        if dataclasses.is_dataclass(value):
            value = dataclasses.asdict(value)
        flat.update({**defaults(cls), **dict(value or {})})
    return flat


def moved_note(moved: list[str], where: str) -> str:
    """The note printed where flat keys were accepted."""
    spelled = ", ".join(f"{key} -> {FLAT_KEYS[key]}.{key}" for key in moved)
    return f"hybrids: {where}: model.init_args keys moved under stack / optim ({spelled}); the old spelling still works"


def unnest(init_args: Mapping[str, Any]) -> dict[str, Any]:
    """The nested spelling as the flat one, as given (no defaults filled in): how a config was
    compared before, so that comparisons of configs written either way agree. A key given both
    ways keeps the nested value, as in :func:`nest`."""
    nested, _ = nest(init_args)
    flat = {k: v for k, v in nested.items() if k not in GROUPS or not isinstance(v, Mapping)}
    for group in GROUPS:
        value = nested.get(group)
        if isinstance(value, Mapping):
            flat.update(value)
    return flat


# jsonargparse takes a subclass's arguments as model.init_args.X and, for short, model.X.
MODEL_PREFIXES = ("model.init_args.", "model.")


def nest_key(key: str) -> str:
    """A dotted config key in the nested spelling: ``model.init_args.lr`` ->
    ``model.init_args.optim.lr`` (``model.lr`` -> ``model.optim.lr``); any other key is returned
    as it is."""
    for prefix in MODEL_PREFIXES:
        if key.startswith(prefix):
            rest = key[len(prefix):]
            head = rest.split(".", 1)[0]
            return f"{prefix}{FLAT_KEYS[head]}.{rest}" if head in FLAT_KEYS else key
    return key


SUBCOMMANDS = ("fit", "validate", "test", "predict")


def nest_config(config: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A whole CLI config (``{model: {class_path, init_args}, data: ..., ...}``, or one keyed by
    subcommand, ``{fit: {model: ...}}``) with its model arguments nested; the keys moved."""
    out, moved = dict(config), []
    for name in SUBCOMMANDS:
        if isinstance(out.get(name), Mapping):
            out[name], inner = nest_config(out[name])
            moved += inner
    model = out.get("model")
    if isinstance(model, Mapping) and isinstance(model.get("init_args"), Mapping):
        init_args, inner = nest(model["init_args"])
        out["model"] = {**model, "init_args": init_args}
        moved += inner
    return out, moved


def merged_arguments(saved: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Saved arguments (either spelling) with ``overrides`` applied (flat keys, or ``stack`` /
    ``optim`` as mappings or dataclasses, merged field by field), in the nested spelling."""
    flat = unnest(saved)
    for key, value in overrides.items():
        if key in GROUPS and (isinstance(value, Mapping) or dataclasses.is_dataclass(value)):
            flat.update(dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value)
        else:
            flat[key] = value
    return nest(flat)[0]
