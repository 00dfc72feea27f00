"""Successive halving over the tuned settings of each point (hybrids.lab.sweeps.halving): the
rung arithmetic, the ranking, the loop (on fake runs, then on a real sweep), and that a pruned
run is never selected."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from hybrids.cli.sweep import sweep_main
from hybrids.lab.analysis import select_points, sweep_table
from hybrids.lab.sweeps import SweepError, expand, load_sweep
from hybrids.lab.sweeps.halving import (
    Halving, HalvingRun, decide, kept_count, rank_settings, reached, rung_steps, run_halving, score_at,
)
from helpers import ROOT

TRANSFORMER = ROOT / "configs" / "transformer.yaml"


def test_rung_steps_and_kept_counts():
    assert rung_steps(640, [0.125, 0.5]) == [80, 320]
    assert rung_steps(3, [0.1, 0.2, 0.9]) == [1], "repeats merged, none at or past the budget"
    assert [kept_count(n, 0.5) for n in (6, 3, 2, 1)] == [3, 2, 1, 1]
    assert kept_count(6, 1 / 3) == 2 and kept_count(3, 0.3) == 1


def test_ranking_puts_complete_settings_first_then_the_better_mean_then_lower_values():
    scores = {(1e-3,): [0.5, 0.6], (3e-3,): [0.9, None], (3e-4,): [0.5, 0.6], (1e-2,): [0.7, 0.7]}
    # 3e-3 has the best seed but one seed failed: it ranks below every complete setting.
    assert rank_settings(scores, "max") == [(1e-2,), (3e-4,), (1e-3,), (3e-3,)]
    assert rank_settings({(1,): [2.0], (2,): [1.0]}, "min") == [(2,), (1,)]
    assert rank_settings({(2,): [math.nan], (1,): [None]}, "max") == [(1,), (2,)], "nothing scored: lower value"
    assert score_at([(10, 0.1), (20, 0.4), (30, 0.9)], 25) == 0.4
    assert score_at([(10, math.nan)], 10) is None and score_at([(10, 0.1)], 5) is None


def test_what_counts_as_having_reached_a_rung():
    curve = [(8, 0.3), (16, 0.6)]
    assert reached({"status": "paused", "paused_at": 16}, 12, curve) == 16
    assert reached({"status": "paused", "paused_at": 8}, 12, curve) is None, "paused at an earlier rung"
    assert reached({"status": "done"}, 12, curve) == 16, "solved early: scored by its final figure"
    assert reached({"status": "failed"}, 12, curve) == 0
    assert reached({"status": "interrupted"}, 12, curve) is None and reached(None, 12, curve) is None


class FakeSweep:
    """Runs whose validation curve is value(lr) * step: a launch 'trains' each to its pause step
    (or the end) and writes the status the runner would."""

    def __init__(self, tmp_path: Path, lrs, seeds=(0, 1), budget=64, fail=()):
        self.folder, self.statuses, self.curves, self.batches = tmp_path, {}, {}, []
        self.runs = []
        for lr in lrs:
            for seed in seeds:
                name = f"lr{lr}-s{seed}"
                run_dir = tmp_path / name
                run_dir.mkdir()
                self.runs.append(HalvingRun(name, run_dir, {"family": "a", "lr": lr, "seed": seed}, budget, "val/acc", "max"))
        self.fail, self.stop_after = set(fail), None

    def launch(self, batch):
        self.batches.append([(run.name, pause) for run, pause in batch])
        if self.stop_after is not None and len(self.batches) > self.stop_after:
            raise KeyboardInterrupt  # the sweep stopped by a signal
        for run, pause in batch:
            lr = run.axes["lr"]
            end = pause if pause is not None else run.budget
            self.curves[run.name] = [(s, min(1.0, lr * s / 100)) for s in range(8, end + 1, 8)]
            if run.name in self.fail:
                self.statuses[run.name] = {"status": "failed"}
            elif pause is None:
                self.statuses[run.name] = {"status": "done"}
            else:
                self.statuses[run.name] = {"status": "paused", "paused_at": end}

    def go(self, halving):
        run_halving(self.runs, ["lr"], halving, self.folder, self.launch, lambda d: self.statuses.get(d.name),
                    lambda d, s: self.statuses.__setitem__(d.name, s), lambda r: self.curves.get(r.name, []),
                    log=lambda line: None)


def test_the_loop_trains_rung_by_rung_keeps_the_best_and_records_its_decisions(tmp_path):
    fake = FakeSweep(tmp_path, lrs=[1, 2, 3, 4], fail={"lr4-s1"})
    fake.go(Halving(rungs=(0.125, 0.5), keep=0.5))
    assert [len(b) for b in fake.batches] == [8, 4, 2]
    assert {p for b in fake.batches[:1] for _, p in b} == {8} and {p for _, p in fake.batches[1]} == {32}
    assert fake.batches[2] == [("lr3-s0", None), ("lr3-s1", None)], "the best complete setting trains to the end"
    # lr 4 learns fastest but one seed failed: ranked below the complete settings at rung 1.
    status = {name: s["status"] for name, s in fake.statuses.items()}
    assert status == {"lr1-s0": "pruned", "lr1-s1": "pruned", "lr2-s0": "pruned", "lr2-s1": "pruned",
                      "lr3-s0": "done", "lr3-s1": "done", "lr4-s0": "pruned", "lr4-s1": "pruned"}
    assert fake.statuses["lr1-s0"]["pruned_at"] == 8 and fake.statuses["lr2-s0"]["pruned_at"] == 32
    decisions = json.loads((tmp_path / "halving.json").read_text())["points"]
    (point,) = decisions
    assert decisions[point]["0"]["kept"] == ["lr=3", "lr=2"] and decisions[point]["1"]["kept"] == ["lr=3"]
    assert decisions[point]["0"]["scores"]["lr=4"] == [0.32, None]

    fake.batches.clear()
    fake.go(Halving(rungs=(0.125, 0.5), keep=0.5))
    assert fake.batches == [], "run again: nothing to train, nothing re-decided"


def test_an_interrupted_rung_is_decided_by_the_next_sweep_and_old_decisions_stand(tmp_path):
    fake = FakeSweep(tmp_path, lrs=[1, 2], seeds=(0,))
    fake.stop_after = 0
    with pytest.raises(KeyboardInterrupt):
        fake.go(Halving(rungs=(0.25,), keep=0.5))
    assert not (tmp_path / "halving.json").exists(), "no run reached the rung: nothing decided"
    fake.stop_after = None
    fake.go(Halving(rungs=(0.25,), keep=0.5))
    assert fake.statuses["lr2-s0"]["status"] == "done" and fake.statuses["lr1-s0"]["status"] == "pruned"
    # A decision on record is applied as written, whatever the figures would say now.
    path = tmp_path / "halving.json"
    recorded = json.loads(path.read_text())
    (point,) = recorded["points"]
    recorded["points"][point]["0"]["kept"] = ["lr=1"]
    path.write_text(json.dumps(recorded))
    fake.statuses.clear()
    fake.go(Halving(rungs=(0.25,), keep=0.5))
    assert fake.statuses["lr1-s0"]["status"] == "done" and fake.statuses["lr2-s0"]["status"] == "pruned"
    # Runs whose config the sweep file changed: the old decision does not apply; decided anew.
    for run in fake.runs:
        run.config_hash = "edited"
    fake.statuses.clear()
    fake.go(Halving(rungs=(0.25,), keep=0.5))
    assert fake.statuses["lr2-s0"]["status"] == "done" and fake.statuses["lr1-s0"]["status"] == "pruned"


def test_a_point_that_grows_a_seed_is_decided_again_with_the_pruned_runs_scored(tmp_path):
    """A finished halving sweep given another seed: the point's configs change, so its decision is
    made again; the runs pruned before count with their rung figures, and a setting that now wins
    resumes from its pause instead of staying pruned for good."""
    fake = FakeSweep(tmp_path, lrs=[1, 2], seeds=(0,))
    fake.go(Halving(rungs=(0.25,), keep=0.5))
    assert fake.statuses["lr1-s0"]["status"] == "pruned" and fake.statuses["lr2-s0"]["status"] == "done"
    grown = FakeSweep.__new__(FakeSweep)
    grown.__dict__.update(fake.__dict__)
    for lr in (1, 2):
        run_dir = tmp_path / f"lr{lr}-s1"
        run_dir.mkdir()
        grown.runs.append(HalvingRun(f"lr{lr}-s1", run_dir, {"family": "a", "lr": lr, "seed": 1}, 64, "val/acc", "max",
                                     config_hash="new"))
    grown.fail = {"lr2-s1"}  # the new seed of the winner fails: lr 1, complete, now ranks first
    grown.batches = []
    grown.go(Halving(rungs=(0.25,), keep=0.5))
    assert grown.batches[0] == [("lr1-s1", 16), ("lr2-s1", 16)], "only the new seeds train to the rung"
    assert grown.statuses["lr1-s0"]["status"] == "done" and grown.statuses["lr1-s1"]["status"] == "done"
    assert grown.statuses["lr2-s0"]["status"] == "pruned"


@pytest.mark.parametrize("grow", ["learning rate", "seed"])
def test_a_decision_recorded_without_configs_is_made_again_when_the_grid_grows(tmp_path, grow):
    """Decisions written before they recorded their configs: a new setting (or seed) of the point
    must not be pruned by a decision that never scored it."""
    fake = FakeSweep(tmp_path, lrs=[1, 2], seeds=(0,))
    fake.go(Halving(rungs=(0.25,), keep=0.5))
    path = tmp_path / "halving.json"
    recorded = json.loads(path.read_text())
    for decision in next(iter(recorded["points"].values())).values():
        del decision["configs"]
    path.write_text(json.dumps(recorded))
    grown = FakeSweep.__new__(FakeSweep)
    grown.__dict__.update(fake.__dict__)
    lr, seed = (3, 0) if grow == "learning rate" else (1, 1)
    run_dir = tmp_path / f"lr{lr}-s{seed}"
    run_dir.mkdir()
    grown.runs.append(HalvingRun(run_dir.name, run_dir, {"family": "a", "lr": lr, "seed": seed}, 64, "val/acc", "max"))
    grown.batches = []
    grown.go(Halving(rungs=(0.25,), keep=0.5))
    assert grown.batches[0] == [(run_dir.name, 16)]
    decision = next(iter(json.loads(path.read_text())["points"].values()))["0"]
    if grow == "learning rate":  # the fastest learner wins once scored
        assert decision["kept"] == ["lr=3", "lr=2"] and grown.statuses["lr3-s0"]["status"] == "done"
        assert grown.statuses["lr1-s0"]["status"] == "pruned"
    else:
        assert decision["scores"]["lr=1"] == [0.16, 0.16] and len(decision["configs"]) == 3


def test_decide_waits_for_every_run_of_the_point():
    runs = [HalvingRun(f"r{lr}", Path("."), {"lr": lr, "seed": 0}, 10, "val/acc", "max") for lr in (1, 2)]
    there = {"r1": 5, "r2": None}
    assert decide(runs, ["lr"], 0, 5, 0.5, lambda r: there[r.name], lambda r: [(5, 0.5)]) is None


def test_a_run_that_paused_past_the_rung_is_scored_at_the_rung():
    # r2 resumed from a checkpoint beyond the rung (step 5) and paused at its next validation
    # (step 10); its later, better figure must not decide against r1's figure at step 5.
    runs = [HalvingRun(f"r{lr}", Path("."), {"lr": lr, "seed": 0}, 20, "val/acc", "max") for lr in (1, 2)]
    there = {"r1": 5, "r2": 10}
    curves = {"r1": [(5, 0.5)], "r2": [(5, 0.4), (10, 0.9)]}
    decision = decide(runs, ["lr"], 0, 5, 0.5, lambda r: there[r.name], lambda r: curves[r.name])
    assert decision["scores"] == {"lr=1": [0.5], "lr=2": [0.4]} and decision["kept"] == ["lr=1"]


# -- the sweep file ----------------------------------------------------------------------------


def write(folder: Path, **body) -> Path:
    body.setdefault("base", str(TRANSFORMER))
    path = folder / "s.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def test_the_default_grid_tunes_learning_rate_and_weight_decay(tmp_path):
    plans = expand(load_sweep(write(tmp_path, lr="default", weight_decay="default")))
    assert [p.name for p in plans] == ["lr3e-4-wd0-s0", "lr3e-4-wd0.1-s0", "lr1e-3-wd0-s0", "lr1e-3-wd0.1-s0",
                                       "lr3e-3-wd0-s0", "lr3e-3-wd0.1-s0"]
    optim = plans[3].config["model"]["init_args"]["optim"]
    assert (optim["lr"], optim["weight_decay"]) == (1e-3, 0.1) and plans[3].tuned == ("lr", "weight_decay")
    block = expand(load_sweep(write(tmp_path, lr=[1e-3], grid=[{"weight_decay": [0.0, 0.05]}])))
    assert [p.name for p in block] == ["lr1e-3-wd0-s0", "lr1e-3-wd5e-2-s0"] and block[0].tuned == ("lr", "weight_decay")
    spec = load_sweep(write(tmp_path, lr="default", weight_decay="default", halving={"rungs": [0.125, 0.5]}))
    assert spec.halving == Halving((0.125, 0.5), 0.5)


@pytest.mark.parametrize("body, key, words", [
    ({"weight_decay": [-0.1]}, "weight_decay", ">= 0"),
    ({"weight_decay": [0.1, 0.1]}, "weight_decay", "repeated"),
    ({"lr": "defaults"}, "lr", "non-empty list"),
    ({"lr": [1e-3, 3e-3], "halving": {"rungs": [0.5, 0.25]}}, "halving.rungs", "increase"),
    ({"lr": [1e-3, 3e-3], "halving": {"rungs": [1.0]}}, "halving.rungs", "(0, 1)"),
    ({"lr": [1e-3, 3e-3], "halving": {"rungs": [0.5], "keep": 1}}, "halving.keep", "(0, 1)"),
    ({"lr": [1e-3, 3e-3], "halving": {"rungs": [0.5], "metric": "val/loss"}}, "halving", "together"),
    ({"lr": [1e-3, 3e-3], "halving": {"rungs": [0.5], "eta": 3}}, "halving.eta", "unknown key"),
    ({"halving": {"rungs": [0.5]}}, "halving", "nothing is tuned"),
])
def test_bad_tuning_entries_name_the_key(tmp_path, body, key, words):
    with pytest.raises(SweepError) as info:
        expand(load_sweep(write(tmp_path, **body)))
    assert info.value.key == key and words in str(info.value), str(info.value)


# -- a real sweep --------------------------------------------------------------------------------

TINY = {
    "trainer.max_steps": 24, "trainer.max_epochs": None, "trainer.val_check_interval": 4,
    "trainer.enable_model_summary": False, "model.init_args.stack.d_model": 16,
    "data.init_args.num_train_examples": 256, "data.init_args.num_val_examples": 32,
    "data.init_args.num_test_examples": 32, "data.init_args.batch_size": 16,
}


def test_a_real_halving_sweep_prunes_on_validation_and_selects_only_survivors(tmp_path, monkeypatch, capsys):
    """Three learning rates, ranked by validation loss at the rung (step 6: the validation at 8);
    the fastest learner goes on, the two others are pruned; the selection chooses among done
    runs only, even when a pruned run's figures are doctored to look better."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    path = write(tmp_path, settings=TINY, lr=[1e-5, 1e-4, 1e-2], weight_decay=[0.0],
                 halving={"rungs": [0.25], "keep": 0.3, "metric": "val/loss", "mode": "min"})
    out = tmp_path / "out"
    assert sweep_main([str(path), "--dry-run"]) == 0
    assert "halving: pauses at steps [6] of 24; keep 0.3 of the settings at each: at most 1.5 run-budgets instead of 3" in capsys.readouterr().out
    assert sweep_main([str(path), "--out", str(out), "--workers", "2"]) == 0
    found = {p.parent.name: json.loads(p.read_text()) for p in out.glob("*/status.json")}
    assert {n: s["status"] for n, s in found.items()} == {
        "lr1e-5-wd0-s0": "pruned", "lr1e-4-wd0-s0": "pruned", "lr1e-2-wd0-s0": "done"}
    assert found["lr1e-5-wd0-s0"]["paused_at"] == 8 and found["lr1e-5-wd0-s0"]["pruned_at"] == 6
    decision = next(iter(json.loads((out / "halving.json").read_text())["points"].values()))["0"]
    assert decision["kept"] == ["lr=0.01, weight_decay=0.0"]
    losses = {label: scores[0] for label, scores in decision["scores"].items()}
    assert losses["lr=0.01, weight_decay=0.0"] < losses["lr=0.0001, weight_decay=0.0"] < losses["lr=1e-05, weight_decay=0.0"]
    assert found["lr1e-2-wd0-s0"]["learning"]["budget"] == 24 and "test/acc" in found["lr1e-2-wd0-s0"]["metrics"]
    capsys.readouterr()

    assert sweep_main([str(path), "--out", str(out), "--workers", "2"]) == 0
    assert "0 to run" in capsys.readouterr().out, "pruned runs are not trained again"

    pruned = out / "lr1e-5-wd0-s0" / "status.json"
    doctored = json.loads(pruned.read_text())
    doctored["metrics"] = {"val/loss": 0.0, "val/acc": 1.0, "test/acc": 1.0, "test/loss": 0.0}
    pruned.write_text(json.dumps(doctored))
    (point,) = select_points(sweep_table(out), metric="val/loss", mode="min").to_dict("records")
    assert (point["lr"], point["n_pruned"], point["n_pending"], point["n_seeds"]) == (1e-2, 2, 0, 1)


