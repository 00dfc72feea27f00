"""A preloaded fork server for the local pool: a run starts as a fork of a Python process that has
already imported ``hybrids.cli.fit`` (torch, Lightning), not as a fresh interpreter.

Why: a fresh ``python -m hybrids fit`` spends about 7 s of CPU importing torch, Lightning and
the CLI before it trains. A sweep of 98 runs of 50-450 s on two workers spends some 6 minutes of
its wall time on those imports alone. Here they are paid once per sweep.

How: :func:`start_run` asks a *server* (one per interpreter, thread count and working folder,
started on first use and kept for the sweep) to fork; the fork becomes the run. The server is a
plain interpreter started the way the run's own command would be started (the same executable
with ``-m``, the same working folder, the run's environment with its thread variables), so what
torch, the OpenMP runtime and numpy's OpenBLAS read from the environment *when they load* is
what the run would have read. The fork then makes itself what ``subprocess.Popen(["python",
"-m", "hybrids", "fit", ...], start_new_session=True, stdout=log, stderr=STDOUT)`` would have
started (:func:`_become_the_run`): its own session, the run's folder and environment, torch's
thread count, its output appended to ``output.log``, the run's lock, and the CLI run as
``python -m hybrids`` runs it (``runpy``: ``__main__`` is ``hybrids.__main__``, so that a
DDP launcher re-executes the same command). It exits with the status the subprocess would have
had: the ``SystemExit`` code (2 bad config, 3 diverged, 130 / 143 after the CLI's own SIGINT /
SIGTERM handling, which it installs at fit start in the fork, the only thread there), 1 for an
uncaught exception, and death by SIGINT for an uncaught ``KeyboardInterrupt``, as CPython does.
The server reaps it and reports ``os.waitstatus_to_exitcode``: negative for death by a signal,
the ``Popen.returncode`` convention, so :mod:`hybrids.lab.sweeps.execute` reads both alike.

Why not ``multiprocessing``'s forkserver: (1) its server stays in the sweep's process group, so
a SIGHUP from a closed terminal or a SIGTERM sent to the group (a batch system's stop,
``timeout``) kills it, and a dead server reports every live run as exit 255 at once, while
those runs are still saving their checkpoints; this server starts in a session of its own.
(2) It keeps the sweep's environment as it is when first used, so the runs' thread variables
would reach torch and OpenBLAS too late (numpy's OpenBLAS starts a thread per core when it
loads, unless told otherwise). (3) Its children run inside multiprocessing's bookkeeping
(another process name, stdin replaced, joined at the sweep's exit); here the fork is just the
run.

The run's lock: :func:`hybrids.lab.sweeps.execute.execute_run` holds an ``flock`` on the run's
``.lock`` and hands the very same open file to the fork (``SCM_RIGHTS`` over a Unix socket), as
``pass_fds`` did for the subprocess. ``flock`` locks belong to the open file, so the lock is
held while either the sweep or the run lives, with no moment in which it is free (a run
orphaned by a killed sweep keeps it). The fork checks first thing that it holds it and exits
with :data:`BUSY_EXIT`, training nothing, if not.

A run that crashes (a segfault, SIGKILL, ``os._exit``) is one forked process: the server only
reaps it and reports its status. A server that dies is started again for the next run; one that
cannot start (its imports fail) makes :func:`start_run` raise :class:`PreloadUnavailable`, and
the caller starts a fresh interpreter instead. Servers stop when the sweep closes its end of
their socket (:func:`shutdown`, also at exit), or when the sweep dies.

Linux only (:func:`available`): elsewhere runs start as fresh interpreters.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence

# What the server imports before it forks: what ``python -m hybrids fit`` imports before it
# trains, most of it torch and Lightning.
PRELOAD = ("hybrids.cli.fit",)
# The fork did not hold the run's lock: another process runs it. No exit status of
# ``hybrids fit`` (0, 1, 2, 3, 130, 143).
BUSY_EXIT = 75
# The server went away before it could report the run's exit status.
LOST_EXIT = 255
# Importing torch on a machine busy with other runs can take long; a server never ready by then
# is given up on (the run starts as a fresh interpreter).
READY_TIMEOUT_S = 600.0
_SIGNED = struct.Struct("q")
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


class PreloadUnavailable(RuntimeError):
    """No preloaded server can start this run (the caller starts a fresh interpreter)."""


class StartUncertain(RuntimeError):
    """The server took the request but did not say which process runs it: a fork may be
    training the run (holding its lock), so no other process may be started for it."""


def available() -> bool:
    """Whether runs can start as forks here: Linux (fork after importing torch is tested
    there; macOS defaults to spawning for good reasons, Windows has no fork)."""
    return sys.platform.startswith("linux") and hasattr(os, "fork") and hasattr(socket, "send_fds")


# -- the sweep's side ------------------------------------------------------------------------------


class PreloadedRun:
    """A run started by :func:`start_run`: the ``subprocess.Popen`` calls the sweep uses
    (``pid``, ``send_signal``, ``wait(timeout)``, ``kill``, ``poll``, ``returncode``).

    It exists before its process does, so that a stop signal sent while the server is still
    importing (the first runs of a sweep wait for that) is delivered once the run has a pid,
    as a fresh interpreter would have received it while importing.
    """

    def __init__(self, args: Sequence[str]) -> None:
        self.args = list(args)
        self.pid: int | None = None
        self.returncode: int | None = None
        # True when the server went away before reporting the exit status (returncode LOST_EXIT).
        self.lost = False
        self._channel: socket.socket | None = None
        self._received = b""
        self._pending: list[int] = []
        self._lock = threading.Lock()

    def _started(self, pid: int, channel: socket.socket) -> None:
        with self._lock:
            self.pid, self._channel = pid, channel
            pending, self._pending = self._pending, []
        for signum in pending:
            try:
                self.send_signal(signum)
            except ProcessLookupError:  # it ended already; wait() reports how
                pass

    def pending_signals(self) -> list[int]:
        """The signals sent before it started (taken: for a run started otherwise instead)."""
        with self._lock:
            pending, self._pending = self._pending, []
        return pending

    def send_signal(self, signum: int) -> None:
        with self._lock:
            if self.pid is None:
                self._pending.append(signum)
                return
            if self.returncode is not None:
                return  # reaped: the pid may belong to another process by now
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def poll(self) -> int | None:
        try:
            return self.wait(timeout=0)
        except subprocess.TimeoutExpired:
            return None

    def wait(self, timeout: float | None = None) -> int:
        """The exit status, as ``Popen.wait``: raises ``subprocess.TimeoutExpired`` after
        ``timeout`` seconds (so that one ``except`` serves both kinds of run)."""
        if self.returncode is not None:
            return self.returncode
        if self._channel is None:
            raise RuntimeError("the run was not started")
        deadline = None if timeout is None else time.monotonic() + timeout
        while len(self._received) < _SIGNED.size:
            self._channel.settimeout(None if deadline is None else max(0.0, deadline - time.monotonic()))
            try:
                chunk = self._channel.recv(_SIGNED.size - len(self._received))
            except (TimeoutError, BlockingIOError):
                raise subprocess.TimeoutExpired(self.args, timeout) from None
            if not chunk:
                self._wait_for_exit(deadline, timeout)  # the server died; the run may live on
                self._finish(LOST_EXIT, lost=True)
                return self.returncode
            self._received += chunk
        self._finish(_SIGNED.unpack(self._received)[0])
        return self.returncode

    def _wait_for_exit(self, deadline: float | None, timeout: float | None) -> None:
        # Only the server could reap the run and know its status; without it the sweep still
        # waits for the run to end (as it waits for a run saving its checkpoint), then reports
        # the status as unknown.
        while _alive(self.pid):
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(self.args, timeout)
            time.sleep(0.2)

    def _finish(self, returncode: int, lost: bool = False) -> None:
        with self._lock:
            self.returncode, self.lost = returncode, lost
        self._channel.close()


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie nobody reaps, in a container without an init that
    reaps, counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except (OSError, IndexError):
        return True


class _Server:
    """The sweep's handle on one server process: its socket, and the lock that makes the
    worker threads' fork requests one at a time."""

    def __init__(self, python: str, threads: int, cwd: str, env: Mapping[str, str]) -> None:
        self.python, self.threads, self.cwd, self.env = python, threads, cwd, dict(env)
        self.process: subprocess.Popen | None = None
        self.control: socket.socket | None = None
        self.failed: str | None = None  # why it could not start: not tried again in this sweep
        self.lock = threading.Lock()

    def ensure_running(self) -> socket.socket:
        if self.failed is not None:
            raise PreloadUnavailable(self.failed)
        if self.process is not None and self.process.poll() is None:
            return self.control
        self.stop()  # dead (killed from outside): start another
        ours, theirs = socket.socketpair()
        try:
            self.process = subprocess.Popen(
                [self.python, "-m", "hybrids.lab.sweeps.forkserver", str(theirs.fileno())],
                cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),), start_new_session=True,
            )
        except OSError as err:
            ours.close()
            self.failed = f"cannot start {self.python} in {self.cwd}: {err}"
            raise PreloadUnavailable(self.failed) from err
        finally:
            theirs.close()
        self.control = ours
        # The server answers once its imports are done: an empty message, or why it cannot serve.
        ours.settimeout(READY_TIMEOUT_S)
        try:
            problem = _receive_message(ours)
        except (OSError, EOFError, ValueError) as err:
            problem = f"no answer from the preloaded server ({type(err).__name__}: {err})"
        ours.settimeout(None)
        if problem:
            self.failed = problem
            self.stop()
            raise PreloadUnavailable(problem)
        return ours

    def stop(self, timeout: float = 10.0) -> None:
        # Closing our end tells the server to exit; runs it forked go on on their own.
        if self.control is not None:
            self.control.close()
            self.control = None
        if self.process is not None:
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


