"""Whether a sweep run that its ``status.json`` calls "running" is run by a live process.

A run's folder holds ``.lock``, which the sweep runner (:mod:`hybrids.lab.sweeps.execute`) holds
with ``flock`` for as long as the run trains: the lock is taken before "running" is written and
the training process keeps it (they share one open file), so it is free only when no process
runs the run. A status that says "running" beside a free lock is a run whose sweep was killed
before it could record how the run ended. The sweep runner marks such runs interrupted (and
resumes them) and the analysis (:mod:`hybrids.lab.analysis`) shows them so; this module, like
:mod:`hybrids.lab.metrics_log`, sits beside both so that neither imports the other (the
runner's package loads torch, the analysis does not need the runner).

Only runs recorded on this host are judged: a run of a Ray cluster on another node holds its
lock there, and a lock on a shared filesystem is not always seen across nodes.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any

LOCK_NAME = ".lock"
ORPHAN_ERROR = "its sweep stopped without recording how it ended (no process holds the run); rerun the sweep to resume"


def this_host() -> str:
    """The name the runner records as a run's ``host``."""
    return os.uname().nodename


def lock_is_held(run_dir: str | Path) -> bool | None:
    """True while a process holds the run's lock, False when it is free (or was never made),
    None where it cannot be told (a filesystem without locks, an unreadable folder).

    Probed with a shared lock, released at once: probes do not block one another, and a runner
    that meets one retries for a moment instead of calling the run busy."""
    try:
        fd = os.open(Path(run_dir) / LOCK_NAME, os.O_RDONLY)
    except FileNotFoundError:
        return False  # the runner makes the lock before it writes "running"
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:  # ENOLCK and the like: locks do not work here
        return None
    finally:
        os.close(fd)  # also releases the probe's lock
    return False


def is_orphaned(run_dir: str | Path, status: dict[str, Any] | None) -> bool:
    """A status that says "running", recorded on this host, whose run no process holds."""
    return (
        isinstance(status, dict)
        and status.get("status") == "running"
        and status.get("host") == this_host()
        and lock_is_held(run_dir) is False
    )


def as_seen(run_dir: str | Path, status: dict[str, Any]) -> dict[str, Any]:
    """``status`` as a reader should show it: an orphaned "running" run is interrupted (the file
    itself is left to the sweep runner, which corrects it under the lock)."""
    if not is_orphaned(run_dir, status):
        return status
    return {**status, "status": "interrupted", "error": ORPHAN_ERROR}
