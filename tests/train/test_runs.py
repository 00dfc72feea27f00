"""Runs you can trust: run identity, exact resumption, injected faults, divergence, keyed bad
values, evaluation without checkpoints, and what a run writes where.

CLI runs here are tiny (a few batches of 16 examples); the ones that must be killed or
interrupted run as real processes (``python -m hybrids``), with faults injected by the callbacks
of ``tests/fault_injection.py``.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from hybrids.cli.fit import build_cli
from hybrids.train.divergence import DivergenceError
from helpers import ROOT, TESTS

TRANSFORMER = ROOT / "configs" / "transformer.yaml"
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
SMALL = [
    "--data.init_args.num_train_examples=160", "--data.init_args.num_test_examples=32",
    "--data.init_args.batch_size=16", "--model.init_args.optim.warmup_steps=5",
]


def run_args(*extra: str, subcommand: str = "fit", config: Path = TRANSFORMER) -> list[str]:
    return [subcommand, "-c", str(config), *QUIET, *SMALL, *extra]


def hybrids(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m hybrids ARGS`` in ``cwd``, with the fault-injection callbacks importable."""
    env = {**os.environ, "PYTHONPATH": str(TESTS), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "hybrids", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def metrics(log_dir: Path) -> dict[tuple[int, str], str]:
    """(step, column) -> value of every filled cell of a run's metrics.csv."""
    out = {}
    for row in csv.DictReader((log_dir / "metrics.csv").open()):
        for column, value in row.items():
            if value != "" and column not in ("step", "epoch"):
                out[(int(row["step"]), column)] = value
    return out


def hparams(log_dir: Path) -> dict:
    return yaml.safe_load((log_dir / "hparams.yaml").read_text())


def error_of(args: list[str], capsys) -> str:
    """The error line of a CLI call that must stop before training (exit status 2)."""
    with pytest.raises(SystemExit) as info:
        build_cli(args)
    assert info.value.code == 2
    return capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# run identity


def test_identity_is_stored_and_last_resumes_only_the_same_run(in_tmp):
    """Two runs under one name at lr 1e-3 and 3e-2: `--ckpt_path last` with lr 1e-3 resumes the
    1e-3 run (the issue's case: it used to resume the newer 3e-2 one), and trains at 1e-3."""
    low = build_cli(run_args("--trainer.max_epochs=1", "--model.init_args.optim.lr=1e-3"))
    high = build_cli(run_args("--trainer.max_epochs=1", "--model.init_args.optim.lr=3e-2"))
    low_dir, high_dir = Path(low.trainer.log_dir), Path(high.trainer.log_dir)
    assert hparams(low_dir)["identity"] != hparams(high_dir)["identity"]
    saved = torch.load(low_dir / "checkpoints" / "last.ckpt", weights_only=False)["hybrids"]
    assert saved["hash"] == hparams(low_dir)["identity"]
    assert saved["config"]["model"]["init_args"]["lr"] == 1e-3

    resumed = build_cli(run_args("--trainer.max_epochs=2", "--model.init_args.optim.lr=1e-3", "--ckpt_path=last"))
    assert Path(resumed.trainer.ckpt_path).resolve() == (low_dir / "checkpoints" / "last.ckpt").resolve()
    assert resumed.trainer.optimizers[0].param_groups[0]["initial_lr"] == 1e-3
    assert hparams(Path(resumed.trainer.log_dir))["resumed_from"].endswith(str(Path(low_dir.name) / "checkpoints" / "last.ckpt"))

    # A seed or data setting of its own is another run: nothing to resume, a fresh start.
    with pytest.warns(UserWarning, match="no checkpoint of this run"):
        fresh = build_cli(run_args("--trainer.max_epochs=1", "--model.init_args.optim.lr=1e-3", "--seed_everything=7",
                                   "--ckpt_path=last"))
    assert fresh.trainer.ckpt_path is None


def test_checkpoint_of_another_run_is_refused_with_a_diff(in_tmp, capsys):
    """`validate -c mamba.yaml --ckpt_path <an attention checkpoint>` used to evaluate the attention
    model as a Mamba run, and `--model.init_args.stack.d_model=32` was ignored against a width-64
    checkpoint; both are refused, naming the keys that differ."""
    first = build_cli(run_args("--trainer.max_epochs=1"))
    checkpoint = str(Path(first.trainer.log_dir) / "checkpoints" / "last.ckpt")
    err = error_of(run_args(f"--ckpt_path={checkpoint}", subcommand="validate", config=ROOT / "configs" / "mamba.yaml"), capsys)
    assert "belongs to another run" in err and "model.init_args.stack.pattern: 'A' (checkpoint) vs 'M' (this run)" in err
    assert "--load_weights_only" in err
    err = error_of(run_args("--trainer.max_epochs=2", "--model.init_args.stack.d_model=32", f"--ckpt_path={checkpoint}"), capsys)
    assert "model.init_args.stack.d_model: 64 (checkpoint) vs 32 (this run)" in err
    err = error_of(run_args("--trainer.max_epochs=2", "--model.init_args.optim.lr=0.01", f"--ckpt_path={checkpoint}"), capsys)
    assert "model.init_args.optim.lr" in err


def test_load_weights_only_is_an_explicit_warm_start(in_tmp, capsys):
    first = build_cli(run_args("--trainer.max_epochs=1"))
    checkpoint = Path(first.trainer.log_dir) / "checkpoints" / "last.ckpt"
    warm = build_cli(run_args("--trainer.max_epochs=1", "--model.init_args.optim.lr=0.01", f"--ckpt_path={checkpoint}",
                              "--load_weights_only=true", "--trainer.enable_checkpointing=false", "--trainer.max_steps=1"))
    assert warm.trainer.ckpt_path is None and warm.trainer.global_step == 1  # training state starts fresh
    assert hparams(Path(warm.trainer.log_dir))["warm_start_from"] == str(checkpoint)
    # Weights of another shape do not load, and the error says which.
    err = error_of(run_args("--model.init_args.stack.d_model=32", f"--ckpt_path={checkpoint}", "--load_weights_only=true"), capsys)
    assert "load_weights_only: the weights of" in err and "size mismatch" in err


# --------------------------------------------------------------------------------------------
# exact resumption and faults


def signal_during(step: int, during: str = "train", signum: int = signal.SIGTERM) -> str:
    init = f'{{"step": {step}, "signum": {int(signum)}, "during": "{during}"}}'
    return f'--trainer.callbacks+={{"class_path": "fault_injection.SignalAtStep", "init_args": {init}}}'


# Settings under which a stopped and resumed run must log exactly what the uninterrupted run logs:
# name -> (extra arguments, [(signal step, when it arrives, the step the run stops at)]).
# 10 batches an epoch (160 examples of 16); with accumulate_grad_batches=2, 5 optimiser steps.
RESUME_CASES = {
    "plain": ([], [(15, "train", 16), (3, "validation", 10)]),
    "dropout": (["--model.init_args.stack.dropout=0.1"], [(15, "train", 16)]),
    "workers": (["--data.init_args.num_workers=2"], [(15, "train", 16)]),
    # The signal arrives on the first batch of an accumulation pair; the run stops after the pair.
    "accumulation": (["--trainer.accumulate_grad_batches=2"], [(7, "train", 8)]),
    # Bounded by steps alone, as sweeps' runs are: a signal during the epoch's validation stops the
    # run after the next epoch's first step (a checkpoint at the epoch's end resumed one step off).
    "steps only": (["--trainer.max_epochs=null", "--trainer.max_steps=30"], [(3, "validation", 11)]),
}


@pytest.mark.parametrize("case", RESUME_CASES)
def test_stop_anywhere_then_resume_gives_the_uninterrupted_metrics(case, tmp_path):
    """A SIGTERM while a training step runs (mid-epoch) or while validation runs stops the run at
    the next point where its state is whole, saves last.ckpt and exits 143; resumed with
    --ckpt_path last, every metric logged after that point equals the uninterrupted run's, bit
    for bit (batch losses, epoch means, validation), with dropout, DataLoader workers and
    gradient accumulation too."""
    extra, stops = RESUME_CASES[case]
    args = run_args("--trainer.max_epochs=3", "--trainer.log_every_n_steps=1", *extra)  # extra may replace the bound
    full = hybrids(*args, "--trainer.logger.init_args.name=full", cwd=tmp_path)
    assert full.returncode == 0, full.stderr[-2000:]
    uninterrupted = metrics(tmp_path / "runs/full/version_0")
    for n, (step, during, stopped_at) in enumerate(stops):
        name = f"cut{n}"
        cut = hybrids(*args, f"--trainer.logger.init_args.name={name}", signal_during(step, during), cwd=tmp_path)
        assert cut.returncode == 143, cut.stderr[-2000:]
        assert f"stopped by SIGTERM at step {stopped_at}" in cut.stderr and "resume with --ckpt_path last" in cut.stderr
        saved = torch.load(tmp_path / f"runs/{name}/version_0/checkpoints/last.ckpt", weights_only=False)
        assert saved["global_step"] == stopped_at
        resumed = hybrids(*args, f"--trainer.logger.init_args.name={name}", "--ckpt_path=last", cwd=tmp_path)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        continued = metrics(tmp_path / f"runs/{name}/version_1")
        # The position within the epoch is checkpointed (hybrids.data.loading): Lightning's
        # warning that a mid-epoch resumption is unreliable would be false, and is not shown.
        assert "not resumable" not in resumed.stderr + resumed.stdout
        assert hparams(tmp_path / f"runs/{name}/version_1")["resumed_from"].endswith("version_0/checkpoints/last.ckpt")
        after = {k: v for k, v in uninterrupted.items() if k[0] >= stopped_at and k[1] not in ("params", "state_size", "seq_len")}
        assert len(after) > 10 and {k: continued.get(k) for k in after} == after, (case, during)


def test_sigint_saves_and_exits_130(tmp_path):
    result = hybrids(*run_args("--trainer.max_epochs=2"), signal_during(3, signum=signal.SIGINT), cwd=tmp_path)
    assert result.returncode == 130, result.stderr[-2000:]
    assert torch.load(tmp_path / "runs/transformer/version_0/checkpoints/last.ckpt", weights_only=False)["global_step"] == 4


def test_two_ctrl_c_in_quick_succession_stop_at_once_with_130(tmp_path):
    """The second SIGINT, 50 ms after the first and while the step still runs, stops the run at
    once: exit 130 (stopped by SIGINT), not Lightning's KeyboardInterrupt exit 1; the checkpoint
    of epoch 0 is left whole."""
    callback = '{"class_path": "fault_injection.TwoSignalsAtStep", "init_args": {"step": 13, "gap_s": 0.05}}'
    result = hybrids(*run_args("--trainer.max_epochs=2"), f"--trainer.callbacks+={callback}", cwd=tmp_path)
    assert result.returncode == 130, result.stderr[-2000:]
    assert "Detected KeyboardInterrupt" not in result.stderr
    assert "stopped by SIGINT at step 13: no checkpoint saved (a second Ctrl-C stopped it at once)" in result.stderr
    assert torch.load(tmp_path / "runs/transformer/version_0/checkpoints/last.ckpt", weights_only=False)["global_step"] == 10


def test_sigkill_then_resume_from_the_last_checkpoint(tmp_path):
    """Killed outright at step 13, after epoch 0's checkpoint (step 10), the run resumes from that
    checkpoint and then logs exactly what the uninterrupted run logs after step 10 (the next
    epoch's means included: the checkpoint does not carry epoch 0's running sums into it)."""
    args = run_args("--trainer.max_epochs=2", "--trainer.log_every_n_steps=1")
    full = hybrids(*args, "--trainer.logger.init_args.name=full", cwd=tmp_path)
    assert full.returncode == 0, full.stderr[-2000:]
    marker = tmp_path / "hanging"
    hang = f'--trainer.callbacks+={{"class_path": "fault_injection.HangAtStep", "init_args": {{"step": 13, "marker": "{marker}"}}}}'
    env = {**os.environ, "PYTHONPATH": str(TESTS), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "hybrids", *args, "--trainer.logger.init_args.name=killed", hang],
                               cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not marker.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    assert marker.exists(), "the run never reached step 13"
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL
    last = tmp_path / "runs/killed/version_0/checkpoints/last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 10  # the end of epoch 0
    resumed = hybrids(*args, "--trainer.logger.init_args.name=killed", "--ckpt_path=last", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert hparams(tmp_path / "runs/killed/version_1")["resumed_from"].endswith("version_0/checkpoints/last.ckpt")
    uninterrupted, continued = metrics(tmp_path / "runs/full/version_0"), metrics(tmp_path / "runs/killed/version_1")
    after = {k: v for k, v in uninterrupted.items() if k[0] >= 10 and k[1] not in ("params", "state_size", "seq_len")}
    assert "train/loss_epoch" in {k[1] for k in after}
    assert {k: continued.get(k) for k in after} == after


def test_corrupt_checkpoints_are_skipped_by_last_and_named_when_explicit(in_tmp, capsys):
    good = build_cli(run_args("--trainer.max_epochs=1"))
    good_ckpt = Path(good.trainer.log_dir) / "checkpoints" / "last.ckpt"
    # Newer candidates of this run's name: a truncated copy and random bytes.
    broken = in_tmp / "runs/transformer/version_9/checkpoints"
    broken.mkdir(parents=True)
    truncated, noise = broken / "last.ckpt", broken / "last-v1.ckpt"
    truncated.write_bytes(good_ckpt.read_bytes()[: good_ckpt.stat().st_size // 2])
    noise.write_bytes(os.urandom(4096))
    with pytest.warns(UserWarning) as warned:
        resumed = build_cli(run_args("--trainer.max_epochs=2", "--ckpt_path=last"))
    message = next(str(w.message) for w in warned if "skipping" in str(w.message))
    assert "skipping 2 unreadable checkpoint(s)" in message
    for bad in (truncated, noise):
        assert f"{bad.relative_to(in_tmp)}: not a torch checkpoint" in message
    assert Path(resumed.trainer.ckpt_path).resolve() == good_ckpt.resolve()

    for bad, reason in ((truncated, "not a torch checkpoint"), (noise, "not a torch checkpoint"),
                        (in_tmp / "missing.ckpt", "no such file")):
        err = error_of(run_args(f"--ckpt_path={bad}", subcommand="test"), capsys)
        assert f"ckpt_path: {bad}: {reason}" in err
        assert "weights_only" not in err


# --------------------------------------------------------------------------------------------
# divergence and visibility


def test_train_loss_is_logged_every_n_steps(in_tmp):
    cli = build_cli(run_args("--trainer.max_epochs=1", "--trainer.log_every_n_steps=3"))
    logged = sorted(step for step, column in metrics(Path(cli.trainer.log_dir)) if column == "train/loss_step")
    assert logged == [2, 5, 8]  # Lightning logs when (step + 1) % 3 == 0
    assert "train/loss_step" in cli.trainer.progress_bar_metrics


def test_huge_learning_rate_stops_the_run_naming_the_step(tmp_path):
    """lr=1000 used to log a finite 6.99e8 epoch loss and exit 0."""
    result = hybrids(*run_args("--trainer.max_epochs=2", "--model.init_args.optim.lr=1000", "--model.init_args.optim.warmup_steps=0",
                               "--trainer.log_every_n_steps=1"), cwd=tmp_path)
    assert result.returncode == 3, result.stderr[-2000:]
    line = next(line for line in result.stderr.splitlines() if line.startswith("error: training diverged"))
    assert "at step" in line and "lr=1000 is high" in line


def test_nan_loss_is_not_averaged_away(in_tmp, monkeypatch):
    """A NaN batch loss stops the run with DivergenceError naming its step (it used to vanish
    from the epoch mean), found within log_every_n_steps."""
    from hybrids.train.module import LanguageModel

    real = LanguageModel._shared_step

    def poisoned(self, batch, stage):
        loss = real(self, batch, stage)
        return loss * float("nan") if stage == "train" and self.global_step == 2 else loss

    monkeypatch.setattr(LanguageModel, "_shared_step", poisoned)
    with pytest.raises(DivergenceError, match="the loss was nan at step 2"):
        build_cli(run_args("--trainer.max_epochs=1", "--trainer.log_every_n_steps=4"))


def test_float16_on_cpu_is_refused(in_tmp, capsys):
    err = error_of(run_args("--trainer.precision=16-true"), capsys)
    assert "trainer.precision: 16-true on CPU" in err and "bf16" in err


# --------------------------------------------------------------------------------------------
# every value validated before training


MIXER = "--model.init_args.stack.mixers={A: {class_path: hybrids.mixers.Attention, init_args: {heads: %s}}}"
BAD_VALUES = {
    "heads-two": (MIXER % "two", "model.init_args.stack.mixers.A.init_args.heads: expected an integer, got 'two'"),
    "dropout": ("--model.init_args.stack.dropout=1.5", "model.init_args.stack.dropout: must be in [0, 1)"),
    "negative-lr": ("--model.init_args.optim.lr=-0.001", "model.init_args.optim.lr: must be > 0"),
    "zero-lr": ("--model.init_args.optim.lr=0", "model.init_args.optim.lr: must be > 0"),
    "betas": ("--model.init_args.optim.betas=[0.9, 1.5]", "model.init_args.optim.betas: each must be in [0, 1)"),
    "warmup": ("--model.init_args.optim.warmup_steps=-5", "model.init_args.optim.warmup_steps: must be an integer >= 0"),
    "weight-decay": ("--model.init_args.optim.weight_decay=-0.1", "model.init_args.optim.weight_decay: must be >= 0"),
    "min-lr-ratio": ("--model.init_args.optim.min_lr_ratio=-1", "model.init_args.optim.min_lr_ratio: must be in [0, 1]"),
    "vocab-size": ("--model.init_args.stack.vocab_size=99", "model.init_args.stack.vocab_size: 99 disagrees with the data's vocabulary (128)"),
    "num-workers": ("--data.init_args.num_workers=-1", "data.init_args.num_workers: must be an integer in [0, 256]"),
    "seed": ("--seed_everything=-5", "seed_everything: must be in [0, 2^32)"),
    "accumulation": ("--trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches: must be a positive integer"),
    "clipping": ("--trainer.gradient_clip_val=-1", "trainer.gradient_clip_val: must be >= 0"),
}


@pytest.mark.parametrize("name", BAD_VALUES)
def test_bad_values_fail_before_training_naming_the_key(name, in_tmp, capsys):
    argument, message = BAD_VALUES[name]
    err = error_of(run_args(argument), capsys)
    assert f"error: {message}" in err, err[-500:]
    assert "Traceback" not in err
    assert not list(in_tmp.rglob("*.ckpt")) and not list(in_tmp.rglob("metrics.csv"))


# --------------------------------------------------------------------------------------------
# evaluation, prediction, and what a run writes where


def test_evaluation_needs_a_checkpoint_unless_asked_for_untrained(in_tmp, capsys):
    err = error_of(run_args(subcommand="validate"), capsys)
    assert "ckpt_path: validate without a checkpoint would evaluate random weights" in err
    with pytest.warns(UserWarning, match="evaluating the untrained model, as asked"):
        cli = build_cli(run_args("--ckpt_path=untrained", subcommand="test"))
    assert cli.trainer.state.finished


def test_predict_writes_its_predictions_to_the_run_folder(in_tmp, capsys):
    build_cli(run_args("--trainer.max_epochs=1"))
    build_cli(run_args("--ckpt_path=last", subcommand="predict"))
    target = (in_tmp / "runs/transformer/version_0/predictions.pt").resolve()
    saved = torch.load(target, weights_only=False)
    assert saved["predictions"].shape == (32, 64) and saved["predictions"].dtype == torch.long
    assert f"written to {target}" in capsys.readouterr().out


def test_evaluations_write_into_the_run_they_evaluate_never_a_new_version(in_tmp, capsys):
    """validate, test, predict and generate of a run add to its folder (evaluations.jsonl,
    predictions.pt) and leave no version_1 holding only an hparams.yaml."""
    from hybrids.cli.generate import generate_main

    build_cli(run_args("--trainer.max_epochs=1"))
    run = in_tmp / "runs/transformer/version_0"
    fit_metrics = (run / "metrics.csv").read_text()
    for subcommand in ("validate", "test", "predict"):
        build_cli(run_args("--ckpt_path=last", subcommand=subcommand))
    generate_main(["-c", str(TRANSFORMER), *SMALL, "--ckpt_path", "last", "--prompt_tokens", "1,2,3", "--max_new_tokens", "2"])
    assert [p.name for p in (in_tmp / "runs/transformer").iterdir()] == ["version_0"]
    assert (run / "metrics.csv").read_text() == fit_metrics, "an evaluation changed the fit's curve"
    records = [json.loads(line) for line in (run / "evaluations.jsonl").read_text().splitlines()]
    assert [r["subcommand"] for r in records] == ["validate", "test"]
    assert 0 <= records[0]["metrics"]["val/acc"] <= 1 and 0 <= records[1]["metrics"]["test/acc"] <= 1
    assert records[1]["ckpt_path"].endswith("last.ckpt") and records[1]["data"]["init_args"]["batch_size"] == 16
    assert (run / "predictions.pt").is_file()
    assert sorted(p.name for p in in_tmp.iterdir()) == ["runs"], "an evaluation wrote into the working folder"


def test_default_root_dir_moves_the_logs_the_usual_lightning_way(in_tmp):
    build_cli(run_args("--trainer.max_steps=2", "--trainer.default_root_dir=elsewhere"))
    assert (in_tmp / "elsewhere/transformer/version_0/metrics.csv").is_file()
    assert (in_tmp / "elsewhere/transformer/version_0/checkpoints/last.ckpt").is_file()
    assert not (in_tmp / "runs").exists()
    # A save_dir given explicitly still wins.
    build_cli(run_args("--trainer.max_steps=2", "--trainer.default_root_dir=elsewhere",
                       "--trainer.logger.init_args.save_dir=mine"))
    assert (in_tmp / "mine/transformer/version_0/metrics.csv").is_file()


def test_a_run_stopped_by_max_steps_ends_with_a_validation_figure(in_tmp, capsys):
    """160 examples in batches of 16 make 10 steps an epoch: max_steps 3 stops mid-epoch, where
    Lightning would not validate."""
    build_cli(run_args("--trainer.max_steps=3"))
    logged = metrics(in_tmp / "runs/transformer/version_0")
    assert (2, "val/acc") in logged, sorted(logged)
    assert "val accuracy" in capsys.readouterr().out
    # A stop that falls on an epoch end validates once, not twice.
    build_cli(run_args("--trainer.max_steps=10", "--trainer.logger.init_args.name=epoch"))
    rows = [row for row in csv.DictReader((in_tmp / "runs/epoch/version_0/metrics.csv").open()) if row.get("val/acc")]
    assert len(rows) == 1


def test_output_folders_that_cannot_be_written_are_refused_before_training(in_tmp, capsys):
    """A run folder under a file, or on a filesystem that refuses writes even to root (/sys), and
    a checkpoint folder there: one keyed line and exit 2 before anything is trained or made."""
    (in_tmp / "afile").write_text("")
    cases = {
        "--trainer.default_root_dir=afile/runs": "trainer.default_root_dir: the run's logs go to afile/runs/transformer, but",
        "--trainer.logger.init_args.save_dir=afile": "trainer.logger.init_args.save_dir: the run's logs go to afile/transformer",
        "--trainer.default_root_dir=/sys/hybrids-runs": "cannot write in /sys",
        "--checkpoint.dirpath=/sys/hybrids-checkpoints": "checkpoint.dirpath: /sys/hybrids-checkpoints cannot hold checkpoints: cannot write in /sys",
    }
    for argument, expected in cases.items():
        err = error_of(run_args(argument, "--trainer.max_steps=1"), capsys)
        assert expected in err, (argument, err)
        assert "is a file, not a folder" in err or "cannot write in" in err
    assert sorted(p.name for p in in_tmp.iterdir()) == ["afile"], "something was made before the refusal"


def test_fast_dev_run_writes_nothing_in_the_current_folder(in_tmp):
    build_cli(["fit", "-c", str(TRANSFORMER), *QUIET, "--trainer.fast_dev_run=true"])
    assert sorted(p.name for p in in_tmp.iterdir()) == [], "fast_dev_run left files behind"


def test_tensorboard_logger_without_the_package_says_which_extra(in_tmp, capsys, monkeypatch):
    import lightning.fabric.loggers.tensorboard as tb

    # As where neither package is installed (the test extra installs neither; this holds anyway).
    monkeypatch.setattr(tb, "_TENSORBOARD_AVAILABLE", False)
    monkeypatch.setattr(tb, "_TENSORBOARDX_AVAILABLE", False)
    err = error_of(run_args("--trainer.logger=lightning.pytorch.loggers.TensorBoardLogger",
                            "--trainer.logger.init_args.save_dir=runs"), capsys)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert lines == ["error: trainer.logger: TensorBoardLogger needs the tensorboard package: "
                     "pip install -e '.[tensorboard]' (or use the default CSVLogger)"]


def test_s4_kernel_shorter_than_the_data_grows_instead_of_crashing(in_tmp):
    """S4 with l_max 16 on seq_len 64 used to crash at the first step; the kernel now doubles to
    the data's length (with a warning, since l_max was set by hand) and trains."""
    spec = "--model.init_args.stack.mixers={S: {class_path: hybrids.mixers.S4, init_args: {d_state: 8, l_max: 16}}}"
    with pytest.warns(UserWarning, match="l_max"):
        cli = build_cli(run_args("--trainer.max_steps=2", spec, config=ROOT / "configs" / "s4.yaml"))
    assert cli.trainer.global_step == 2
    assert all(int(block.mixer.l_max) == 64 for block in cli.model.model.blocks)


def test_identity_names_classes_and_defaults_canonically_and_counts_training_settings():
    """Two spellings of one run have one identity; a trainer setting that changes the training
    (accumulation, clipping, precision) makes another run."""
    def identity(*extra):
        return build_cli(["-c", str(TRANSFORMER), *extra], run=False).run_identity["hash"]

    base = identity()
    assert identity("--data=hybrids.data.datamodule.MQAR") == base
    spelled = "--model.init_args.stack.mixers={A: {class_path: hybrids.mixers.attention.Attention, init_args: {heads: 2, rotary: true}}}"
    assert identity(spelled) == base
    assert identity("--trainer.max_epochs=50") == base  # a run-time key: extending a run keeps it
    for other in ("--trainer.accumulate_grad_batches=2", "--trainer.gradient_clip_val=1.0",
                  "--trainer.precision=bf16-mixed", "--data.init_args.seed=1"):
        assert identity(other) != base, other


def test_a_checkpoint_from_before_a_new_argument_is_still_this_run():
    """An argument added to a class after a checkpoint was written is filled in at its default
    when the stored identity is compared, so the old checkpoint stays this run's; a run that sets
    the new argument to something else is another run."""
    from hybrids.train.identity import identity_hash, same_run

    current = build_cli(["-c", str(TRANSFORMER)], run=False).run_identity
    old_config = {**current["config"], "model": {**current["config"]["model"]}}
    old_config["model"]["init_args"] = {k: v for k, v in current["config"]["model"]["init_args"].items()
                                       if k != "min_lr_ratio"}  # as if min_lr_ratio were new
    old = {"hash": identity_hash(old_config), "config": old_config}
    assert old["hash"] != current["hash"] and same_run(old, current["hash"])
    other = build_cli(["-c", str(TRANSFORMER), "--model.init_args.optim.min_lr_ratio=0.5"], run=False).run_identity
    assert not same_run(old, other["hash"])
    assert not same_run({"hash": "0" * 16}, current["hash"]), "no stored config: the hash decides"


def test_foreign_checkpoints_are_named_not_tracebacks(in_tmp, capsys):
    """A checkpoint pickling a class that does not import here is an unreadable checkpoint."""
    foreign = in_tmp / "foreign.ckpt"
    code = (
        "import sys, types, torch\n"
        "module = types.ModuleType('elsewhere'); sys.modules['elsewhere'] = module\n"
        "class Thing: pass\n"
        "Thing.__module__ = 'elsewhere'; module.Thing = Thing\n"
        f"torch.save({{'state_dict': {{}}, 'thing': Thing()}}, {str(foreign)!r})\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    err = error_of(run_args(f"--ckpt_path={foreign}", subcommand="validate"), capsys)
    assert f"ckpt_path: {foreign}: cannot be unpickled here" in err and "Traceback" not in err
    err = error_of(run_args(f"--ckpt_path={foreign}", "--load_weights_only=true"), capsys)
    assert "cannot be unpickled here" in err


def test_last_searches_the_checkpoint_folder_too_and_warm_starts_carry_no_metrics(in_tmp, capsys):
    first = build_cli(run_args("--trainer.max_epochs=1", "--checkpoint.dirpath=elsewhere"))
    assert (in_tmp / "elsewhere" / "last.ckpt").exists()
    resumed = build_cli(run_args("--trainer.max_epochs=2", "--checkpoint.dirpath=elsewhere", "--ckpt_path=last"))
    assert Path(resumed.trainer.ckpt_path).resolve() == (in_tmp / "elsewhere" / "last.ckpt").resolve()
    # A warm start takes the weights, not the other run's running epoch sums.
    source = torch.load(in_tmp / "elsewhere" / "last.ckpt", weights_only=False)
    warm = build_cli(run_args("--trainer.max_steps=1", "--model.init_args.optim.lr=0.01", "--load_weights_only=true",
                              "--ckpt_path=elsewhere/last.ckpt", "--trainer.enable_checkpointing=false"))
    for name, value in warm.model.state_dict().items():
        if not name.startswith("metrics."):
            assert name in source["state_dict"]
    err = error_of(run_args("--ckpt_path=untrained", "--load_weights_only=true", subcommand="test"), capsys)
    assert "load_weights_only: there are no weights to load" in err


def test_ddp_on_cpu_trains_and_resumes(tmp_path):
    """Two processes (gloo): fit runs to the end and prints its summary (the summary's log folder
    is a collective), and --ckpt_path last continues it."""
    ddp = ["--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu"]
    first = hybrids(*run_args("--trainer.max_epochs=1", *ddp), cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "hybrids: val accuracy" in first.stdout
    resumed = hybrids(*run_args("--trainer.max_epochs=2", "--ckpt_path=last", *ddp), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert hparams(tmp_path / "runs/transformer/version_1")["resumed_from"].endswith("version_0/checkpoints/last.ckpt")
