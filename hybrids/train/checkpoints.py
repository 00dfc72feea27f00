"""Reading checkpoints safely, and finding the one to resume.

A checkpoint that cannot be read (truncated by a crash, overwritten, not a checkpoint at all)
gives a :class:`CheckpointError` that names the file and what is wrong, instead of torch's
``OSError: [Errno 22]`` or its advice to retry with ``weights_only=False``.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import torch

# The key under which the CLI stores a run's identity in its checkpoints.
IDENTITY_KEY = "hybrids"


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be used; the message names the file and the reason."""


def read_checkpoint(path: str | Path, weights: bool = False) -> dict[str, Any]:
    """The checkpoint dict in ``path`` (memory-mapped unless ``weights``: reading the metadata of a
    large checkpoint then touches only its small parts).

    Checkpoints are written by this project's runs (they hold Python objects such as the
    hyper-parameters), so they are unpickled in full; never point this at files you do not trust.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes): the write was interrupted")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path}: not a torch checkpoint (no zip archive: truncated, or another kind of file; "
            f"{path.stat().st_size:,} bytes)"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", mmap=not weights, weights_only=False)
    except (ModuleNotFoundError, AttributeError) as err:
        # It pickles a class that does not import here (another project's checkpoint).
        raise CheckpointError(f"{path}: cannot be unpickled here: {err}") from err
    except Exception as err:  # noqa: BLE001  (torch raises many kinds for a damaged file; all mean the same)
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: unreadable checkpoint (truncated or corrupt): {first_line}") from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path}: not a Lightning checkpoint (no state_dict)")
    return checkpoint


def checkpoint_identity(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """``{"hash": ..., "config": ...}`` stored by the CLI, or None (a checkpoint from elsewhere)."""
    value = checkpoint.get(IDENTITY_KEY)
    return value if isinstance(value, dict) and "hash" in value else None


def checkpoints_under(*roots: str | Path | None) -> list[Path]:
    """Every ``*.ckpt`` under the given folders (e.g. all versions of a run's name, and a
    ``--checkpoint.dirpath``), newest first, each once."""
    found: dict[Path, Path] = {}
    for root in roots:
        if root is None or not Path(root).exists():
            continue
        for path in Path(root).rglob("*.ckpt"):
            found.setdefault(path.resolve(), path)
    return sorted(found.values(), key=lambda p: p.stat().st_mtime, reverse=True)
