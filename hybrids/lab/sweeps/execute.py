"""Execute one run of a sweep: ``hybrids fit`` in a subprocess, its outcome in ``status.json``.

A run's folder (written by :mod:`hybrids.cli.sweep`) holds::

    config.yaml    the resolved config; its logger writes to logs/version_N/
    run.json       the plan: name, axes, tuned axes, size target, figures of the built model
    status.json    written here: status, final metrics, whether it finished learning, wall time,
                   attempts, error
    output.log     what the run printed, every attempt appended

Each attempt runs ``python -m hybrids fit -c config.yaml --ckpt_path last --test_after_fit
true``: the CLI resumes the newest checkpoint of the same run identity (an interrupted run picks
up where it stopped), trains to the end, and tests the final weights. A failing run never
raises here: its status says ``failed`` with the error line it printed, so a sweep goes on.
The function is importable by path, so Ray workers can run it as well as the local pool.

Each attempt is a fresh interpreter (``subprocess.Popen``), in a session of its own, with the
run's thread variables in its environment, its output appended to ``output.log``, and the run's
lock passed on (``pass_fds``). The price is the interpreter's imports, paid by every attempt:
``python -c "import hybrids.cli.fit"`` (torch, Lightning, the CLI) took 4.6 s of wall time, best
of 3 (4.4 s of CPU; up to 11 s while other work kept both cores busy), on the 2-core machine of
issue 25. That is 1-9% of a run of 450-50 s, some 4 minutes of a 98-run sweep on two workers.

Why not start runs as forks of a process that has done those imports once: a hand-written fork
server (603 lines of sockets, descriptor passing and signal handling) did that until issue 25,
and ``multiprocessing``'s forkserver with ``set_forkserver_preload`` would need less code but
loses what the sweep relies on: (1) its server lives in the sweep's process group, so a SIGHUP
from a closed terminal or a SIGTERM to the group (``timeout``, a batch system) kills it, and
with it the exit status of every live run, which are still saving their checkpoints; (2) it
keeps the environment of its first use, so each run's thread variables would reach torch and
OpenBLAS after they have loaded, too late; (3) its children are multiprocessing's processes
(stdin replaced, joined at the sweep's exit, another ``__main__``), not ``python -m hybrids
fit``, and the lock and output file would still have to be handed over by hand. A subprocess
has all of it for free.

A run outlives its sweep only as long as it takes to save its checkpoint. On Linux each attempt
starts as a few lines of Python (``_PARENT_DEATH``: some 10 ms) that ask the kernel for SIGTERM
when the thread that started it dies (``prctl(PR_SET_PDEATHSIG)``) and then ``exec`` the run, so
a sweep killed outright (SIGKILL, the OOM killer) still stops its runs as SIGTERM would: they
save ``last.ckpt`` and exit. The request is made in the new process rather than in a
``preexec_fn``: that runs Python between ``fork`` and ``exec`` in a copy of a process with other
threads (the local pool's workers, torch's, a Ray worker's gRPC threads), which Python documents
as unsafe, and it rules out ``vfork``. The starting thread is the one that waits for the run
(``execute_run`` returns only when the run has ended), so the signal comes only when the sweep
dies. A run whose sweep died anyway leaves "running" in ``status.json`` and its lock free: the
next sweep marks it interrupted and resumes it (:func:`mark_orphaned`), and readers show it so
(:mod:`hybrids.lab.run_status`).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hybrids.lab.learning import learning_record, run_curve_of
from hybrids.lab.metrics_log import newest_version, run_values
from hybrids.lab.sweeps.halving import EXIT_PAUSED
from hybrids.lab.run_status import LOCK_NAME, ORPHAN_ERROR, is_orphaned, this_host

# Exit statuses of `hybrids fit` (hybrids.cli.fit): 130 / 143 stopped by SIGINT / SIGTERM after
# saving last.ckpt, so the run resumes on the next attempt.
INTERRUPTED_CODES = {128 + signal.SIGINT, 128 + signal.SIGTERM}
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True)
class RunTask:
    """What a worker needs to run one run (picklable, for Ray)."""

    run_dir: str  # absolute path of the run's folder
    threads: int = 1  # OpenMP / torch threads of the run
    python: str = field(default_factory=lambda: sys.executable)
    cwd: str = field(default_factory=os.getcwd)  # where relative paths in the config resolve
    pause_at: int | None = None  # successive halving: pause after the validation at this step


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def write_json(path: Path, value: dict[str, Any]) -> None:
    """Write atomically: a reader (or a killed sweep) never sees half a file."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(value, indent=1, default=str))
    os.replace(temporary, path)


def is_finished(run_dir: Path) -> bool:
    """Done, under the config the folder holds now (an edited sweep reruns what it changed)."""
    plan, status = read_json(run_dir / "run.json"), read_json(run_dir / "status.json")
    return bool(plan and status and status.get("status") == "done" and status.get("config_hash") == plan.get("config_hash"))


