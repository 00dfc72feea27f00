"""hybrids.lab.sweeps.ray_launcher: runs as Ray tasks, on a cluster started with ``ray start`` and on
a local instance that ``run_on_ray`` starts itself; and the error when Ray is not installed.

The cluster is started as a cluster is (``ray start --head``), with ``--block`` in a session of
its own, and stopped by signalling that session (by its id) rather than with ``ray stop``, which
would stop every Ray process of this user on the machine, a concurrent sweep's included. The
teardown checks that no process of the session is left.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import ray_tasks
from hybrids.lab.sweeps.ray_launcher import LauncherUnavailable, run_on_ray

TASKS = [0, 1, 2, 3, 4]  # 3 raises in the worker


# No usage reports; no token authentication (Ray >= 2.5x: a local ray.init() would write
# ~/.ray/auth_token, which later `ray start`s would then require of every driver).
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


@pytest.fixture(autouse=True)
def _ray_env(monkeypatch):
    for name, value in RAY_ENV.items():
        monkeypatch.setenv(name, value)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _session_processes(sid: int) -> list[str]:
    """Live (non-zombie) processes of session ``sid``, as ``pid name``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        if int(fields[3]) == sid and fields[0] != "Z":  # fields: state, ppid, pgrp, session
            found.append(f"{stat.parent.name} {name}")
    return found


def _stop_session(proc: subprocess.Popen) -> list[str]:
    """Stop ``ray start --block`` and everything it started; return what is still alive."""
    sid = proc.pid
    for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(sid, sig)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc.poll() is not None and not _session_processes(sid):
                return []
            time.sleep(0.2)
    proc.wait(timeout=5)
    return _session_processes(sid)


@pytest.fixture(scope="module")
def tasks_by_value():
    """tests/ is not importable on the cluster's workers (the driver's sys.path reaches only
    the workers of a local instance), so ship the task functions pickled by value. The launcher
    itself is imported by the workers from the installed hybrids, as on a real cluster."""
    pytest.importorskip("ray")
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(ray_tasks)
    yield
    cloudpickle.unregister_pickle_by_value(ray_tasks)


@pytest.fixture(scope="module")
def ray_cluster(tasks_by_value):
    """A one-node Ray cluster started with ``ray start --head``; yields ``(address, process)``."""
    pytest.importorskip("ray")
    ray_script = Path(sys.executable).with_name("ray")
    assert ray_script.exists(), f"no ray script next to {sys.executable}"
    port = _free_port()
    # A short folder of its own: Ray puts unix sockets in it (a path length limit of ~107).
    temp_dir = tempfile.mkdtemp(prefix="hyray", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_ENV)
    env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] = "0"  # stop at once on SIGTERM (Ray >= 2.5x)
    log_path = Path(temp_dir) / "ray_start.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [
                str(ray_script), "start", "--head", "--block",
                f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
                "--include-dashboard=false", "--object-store-memory=100000000",
                f"--temp-dir={temp_dir}", "--disable-usage-stats",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while "Ray runtime started" not in log_path.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ray start failed:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        assert _listening(port)
        yield f"127.0.0.1:{port}", proc
    finally:
        left = _stop_session(proc)
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not left, f"Ray processes left behind: {left}"


def _check_results(results, seen):
    assert [r["status"] for r in results] == ["completed"] * 3 + ["failed", "completed"]
    assert [r.get("value") for r in results] == [0, 2, 4, None, 8]  # in task order
    assert results[3]["error"].startswith("ray: ValueError: three is not allowed")
    assert sorted(task for task, _ in seen) == TASKS  # on_result once per task...
    assert all(results[task] is result for task, result in seen)  # ...with its own result
    assert all(r["pid"] != os.getpid() for r in results if "pid" in r)  # ran in workers


def test_cluster_started_with_ray_start(ray_cluster):
    import ray

    address, proc = ray_cluster
    seen = []
    results = run_on_ray(
        TASKS, ray_tasks.double, address=address, on_result=lambda t, r: seen.append((t, r))
    )
    _check_results(results, seen)
    assert not ray.is_initialized()  # disconnected again...
    assert proc.poll() is None and _listening(int(address.rsplit(":", 1)[1]))  # ...cluster up


def _gcs_port() -> str:
    import ray

    return ray.get_runtime_context().gcs_address.rsplit(":", 1)[1]


