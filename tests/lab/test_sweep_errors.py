"""`hybrids sweep` and `hybrids plot` refuse what would fail or do nothing with one keyed line
and exit status 2 (issue 26), and a run whose sweep died is neither left running nor shown as
running: the kernel stops it, readers and the next sweep see that no process holds it."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from hybrids.cli.plot import plot_main
from hybrids.cli.sweep import sweep_main
from hybrids.lab.run_status import ORPHAN_ERROR, lock_is_held, this_host
from helpers import ROOT

TRANSFORMER = ROOT / "configs" / "transformer.yaml"


def refused(capsys, code: int) -> str:
    """The one line a refusal prints, after checking that it is one line and exit status 2."""
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, captured.err)
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


# -- hybrids sweep ---------------------------------------------------------------------------------


@pytest.mark.parametrize("body, line", [
    ("lr: [1.0e-3, 3.0e-3\n",
     "error: {file}: line 3, column 1: not valid YAML: expected ',' or ']', but got '<stream end>' "
     "(while parsing a flow sequence from line 2, column 5)"),
    ("settings:\n\ttrainer.max_epochs: 1\n",
     "error: {file}: line 3, column 1: not valid YAML: found character '\\t' that cannot start any token "
     "(YAML indents with spaces, never tabs)"),
])
def test_a_sweep_file_that_is_not_yaml_is_one_line_naming_its_place(tmp_path, capsys, body, line):
    path = tmp_path / "broken.yaml"
    path.write_text(f"base: {TRANSFORMER}\n" + body)
    assert refused(capsys, sweep_main([str(path), "--out", str(tmp_path / "out")])) == line.format(file=path)
    assert not (tmp_path / "out").exists(), "refused before anything was written"


def test_a_base_config_that_is_not_yaml_is_keyed_base(tmp_path, capsys):
    (tmp_path / "base.yaml").write_text("model: {class_path: x\n")
    path = tmp_path / "sweep.yaml"
    path.write_text("base: base.yaml\n")
    line = refused(capsys, sweep_main([str(path)]))
    assert line.startswith(f"error: {path}: base: base.yaml line 2, column 1: not valid YAML: "), line


@pytest.mark.parametrize("body, line", [
    ("grid: []", "grid: empty; write at least one block of axes (grid: [{family: [attention, mamba]}]), or leave "
                 "grid out for one run of the base config per lr and seed"),
    ("base: []", "base: empty list; name the config every run starts from (base: ../transformer.yaml), or several "
                 "to make the base an axis"),
    ("seeds: []", "seeds: must be a non-empty list (e.g. seeds: [0, 1]; leave it out for seed 0 alone), got []"),
    ("lr: []", "lr: must be a non-empty list (e.g. [1.0e-3, 3.0e-3], or default; leave it out to keep the base "
               "config's), got []"),
    ("grid: [{lr: []}]", "grid[0].lr: must be a non-empty list (e.g. [1.0e-3, 3.0e-3], or default; leave it out to "
                         "keep the base config's), got []"),
    ("weight_decay: []", "weight_decay: must be a non-empty list (e.g. [0.0, 0.1], or default; leave it out to keep "
                         "the base config's), got []"),
    ("choices: {family: {}}", "choices.family: has no labels"),
    ("choices: {family: {a: {}}}\ngrid: [{family: []}]", "grid[0].family: must be a non-empty list, got []"),
    ("match: {quantity: params, targets: []}",
     "match.targets: must be a non-empty list (the sizes to match, e.g. [50000, 100000]), got []"),
])
def test_a_sweep_of_no_runs_is_refused(tmp_path, capsys, body, line):
    """An empty axis makes a sweep of no runs, which would exit 0 having trained nothing."""
    path = tmp_path / "sweep.yaml"
    base = "" if body.startswith("base:") else f"base: {TRANSFORMER}\n"
    path.write_text(base + body + "\n")
    assert refused(capsys, sweep_main([str(path), "--out", str(tmp_path / "out")])) == f"error: {path}: {line}"
    assert not (tmp_path / "out").exists()


def test_a_folder_or_a_missing_file_given_as_the_sweep_file(tmp_path, capsys):
    assert refused(capsys, sweep_main([str(tmp_path)])).endswith("is a folder; give the sweep's YAML file "
                                                                 "(e.g. configs/sweeps/mqar_cpu.yaml)")
    assert refused(capsys, sweep_main([str(tmp_path / "nope.yaml")])) == f"error: {tmp_path / 'nope.yaml'}: not found"


# -- hybrids plot ----------------------------------------------------------------------------------


def run_folder(sweep: Path, name: str, status: str, **extra) -> Path:
    folder = sweep / name
    folder.mkdir(parents=True)
    metrics = {"val/acc": 0.5, "test/acc": 0.5} if status == "done" else {}
    record = {"name": name, "sweep": "s", "axes": {"seed": int(name[-1])}, "tuned": [], "status": status,
              "metrics": metrics, **extra}
    (folder / "status.json").write_text(json.dumps(record))
    return folder


def test_plot_refuses_a_sweep_where_no_run_finished(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    for seed in range(5):
        run_folder(sweep, f"s{seed}", "failed", error="diverged")
    line = refused(capsys, plot_main([str(sweep)]))
    assert line == (f"error: {sweep}: no finished run among 5 (5 failed); nothing to plot: see each run's "
                    "status.json and output.log, or run the sweep (again) to finish them")
    assert not (sweep / "plots").exists(), "no empty figures"
    # Done but with a NaN validation figure (diverged) is no result either.
    run_folder(sweep, "s5", "done")
    (sweep / "s5" / "status.json").write_text(json.dumps({"name": "s5", "axes": {"seed": 5}, "status": "done",
                                                           "metrics": {"val/acc": float("nan")}}))
    assert "among 6 (5 failed, 1 done without a finite val/acc)" in refused(capsys, plot_main([str(sweep)]))
    run_folder(sweep, "s6", "done")
    assert plot_main([str(sweep)]) == 0 and (sweep / "plots" / "points.csv").exists()


def test_plot_refuses_folders_without_runs_files_and_missing_paths(tmp_path, capsys):
    empty, file = tmp_path / "empty", tmp_path / "file.txt"
    empty.mkdir()
    file.write_text("x")
    assert refused(capsys, plot_main([str(empty)])) == (
        f"error: {empty}: no runs in it (no <run>/status.json); is it a sweep's folder? hybrids sweep FILE writes "
        "runs/sweeps/<name>")
    assert refused(capsys, plot_main([str(file)])) == f"error: {file}: a file, not a folder; give a sweep's folder"
    status = run_folder(tmp_path / "sweep", "s0", "done") / "status.json"
    assert refused(capsys, plot_main([str(status)])).endswith(
        f"a file, not a folder; the sweep's folder would be {tmp_path / 'sweep'}")
    assert refused(capsys, plot_main([str(tmp_path / "nowhere")])) == (
        f"error: {tmp_path / 'nowhere'}: no such folder; give a sweep's folder (hybrids sweep writes runs/sweeps/<name>)")
    # One folder without runs among several is a wrong path, not an empty part of the table.
    assert refused(capsys, plot_main([str(tmp_path / "sweep"), str(empty), "--out", str(tmp_path / "o")])).startswith(
        f"error: {empty}: no runs in it")
    assert refused(capsys, plot_main([str(tmp_path / "sweep"), "--metric", "val/bpb"])).startswith(
        "error: metric: no metric 'val/bpb' in the runs of")
    assert refused(capsys, plot_main([str(tmp_path / "sweep"), "--out", str(file)])) == (
        f"error: out: cannot write the plots to {file}: a file is in the way")


# -- runs whose sweep died ---------------------------------------------------------------------------


def running_run(sweep: Path, name: str = "s0", host: str | None = None) -> Path:
    """A run folder as a killed sweep leaves it: status "running" on this host, its lock file there."""
    folder = run_folder(sweep, name, "running", host=host or this_host(), pid=999_999, attempts=1)
    (folder / "run.json").write_text(json.dumps({"name": name, "config_hash": "abc"}))
    (folder / ".lock").touch()
    return folder


def hold(lock: Path):
    """Hold the run's lock as a live sweep does (another open file: flock locks belong to it)."""
    handle = lock.open("a")
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return handle