# Live runs of this process, so that the local pool can pass a stop signal on.
_LIVE: set[subprocess.Popen] = set()
_LIVE_LOCK = threading.Lock()


def signal_live_runs(signum: int) -> int:
    """Send ``signum`` to every run this process has started and not yet reaped; how many."""
    with _LIVE_LOCK:
        live = list(_LIVE)
    for process in live:
        try:
            process.send_signal(signum)
        except ProcessLookupError:
            pass
    return len(live)


def execute_run(task: RunTask) -> dict[str, Any]:
    """Run (or resume) the run in ``task.run_dir`` to the end; its status dict (also written)."""
    run_dir = Path(task.run_dir)
    plan = read_json(run_dir / "run.json")
    if plan is None:
        return {"name": run_dir.name, "status": "failed", "error": f"{run_dir}/run.json missing or unreadable"}
    # One process per run: the lock is held by this function and shared with the training
    # process (pass_fds: the same open file, and flock locks belong to the open file), so it
    # stays taken while either lives, with no moment in which it is free (a run whose sweep was
    # killed keeps it while it saves its checkpoint and exits), and a second sweep over the same
    # folder passes the run by instead of training it twice.
    lock = (run_dir / LOCK_NAME).open("a")
    if not _take(lock):
        lock.close()
        current = read_json(run_dir / "status.json") or {}
        return {**current, "name": plan.get("name", run_dir.name), "status": "busy",
                "error": "another process is running it (its lock is taken); not started twice"}
    with lock:
        return _execute_locked(task, run_dir, plan, lock.fileno())


def _take(lock, patience_s: float = 1.0) -> bool:
    """The run's lock, exclusively, or False if another process holds it. Tried again for
    ``patience_s``: a reader (``hybrids plot``, a sweep looking for orphaned runs) holds it for
    a moment to see whether anyone runs the run, and must not make the run look busy."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


def mark_orphaned(run_dir: Path) -> dict[str, Any] | None:
    """Mark interrupted a run whose status.json says "running" though no process holds its lock
    (its sweep was killed); the new status, or None if the run is not such a run. Decided and
    written under the lock, so that a sweep starting the run at the same moment is not
    overwritten."""
    if not is_orphaned(run_dir, read_json(run_dir / "status.json")):
        return None
    with (run_dir / LOCK_NAME).open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # taken since: someone runs it now
            return None
        status = read_json(run_dir / "status.json") or {}
        if status.get("status") != "running":
            return None
        status.update(status="interrupted", error=ORPHAN_ERROR,
                      note=f"marked interrupted at {time.strftime('%Y-%m-%d %H:%M:%S')} by a sweep on {this_host()}: "
                      f"status.json said running (pid {status.get('pid')}), but no process held the run's lock")
        write_json(run_dir / "status.json", status)
        return status


def _execute_locked(task: RunTask, run_dir: Path, plan: dict[str, Any], lock_fd: int) -> dict[str, Any]:
    previous = read_json(run_dir / "status.json") or {}
    if is_finished(run_dir):
        return previous
    same_config = previous.get("config_hash") == plan.get("config_hash")
    if not same_config and (run_dir / "logs").exists():
        # The sweep file changed this run: the old logs and checkpoints belong to another
        # config (resuming them could keep, e.g., a longer training), so they are set aside.
        aside = run_dir / f"logs.superseded-{previous.get('config_hash') or 'unknown'}"
        if aside.exists():
            aside = run_dir / f"{aside.name}-{int(time.time())}"
        (run_dir / "logs").rename(aside)
    status = {
        **plan,
        "status": "running",
        "metrics": {},
        "attempts": (previous.get("attempts", 0) if same_config else 0) + 1,
        "wall_s": previous.get("wall_s", 0.0) if same_config else 0.0,
        "error": None,
        "returncode": None,
        "host": this_host(),
        "pid": None,
    }
    write_json(run_dir / "status.json", status)

    command = [task.python, "-m", "hybrids", "fit", "-c", str(run_dir / "config.yaml"), "--ckpt_path", "last",
               "--test_after_fit", "true"]
    if task.pause_at is not None:
        command += ["--pause_at_step", str(task.pause_at)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **{name: str(task.threads) for name in THREAD_VARIABLES}}
    start = time.monotonic()
    with (run_dir / "output.log").open("a") as log:
        log.write(f"\n=== attempt {status['attempts']} on {status['host']} at {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                  f"{' '.join(command)}\n")
        log.flush()
        try:
            process = _start(task, command, env, log, lock_fd)
        except OSError as err:  # no such interpreter or folder (on a cluster node, say)
            status.update(status="failed", error=f"cannot start {task.python} in {task.cwd}: {err}")
            write_json(run_dir / "status.json", status)
            return status
        # Written again with the run's pid: who runs it, for a person (or a test) to ask or stop.
        status["pid"] = process.pid
        write_json(run_dir / "status.json", status)
        try:
            returncode = process.wait()
        except BaseException:
            # The worker itself is being stopped (a Ray task cancelled, KeyboardInterrupt): the
            # run lives in its own session, so stop it here, letting it save its checkpoint.
            _stop(process)
            raise
        finally:
            with _LIVE_LOCK:
                _LIVE.discard(process)
    elapsed = time.monotonic() - start

    # The last logged value of each metric (validation: the end of training; test: the final
    # weights); status.json keeps the named ones ("val/acc"), not the counters ("params").
    metrics = run_values(run_dir / "logs")
    status.update(returncode=returncode, wall_s=round(status["wall_s"] + elapsed, 1), log_dir=newest_version(run_dir / "logs"))
    status["metrics"] = {k: v for k, v in metrics.items() if "/" in k}
    for figure in ("params", "state_size"):
        if figure in metrics and metrics[figure] == metrics[figure]:
            status[f"logged_{figure}"] = int(metrics[figure])
    # Whether it finished learning: solved, plateaued or still improving (hybrids.lab.learning).
    status["learning"] = learning_record(run_dir, finished=returncode == 0)
    signalled = -returncode if returncode < 0 else returncode - 128 if returncode in INTERRUPTED_CODES else None
    if returncode == 0 and "test/acc" in metrics:
        status["status"] = "done"
    elif returncode == EXIT_PAUSED:
        # At a rung of successive halving (hybrids.lab.sweeps.halving): the step of the
        # validation it paused after, the last of its curve.
        status["status"] = "paused"
        status["paused_at"] = last_validated_step(run_dir)
    elif signalled in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        status["status"] = "interrupted"
        status["error"] = f"stopped by {signal.Signals(signalled).name}; rerun the sweep to resume"
    else:
        status["status"] = "failed"
        status["error"] = error_line(run_dir / "output.log") if returncode else "finished without test figures"
    write_json(run_dir / "status.json", status)
    return status


def last_validated_step(run_dir: Path) -> int | None:
    """The optimiser step of the run's last validation (of its criterion's metric), or None."""
    curve = run_curve_of(run_dir)
    return curve[-1][0] if curve else None


# Run by each attempt's interpreter before it becomes the run (Linux): SIGTERM when the thread
# that started it dies (PR_SET_PDEATHSIG is 1; it survives exec), unless that thread is already
# gone (the parent's pid is not the sweep's any more: exit as a run stopped by SIGTERM would);
# then exec the run, same pid, same session, same inherited lock. Any failure to ask is no reason
# not to run: the next sweep still finds an orphan by its lock.
_PARENT_DEATH = """\
import os, signal, sys
try:
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)
except Exception:
    pass
