"""Run a sweep's runs as Ray tasks (``hybrids sweep --launcher ray``).

:func:`run_on_ray` submits ``execute(task)`` once per task as a Ray task, reports each result to
the driver as it completes, and returns the results in task order. The sweep passes
:func:`hybrids.lab.sweeps.execute.execute_run` and its ``RunTask`` s; the function itself is generic.

Where it connects (``address``):

* ``None``: the cluster named by ``RAY_ADDRESS`` if that is set; otherwise a local Ray instance
  started for this call and shut down at its end. If Ray is already initialised in this process
  it is used as it is and left running.
* ``"auto"``, ``"host:port"`` or ``"ray://host:port"``: that cluster (``"auto"``: the one
  ``ray start`` left on this machine), left running afterwards.

What a cluster must provide: the run folders are absolute paths, read and written by the
workers, so the sweep folder must lie on a filesystem that every node sees at the same path,
and hybrids (with its dependencies) must be installed on every node. Nothing is shipped with a
``runtime_env``.

A task whose Ray execution fails (an exception escaping ``execute``, a crashed worker, a lost
node) does not stop the others: its result is ``{"status": "failed", "error": "ray: <message>"}``
(:func:`failed_result`), passed to ``on_result`` and returned like any other; nothing is
written to the run's folder for it, which is the caller's to record. Ray does not retry it
unless ``max_retries`` says so: re-running the sweep resumes what did not finish.

Token authentication (Ray >= 2.5x): a cluster started while ``~/.ray/auth_token`` exists
requires the token of every driver, and a driver given an explicit address only sends it with
``RAY_AUTH_MODE=token`` in its environment (as for any Ray driver; nothing is set here).

Ray is an optional extra: ``pip install -e ".[ray]"``. Without it :func:`run_on_ray` raises
:class:`LauncherUnavailable`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

__all__ = ["LauncherUnavailable", "failed_result", "run_on_ray"]

T = TypeVar("T")
R = TypeVar("R")

logger = logging.getLogger(__name__)

INSTALL_HINT = 'pip install -e ".[ray]"'

# A local instance only carries small result dicts through its object store (the runs
# themselves are subprocesses of the workers), so it need not reserve Ray's default 30% of RAM,
# and stays within a small /dev/shm.
LOCAL_OBJECT_STORE_BYTES = 256 * 1024**2


class LauncherUnavailable(RuntimeError):
    """The launcher asked for cannot be used here (for Ray: the package is not installed)."""


def _import_ray():
    try:
        import ray
    except ImportError as error:  # also ``sys.modules["ray"] = None``
        raise LauncherUnavailable(
            f"--launcher ray needs the ray package, which is not installed: {INSTALL_HINT}"
        ) from error
    return ray


def failed_result(error: BaseException) -> dict[str, Any]:
    """The result recorded for a task whose Ray execution failed: ``{"status": "failed",
    "error": "ray: <first line of the message>"}``, with ``"detail"`` holding the whole message
    (a remote traceback, say) when it has more lines."""
    cause = getattr(error, "cause", None)  # RayTaskError: the exception raised in the task
    if isinstance(cause, BaseException):
        message = f"{type(cause).__name__}: {cause}"
    else:
        message = f"{type(error).__name__}: {error}"
    first, *rest = message.strip().splitlines() or [""]
    result = {"status": "failed", "error": f"ray: {first}"}
    if rest:
        result["detail"] = message.strip()
    return result


def _apply(execute: Callable[[Any], Any], task: Any) -> Any:
    return execute(task)


def _connect(ray, address: str | None) -> bool:
    """Initialise Ray for ``address``; True when this call did so (and must shut it down)."""
    if ray.is_initialized():
        return False
    quiet: dict[str, Any] = {"logging_level": logging.WARNING}
    if address is None:
        address = os.environ.get("RAY_ADDRESS") or "local"
    if address == "local":
        # "local" rather than None: None would join a cluster that ``ray start`` left running.
        ray.init(
            address="local",
            include_dashboard=False,
            log_to_driver=False,
            object_store_memory=LOCAL_OBJECT_STORE_BYTES,
            **quiet,
        )
    elif address.startswith("ray://"):
        ray.init(address=address, **quiet)  # Ray Client: driver options apply on the server
    else:
        ray.init(address=address, log_to_driver=False, **quiet)
    return True


def _warn_if_infeasible(ray, cpus_per_task: float) -> None:
    """Ray queues a task no node can hold without failing it; say so rather than hang quietly."""
    try:
        largest = max(
            (node["Resources"].get("CPU", 0) for node in ray.nodes() if node.get("Alive")),
            default=0,
        )
    except Exception:  # informational only
        return
    if cpus_per_task > largest:
        logger.warning(
            "cpus_per_task=%s but the largest Ray node has %s CPUs: the runs will wait until "
            "the cluster gains a node that large",
            cpus_per_task,
            largest,
        )


def run_on_ray(
    tasks: Sequence[T],
    execute: Callable[[T], R],
    *,
    address: str | None = None,
    cpus_per_task: float = 1.0,
    gpus_per_task: float = 0.0,
    on_result: Callable[[T, R], None] | None = None,
    max_retries: int = 0,
) -> list[R]:
    """Run ``execute(task)`` for every task as one Ray task each; return the results in order.

    ``execute`` and the tasks must be picklable, and ``execute`` importable on the workers (a
    module-level function of an installed package). Each Ray task reserves ``cpus_per_task``
    CPUs, so a cluster runs at most ``CPUs / cpus_per_task`` of them at once, and
    ``gpus_per_task`` GPUs: Ray hides the GPUs from a task that reserves none
    (``CUDA_VISIBLE_DEVICES=""``), so runs meant for GPUs must ask for them. ``on_result(task,
    result)`` is called in this process as each task completes, in completion order; an
    exception from it cancels the tasks still pending and propagates. A task whose Ray execution
    fails yields :func:`failed_result` (``{"status": "failed", "error": "ray: ..."}``) instead
    of raising. ``max_retries`` is Ray's retry count for a task whose worker or node dies.
    """
    ray = _import_ray()
    tasks = list(tasks)
    if not tasks:
        return []
    if cpus_per_task <= 0:
        raise ValueError(f"cpus_per_task must be positive, got {cpus_per_task}")
    if gpus_per_task < 0:
        raise ValueError(f"gpus_per_task must be >= 0, got {gpus_per_task}")
    started = _connect(ray, address)
    pending: list = []
    try:
        _warn_if_infeasible(ray, cpus_per_task)
        remote = ray.remote(num_cpus=cpus_per_task, num_gpus=gpus_per_task, max_retries=max_retries)(_apply)
        execute_ref = ray.put(execute)
        refs = [remote.remote(execute_ref, task) for task in tasks]
        index = {ref: i for i, ref in enumerate(refs)}
        results: list[Any] = [None] * len(tasks)
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                try:
                    result = ray.get(ref)
                except Exception as error:  # RayTaskError, WorkerCrashedError, ...
                    result = failed_result(error)
                i = index[ref]
                results[i] = result
                if on_result is not None:
                    on_result(tasks[i], result)
        return results
    finally:
        if pending:  # interrupted, or on_result raised: stop what has not run yet
            for ref in pending:
                try:
                    ray.cancel(ref)
                except Exception:
                    pass
        if started:
            ray.shutdown()
