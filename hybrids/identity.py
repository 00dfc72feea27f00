"""Run identity: what a run computes, as one canonical config and a short hash of it.

Two runs have the same identity when they train the same model (class and every argument,
optimisation included) on the same data (class and every argument) from the same seed. Paths,
logging and the trainer's run-time keys (epochs, devices, precision, ...) are not part of it:
extending a run to more epochs, or resuming it on another machine, keeps its identity.

The CLI stores the identity in every checkpoint (``checkpoint["hybrids"]``) and in the run's
``hparams.yaml`` (``identity``), and resumes or evaluates a checkpoint only under its own
identity (:mod:`hybrids.cli`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

# Data-module arguments that change how data is loaded but not what a run computes.
NEUTRAL_DATA_KEYS = frozenset({"num_workers"})


def _plain(value: Any) -> Any:
    """Namespaces, tuples and other containers as plain JSON-able values."""
    if hasattr(value, "as_dict"):  # jsonargparse Namespace
        value = value.as_dict()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def _section(config: Mapping[str, Any], name: str, drop: frozenset[str] = frozenset()) -> dict[str, Any]:
    section = _plain(config.get(name) or {})
    if not isinstance(section, dict):
        return {"class_path": repr(section)}
    init_args = {k: v for k, v in (section.get("init_args") or {}).items() if k not in drop}
    if name == "model":
        init_args.pop("vocab_size", None)  # the data's vocabulary, already in the data section
    return {"class_path": section.get("class_path"), "init_args": init_args}


def identity_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a resolved CLI config (one subcommand's) that defines what a run computes."""
    return {
        "model": _section(config, "model"),
        "data": _section(config, "data", NEUTRAL_DATA_KEYS),
        "seed_everything": _plain(config.get("seed_everything")),
    }


def identity_hash(identity: Mapping[str, Any]) -> str:
    """A short, stable hash of an identity config (16 hex digits)."""
    text = json.dumps(_plain(identity), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


_MISSING = "<absent>"


def identity_diff(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """One line per dotted key whose value differs: ``key: <saved> (checkpoint) vs <current> (this run)``."""
    a, b = _flatten(_plain(saved)), _flatten(_plain(current))
    lines = []
    for key in sorted(set(a) | set(b)):
        if a.get(key, _MISSING) != b.get(key, _MISSING):
            lines.append(f"{key}: {a.get(key, _MISSING)!r} (checkpoint) vs {b.get(key, _MISSING)!r} (this run)")
    return lines
