"""Trivial module-level tasks for tests/lab/test_sweep_ray.py, run inside Ray workers.

A module of its own (not the test module) so that a worker importing it imports nothing heavy.
"""

from __future__ import annotations

import os


def double(x: int) -> dict:
    """A run that succeeds, except for 3, which raises (as a crashing ``execute`` would)."""
    if x == 3:
        raise ValueError("three is not allowed")
    return {"status": "completed", "value": 2 * x, "pid": os.getpid()}
