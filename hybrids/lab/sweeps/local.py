"""The local launcher: a pool of N workers, each running one run at a time.

Each worker is a thread that waits on a ``hybrids fit`` subprocess
(:func:`hybrids.lab.sweeps.execute.execute_run`), so N runs train at once in N processes. On
Ctrl-C, SIGTERM or SIGHUP (a closed terminal) the pool starts nothing new, passes the signal on
to the running runs (SIGTERM for SIGHUP: they save ``last.ckpt`` and exit), waits for them, and
raises :class:`SweepInterrupted`: the next ``hybrids sweep`` resumes them. Each run lives in a
session of its own, so a signal sent by the terminal or to the sweep's process group reaches it
once, from here, and the sweep, still alive, records how each run ended.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

from hybrids.lab.sweeps.execute import signal_live_runs

T = TypeVar("T")


class SweepInterrupted(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def run_locally(
    tasks: Sequence[T], execute: Callable[[T], dict[str, Any]], workers: int = 1,
    on_result: Callable[[T, dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """``execute(task)`` for every task, ``workers`` at a time; results in task order."""
    results: list[dict[str, Any] | None] = [None] * len(tasks)
    stop = threading.Event()
    received: list[int] = []

    def handler(signum, frame):  # runs in the main thread, which only waits
        if not received:
            received.append(signum)
            stop.set()
            signal_live_runs(signal.SIGTERM if signum == signal.SIGHUP else signum)

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = {}
    if in_main_thread:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            previous[signum] = signal.signal(signum, handler)
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            pending: dict[Future, int] = {}
            queue = list(enumerate(tasks))
            while queue or pending:
                while queue and len(pending) < max(1, workers) and not stop.is_set():
                    index, task = queue.pop(0)
                    pending[pool.submit(_guarded, execute, task)] = index
                if not pending:
                    break
                done, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for future in done:
                    index = pending.pop(future)
                    results[index] = future.result()
                    if on_result is not None:
                        on_result(tasks[index], results[index])
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
    if received:
        raise SweepInterrupted(received[0])
    return [r for r in results if r is not None]


def _guarded(execute: Callable[[T], dict[str, Any]], task: T) -> dict[str, Any]:
    """A bug in the launcher's own code must not take the other runs down with it."""
    try:
        return execute(task)
    except Exception as err:  # noqa: BLE001 (recorded as the run's failure)
        return {"status": "failed", "error": f"{type(err).__name__}: {err}"}
