"""Build mixers from ``class_path`` / ``init_args`` specs, with errors that name the config key.

A spec is what a YAML stack gives under ``mixers``::

    A: {class_path: hybrids.mixers.Attention, init_args: {heads: 4}}

Any importable class works, ours or a user's: there is no registry. ``d_model`` is passed by the
model, so specs never repeat it.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import types
import typing
from collections.abc import Mapping
from typing import Any

from torch import nn

from hybrids.errors import ConfigError, argument_at_fault, defaults_of


def import_class(path: str, key: str) -> type:
    """Import ``package.module.Class``; ConfigError naming ``key`` if it cannot be found."""
    module_name, _, class_name = path.rpartition(".")
    if not module_name:
        raise ConfigError(key, f"class_path {path!r} must be a dotted path such as 'hybrids.mixers.Attention'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(key, f"cannot import module {module_name!r} for class_path {path!r} ({err})") from err
    if not hasattr(module, class_name):
        public = [n for n in dir(module) if not n.startswith("_") and isinstance(getattr(module, n), type)]
        close = difflib.get_close_matches(class_name, public, n=1)
        hint = f"; did you mean {module_name}.{close[0]}?" if close else ""
        raise ConfigError(key, f"module {module_name!r} has no class {class_name!r}{hint}")
    cls = getattr(module, class_name)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ConfigError(key, f"{path!r} is not a torch.nn.Module class")
    return cls


def _check_init_args(cls: type, init_args: Mapping[str, Any], key: str) -> None:
    """Reject unknown argument names (with a suggestion) and values of the wrong type, before
    construction."""
    params = inspect.signature(cls.__init__).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        accepted = [n for n in params if n not in ("self", "d_model")]
        for name in init_args:
            if name == "d_model":
                raise ConfigError(f"{key}.d_model", "is set by the model (model.d_model); remove it from the mixer spec")
            if name not in accepted:
                close = difflib.get_close_matches(name, accepted, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ConfigError(f"{key}.{name}", f"unknown argument of {cls.__name__}; {hint}accepted: {accepted}")
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # annotations that do not resolve (a user's class): nothing to check against
        return
    for name, value in init_args.items():
        if name in hints and not _matches(value, hints[name]):
            raise ConfigError(
                f"{key}.{name}",
                f"expected {_describe(hints[name])}, got {value!r} ({type(value).__name__}) (in {cls.__name__})",
            )


# Annotations checked by _matches; anything else (tensors, callables, user types) is let through.
_SIMPLE = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}


def _matches(value: Any, annotation: Any) -> bool:
    """Whether ``value`` fits ``annotation`` as far as simple types tell (unknown types: yes)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(annotation))
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if origin in (tuple, list) or annotation in (tuple, list):
        return isinstance(value, (tuple, list))
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation in (str, type(None)):
        return isinstance(value, annotation)
    return True


def _describe(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in typing.get_args(annotation))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    return _SIMPLE.get(annotation, getattr(annotation, "__name__", str(annotation)))


def build_mixer(spec: Mapping[str, Any], d_model: int, key: str) -> nn.Module:
    """Instantiate one mixer spec for width ``d_model``. ``key`` is the spec's config key."""
    if isinstance(spec, Mapping) and any("." in str(k) for k in spec):
        raise ConfigError(
            key,
            f"dotted keys {sorted(k for k in spec if '.' in str(k))} cannot patch a mixer spec: on the command "
            "line give the whole spec, e.g. --model.init_args.stack.mixers='{A: {class_path: ..., init_args: {...}}}'",
        )
    if not isinstance(spec, Mapping) or "class_path" not in spec:
        raise ConfigError(key, f"a mixer spec needs 'class_path' (and optionally 'init_args'), got {spec!r}")
    extra = set(spec) - {"class_path", "init_args"}
    if extra:
        raise ConfigError(key, f"unexpected keys {sorted(extra)}; a spec has only 'class_path' and 'init_args'")
    cls = import_class(spec["class_path"], f"{key}.class_path")
    init_args = dict(spec.get("init_args") or {})
    _check_init_args(cls, init_args, f"{key}.init_args")
    try:
        return cls(d_model, **init_args)
    except ValueError as err:
        # Bad arguments raise ValueError (anything else is a bug and keeps its traceback). Our
        # mixers start their messages with the argument at fault ("heads: ..."): name its key.
        named, _, rest = str(err).partition(": ")
        if rest and named in inspect.signature(cls.__init__).parameters:
            raise ConfigError(f"{key}.init_args.{named}", f"{rest} (in {cls.__name__}(d_model={d_model}, ...))") from err
        raise ConfigError(f"{key}.init_args", f"{cls.__name__}(d_model={d_model}, **{init_args}) failed: {err}") from err
    except (MemoryError, OverflowError, RuntimeError) as err:
        # An argument so large that its tensors cannot be allocated (or sized): keyed at the
        # argument whose default lets the mixer build. Anything else is a bug: its traceback stays.
        name = argument_at_fault(lambda kwargs: cls(d_model, **kwargs), init_args, defaults_of(cls), known_to_fail=True)
        if name is None:
            raise
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ConfigError(f"{key}.init_args.{name}", f"{init_args[name]!r} is too large: {cls.__name__}(d_model={d_model}, "
                          f"{name}={init_args[name]!r}) cannot be allocated ({first})") from err


def expand_pattern(pattern: str, n_layers: int | None, letters: Mapping[str, Any]) -> str:
    """The per-layer letters: ``pattern`` repeated (and cut) to ``n_layers`` (default: its length)."""
    if not pattern:
        raise ConfigError("pattern", "must name at least one layer, e.g. 'A' or 'MA'")
    missing = sorted(set(pattern) - set(letters))
    if missing:
        raise ConfigError(
            "pattern",
            f"letters {missing} have no mixer; define them under 'mixers' (defined: {sorted(letters)})",
        )
    n_layers = len(pattern) if n_layers is None else n_layers
    if n_layers <= 0:
        raise ConfigError("n_layers", f"must be positive, got {n_layers}")
    return (pattern * (n_layers // len(pattern) + 1))[:n_layers]
