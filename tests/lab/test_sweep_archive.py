"""A sweep's records saved to a committable folder and restored into a fresh checkout
(hybrids.lab.sweeps.archive): nothing heavy is kept, nothing finished is trained again, the
analysis reads the restored sweep as it read the original, and a restore never overwrites."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import yaml

from hybrids.cli.sweep import sweep_main
from hybrids.lab.analysis import sweep_table
from hybrids.lab.sweeps.archive import main, restore, save
from helpers import ROOT

TINY = {
    "trainer.max_steps": 8, "trainer.max_epochs": None, "trainer.val_check_interval": 4,
    "trainer.enable_model_summary": False, "model.init_args.stack.d_model": 16,
    "data.init_args.num_train_examples": 128, "data.init_args.num_val_examples": 16,
    "data.init_args.num_test_examples": 16, "data.init_args.batch_size": 16,
}


def files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def test_a_saved_sweep_restores_into_a_fresh_folder_and_is_not_trained_again(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text(yaml.safe_dump({"base": str(ROOT / "configs" / "transformer.yaml"), "settings": TINY,
                                          "lr": [1e-3], "weight_decay": [0.0]}, sort_keys=False))
    out, archive = tmp_path / "runs", tmp_path / "archive"
    assert sweep_main([str(sweep_file), "--out", str(out), "--workers", "1"]) == 0
    before = sweep_table(out)

    assert main(["save", str(out), str(archive)]) == 0
    kept = files(archive)
    assert {"sweep.yaml", "manifest.json", "lr1e-3-wd0-s0/run.json", "lr1e-3-wd0-s0/status.json", "lr1e-3-wd0-s0/config.yaml",
            "lr1e-3-wd0-s0/logs/version_0/metrics.csv", "lr1e-3-wd0-s0/logs/version_0/hparams.yaml"} <= kept
    assert not [name for name in kept if name.endswith(".ckpt") or name.endswith("output.log") or ".lock" in name]
    assert any(name.endswith(".ckpt") for name in files(out)), "the sweep folder had checkpoints to leave out"

    shutil.rmtree(out)  # a fresh checkout: no runs/ folder
    assert restore(archive, out) == len(kept)
    capsys.readouterr()
    assert sweep_main([str(sweep_file), "--out", str(out), "--workers", "1"]) == 0
    assert "1 finished before" in capsys.readouterr().out and not list(out.glob("*/logs/version_1"))
    after = sweep_table(out)
    columns = ["name", "status", "lr", "val_acc", "test_acc", "params", "state_size"]
    pd.testing.assert_frame_equal(before[columns].sort_values("name").reset_index(drop=True),
                                  after[columns].sort_values("name").reset_index(drop=True))


def make_run(sweep: Path, name: str, status: str | None, versions: int = 1) -> None:
    (sweep / name).mkdir(parents=True)
    (sweep / name / "run.json").write_text(json.dumps({"name": name}))
    (sweep / name / "config.yaml").write_text("seed_everything: 0\n")
    if status is not None:
        (sweep / name / "status.json").write_text(json.dumps({"status": status}))
    for version in range(versions):
        log = sweep / name / "logs" / f"version_{version}"
        log.mkdir(parents=True)
        (log / "metrics.csv").write_text("step,val/acc\n")
        (log / "checkpoints").mkdir()
        (log / "checkpoints" / "last.ckpt").write_bytes(b"weights")


def test_restore_brings_back_ended_runs_whole_and_other_runs_as_plans_only(tmp_path):
    archive, sweep = tmp_path / "archive", tmp_path / "runs"
    for name, status in (("done", "done"), ("pruned", "pruned"), ("paused", "paused"), ("failed", "failed")):
        make_run(archive, name, status)
    (archive / "halving.json").write_text("{}")
    restore(archive, sweep)
    ended = {f"{name}/{f}" for name in ("done", "pruned")
             for f in ("run.json", "config.yaml", "status.json", "logs/version_0/metrics.csv")}
    plans_only = {f"{name}/{f}" for name in ("paused", "failed") for f in ("run.json", "config.yaml")}
    assert files(sweep) == {"halving.json"} | ended | plans_only


def test_restore_never_overwrites_a_run_the_sweep_folder_has_a_record_of(tmp_path):
    archive, sweep = tmp_path / "archive", tmp_path / "runs"
    make_run(archive, "a", "done", versions=2)
    make_run(sweep, "a", "running", versions=1)
    restore(archive, sweep)
    assert json.loads((sweep / "a" / "status.json").read_text())["status"] == "running"
    assert not (sweep / "a" / "logs" / "version_1").exists(), "no archived curve mixed into the run's own"


def test_save_keeps_newer_records_and_archives_a_running_run_as_interrupted(tmp_path):
    sweep, archive = tmp_path / "runs", tmp_path / "archive"
    make_run(sweep, "a", "running")
    make_run(sweep, "b", "done")
    (sweep / "a" / "output.log").write_text("noise")
    (sweep / "manifest.json").write_text(json.dumps({"runs": ["a", "b", "c"]}))
    assert save(sweep, archive) == 9
    assert files(archive) == {"manifest.json"} | {f"{r}/{f}" for r in "ab" for f in (
        "run.json", "config.yaml", "status.json", "logs/version_0/metrics.csv")}
    archived = json.loads((archive / "a" / "status.json").read_text())
    assert archived["status"] == "interrupted" and "running" in archived["note"]
    assert json.loads((sweep / "a" / "status.json").read_text())["status"] == "running", "the sweep's own file is untouched"

    # Another machine's newer record of c, and b restarted here with only its plan so far.
    make_run(archive, "c", "done")
    (sweep / "b" / "status.json").unlink()
    shutil.rmtree(sweep / "b" / "logs")
    save(sweep, archive)
    assert json.loads((archive / "b" / "status.json").read_text())["status"] == "done"
    assert (archive / "b" / "logs" / "version_0" / "metrics.csv").exists()
    assert (archive / "c" / "status.json").exists(), "a listed run this folder has not got keeps its record"

    # Taken out of the sweep file: its record goes.
    (sweep / "manifest.json").write_text(json.dumps({"runs": ["a", "b"]}))
    save(sweep, archive)
    assert not (archive / "c").exists()
    # b runs again here from its first step: its own record replaces the archived one, old curves too.
    (sweep / "b" / "status.json").write_text(json.dumps({"status": "paused"}))
    (sweep / "b" / "logs" / "version_0").mkdir(parents=True)
    (sweep / "b" / "logs" / "version_0" / "metrics.csv").write_text("step\n")
    save(sweep, archive)
    assert json.loads((archive / "b" / "status.json").read_text())["status"] == "paused"


def test_the_decisions_file_is_halvings():
    from hybrids.lab.sweeps.archive import SWEEP_FILES
    from hybrids.lab.sweeps.halving import DECISIONS_FILE

    assert DECISIONS_FILE in SWEEP_FILES


def test_a_missing_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["restore", str(tmp_path / "nowhere"), str(tmp_path / "runs")]) == 2
    assert "no archive at" in capsys.readouterr().err
