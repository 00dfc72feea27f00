"""Checkpoint files that are never half-written: a kill at any moment leaves the old file or the new one.

Lightning's own writer serialises the checkpoint in memory and moves a temporary file onto the
final name, but for local paths that temporary file lives in the system's temporary folder: when
that is another filesystem the move is a copy onto the real name, and a kill during the copy
leaves a truncated ``last.ckpt`` where the run's only resumable state was. Nothing is fsynced
either, so a power cut can leave an empty file behind a completed rename.

:class:`AtomicCheckpointIO` writes each checkpoint to a temporary file in the *same* folder,
flushes and fsyncs it, renames it onto the final name (``os.replace``: atomic within one
filesystem) and fsyncs the folder so that the rename itself is durable. Temporaries are named
``.<name>.<random>.tmp``, which ``*.ckpt`` searches (``--ckpt_path last``) never match; those
left by a writer that was killed are removed at the next save of the same file. Remote paths
(``s3://``, ...) keep Lightning's writer, whose object stores replace objects whole anyway.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` such that ``path`` holds either its previous content or all of
    ``obj``, whatever happens during the call (module docstring)."""
    path = Path(path)
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}."
    for stale in folder.glob(f"{prefix}*.tmp"):  # left by a writer that was killed
        stale.unlink(missing_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=folder)
    try:
        # mkstemp makes the file private (0600); give it the mode open() would have (umask).
        os.fchmod(descriptor, 0o666 & ~_UMASK)
        with os.fdopen(descriptor, "wb") as file:
            torch.save(obj, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_folder(folder)


def _fsync_folder(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # a platform without directory descriptors (Windows): the rename is all we have
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` with :func:`atomic_torch_save` for local files."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_torch_save(checkpoint, path)
