"""hybrids: a model zoo for hybrid sequence models (SSMs, selective-scan RNNs, sparse attention).

Kept light on purpose: importing ``hybrids.kernels`` runs this file first, and kernels must not
pull in Lightning. The heavy names load on first use.
"""

from __future__ import annotations

from hybrids import _legacy

__version__ = "0.1.0"

_legacy.install()  # module paths from before the December 2026 layout still import

_LAZY = {
    "LanguageModel": ("hybrids.train.module", "LanguageModel"),
    "HybridLM": ("hybrids.model", "HybridLM"),
    "StackConfig": ("hybrids.model", "StackConfig"),
    "OptimConfig": ("hybrids.train.optim", "OptimConfig"),
    "ConfigError": ("hybrids.errors", "ConfigError"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'hybrids' has no attribute {name!r}")
