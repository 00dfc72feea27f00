"""Parameter count and state size of a run, from its config, by building the model untrained.

The figures are the ones ``hybrids fit`` logs (``params``, ``state_size`` at the data's
``seq_len``): the same classes built with the same arguments, the vocabulary taken from the data
module as the CLI does. No data is generated and nothing is trained.
"""

from __future__ import annotations

import importlib
import inspect
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hybrids.errors import StateSizeUnknown
from hybrids.train.model_args import nest, unnest


class BuildError(ValueError):
    """The config does not build; the message says which part."""


@dataclass(frozen=True)
class Figures:
    params: int
    state_size: int | None  # None: a mixer does not declare its state size
    seq_len: int | None
    d_model: int | None
    vocab_size: int | None
    num_kv_pairs: int | None


def _class(path: str, section: str) -> type:
    module_name, _, name = str(path).rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise BuildError(f"{section}.class_path: cannot import {path!r} ({err})") from err


def _section(config: Mapping[str, Any], name: str, default_class: str) -> tuple[type, dict[str, Any]]:
    section = config.get(name) or {}
    if not isinstance(section, Mapping):
        raise BuildError(f"{name}: expected {{class_path, init_args}}, got {section!r}")
    return _class(section.get("class_path", default_class), name), dict(section.get("init_args") or {})


_CACHE: dict[str, Figures] = {}
# Arguments that change neither the parameter count nor the state size, left out of the cache
# key so that a sweep's learning rates and seeds share one build.
_NOT_SHAPES = {
    "model": ("lr", "weight_decay", "betas", "warmup_steps", "min_lr_ratio", "max_loss", "dropout"),
    "data": ("seed", "order_seed", "num_train_examples", "num_val_examples", "num_test_examples",
             "batch_size", "num_workers"),
}


def _shape_key(config: Mapping[str, Any]) -> str:
    sections = {}
    for name, skip in _NOT_SHAPES.items():
        section = dict(config.get(name) or {})
        init_args = section.get("init_args") or {}
        init_args = unnest(init_args) if name == "model" else init_args
        section["init_args"] = {k: v for k, v in init_args.items() if k not in skip}
        sections[name] = section
    return json.dumps(sections, sort_keys=True, default=str)


def measure(config: Mapping[str, Any]) -> Figures:
    """The figures of the run ``config`` would start (cached by what fixes the model's shapes)."""
    key = _shape_key(config)
    if key not in _CACHE:
        _CACHE[key] = _measure(config)
    return _CACHE[key]


def _measure(config: Mapping[str, Any]) -> Figures:
    data_class, data_args = _section(config, "data", "hybrids.data.MQAR")
    model_class, model_args = _section(config, "model", "hybrids.LanguageModel")
    try:
        data = data_class(**data_args)
    except (TypeError, ValueError) as err:
        raise BuildError(f"data: {data_class.__name__}({_args(data_args)}) failed: {err}") from err
    vocab_size = getattr(data, "vocab_size", None)
    if "stack" in inspect.signature(model_class).parameters:  # LanguageModel: its nested spelling
        model_args, _ = nest(model_args)
        model_args["stack"] = {**({"vocab_size": vocab_size} if vocab_size is not None else {}),
                               **dict(model_args.get("stack") or {})}
    elif vocab_size is not None:
        model_args.setdefault("vocab_size", vocab_size)
    try:
        model = model_class(**model_args)
    except (TypeError, ValueError) as err:
        raise BuildError(f"model: {model_class.__name__}({_args(model_args)}) failed: {err}") from err
    seq_len = getattr(data, "seq_len", None)
    state_size = None
    if seq_len is not None:
        try:
            state_size = int(model.state_size(seq_len))
        except StateSizeUnknown:
            state_size = None
    return Figures(
        params=int(model.num_parameters()),
        state_size=state_size,
        seq_len=seq_len,
        d_model=getattr(getattr(model, "config", None), "d_model", unnest(model_args).get("d_model")),
        vocab_size=vocab_size,
        num_kv_pairs=getattr(data, "num_kv_pairs", None),
    )


def _args(args: Mapping[str, Any]) -> str:
    text = ", ".join(f"{k}={v!r}" for k, v in args.items())
    return text if len(text) < 200 else text[:200] + "..."