# -- the protocol's sweep files ----------------------------------------------------------------


@pytest.mark.parametrize("name, families, widened, budget, data", [
    # 17 families x 2 widths; the grid widened where a row chose its top learning rate unsolved
    ("mqar_tuned_cpu", 17 * 2, {("sliding_window", 64): (1e-2,), ("rglru_local", 64): (1e-2, 3e-2),
                                ("mamba_swa", 64): (1e-2,), ("mamba_swa", 128): (1e-2,)}, 3000, "MQAR"),
    ("selective_copying_tuned_cpu", 4, {}, 2560, "SelectiveCopying"),
    ("induction_tuned_cpu", 3, {}, 4000, "InductionHeads"),
])
def test_the_protocol_sweeps_tune_every_family_on_the_default_grid_with_three_seeds(name, families, widened, budget, data):
    spec = load_sweep(ROOT / "configs" / "sweeps" / f"{name}.yaml")
    plans = expand(spec)
    extra = sum(len(lrs) for lrs in widened.values())
    assert len(plans) == families * 6 * 3 + extra * 2 * 3 and spec.tune == ["lr", "weight_decay"]
    default = {(lr, wd) for lr in (3e-4, 1e-3, 3e-3) for wd in (0.0, 0.1)}
    for point in {(p.axes.get("family"), p.axes.get("d_model")) for p in plans}:
        grid = {(p.axes["lr"], p.axes["weight_decay"]) for p in plans if (p.axes.get("family"), p.axes.get("d_model")) == point}
        assert grid == default | {(lr, wd) for lr in widened.get(point, ()) for wd in (0.0, 0.1)}, point
    assert spec.halving is not None and spec.halving.metric == "val/loss"
    for plan in plans:
        trainer, data_args = plan.config["trainer"], plan.config["data"]["init_args"]
        assert trainer["max_steps"] == budget and trainer.get("max_epochs") is None
        assert plan.config["data"]["class_path"] == f"hybrids.data.{data}"
        assert data_args["order_seed"] == plan.config["seed_everything"] == plan.axes["seed"]
    if name == "induction_tuned_cpu":
        assert all(p.config["data"]["init_args"]["train_lengths"] == [64, 256] for p in plans)


