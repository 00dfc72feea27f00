"""`hybrids sweep`: expansion, names, matched sizes, dry-run figures, and real sweeps of a few
tiny runs (local pool: skip on rerun, failure isolation, interruption and resumption)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from hybrids.lab.sweeps import SweepError, expand, load_sweep
from hybrids.lab.sweeps.matching import Unmatched, solve
from hybrids.lab.sweeps.measure import Figures
from hybrids.lab.sweeps.naming import compact_number, run_name
from helpers import ROOT, TESTS

TRANSFORMER = ROOT / "configs" / "transformer.yaml"
ATTENTION = {"A": {"class_path": "hybrids.mixers.Attention", "init_args": {"heads": 2}}}
S4D = {"S": {"class_path": "hybrids.mixers.S4D", "init_args": {"d_state": 8}}}
# Runs of a few seconds: one epoch of two batches, small sets.
TINY = {
    "trainer.max_epochs": 1,
    "trainer.enable_model_summary": False,
    "data.init_args.num_train_examples": 64,
    "data.init_args.num_val_examples": 32,
    "data.init_args.num_test_examples": 32,
    "data.init_args.batch_size": 32,
}


def write_sweep(folder: Path, **body) -> Path:
    body.setdefault("base", str(TRANSFORMER))
    path = folder / f"{body.get('name', 'test')}.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def families() -> dict:
    return {
        "family": {
            "attention": {"model.init_args.stack.pattern": "A", "model.init_args.stack.mixers": ATTENTION},
            "s4d": {"model.init_args.stack.pattern": "S", "model.init_args.stack.mixers": S4D},
        },
        "task": {
            "mqar64x4": {"data.init_args.seq_len": 64, "data.init_args.num_kv_pairs": 4},
            "mqar128x8": {"data.init_args.seq_len": 128, "data.init_args.num_kv_pairs": 8},
        },
    }


# -- expansion and names -------------------------------------------------------------------------


def test_grid_expands_to_the_union_of_block_products_with_readable_stable_names(tmp_path):
    path = write_sweep(
        tmp_path, name="grid", choices=families(),
        grid=[
            {"family": ["attention", "s4d"], "task": ["mqar64x4"], "model.init_args.stack.d_model": [32, 64]},
            {"family": ["attention"], "task": ["mqar128x8"], "model.init_args.stack.d_model": [64]},
        ],
        lr=[1e-3, 3e-3], seeds=[0, 1],
    )
    plans = expand(load_sweep(path))
    assert len(plans) == (2 * 2 + 1) * 2 * 2
    names = [p.name for p in plans]
    assert names[:4] == ["attention-d32-mqar64x4-lr1e-3-s0", "attention-d32-mqar64x4-lr1e-3-s1",
                         "attention-d32-mqar64x4-lr3e-3-s0", "attention-d32-mqar64x4-lr3e-3-s1"]
    assert "s4d-d64-mqar64x4-lr3e-3-s1" in names and "attention-d64-mqar128x8-lr1e-3-s0" in names
    assert [p.name for p in expand(load_sweep(path))] == names, "names do not depend on anything but the axes"

    run = next(p for p in plans if p.name == "s4d-d64-mqar64x4-lr3e-3-s1")
    model, data = run.config["model"]["init_args"], run.config["data"]["init_args"]
    assert model["stack"]["mixers"] == S4D, "a family's mixers replace the base's, not merged into them"
    assert (model["stack"]["pattern"], model["stack"]["d_model"], model["optim"]["lr"]) == ("S", 64, 3e-3)
    assert (data["seq_len"], data["num_kv_pairs"], run.config["seed_everything"]) == (64, 4, 1)
    assert run.axes == {"family": "s4d", "d_model": 64, "task": "mqar64x4", "lr": 3e-3, "seed": 1}
    assert run.tuned == ("lr",)
    base = yaml.safe_load(TRANSFORMER.read_text())
    assert run.config["trainer"]["max_epochs"] == base["trainer"]["max_epochs"], "the rest comes from the base"


def test_a_block_may_bring_its_own_learning_rates(tmp_path):
    path = write_sweep(
        tmp_path, choices=families(),
        grid=[{"family": ["attention"], "task": ["mqar64x4"]},
              {"family": ["attention"], "task": ["mqar128x8"], "lr": [3e-3]}],
        lr=[1e-3, 3e-3],
    )
    plans = expand(load_sweep(path))
    assert [p.name for p in plans] == ["attention-mqar64x4-lr1e-3-s0", "attention-mqar64x4-lr3e-3-s0",
                                       "attention-mqar128x8-lr3e-3-s0"]
    assert plans[-1].config["model"]["init_args"]["optim"]["lr"] == 3e-3 and plans[-1].tuned == ("lr",)
    only_blocks = write_sweep(tmp_path, name="blocks", grid=[{"lr": [1e-3, 1e-2]}])
    assert [p.tuned for p in expand(load_sweep(only_blocks))] == [("lr",), ("lr",)], "lr is an axis without a top-level list"


def test_the_linear_cpu_sweep_runs_on_the_terms_of_the_cpu_sweep():
    main, linear = (load_sweep(ROOT / "configs" / "sweeps" / f"{n}.yaml") for n in ("mqar_cpu", "mqar_cpu_linear"))
    assert linear.settings == main.settings and linear.lrs == main.lrs and linear.seeds == main.seeds
    assert linear.seed_keys == main.seed_keys and linear.bases == main.bases and linear.tune == main.tune
    assert linear.choices["task"]["mqar64x4"] == main.choices["task"]["mqar64x4"]
    assert not set(linear.choices["family"]) & set(main.choices["family"]), "family labels stay unique"


def test_the_long_linear_probe_differs_from_the_linear_sweep_only_in_steps():
    linear, long = (load_sweep(ROOT / "configs" / "sweeps" / f"{n}.yaml") for n in ("mqar_cpu_linear", "mqar_cpu_linear_long"))
    epochs = "trainer.max_epochs"
    assert {k: v for k, v in long.settings.items() if k != epochs} == {k: v for k, v in linear.settings.items() if k != epochs}
    assert long.settings[epochs] == 4 * linear.settings[epochs]
    assert set(long.lrs) <= set(linear.lrs) and long.seeds == linear.seeds and long.bases == linear.bases
    assert all(long.choices["family"][f] == linear.choices["family"][f] for f in long.choices["family"])
    assert long.choices["task"] == linear.choices["task"]


@pytest.mark.parametrize("name, families, lrs, data", [
    ("selective_copying_cpu", ["s4d", "mamba", "attention", "mamba_attention"], 2, "SelectiveCopying"),
    # One lr for induction and bytes: the CPU budget (each sweep file says why).
    ("induction_cpu", ["attention", "mamba", "mamba_attention"], 1, "InductionHeads"),
    ("bytes_cpu", ["attention", "mamba", "mamba_attention"], 1, "ByteText"),
])
def test_the_task_sweeps_expand_to_families_learning_rates_and_seeds(name, families, lrs, data):
    plans = expand(load_sweep(ROOT / "configs" / "sweeps" / f"{name}.yaml"))
    assert len(plans) == len(families) * lrs * 2  # families x learning rates x 2 seeds
    assert [p.axes["base"] for p in plans[::lrs * 2]] == families
    assert all(p.config["data"]["class_path"] == f"hybrids.data.{data}" and p.tuned == ("lr",) for p in plans)
    assert {p.config["data"]["init_args"]["order_seed"] for p in plans} == {0, 1}


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "sweeps").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_sweep_file_expands_to_distinct_names(path):
    plans = expand(load_sweep(path))
    assert plans and len({p.name for p in plans}) == len(plans)


def test_the_curriculum_contrast_differs_in_the_curriculum_only():
    plans = expand(load_sweep(ROOT / "configs" / "sweeps" / "induction_curriculum_cpu.yaml"))
    assert len(plans) == 3 * 2 * 3  # stacks x with / without x seeds
    for plan in plans:
        data = plan.config["data"]["init_args"]
        with_it = plan.axes["curriculum"] == "with"
        assert data.get("train_lengths") == ([64, 256] if with_it else None)
        assert data.get("length_steps") == ([1000] if with_it else None)
        assert plan.config["model"]["init_args"]["optim"]["lr"] == 1e-3 and data["batch_size"] == 32


def test_dotted_keys_patch_the_family_chosen_and_seeds_reach_every_seed_key(tmp_path):
    path = write_sweep(
        tmp_path, choices=families(),
        grid=[{"family": ["s4d"], "model.init_args.stack.mixers.S.init_args.d_state": [4, 16]}],
        seeds=[3], seed_keys=["seed_everything", "data.init_args.order_seed"], settings=TINY,
    )
    plans = expand(load_sweep(path))
    assert [p.name for p in plans] == ["s4d-d_state4-s3", "s4d-d_state16-s3"]
    assert plans[1].config["model"]["init_args"]["stack"]["mixers"]["S"] == {"class_path": "hybrids.mixers.S4D", "init_args": {"d_state": 16}}
    assert plans[0].config["model"]["init_args"]["stack"]["mixers"]["S"]["init_args"]["d_state"] == 4, "runs share nothing"
    assert plans[0].config["data"]["init_args"]["order_seed"] == 3 and plans[0].config["seed_everything"] == 3
    assert plans[0].config["data"]["init_args"]["num_train_examples"] == 64
    assert plans[0].tuned == (), "no learning rates: nothing tuned"


def test_several_base_configs_are_an_axis(tmp_path):
    path = write_sweep(tmp_path, base=[str(TRANSFORMER), str(ROOT / "configs" / "s4d.yaml")])
    assert [p.name for p in expand(load_sweep(path))] == ["transformer-s0", "s4d-s0"]


@pytest.mark.parametrize("body, key, words", [
    ({"grids": []}, "grids", "did you mean 'grid'"),
    ({"choices": families(), "grid": [{"family": ["atention"]}]}, "grid[0].family", "did you mean 'attention'"),
    ({"grid": [{"model.init_args.stack.mixers": [{"A": {}}]}]}, "grid[0].model.init_args.stack.mixers", "under choices"),
    ({"grid": [{"d_model": [64]}]}, "grid[0].d_model", "does not address a config section"),
    ({"lr": [0.0]}, "lr", "positive"),
    ({"grid": [{"lr": [1e-3, "fast"]}]}, "grid[0].lr", "positive"),
    ({"grid": [{"lr": [1e-3, 1e-3]}]}, "grid[0].lr", "repeated"),
    ({"lr": [1e-3], "tune": ["width"]}, "tune", "not an axis"),
    ({"seeds": [0, 0]}, "seeds", "repeated"),
    ({"base": "missing.yaml"}, "base", "not found"),
    ({"match": {"quantity": "flops", "targets": [1]}}, "match.quantity", "params"),
    ({"match": {"quantity": "params", "targets": [1000], "tolerance": 2}}, "match.tolerance", "(0, 1)"),
    ({"choices": families(), "grid": [{"family": ["attention"]}, {"family": ["attention"]}]}, "grid", "same name"),
    ({"seed_keys": ["data.init_args.seed"]}, "seed_keys", "order_seed"),
    ({"grid": [{"data.init_args.seed": [1, 2]}]}, "grid[0]", "named like the sweep's own axis"),
    ({"match": {"quantity": "params", "targets": [1000], "range": 8}}, "match.range", "[low, high]"),
    ({"grid": [{"model.init_args.stack.d_model": [32]}], "match": {"quantity": "params", "targets": [1000]}},
     "grid[0]", "solved by match"),
    ({"choices": families(), "match": {"quantity": "params", "targets": [1000], "keys": {"mamba": "model.init_args.stack.d_model"}}},
     "match.keys.mamba", "no choice is labelled"),
])
def test_bad_sweep_files_name_the_key(tmp_path, body, key, words):
    with pytest.raises(SweepError) as info:
        expand(load_sweep(write_sweep(tmp_path, **body)))
    assert info.value.key == key and words in str(info.value), str(info.value)


def test_compact_numbers_in_names():
    assert [compact_number(v) for v in (1e-3, 3e-4, 4.6416e-4, 0.05, 0.01, 0.5, 64, 100_000, 1_500_000, 8192, True)] == [
        "1e-3", "3e-4", "4.642e-4", "5e-2", "1e-2", "0.5", "64", "100k", "1.5M", "8192", "true"]
    assert run_name({"seed": 0, "lr": 1e-3, "family": "mamba", "target": 50_000}, "params") == "mamba-p50k-lr1e-3-s0"


# -- matched sizes -------------------------------------------------------------------------------


def figures_of(law):
    """A fake measure: params = law(d_model)."""
    def figure(config):
        d = config["model"]["init_args"]["stack"]["d_model"]
        return Figures(params=law(d), state_size=None, seq_len=64, d_model=d, vocab_size=128, num_kv_pairs=4)
    return figure


def test_matching_picks_the_closest_width_within_tolerance():
    config = {"model": {"init_args": {"d_model": 1}}}
    grid, square = (4, 4, 256), figures_of(lambda d: d * d)  # multiples of 4 in [4, 256]
    value, achieved = solve(config, "model.init_args.stack.d_model", "params", 10_000, grid, 0.05, square)
    assert (value, achieved) == (100, 10_000)
    value, achieved = solve(config, "model.init_args.stack.d_model", "params", 10_500, grid, 0.05, square)
    assert (value, achieved) == (104, 10_816) and abs(achieved - 10_500) / 10_500 <= 0.05
    with pytest.raises(Unmatched, match="nearest is 65,536"):  # beyond the range
        solve(config, "model.init_args.stack.d_model", "params", 100_000, grid, 0.05, square)
    with pytest.raises(Unmatched, match="tolerance 5%"):  # 64^2 = 4,096 and 128^2 = 16,384 both miss 8,000
        solve(config, "model.init_args.stack.d_model", "params", 8_000, (64, 64, 256), 0.05, square)


def run_sweep(path: Path, *args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(TESTS), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "hybrids", "sweep", str(path), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_dry_run_matches_sizes_per_family_within_tolerance(tmp_path):
    path = write_sweep(
        tmp_path, name="matched", choices={"family": families()["family"]}, grid=[{"family": ["attention", "s4d"]}],
        match={"quantity": "params", "targets": [40_000, 60_000], "multiple_of": 4, "tolerance": 0.05},
    )
    done = run_sweep(path, "--dry-run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = {line.split()[0]: line for line in done.stdout.splitlines() if line.startswith(("attention-", "s4d-"))}
    assert sorted(lines) == ["attention-p40k-s0", "attention-p60k-s0", "s4d-p40k-s0", "s4d-p60k-s0"]
    for name, line in lines.items():
        target = 40_000 if "p40k" in name else 60_000
        params = int(line.split()[2].replace(",", ""))
        assert abs(params - target) / target <= 0.05, line
        assert f"-> {params:,} (d_model=" in line
    assert not (tmp_path / "runs").exists(), "a dry run writes nothing"


def test_matching_a_mixer_argument_on_its_own_grid(tmp_path):
    """keys: a family solves another integer (S4D's d_state, even, from 2 up) at the sweep's width."""
    match = {"quantity": "state_size", "targets": [4_000], "multiple_of": 4, "tolerance": 0.05,
             "keys": {"s4d": {"key": "model.init_args.stack.mixers.S.init_args.d_state", "multiple_of": 2, "range": [2, 256]}}}
    path = write_sweep(tmp_path, name="keyed", choices={"family": families()["family"]},
                       grid=[{"family": ["attention", "s4d"]}], match=match)
    done = run_sweep(path, "--dry-run", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    attention = next(line for line in done.stdout.splitlines() if line.startswith("attention-"))
    s4d = next(line for line in done.stdout.splitlines() if line.startswith("s4d-"))
    assert "(d_model=" in attention and "(d_state=" in s4d
    for line in (attention, s4d):
        assert abs(int(line.split()[3].replace(",", "")) - 4_000) <= 200, line


def test_only_selects_runs_by_name(tmp_path):
    path = write_sweep(tmp_path, choices={"family": families()["family"]}, grid=[{"family": ["attention", "s4d"]}])
    done = run_sweep(path, "--dry-run", "--only", "s4d-*", cwd=tmp_path)
    assert done.returncode == 0 and "s4d-s0" in done.stdout and "attention-s0" not in done.stdout
    assert run_sweep(path, "--dry-run", "--only", "nothing*", cwd=tmp_path).returncode == 2


def test_a_run_held_by_another_process_is_not_started_twice(tmp_path):
    import fcntl

    from hybrids.lab.sweeps.execute import RunTask, execute_run, write_json

    run = tmp_path / "run"
    run.mkdir()
    write_json(run / "run.json", {"name": "run", "config_hash": "abc"})
    with (run / ".lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = execute_run(RunTask(str(run)))
    assert result["status"] == "busy" and "not started twice" in result["error"]
    assert not (run / "output.log").exists(), "nothing was started"


def test_a_launcher_failure_is_written_for_the_summary(tmp_path):
    from hybrids.cli.sweep import record_launcher_failure
    from hybrids.lab.sweeps.execute import read_json, write_json

    run = tmp_path / "run"
    run.mkdir()
    write_json(run / "run.json", {"name": "run", "config_hash": "abc", "params": 10})
    write_json(run / "status.json", {"name": "run", "status": "running"})
    record_launcher_failure(run, {"status": "failed", "error": "ray: WorkerCrashedError: the worker died"})
    status = read_json(run / "status.json")
    assert status["status"] == "failed" and status["error"].startswith("ray: WorkerCrashedError") and status["params"] == 10


# -- real sweeps ---------------------------------------------------------------------------------


def statuses(out: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in out.glob("*/status.json")}


def test_real_sweep_runs_skips_on_rerun_and_logs_the_dry_run_figures(tmp_path):
    path = write_sweep(tmp_path, name="real", settings=TINY, choices={"family": families()["family"]},
                       grid=[{"family": ["attention", "s4d"], "model.init_args.stack.d_model": [16]}], lr=[3e-3])
    dry = run_sweep(path, "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    printed = {line.split()[0]: line.split() for line in dry.stdout.splitlines() if "-d16-" in line}

    first = run_sweep(path, "--workers", "2", cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    out = tmp_path / "runs" / "sweeps" / "real"
    found = statuses(out)
    assert sorted(found) == ["attention-d16-lr3e-3-s0", "s4d-d16-lr3e-3-s0"]
    for name, status in found.items():
        assert status["status"] == "done" and status["attempts"] == 1
        assert 0 <= status["metrics"]["val/acc"] <= 1 and 0 <= status["metrics"]["test/acc"] <= 1
        # Whether it finished learning, from its validation curve (one epoch, validated once:
        # too short to tell), against the task's criterion.
        assert status["learning"]["metric"] == "val/acc"
        assert status["learning"]["status"] == "too short to tell" and status["learning"]["budget"] >= 1
        # The dry run's figures are those of the real build, as the run logged them.
        assert int(printed[name][2].replace(",", "")) == status["params"] == status["logged_params"]
        assert int(printed[name][3].replace(",", "")) == status["state_size"] == status["logged_state_size"]
        config = yaml.safe_load((out / name / "config.yaml").read_text())
        assert config["trainer"]["logger"]["init_args"]["save_dir"] == str(out / name)
    assert (out / "sweep.yaml").read_text() == path.read_text()

    again = run_sweep(path, "--workers", "2", cwd=tmp_path)
    assert again.returncode == 0
    assert "2 finished before" in again.stdout and "0 to run" in again.stdout
    assert statuses(out) == found, "finished runs are left alone"

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    plotted = subprocess.run([sys.executable, "-m", "hybrids", "plot", str(out)], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
    assert plotted.returncode == 0, plotted.stderr
    for name in ("accuracy_vs_width", "accuracy_vs_state_size"):
        assert (out / "plots" / f"{name}.png").read_bytes().startswith(b"\x89PNG")
        assert (out / "plots" / f"{name}.pdf").read_bytes().startswith(b"%PDF")
    assert "attention" in plotted.stdout and "s4d" in plotted.stdout


def test_an_edited_sweep_reruns_what_it_changed_from_scratch(tmp_path):
    path = write_sweep(tmp_path, name="edited", settings=TINY)
    assert run_sweep(path, cwd=tmp_path).returncode == 0
    run = tmp_path / "runs" / "sweeps" / "edited" / "s0"
    before = json.loads((run / "status.json").read_text())
    # Fewer training examples: the old run's checkpoint must not be resumed under the new config.
    path = write_sweep(tmp_path, name="edited", settings={**TINY, "data.init_args.num_train_examples": 32})
    again = run_sweep(path, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    after = json.loads((run / "status.json").read_text())
    assert after["config_hash"] != before["config_hash"] and after["status"] == "done" and after["attempts"] == 1
    assert [p.name for p in run.glob("logs.superseded-*")] == [f"logs.superseded-{before['config_hash']}"]
    assert "using checkpoint" not in (run / "output.log").read_text().split("=== attempt")[-1]


def test_one_failing_run_does_not_stop_the_sweep(tmp_path):
    # max_loss 1e-6: the first loss is above it, so that run stops as diverged (exit 3).
    path = write_sweep(tmp_path, name="failing", settings=TINY, grid=[{"model.init_args.max_loss": [1e4, 1e-6]}])
    done = run_sweep(path, "--workers", "2", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    found = statuses(tmp_path / "runs" / "sweeps" / "failing")
    good, bad = found["max_loss10k-s0"], found["max_loss1e-6-s0"]
    assert good["status"] == "done" and "test/acc" in good["metrics"]
    assert bad["status"] == "failed" and bad["returncode"] == 3 and "diverged" in bad["error"]
    assert "not done:" in done.stdout and "max_loss1e-6-s0: failed" in done.stdout


def test_an_interrupted_sweep_resumes_its_runs_from_their_checkpoints(tmp_path):
    marker = tmp_path / "paused"
    callback = {"class_path": "fault_injection.PauseOnceAtStep", "init_args": {"step": 1, "marker": str(marker)}}
    settings = {**TINY, "trainer.max_epochs": 2, "trainer.callbacks": [callback]}
    path = write_sweep(tmp_path, name="stopped", settings=settings)
    env = {**os.environ, "PYTHONPATH": str(TESTS), "OMP_NUM_THREADS": "1"}
    sweep = subprocess.Popen([sys.executable, "-m", "hybrids", "sweep", str(path)], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert sweep.poll() is None and time.monotonic() < deadline, "the run never reached step 1"
            time.sleep(0.2)
        sweep.send_signal(signal.SIGINT)
        stdout, stderr = sweep.communicate(timeout=120)
    finally:
        sweep.kill()
    assert sweep.returncode == 130, stdout + stderr
    assert "run the same command again to resume" in stderr
    run = tmp_path / "runs" / "sweeps" / "stopped" / "s0"
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "interrupted" and status["returncode"] == 130
    assert list(run.glob("logs/version_0/checkpoints/last*.ckpt"))

    resumed = run_sweep(path, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "done" and status["attempts"] == 2
    log = (run / "output.log").read_text()
    assert "=== attempt 2" in log and "using checkpoint" in log.split("=== attempt 2")[1]


# -- how a run's process starts and ends (hybrids.lab.sweeps.execute) ---------------------------------


@pytest.fixture
def fault_env(monkeypatch):
    """The environment execute_run passes on to its runs: they can import tests/fault_injection.py."""
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def tiny_run_folder(out: Path, name: str, settings: dict | None = None) -> Path:
    """A run folder as `hybrids sweep` writes it, for execute_run."""
    from hybrids.cli.sweep import prepare, write_run_folder

    (plan,) = expand(load_sweep(write_sweep(out, name=name, settings={**TINY, **(settings or {})})))
    assert not prepare([plan], None)
    return write_run_folder(out / "runs", plan, None)


def hanging(marker: Path) -> dict:
    return {"trainer.callbacks": [{"class_path": "fault_injection.HangAtStep",
                                   "init_args": {"step": 1, "marker": str(marker)}}]}


def start_in_thread(task):
    import threading

    from hybrids.lab.sweeps.execute import execute_run

    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(execute_run(task)))
    thread.start()
    return thread, result


def wait_for(marker: Path, thread, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert thread.is_alive() and time.monotonic() < deadline, "the run never reached its step"
        time.sleep(0.1)


def open_files(pid: int) -> set[Path]:
    """The files process ``pid`` holds open (Linux /proc)."""
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            found.add(Path(os.readlink(fd)))
        except OSError:
            pass
    return found


def test_a_run_holds_its_lock_and_a_run_killed_by_a_signal_fails_with_its_signal(tmp_path, fault_env):
    """The run's process holds the lock the sweep took (a second sweep passes the run by while
    it trains); a run that dies by a signal it does not handle (a segfault, the OOM killer) is
    a failure with the negative returncode of death by that signal, and the lock is free after."""
    import fcntl

    from hybrids.cli.sweep import build_parser
    from hybrids.lab.sweeps import execute
    from hybrids.lab.sweeps.execute import RunTask, execute_run, signal_live_runs

    assert "preload" not in build_parser().format_help(), "runs always start as fresh interpreters"
    marker = tmp_path / "hanging"
    run = tiny_run_folder(tmp_path, "killed", hanging(marker))
    thread, result = start_in_thread(RunTask(str(run), cwd=str(tmp_path)))
    wait_for(marker, thread)
    with execute._LIVE_LOCK:
        (process,) = execute._LIVE
    if Path("/proc").is_dir():
        assert (run / ".lock").resolve() in open_files(process.pid), "the lock is handed to the run"
    busy = execute_run(RunTask(str(run), cwd=str(tmp_path)))
    assert busy["status"] == "busy" and "not started twice" in busy["error"], busy
    assert os.getsid(process.pid) == process.pid != os.getsid(0), "the run has a session of its own"
    assert signal_live_runs(signal.SIGKILL) == 1
    thread.join(60)
    assert result["status"] == "failed" and result["returncode"] == -signal.SIGKILL, result
    assert result["attempts"] == 1 and result["log_dir"] == "logs/version_0"
    with (run / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free again: nobody holds the run
    log = (run / "output.log").read_text()
    assert log.count("=== attempt 1") == 1 and " -m hybrids fit -c " in log, log


def process_ended(pid: int) -> bool:
    """Gone, or a zombie nobody has reaped yet (a container's first process may never reap)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's (prctl)")
def test_a_killed_sweep_takes_its_run_with_it_and_the_next_sweep_resumes_it(tmp_path):
    """A sweep killed outright (SIGKILL: no handler runs) cannot stop its runs or record how
    they ended. Its run gets SIGTERM from the kernel when the sweep dies, saves its checkpoint
    and exits; status.json still says "running", which readers show as interrupted (no process
    holds the run's lock) and the next sweep marks interrupted and resumes to the end."""
    from hybrids.lab.analysis import sweep_table

    marker = tmp_path / "paused"
    callback = {"class_path": "fault_injection.PauseOnceAtStep", "init_args": {"step": 1, "marker": str(marker)}}
    path = write_sweep(tmp_path, name="killed", settings={**TINY, "trainer.max_epochs": 2, "trainer.callbacks": [callback]})
    out, run = tmp_path / "runs" / "sweeps" / "killed", tmp_path / "runs" / "sweeps" / "killed" / "s0"
    env = {**os.environ, "PYTHONPATH": str(TESTS), "OMP_NUM_THREADS": "1"}
    sweep = subprocess.Popen([sys.executable, "-m", "hybrids", "sweep", str(path)], cwd=tmp_path, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pid = None
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert sweep.poll() is None and time.monotonic() < deadline, "the run never reached step 1"
            time.sleep(0.1)
        status = json.loads((run / "status.json").read_text())
        pid = status["pid"]
        assert status["status"] == "running" and not process_ended(pid)
        sweep.kill()
        sweep.wait(30)
        deadline = time.monotonic() + 30
        while not process_ended(pid):
            assert time.monotonic() < deadline, "the run outlived its killed sweep"
            time.sleep(0.1)
    finally:
        sweep.kill()
        if pid is not None and not process_ended(pid):
            os.kill(pid, signal.SIGKILL)
    log = (run / "output.log").read_text()
    assert "SIGTERM" in log and list(run.glob("logs/version_0/checkpoints/last*.ckpt")), log[-2000:]
    assert json.loads((run / "status.json").read_text())["status"] == "running", "nobody was left to record it"
    assert list(sweep_table(out)["status"]) == ["interrupted"], "a reader sees that no process runs it"

    resumed = run_sweep(path, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "1 run(s) were recorded as running, but no process was running them" in resumed.stderr
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "done" and status["attempts"] == 2 and "note" not in status, status
    assert "using checkpoint" in (run / "output.log").read_text().split("=== attempt 2")[1]


def test_a_run_whose_interpreter_cannot_start_fails_and_the_next_attempt_runs_it(tmp_path, fault_env):
    from hybrids.lab.sweeps.execute import RunTask, execute_run

    run = tiny_run_folder(tmp_path, "unstartable")
    missing = execute_run(RunTask(str(run), python=str(tmp_path / "no-python")))
    assert missing["status"] == "failed" and missing["error"].startswith("cannot start"), missing
    status = execute_run(RunTask(str(run)))
    assert status["status"] == "done" and status["attempts"] == 2 and status["returncode"] == 0, status
    assert "test/acc" in status["metrics"] and status["logged_params"] == status["params"]


def test_a_run_finished_under_the_older_flat_spelling_is_not_run_again(tmp_path):
    """A run folder written before the model's arguments were nested (and while the hash covered
    the base config's logger) keeps its status when the same run is written again; a real change
    (another learning rate) does not."""
    from hybrids.cli.sweep import prepare, write_run_folder
    from hybrids.lab.sweeps.execute import is_finished, read_json, write_json
    from hybrids.train.model_args import unnest

    (plan,) = expand(load_sweep(write_sweep(tmp_path, name="old", settings=TINY)))
    assert not prepare([plan], None)
    run = write_run_folder(tmp_path / "runs", plan, None)
    for lr, adopted in ((None, True), (0.5, False)):
        written = yaml.safe_load((run / "config.yaml").read_text())
        flat = unnest(written["model"]["init_args"])
        if lr is not None:
            flat["lr"] = lr
        written["model"]["init_args"] = flat
        (run / "config.yaml").write_text(yaml.safe_dump(written))
        write_json(run / "status.json", {"name": "old", "status": "done", "config_hash": "0123456789abcdef"})
        write_run_folder(tmp_path / "runs", plan, None)
        assert is_finished(run) is adopted
        assert (read_json(run / "status.json")["config_hash"] == read_json(run / "run.json")["config_hash"]) is adopted


MAD_FAMILIES = {"attention", "sliding_window", "mamba", "mamba2", "gla", "rglru", "hyena", "h3", "hyena_attention",
                "mamba_attention"}


def test_the_mad_sweep_covers_six_tasks_ten_families_and_mads_grid():
    plans = expand(load_sweep(ROOT / "configs" / "sweeps" / "mad_cpu.yaml"))
    tasks = ("recall", "fuzzy_recall", "noisy_recall", "selective_copying", "compression", "memorization")
    assert {p.axes["family"] for p in plans} == MAD_FAMILIES
    assert {t for p in plans for t in tasks if t in p.axes} == set(tasks)
    assert all(any(p.axes.get(t) == "base" for p in plans) for t in tasks), "every task at its baseline"
    assert {(p.axes["lr"], p.axes["weight_decay"]) for p in plans} == {(lr, wd) for lr in (1e-4, 5e-4, 1e-3)
                                                                        for wd in (0.0, 0.1)}
    assert all(p.tuned == ("lr", "weight_decay") for p in plans)
    for plan in plans:
        stack, data = plan.config["model"]["init_args"]["stack"], plan.config["data"]
        is_compression = data["class_path"] == "hybrids.data.Compression"
        assert (stack.get("readout") == "last") == is_compression
        if "H" in stack["pattern"]:  # Hyena's filter spans the task's length
            assert stack["mixers"]["H"]["init_args"]["l_max"] == data["init_args"]["seq_len"]


def test_the_mad_iso_state_sweep_matches_every_family_to_one_state_size():
    from hybrids.lab.sweeps.matching import solve_plan

    spec = load_sweep(ROOT / "configs" / "sweeps" / "mad_cpu_iso_state.yaml")
    plans = [p for p in expand(spec) if p.axes.get("recall") == "base" and p.axes["seed"] == 0
             and p.axes["lr"] == 1e-3 and p.axes["weight_decay"] == 0.0]
    assert {p.axes["family"] for p in plans} == {"mamba", "mamba2", "gla", "h3"}
    for plan in plans:
        solve_plan(plan, spec.match)
        assert abs(plan.target["achieved"] - 4096) <= 0.1 * 4096, plan.name