def test_a_running_run_that_no_process_holds_is_marked_interrupted_once_and_shown_so(tmp_path):
    from hybrids.lab.analysis import sweep_table
    from hybrids.lab.sweeps.execute import mark_orphaned, read_json

    sweep = tmp_path / "sweep"
    dead, live, elsewhere = running_run(sweep, "s0"), running_run(sweep, "s1"), running_run(sweep, "s2", host="node-7")
    with hold(live / ".lock"):
        assert lock_is_held(live) is True and lock_is_held(dead) is False
        shown = dict(zip(sweep_table(sweep)["name"], sweep_table(sweep)["status"]))
        assert shown == {"s0": "interrupted", "s1": "running", "s2": "running"}, "another host's run is not judged"
        assert mark_orphaned(live) is None and mark_orphaned(elsewhere) is None
        marked = mark_orphaned(dead)
    assert marked["status"] == "interrupted" and marked["error"] == ORPHAN_ERROR and "pid 999999" in marked["note"]
    assert read_json(dead / "status.json") == marked and read_json(live / "status.json")["status"] == "running"
    assert mark_orphaned(dead) is None, "an interrupted run is left as it is"


def test_a_readers_look_at_the_lock_does_not_make_the_run_busy(tmp_path):
    """Readers probe the lock for a moment; a sweep that meets a probe waits it out."""
    from hybrids.lab.sweeps.execute import _take

    lock = tmp_path / ".lock"
    lock.touch()
    reader = lock.open("r")
    fcntl.flock(reader, fcntl.LOCK_SH | fcntl.LOCK_NB)
    threading.Timer(0.2, reader.close).start()
    with lock.open("a") as mine:
        assert _take(mine), "taken once the reader let go"
    with lock.open("a") as mine, hold(lock):
        start = time.monotonic()
        assert not _take(mine, patience_s=0.2) and time.monotonic() - start < 1, "a real holder: busy"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's (prctl)")
