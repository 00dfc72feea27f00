"""Errors shared by every layer of hybrids (imports nothing of ours, so anything may use it)."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any


class ConfigError(ValueError):
    """A configuration problem.

    ``key`` is the dotted config key at fault, relative to the class that raised it; ``section``
    (``"model"`` or ``"data"``) is the part of a CLI config that class was built from, set by
    :class:`config_section` where the class declares it, so the CLI can print the full key
    ``<section>.init_args.<key>``.
    """

    def __init__(self, key: str, message: str, section: str | None = None) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message
        self.section = section
        # The argument of the section the raising class stands for (LanguageModel's ``stack`` or
        # ``optim``), set with the section by config_section.
        self.prefix: str | None = None

    @property
    def full_key(self) -> str:
        key = f"{self.prefix}.{self.key}" if self.prefix else self.key
        return f"{self.section}.init_args.{key}" if self.section else key


class config_section(contextlib.ContextDecorator):
    """Mark ConfigErrors raised inside (a ``with`` block or a decorated ``__init__``) as coming
    from one section of the config: ``LanguageModel`` declares ``"model"``, the data modules
    ``"data"``, and the stack and optimiser settings ``"model"`` with the prefix ``"stack"`` or
    ``"optim"`` (``model.init_args.stack.d_model``). An error that already has a section keeps it."""

    def __init__(self, section: str, prefix: str | None = None) -> None:
        self.section = section
        # The argument of that section the raising class stands for (LanguageModel's ``stack``
        # and ``optim``): its keys are nested under it in the config.
        self.prefix = prefix

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if isinstance(error, ConfigError) and error.section is None:
            error.section = self.section
            error.prefix = self.prefix
        return False


class StateSizeUnknown(Exception):
    """A mixer of the stack has no ``state_size(seq_len)``, so the stack's state cannot be counted
    (user mixers need only ``forward`` to train)."""


def defaults_of(cls: type) -> dict[str, Any]:
    """The constructor arguments of ``cls`` that have defaults, and the defaults."""
    return {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty}


def argument_at_fault(build: Callable[[dict[str, Any]], Any], kwargs: Mapping[str, Any], defaults: Mapping[str, Any],
                      known_to_fail: bool = False) -> str | None:
    """The argument of ``kwargs`` whose reset to its default lets ``build(kwargs)`` succeed (the
    first in order), or None where no single argument does, or where ``build(kwargs)`` succeeds
    (what failed is not among them; not tried again if ``known_to_fail``). For constructors that
    refuse a value without naming it: Lightning's Trainer, a mixer that cannot allocate."""
    if not known_to_fail:
        try:
            build(dict(kwargs))
        except Exception:  # noqa: BLE001 (refused, as expected: look for the argument)
            pass
        else:
            return None
    for name, value in kwargs.items():
        if name not in defaults or _same(value, defaults[name]):
            continue
        try:
            build({**kwargs, name: defaults[name]})
        except Exception:  # noqa: BLE001 (still refused: not this argument alone)
            continue
        return name
    return None


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 (objects without a usable ==)
        return a is b