_SERVERS: dict[tuple[str, int, str], _Server] = {}
_SERVERS_LOCK = threading.Lock()


def start_run(run: PreloadedRun, *, python: str, threads: int, cwd: str, env: Mapping[str, str],
              argv: Sequence[str], log: str, lock_fd: int) -> PreloadedRun:
    """Start ``python -m hybrids *argv`` as a fork of the preloaded server for (``python``,
    ``threads``, ``cwd``), with ``env`` as its environment, its output appended to ``log``,
    holding the lock open on ``lock_fd``; fills in and returns ``run``. Raises
    :class:`PreloadUnavailable` when no server can start it (nothing was started then), and
    :class:`StartUncertain` when one may have."""
    with _SERVERS_LOCK:
        key = (python, threads, cwd)
        if key not in _SERVERS:
            if not _SERVERS:
                atexit.register(shutdown)
            _SERVERS[key] = _Server(python, threads, cwd, env)
        server = _SERVERS[key]
    payload = json.dumps({"argv": list(argv), "cwd": cwd, "env": dict(env), "threads": threads, "log": log}).encode()
    ours, theirs = socket.socketpair()
    try:
        with server.lock:
            for attempt in (1, 2):
                control = server.ensure_running()
                try:
                    # One byte per request, with the run's two descriptors: its channel to the
                    # server (and to the fork) and the locked file.
                    socket.send_fds(control, [b"F"], [theirs.fileno(), lock_fd])
                    break
                except OSError as err:  # the server died since: once more with a new one
                    server.stop()
                    if attempt == 2:
                        raise PreloadUnavailable(f"the preloaded server does not answer: {err}") from err
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    try:
        ours.sendall(payload)
        ours.shutdown(socket.SHUT_WR)
        ours.settimeout(READY_TIMEOUT_S)
        pid = _SIGNED.unpack(_receive_exactly(ours, _SIGNED.size))[0]
        ours.settimeout(None)
    except (OSError, EOFError) as err:
        ours.close()
        raise StartUncertain(f"the preloaded server failed while starting the run ({type(err).__name__}: {err}); "
                             "rerun the sweep to resume it") from err
    run._started(pid, ours)
    return run