def test_only_must_select_whole_points_under_halving(tmp_path, capsys):
    path = write(tmp_path, settings=TINY, lr=[1e-4, 1e-3], weight_decay=[0.0], halving={"rungs": [0.25]})
    assert sweep_main([str(path), "--dry-run", "--only", "lr1e-3-*"]) == 2
    assert "error: only: with halving, select whole points" in capsys.readouterr().err


def test_the_long_selective_copying_sweep_trains_the_tuned_sweeps_stacks_four_times_longer():
    tuned = {(p.axes["base"], p.axes["seed"]): p.config
             for p in expand(load_sweep(ROOT / "configs" / "sweeps" / "selective_copying_tuned_cpu.yaml"))}
    long = expand(load_sweep(ROOT / "configs" / "sweeps" / "selective_copying_long_cpu.yaml"))
    assert {(p.axes["family"], p.axes["seed"]) for p in long} == set(tuned)
    for plan in long:
        same = tuned[plan.axes["family"], plan.axes["seed"]]
        stack, data = plan.config["model"]["init_args"]["stack"], plan.config["data"]
        assert stack == same["model"]["init_args"]["stack"], plan.name  # the same model, family by family
        assert data == same["data"] and plan.config["trainer"]["max_steps"] == 4 * same["trainer"]["max_steps"]
