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


def test_restore_never_overwrites_and_save_mirrors_deletions(tmp_path):
    sweep, archive = tmp_path / "runs", tmp_path / "archive"
    for name, status in (("a", "done"), ("b", "pruned")):
        (sweep / name).mkdir(parents=True)
        (sweep / name / "run.json").write_text(json.dumps({"name": name}))
        (sweep / name / "status.json").write_text(json.dumps({"status": status}))
    (sweep / "a" / "output.log").write_text("noise")
    assert save(sweep, archive) == 4 and files(archive) == {"a/run.json", "a/status.json", "b/run.json", "b/status.json"}

    (sweep / "a" / "status.json").write_text(json.dumps({"status": "running"}))  # newer on disk
    shutil.rmtree(sweep / "b")
    assert restore(archive, sweep) == 2
    assert json.loads((sweep / "a" / "status.json").read_text())["status"] == "running"
    assert json.loads((sweep / "b" / "status.json").read_text())["status"] == "pruned"

    shutil.rmtree(sweep / "b")
    assert save(sweep, archive) == 2 and files(archive) == {"a/run.json", "a/status.json"}
    assert json.loads((archive / "a" / "status.json").read_text())["status"] == "running"


def test_a_missing_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["restore", str(tmp_path / "nowhere"), str(tmp_path / "runs")]) == 2
    assert "no archive at" in capsys.readouterr().err
