"""Dotted-key overrides of a config as plain nested dicts (``model.init_args.stack.d_model: 128``).

Keys in the flat spelling of older sweep files (``model.init_args.d_model``) address the same
place (:func:`hybrids.train.model_args.nest_key`).

An override sets a value; a dict value replaces what was there (a family's ``mixers`` dict is
the whole set of mixers, not a patch of the base's). Deeper keys patch into whatever is in place
at the time, so ``model.init_args.stack.mixers.M.init_args.d_state`` after a family's ``mixers``
patches that family's Mamba.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from hybrids.train.model_args import nest_key

# The top-level sections of a CLI config that an override may address.
SECTIONS = ("model", "data", "trainer", "checkpoint", "seed_everything", "ckpt_path")


def check_key(key: str) -> str | None:
    """None if ``key`` may be overridden, else why not."""
    if not isinstance(key, str) or not key:
        return f"{key!r} is not a config key"
    head = key.split(".", 1)[0]
    if head not in SECTIONS:
        return f"{key!r} does not address a config section ({', '.join(SECTIONS)})"
    if any(not part for part in key.split(".")):
        return f"{key!r} has an empty component"
    return None


def get_dotted(config: Mapping[str, Any], key: str, default: Any = None) -> Any:
    node: Any = config
    for part in nest_key(key).split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def set_dotted(config: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key`` in ``config`` (in place), creating the dicts on the way; the value is copied
    so that runs never share mutable parts."""
    key = nest_key(key)
    parts = key.split(".")
    node = config
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            where = ".".join(parts[: i + 1])
            raise KeyError(f"{key}: {where} holds {child!r}, not a mapping, so it cannot be patched")
        node = child
    node[parts[-1]] = copy.deepcopy(value)


def apply(config: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with ``overrides`` applied in order (in place; returned for chaining)."""
    for key, value in overrides.items():
        set_dotted(config, key, value)
    return config
