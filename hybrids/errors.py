"""Errors shared by every layer of hybrids (imports nothing of ours, so anything may use it)."""

from __future__ import annotations

import contextlib


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
