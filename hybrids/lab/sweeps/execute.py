"""Execute one run of a sweep: ``hybrids fit`` in a subprocess, its outcome in ``status.json``.

A run's folder (written by :mod:`hybrids.cli.sweep`) holds::

    config.yaml    the resolved config; its logger writes to logs/version_N/
    run.json       the plan: name, axes, tuned axes, size target, figures of the built model
    status.json    written here: status, final metrics, wall time, attempts, error
    output.log     what the run printed, every attempt appended

Each attempt runs ``python -m hybrids fit -c config.yaml --ckpt_path last --test_after_fit
true``: the CLI resumes the newest checkpoint of the same run identity (an interrupted run picks
up where it stopped), trains to the end, and tests the final weights. A failing run never
raises here: its status says ``failed`` with the error line it printed, so a sweep goes on.
The function is importable by path, so Ray workers can run it as well as the local pool.

How the attempt starts (``RunTask.preload``): by default as a fresh interpreter (a subprocess);
with ``preload`` (what ``hybrids sweep`` asks for under the local launcher) as a fork of a
server that has imported torch, Lightning and the CLI already (:mod:`hybrids.lab.sweeps.forkserver`),
which saves the ~7 s of imports every run would otherwise spend. Both give the run the same
session, folder, environment, output file, lock and exit status; the output file's attempt line
says which one ran. Where no server can be had (its interpreter does not start, its imports
fail) the run starts as a fresh interpreter, with a line in ``output.log`` saying why; off Linux
runs always do. Ray tasks keep the subprocess.
"""

from __future__ import annotations

import csv
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
from typing import Any, Protocol

from hybrids.lab.sweeps import forkserver

# Exit statuses of `hybrids fit` (hybrids.cli.fit): 130 / 143 stopped by SIGINT / SIGTERM after
# saving last.ckpt, so the run resumes on the next attempt.
INTERRUPTED_CODES = {128 + signal.SIGINT, 128 + signal.SIGTERM}
# Metrics copied into status.json: the last logged value of each (validation: the end of
# training; test: the final weights).
REPORTED = ("val/acc", "val/loss", "test/acc", "test/loss", "params", "state_size", "seq_len")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True)
class RunTask:
    """What a worker needs to run one run (picklable, for Ray)."""

    run_dir: str  # absolute path of the run's folder
    threads: int = 1  # OpenMP / torch threads of the run
    python: str = field(default_factory=lambda: sys.executable)
    cwd: str = field(default_factory=os.getcwd)  # where relative paths in the config resolve
    # Start the run as a fork of a preloaded server rather than a fresh interpreter. Off by
    # default, so that callers that ship tasks elsewhere (Ray) keep the subprocess; the local
    # launcher of `hybrids sweep` turns it on (--no-preload turns it off).
    preload: bool = False


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


class RunProcess(Protocol):
    """What the sweep needs of a started run: ``subprocess.Popen`` has it, and so has
    :class:`hybrids.lab.sweeps.forkserver.PreloadedRun`. ``wait(timeout)`` raises
    ``subprocess.TimeoutExpired``; the exit status is negative for death by a signal."""

    pid: int | None

    def send_signal(self, signum: int) -> None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def kill(self) -> None: ...


