"""Module paths from before the package layout of December 2026, still importable.

Saved configs, checkpoints and run folders name classes by module path (a checkpoint's identity
holds ``hybrids.lit.LanguageModel``; notebooks may import ``hybrids.analysis``). Importing an old
path gives the module that holds the code now, with a DeprecationWarning naming the new path, so
that runs written before the move keep loading, resuming and comparing equal to new ones
(``tests/train/test_legacy_runs.py`` loads such a run).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

# Old module (or package) -> where its code lives now. A package's submodules follow it.
MOVED = {
    "hybrids.lit": "hybrids.train.module",
    "hybrids.long_context": "hybrids.train.long_context",
    "hybrids.callbacks": "hybrids.train.callbacks",
    "hybrids.checkpoints": "hybrids.train.checkpoints",
    "hybrids.identity": "hybrids.train.identity",
    "hybrids.blocks": "hybrids.model.blocks",
    "hybrids.config": "hybrids.model.config",
    "hybrids.reversible": "hybrids.model.reversible",
    "hybrids.segments": "hybrids.model.state_carry",
    "hybrids.spec": "hybrids.model.mixer_specs",
    "hybrids.sampling": "hybrids.model.sampling",
    "hybrids.generation_cli": "hybrids.cli.generate",
    "hybrids.sweeps.command": "hybrids.cli.sweep",
    "hybrids.analysis.plot_cli": "hybrids.cli.plot",
    "hybrids.sweeps": "hybrids.lab.sweeps",
    "hybrids.analysis": "hybrids.lab.analysis",
    "hybrids.mixers.cache": "hybrids.parts.kv_cache",
    "hybrids.mixers.feature_maps": "hybrids.parts.feature_maps",
    "hybrids.mixers.knn_memory": "hybrids.parts.knn_memory",
    "hybrids.mixers.hippo": "hybrids.kernels.ssm.hippo",
}


def new_name(name: str) -> str | None:
    """Where the module ``name`` lives now, or None if it did not move."""
    if name in MOVED:
        return MOVED[name]
    for old, new in MOVED.items():
        if name.startswith(old + "."):
            return new + name[len(old) :]
    return None


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves an old path with the module that lives at its new one (the same module object)."""

    def find_spec(self, name, path=None, target=None):
        if new_name(name) is None:
            return None
        return importlib.util.spec_from_loader(name, self)

    def create_module(self, spec):
        new = new_name(spec.name)
        warnings.warn(f"{spec.name} moved to {new}", DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module) -> None:
        pass  # already executed under its new name


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once): an old package's submodules must not be
    found by the path finder through the new package's ``__path__``, which would load them a
    second time under their old names (two copies of each class)."""
    if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
        sys.meta_path.insert(0, _MovedModules())