if os.getppid() != int(sys.argv[1]):
    sys.exit(128 + signal.SIGTERM)
os.execvp(sys.argv[2], sys.argv[2:])  # a bare "python" is looked up on PATH
"""


def _with_parent_death(task: RunTask, command: list[str]) -> list[str]:
    """``command`` started through ``_PARENT_DEATH`` where the kernel offers it (Linux)."""
    if not sys.platform.startswith("linux"):
        return command
    # -I -S: the few lines need only the standard library, not the environment's paths or site
    # (the run, exec'd with the same environment, reads them itself).
    return [task.python, "-I", "-S", "-c", _PARENT_DEATH, str(os.getpid()), *command]


def _start(task: RunTask, command: list[str], env: dict[str, str], log, lock_fd: int) -> subprocess.Popen:
    """Start the attempt in a session of its own, registered in ``_LIVE``: a Ctrl-C at the
    terminal reaches only the sweep, which passes one signal on (two SIGINTs would make the run
    stop without its checkpoint). Its own session keeps it out of the sweep's signals; the
    parent-death signal (``_with_parent_death``) keeps it from outliving the sweep."""
    # Started under the lock that signal_live_runs takes, so that a stop signal arriving while
    # the process starts waits for it to be registered instead of missing it.
    with _LIVE_LOCK:
        process = subprocess.Popen(_with_parent_death(task, command), cwd=task.cwd, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True, pass_fds=(lock_fd,))
        _LIVE.add(process)
    return process


def _stop(process: subprocess.Popen, grace_s: float = 120.0) -> None:
    """SIGINT (the run saves last.ckpt and exits), then SIGKILL if it takes longer than ``grace_s``."""
    try:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    except ProcessLookupError:
        pass


_ERROR = re.compile(r"^(error: |[A-Za-z_.]*(Error|Exception)\b)")


def error_line(log: Path, limit: int = 500) -> str:
    """The most telling line of the last attempt's output: the CLI's ``error:`` line or the
    exception that ended it, else the last line."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return "no output"
    attempt = text.rsplit("\n=== attempt ", 1)[-1]
    lines = [line.strip() for line in attempt.splitlines() if line.strip()]
    chosen = next((line for line in reversed(lines) if _ERROR.match(line)), lines[-1] if lines else "no output")
    return chosen[:limit]