# Live runs of this process, so that the local pool can pass a stop signal on.
_LIVE: set[RunProcess] = set()
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
    # process (inherited by a subprocess, handed over a socket to a fork of the preloaded
    # server: the same open file either way), so it stays taken while either lives (a run
    # orphaned by a killed sweep included), and a second sweep over the same folder passes the
    # run by instead of training it twice.
    lock = (run_dir / ".lock").open("a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        current = read_json(run_dir / "status.json") or {}
        return {**current, "name": plan.get("name", run_dir.name), "status": "busy",
                "error": "another process is running it (its lock is taken); not started twice"}
    with lock:
        return _execute_locked(task, run_dir, plan, lock.fileno())


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
        "host": os.uname().nodename,
    }
    write_json(run_dir / "status.json", status)

    arguments = ["fit", "-c", str(run_dir / "config.yaml"), "--ckpt_path", "last", "--test_after_fit", "true"]
    command = [task.python, "-m", "hybrids", *arguments]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **{name: str(task.threads) for name in THREAD_VARIABLES}}
    preload = task.preload and forkserver.available()
    start = time.monotonic()
    with (run_dir / "output.log").open("a") as log:
        log.write(f"\n=== attempt {status['attempts']} on {status['host']} at {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                  f"{' '.join(command)}{' (forked from a preloaded server)' if preload else ''}\n")
        log.flush()
        try:
            process = _start(task, command, arguments, env, log, lock_fd, preload)
        except (OSError, forkserver.StartUncertain) as err:  # no such interpreter or folder (on a cluster node,
            # say), or a server lost while it forked the run
            status.update(status="failed", error=str(err) if isinstance(err, forkserver.StartUncertain)
                          else f"cannot start {task.python} in {task.cwd}: {err}")
            write_json(run_dir / "status.json", status)
            return status
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

    if isinstance(process, forkserver.PreloadedRun) and returncode == forkserver.BUSY_EXIT:
        # The fork found the run's lock held by another process (the sweep's lock is handed to
        # it, so this means two holders): it trained nothing; the status stays the other's.
        if previous:
            write_json(run_dir / "status.json", previous)
        else:
            (run_dir / "status.json").unlink(missing_ok=True)
        return {**previous, "name": plan.get("name", run_dir.name), "status": "busy",
                "error": "another process is running it (its lock is taken); not started twice"}

    metrics = read_metrics(run_dir / "logs")
    status.update(returncode=returncode, wall_s=round(status["wall_s"] + elapsed, 1), log_dir=newest_version(run_dir / "logs"))
    status["metrics"] = {k: v for k, v in metrics.items() if "/" in k}
    for figure in ("params", "state_size"):
        if figure in metrics and metrics[figure] == metrics[figure]:
            status[f"logged_{figure}"] = int(metrics[figure])
    signalled = -returncode if returncode < 0 else returncode - 128 if returncode in INTERRUPTED_CODES else None
    if returncode == 0 and "test/acc" in metrics:
        status["status"] = "done"
    elif signalled in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        status["status"] = "interrupted"
        status["error"] = f"stopped by {signal.Signals(signalled).name}; rerun the sweep to resume"
    elif getattr(process, "lost", False):
        status["status"] = "failed"
        status["error"] = ("the preloaded server went away before reporting the run's exit status; "
                           "rerun the sweep to resume it")
    else:
        status["status"] = "failed"
        status["error"] = error_line(run_dir / "output.log") if returncode else "finished without test figures"
    write_json(run_dir / "status.json", status)
    return status


def _start(task: RunTask, command: list[str], arguments: list[str], env: dict[str, str], log,
           lock_fd: int, preload: bool) -> RunProcess:
    """Start the attempt, registered in ``_LIVE``: a fork of the preloaded server when asked and
    possible, else a subprocess. Both get their own session: a Ctrl-C at the terminal reaches
    the sweep, which passes one signal on (two SIGINTs would make the run stop without its
    checkpoint)."""
    pending: list[int] = []
    if preload:
        # Registered before it has a pid: a stop signal that arrives while the server is still
        # importing (the first runs wait for that) reaches the run once it starts, as it would
        # have reached a subprocess busy importing.
        run = forkserver.PreloadedRun(command)
        with _LIVE_LOCK:
            _LIVE.add(run)
        try:
            return forkserver.start_run(run, python=task.python, threads=task.threads, cwd=task.cwd, env=env,
                                        argv=arguments, log=os.path.abspath(log.name), lock_fd=lock_fd)
        except forkserver.StartUncertain:
            raise  # a fork may be training it: starting another process could train it twice
        except Exception as err:  # noqa: BLE001 (PreloadUnavailable, or a fault of the server's own code)
            log.write(f"hybrids sweep: no preloaded server ({err}); starting a fresh interpreter\n")
            log.flush()
        finally:
            if run.pid is None:
                with _LIVE_LOCK:
                    _LIVE.discard(run)
                pending = run.pending_signals()
    process = subprocess.Popen(command, cwd=task.cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True, pass_fds=(lock_fd,))
    with _LIVE_LOCK:
        _LIVE.add(process)
    for signum in pending:  # a stop asked for while the server failed to start the run
        process.send_signal(signum)
    return process


def _stop(process: RunProcess, grace_s: float = 120.0) -> None:
    """SIGINT (the run saves last.ckpt and exits), then SIGKILL if it takes longer than ``grace_s``."""
    try:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    except ProcessLookupError:
        pass


def newest_version(logs: Path) -> str | None:
    versions = _versions(logs)
    return str(versions[0].relative_to(logs.parent)) if versions else None


def _versions(logs: Path) -> list[Path]:
    """``logs/version_N`` folders, newest first."""
    found = [p for p in logs.glob("version_*") if p.is_dir() and p.name[8:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[8:]), reverse=True)


def read_metrics(logs: Path) -> dict[str, float]:
    """The last logged value of every metric, newest version first (a resumed run continues in
    a new version; what it did not log again is taken from the versions before)."""
    values: dict[str, float] = {}
    for version in _versions(logs):
        path = version / "metrics.csv"
        if not path.is_file():
            continue
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        for row in reversed(rows):
            for key, text in row.items():
                if key in ("epoch", "step") or key in values or text in ("", None):
                    continue
                try:
                    values[key] = float(text)
                except ValueError:
                    continue
    return values


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
