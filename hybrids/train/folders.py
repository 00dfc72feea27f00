"""Whether a run can write where it is told to, asked before it trains.

A run folder under a file, or on a read-only filesystem, used to fail at start with an OSError
traceback, and a read-only ``--checkpoint.dirpath`` only at the first save, after a whole epoch
of training. :func:`unwritable` answers before anything runs, by trying: permission bits say
nothing for root, nor about read-only mounts.
"""

from __future__ import annotations

import tempfile
from pathlib import Path


def nearest_existing(folder: Path) -> Path:
    """``folder`` or its closest ancestor that exists (the one the run's folders would be made in)."""
    probe = Path(folder).absolute()
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return probe


def unwritable(folder: str | Path) -> str | None:
    """Why files cannot be created under ``folder`` (made if missing), or None if they can."""
    probe = nearest_existing(Path(folder))
    if not probe.is_dir():
        return f"{probe} is a file, not a folder"
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as err:
        return f"cannot write in {probe} ({err.strerror or err})"
    return None