def test_a_run_started_from_a_thread_gets_sigterm_when_its_sweep_is_killed(tmp_path):
    """The run starts from one of the pool's threads, as in a sweep, in a session of its own, and
    still hears of its sweep's SIGKILL (no training here: the run is a Python that reports how it ends)."""
    run = textwrap.dedent("""\
        import signal, sys, time
        def stop(signum, frame):
            open(sys.argv[1], "w").write(signal.Signals(signum).name)
            sys.exit(143)
        signal.signal(signal.SIGTERM, stop)
        open(sys.argv[1] + ".started", "w").close()
        time.sleep(60)
    """)
    report = tmp_path / "ended"
    driver = textwrap.dedent(f"""\
        import sys, threading
        from hybrids.lab.sweeps import execute
        task = execute.RunTask({str(tmp_path)!r})
        def start():
            with open({str(tmp_path / 'lock')!r}, "a") as lock, open({str(tmp_path / 'log')!r}, "a") as log:
                process = execute._start(task, [sys.executable, "-c", {run!r}, {str(report)!r}], {{}}, log, lock.fileno())
                print(process.pid, flush=True)
                process.wait()
        threading.Thread(target=start).start()
    """)
    sweep = subprocess.Popen([sys.executable, "-c", driver], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(sweep.stdout.readline())
        deadline = time.monotonic() + 60
        while not Path(f"{report}.started").exists():
            assert time.monotonic() < deadline, (tmp_path / "log").read_text()
            time.sleep(0.05)
        assert os.getsid(pid) == pid, "a session of its own: the terminal's Ctrl-C reaches only the sweep"
        sweep.kill()
        sweep.wait(30)
        deadline = time.monotonic() + 10
        while not report.exists():
            assert time.monotonic() < deadline, "the run did not hear of its sweep's death"
            time.sleep(0.05)
        assert report.read_text() == "SIGTERM"
    finally:
        sweep.kill()
        if "pid" in locals():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
