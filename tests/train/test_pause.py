"""``hybrids fit --pause_at_step N``: successive halving's rungs. The run pauses after the first
validation at or after step N (checkpoint saved, exit status 75) and, resumed, logs exactly what
the uninterrupted run logs; a run that ends there anyway (solved, budget reached) does not pause."""

import csv
from pathlib import Path

import pytest
import torch

from hybrids.cli.fit import build_cli, fit_main
from hybrids.data import MQAR
from hybrids.learning_status import Criterion
from hybrids.train.callbacks import Paused

# 20 batches an epoch, validated every 6 batches and at the epoch's end; 40 steps in all.
TINY = ["--data.init_args.num_train_examples=160", "--data.init_args.num_val_examples=32",
        "--data.init_args.num_test_examples=32", "--data.init_args.batch_size=8", "--model.init_args.stack.d_model=16",
        "--model.init_args.optim.warmup_steps=4", "--trainer.max_epochs=2", "--trainer.val_check_interval=6",
        "--trainer.log_every_n_steps=1", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def logged(folder: Path) -> dict[tuple[int, str], str]:
    out = {}
    for version in sorted(folder.glob("version_*")):
        for row in csv.DictReader((version / "metrics.csv").open()):
            for column, value in row.items():
                if value != "" and column not in ("step", "epoch", "params", "state_size", "seq_len"):
                    out[(int(row["step"]), column)] = value
    return out


@pytest.mark.parametrize("pause, validated, stopped, every, budget", [
    (5, 6, 7, 6, []), (17, 18, 19, 6, []), (5, 20, 21, 1.0, []),
    # Bounded by steps alone (Lightning's max_epochs -1), as the sweeps' runs are.
    (5, 20, 21, 1.0, ["--trainer.max_epochs=null", "--trainer.max_steps=40"]),
])
def test_a_paused_run_resumes_to_the_uninterrupted_run(in_tmp, pause, validated, stopped, every, budget):
    """Pause at step 5: the validation at step 6 is the rung's, the checkpoint is taken at the
    next step boundary (7), as a stop by a signal is. Validated once an epoch, the rung's
    validation is the epoch's end (20), and the checkpoint is taken after the next epoch's first
    step (21): a checkpoint at the epoch's end resumed one step off under max_steps alone."""
    args = [*TINY, f"--trainer.val_check_interval={every}", *budget]
    build_cli(["fit", *args, "--trainer.logger.init_args.name=full"])
    full = logged(Path("runs/full"))
    with pytest.raises(Paused) as info:
        build_cli(["fit", *args, "--trainer.logger.init_args.name=cut", f"--pause_at_step={pause}"])
    assert info.value.validated_at == validated
    saved = torch.load(info.value.checkpoint, weights_only=False)
    assert saved["global_step"] == info.value.step == stopped
    cut = logged(Path("runs/cut"))
    assert (validated - 1, "val/acc") in cut and not any(step >= info.value.step for step, _ in cut if step != validated - 1)
    resumed = build_cli(["fit", *args, "--trainer.logger.init_args.name=cut", "--ckpt_path=last"])
    assert resumed.trainer.global_step == 40
    # Bit for bit, but for what Lightning logs after the hook that pauses (as for a stop by a
    # signal): the training loss of the one step trained after the rung's validation.
    unlogged = {(stopped - 1, "train/loss_step")}
    assert set(full) - set(logged(Path("runs/cut"))) == unlogged
    assert {k: full[k] for k in full if k not in unlogged} == logged(Path("runs/cut"))


def test_a_run_ending_at_its_pause_does_not_pause(in_tmp, monkeypatch):
    # Solved at the first validation (threshold 0): the run is over, so no pause and no 75.
    monkeypatch.setattr(MQAR, "criterion", Criterion(threshold=0.0))
    cli = build_cli(["fit", *TINY, "--pause_at_step=3"])
    assert cli.trainer.global_step == 6
    monkeypatch.setattr(MQAR, "criterion", Criterion(threshold=2.0))  # never solved
    # The pause falls on the last validation (the budget's end): nothing to resume.
    cli = build_cli(["fit", *TINY, "--pause_at_step=39", "--trainer.logger.init_args.name=last"])
    assert cli.trainer.global_step == 40


def test_a_pause_due_at_the_last_step_of_the_budget_does_not_pause(in_tmp):
    # Validated at 6, the next step boundary is step 7, the budget: the run ends there, validated.
    cli = build_cli(["fit", *TINY, "--trainer.max_steps=7", "--pause_at_step=5"])
    assert cli.trainer.global_step == 7
    assert (6, "val/acc") in logged(Path("runs/hybrids"))


def test_the_cli_exits_75_and_says_how_to_resume(in_tmp, monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["hybrids", "fit", *TINY, "--pause_at_step=5"])
    with pytest.raises(SystemExit) as info:
        fit_main()
    assert info.value.code == 75
    assert "paused after the validation at step 6 (--pause_at_step)" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "-3", "true"])
def test_a_pause_step_below_one_is_refused(in_tmp, capsys, value):
    with pytest.raises(SystemExit) as info:
        build_cli(["fit", *TINY, f"--pause_at_step={value}"])
    assert info.value.code == 2 and "pause_at_step" in capsys.readouterr().err