def test_ray_address_variable_and_an_initialised_ray(ray_cluster, monkeypatch):
    import ray

    address, _ = ray_cluster
    monkeypatch.setenv("RAY_ADDRESS", address)
    ports = set()
    results = run_on_ray(TASKS[:2], ray_tasks.double, on_result=lambda t, r: ports.add(_gcs_port()))
    assert [r["value"] for r in results] == [0, 2]
    assert ports == {address.rsplit(":", 1)[1]}  # address=None joined $RAY_ADDRESS
    assert not ray.is_initialized()

    ray.init(log_to_driver=False)  # joins $RAY_ADDRESS
    try:
        assert run_on_ray([], ray_tasks.double) == []
        results = run_on_ray(TASKS[:2], ray_tasks.double, cpus_per_task=2)
        assert [r["value"] for r in results] == [0, 2]
        assert ray.is_initialized()  # an initialised Ray is used, and not ours to shut down
    finally:
        ray.shutdown()


def test_execute_run_on_the_cluster(ray_cluster, tmp_path):
    """The sweep's own task type and function travel to the workers (hybrids is installed
    there, and the run folders are on a filesystem the workers share): a run already done
    comes back as it is, one without run.json as failed; neither starts a training run."""
    from hybrids.lab.sweeps.execute import RunTask, execute_run, write_json

    done, broken = tmp_path / "done", tmp_path / "broken"
    done.mkdir()
    broken.mkdir()
    write_json(done / "run.json", {"name": "done", "config_hash": "abc"})
    write_json(done / "status.json", {"name": "done", "config_hash": "abc", "status": "done"})
    tasks = [RunTask(str(done)), RunTask(str(broken))]
    seen = []
    results = run_on_ray(
        tasks, execute_run, address=ray_cluster[0], on_result=lambda t, r: seen.append(t)
    )
    assert [r["status"] for r in results] == ["done", "failed"]
    assert "run.json missing" in results[1]["error"]
    assert sorted(seen, key=tasks.index) == tasks


def test_local_instance_started_and_shut_down(ray_cluster, monkeypatch):
    """address=None without RAY_ADDRESS starts a local instance (not joining the cluster that
    ``ray start`` left running) and shuts it down at the end."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    temp_dir = tempfile.mkdtemp(prefix="hyray", dir="/tmp")  # Ray's logs: not in /tmp/ray
    monkeypatch.setenv("RAY_TMPDIR", temp_dir)
    try:
        _run_locally(ray_cluster[0], temp_dir)
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in cmdline.read_bytes().decode(errors="replace"):
                found.append(cmdline.parent.name)
        except OSError:
            continue
    return found


def _run_locally(cluster_address: str, temp_dir: str):
    import ray

    ports = set()

    def on_result(task, result):
        ports.add(_gcs_port())
        seen.append((task, result))

    seen = []
    results = run_on_ray(TASKS, ray_tasks.double, on_result=on_result)
    _check_results(results, seen)
    assert not ray.is_initialized()
    (port,) = ports
    assert port != cluster_address.rsplit(":", 1)[1]
    port = int(port)
    deadline = time.monotonic() + 10
    while _listening(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _listening(port), "the local Ray instance was not shut down"
    deadline = time.monotonic() + 10
    while _processes_mentioning(temp_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _processes_mentioning(temp_dir), "processes of the local Ray instance left"


def test_ray_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    with pytest.raises(LauncherUnavailable, match=r'pip install -e "\.\[ray\]"'):
        run_on_ray([1], ray_tasks.double)
    assert issubclass(LauncherUnavailable, RuntimeError)


def test_a_real_sweep_through_the_cluster(ray_cluster, tmp_path):
    """`hybrids sweep --launcher ray`: two tiny runs train as Ray tasks on the cluster and end
    as they do with the local pool (tested in test_sweeps.py)."""
    from test_sweeps import TINY, write_sweep

    path = write_sweep(tmp_path, name="onray", settings=TINY, grid=[{"model.init_args.stack.d_model": [16, 32]}])
    env = {**os.environ, **RAY_ENV, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "hybrids", "sweep", str(path), "--launcher", "ray", "--ray-address", ray_cluster[0]],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = tmp_path / "runs" / "sweeps" / "onray"
    for name in ("d16-s0", "d32-s0"):
        status = json.loads((out / name / "status.json").read_text())
        assert status["status"] == "done" and 0 <= status["metrics"]["test/acc"] <= 1
        assert status["logged_params"] == status["params"]
    assert "[2/2]" in done.stdout and "2 done" in done.stdout
