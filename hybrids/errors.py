"""Errors shared by every layer of hybrids (imports nothing of ours, so anything may use it)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration problem; ``key`` is the dotted config key at fault, relative to the class
    that raised it (the CLI prefixes ``model.init_args.`` or ``data.init_args.``)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message