def shutdown() -> None:
    """Stop every server this process started (runs they forked go on)."""
    with _SERVERS_LOCK:
        servers = list(_SERVERS.values())
        _SERVERS.clear()
    for server in servers:
        with server.lock:
            server.stop()


def server_pids() -> list[int]:
    """The pids of this process's live servers (for tests and diagnostics)."""
    with _SERVERS_LOCK:
        return [s.process.pid for s in _SERVERS.values() if s.process is not None and s.process.poll() is None]


def _receive_exactly(channel: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = channel.recv(size - len(data))
        if not chunk:
            raise EOFError("the preloaded server closed the connection")
        data += chunk
    return data


def _send_message(channel: socket.socket, text: str) -> None:
    data = text.encode()
    channel.sendall(_SIGNED.pack(len(data)) + data)


def _receive_message(channel: socket.socket) -> str:
    size = _SIGNED.unpack(_receive_exactly(channel, _SIGNED.size))[0]
    if not 0 <= size < 1 << 20:
        raise ValueError(f"a message of {size} bytes")
    return _receive_exactly(channel, size).decode(errors="replace")


# -- the server's side -----------------------------------------------------------------------------


def serve(control_fd: int) -> None:
    """The server: import :data:`PRELOAD`, say so, then fork one run per request until the
    sweep closes the socket."""
    # The dispositions this interpreter was started with are what a fresh interpreter started
    # the same way would have: each fork gets them back.
    inherited = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD)}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    control = socket.socket(fileno=control_fd)
    try:
        import importlib

        for name in PRELOAD:
            importlib.import_module(name)
        problem = _fork_hazard()
    except BaseException as err:  # noqa: BLE001 (each run fails on its own, in its own log, instead)
        problem = f"preloading {', '.join(PRELOAD)} failed: {type(err).__name__}: {err}"
    _send_message(control, problem or "")
    if problem:
        return

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    # A handler (SIG_IGN would let the kernel reap the runs and lose their statuses) whose only
    # effect is to wake the loop through the wakeup fd.
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    children: dict[int, socket.socket] = {}
    selector = selectors.DefaultSelector()
    selector.register(control, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    while True:
        for key, _ in selector.select():
            if key.fileobj == wake_r:
                while True:
                    try:
                        if not os.read(wake_r, 4096):
                            break
                    except BlockingIOError:
                        break
                _reap(children)
                continue
            message, fds, _, _ = socket.recv_fds(control, 1, 2)
            if not message:  # the sweep closed its end, or died: stop forking
                for fd in fds:
                    os.close(fd)
                return
            if len(fds) != 2:  # not a request of ours; nothing to start
                for fd in fds:
                    os.close(fd)
                continue
            channel, lock_fd = socket.socket(fileno=fds[0]), fds[1]
            # Stop signals stay blocked across the fork: the sweep signals the run as soon as it
            # knows its pid, and such a signal must meet the run's handlers and output file, not
            # the server's loop (it is held, not lost, until _become_the_run unblocks it).
            signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    signal.set_wakeup_fd(-1)
                    selector.close()
                    for other in (control, *children.values()):
                        other.close()
                    os.close(wake_r)
                    os.close(wake_w)
                    code = _become_the_run(channel, lock_fd, inherited, mask)
                except KeyboardInterrupt:  # a SIGINT before the CLI ran: as CPython ends on one
                    _print_exception()
                    _die_by_sigint()
                except BaseException:  # noqa: BLE001 (never return into the server's loop)
                    _print_exception()
                finally:
                    os._exit(code)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            os.close(lock_fd)
            try:
                channel.sendall(_SIGNED.pack(pid))
            except OSError:
                pass  # the sweep's end is gone; the run goes on regardless
            children[pid] = channel


def _fork_hazard() -> str | None:
    """Why forking this process would break the runs, if it would."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        return "the preloaded imports initialised CUDA, which a forked process cannot use"
    return None


def _reap(children: dict[int, socket.socket]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        channel = children.pop(pid, None)
        if channel is None:
            continue
        try:
            channel.sendall(_SIGNED.pack(os.waitstatus_to_exitcode(status)))
        except OSError:
            pass
        channel.close()


# -- the fork's side -------------------------------------------------------------------------------


def _become_the_run(channel: socket.socket, lock_fd: int, inherited: dict, mask: set) -> int:
    """Turn this fresh fork into the run; its exit status (or death by SIGINT). ``inherited``:
    the signal dispositions and ``mask`` the signal mask the server started with."""
    # A session of its own, as start_new_session=True gave the subprocess: a Ctrl-C at the
    # terminal reaches the sweep, which passes one signal on.
    os.setsid()
    for signum, handler in inherited.items():
        signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
    data = b""
    while chunk := channel.recv(65536):
        data += chunk
    channel.close()
    task = json.loads(data)

    # The output first, so that everything below, refusals included, lands in output.log.
    # O_APPEND, as the subprocess's "a"-mode file: the sweep's lines and the run's interleave.
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    log_fd = os.open(task["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    _unbuffered_stdio()
    # From here a stop signal acts as on a fresh interpreter (one sent since the fork, too).
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    # The lock is the sweep's open file, passed on: taking it again succeeds when this process
    # shares it, and fails only if another process holds the run.
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("hybrids sweep: another process holds this run's lock; not started twice", file=sys.stderr, flush=True)
        return BUSY_EXIT
    os.set_inheritable(lock_fd, True)  # as pass_fds left it: the run's own subprocesses keep it too

    os.chdir(task["cwd"])
    os.environ.clear()
    os.environ.update(task["env"])
    # The server loaded torch with the same thread variables; set the count explicitly anyway,
    # since a variable set after torch loads may not take effect.
    import torch

    torch.set_num_threads(int(task["threads"]))
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()  # fresh entropy, as a new interpreter has (forks share the server's state)

    import runpy

    sys.argv = ["hybrids", *task["argv"]]
    try:
        # What `python -m hybrids` does: hybrids/__main__.py as __main__, argv[0] its path.
        runpy.run_module("hybrids", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as stop:
        code = _exit_status(stop.code)
    except KeyboardInterrupt:
        _print_exception()
        _finalise()
        _die_by_sigint()
        code = 128 + signal.SIGINT
    except BaseException:  # noqa: BLE001 (the traceback, as the interpreter prints it)
        _print_exception()
        code = 1
    _finalise()
    return code


def _unbuffered_stdio() -> None:
    """Unbuffered text streams on fds 1 and 2, as PYTHONUNBUFFERED=1 makes them (the server
    was started with it too; rebuilt in case a preloaded module replaced them)."""
    import io

    for name, errors in (("stdout", "strict"), ("stderr", "backslashreplace")):
        current = getattr(sys, name)
        encoding = getattr(current, "encoding", None) or "utf-8"
        errors = getattr(current, "errors", None) or errors
        stream = io.TextIOWrapper(io.FileIO(1 if name == "stdout" else 2, "w", closefd=False),
                                  encoding=encoding, errors=errors, write_through=True)
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


def _exit_status(code) -> int:
    """The exit status the interpreter gives ``sys.exit(code)``."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr, flush=True)
    return 1


def _print_exception() -> None:
    try:
        sys.excepthook(*sys.exc_info())
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001
        pass


def _finalise() -> None:
    """What interpreter shutdown does before the process ends: join non-daemon threads, run
    the atexit functions, flush the streams (``os._exit`` does none of it)."""
    try:
        threading._shutdown()  # type: ignore[attr-defined]
    except BaseException:  # noqa: BLE001
        _print_exception()
    try:
        atexit._run_exitfuncs()
    except BaseException:  # noqa: BLE001
        _print_exception()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass


def _die_by_sigint() -> None:
    """CPython ends on an uncaught KeyboardInterrupt by killing itself with SIGINT, so that
    its parent sees death by SIGINT (returncode -2)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)


if __name__ == "__main__":
    serve(int(sys.argv[1]))
