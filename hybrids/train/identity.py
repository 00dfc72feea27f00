"""Run identity: what a run computes, as one canonical config and a short hash of it.

Two runs have the same identity when they train the same model (class and every argument,
optimisation included) on the same data (class and every argument but ``num_workers``) from the
same seed, with the same trainer settings that change the computation (gradient accumulation and
clipping, precision). Class paths are compared as the classes they name, and arguments left at
their defaults count as given. Paths, logging and the trainer's run-time keys (epochs, devices,
checkpointing, ...) are not part of it: extending a run to more epochs, or resuming it on another
machine, keeps its identity.

The CLI stores the identity in every checkpoint (``checkpoint["hybrids"]``) and in the run's
``hparams.yaml`` (``identity``), and resumes or evaluates a checkpoint only under its own
identity (:mod:`hybrids.cli.fit`).
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
from collections.abc import Mapping
from typing import Any

from hybrids.train.model_args import GROUPS, flatten, nest_key

# Data-module arguments that change how data is loaded, or what a test evaluates (the induction
# task's extra lengths), but not what a run trains.
NEUTRAL_DATA_KEYS = frozenset({"num_workers", "eval_lengths", "num_eval_examples", "eval_batch_size", "eval_chunk"})


def plain(value: Any) -> Any:
    """Namespaces, tuples and other containers as plain JSON-able values."""
    if hasattr(value, "as_dict"):  # jsonargparse Namespace
        value = value.as_dict()
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


# Trainer settings that change what training computes (the rest are run-time: epochs, devices,
# logging, checkpointing).
TRAINER_KEYS = ("accumulate_grad_batches", "gradient_clip_val", "gradient_clip_algorithm", "precision")


def _normalised(spec: Mapping[str, Any], skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """A ``{class_path, init_args}`` spec with the class's canonical path (``hybrids.LanguageModel``
    and ``hybrids.train.module.LanguageModel`` are one class) and every argument the spec leaves out at its
    default, so that spelling a default out does not change the identity."""
    class_path = spec.get("class_path")
    init_args = dict(spec.get("init_args") or {})
    try:
        module, _, name = str(class_path).rpartition(".")
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return {"class_path": class_path, "init_args": init_args}
    try:
        parameters = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        parameters = {}
    for param in parameters.values():
        if param.name in ("self", *skip) or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if param.name not in init_args and param.default is not param.empty:
            init_args[param.name] = plain(param.default)
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": init_args}


def _section(config: Mapping[str, Any], name: str, drop: frozenset[str] = frozenset()) -> dict[str, Any]:
    section = plain(config.get(name) or {})
    if not isinstance(section, dict):
        return {"class_path": repr(section)}
    if name == "model" and isinstance(section.get("init_args") or {}, dict):
        # The stack and optimiser settings, flat with their defaults (train.model_args): the
        # spelling identities were computed in before they became dataclasses, so a run keeps
        # its identity (and its checkpoints) across the change.
        section = {**section, "init_args": plain(flatten(section.get("init_args") or {}))}
        section = _normalised(section, skip=tuple(GROUPS))
    else:
        section = _normalised(section)
    init_args = {k: v for k, v in section["init_args"].items() if k not in drop}
    if name == "model":
        init_args.pop("vocab_size", None)  # the data's vocabulary, already in the data section
        mixers = init_args.get("mixers")
        if isinstance(mixers, dict):
            init_args["mixers"] = {
                letter: _normalised(spec, skip=("d_model",)) if isinstance(spec, dict) else spec
                for letter, spec in mixers.items()
            }
    return {"class_path": section["class_path"], "init_args": init_args}


def identity_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a resolved CLI config (one subcommand's) that defines what a run computes."""
    trainer = plain(config.get("trainer") or {})
    return {
        "model": _section(config, "model"),
        "data": _section(config, "data", NEUTRAL_DATA_KEYS),
        "seed_everything": plain(config.get("seed_everything")),
        "trainer": {key: trainer.get(key) for key in TRAINER_KEYS} if isinstance(trainer, dict) else {},
    }


def identity_hash(identity: Mapping[str, Any]) -> str:
    """A short, stable hash of an identity config (16 hex digits)."""
    text = json.dumps(plain(identity), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def same_run(saved: Mapping[str, Any], current_hash: str) -> bool:
    """Whether a checkpoint's stored identity (``{"hash", "config"}``) is this run's.

    The stored config is normalised again under the current code as well: an argument added to a
    class since the checkpoint was written is then filled in at its default, so old checkpoints
    stay usable as long as the new argument is left at its default (a run that sets it is
    another run)."""
    if saved.get("hash") == current_hash:
        return True
    config = saved.get("config")
    return isinstance(config, Mapping) and identity_hash(identity_config(config)) == current_hash


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


_MISSING = "<absent>"


def identity_diff(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """One line per dotted key whose value differs: ``key: <saved> (checkpoint) vs <current> (this run)``,
    the key spelt as on the command line (``model.init_args.stack.d_model``)."""
    a, b = _flatten(plain(saved)), _flatten(plain(current))
    lines = []
    for key in sorted(set(a) | set(b)):
        if a.get(key, _MISSING) != b.get(key, _MISSING):
            lines.append(f"{nest_key(key)}: {a.get(key, _MISSING)!r} (checkpoint) vs {b.get(key, _MISSING)!r} (this run)")
    return lines
