"""A run that solves its task stops at that validation (StopWhenSolved, which the CLI adds for a
data module whose criterion has a threshold), unless --stop_when_solved false."""

from types import SimpleNamespace

import pytest
import torch

from hybrids.cli.fit import build_cli
from hybrids.data import MQAR
from hybrids.learning_status import Criterion
from hybrids.train.callbacks import StopWhenSolved


def fake_trainer(value, sanity=False, step=120):
    return SimpleNamespace(sanity_checking=sanity, callback_metrics={"val/acc": torch.tensor(value)},
                           global_step=step, should_stop=False)


def test_stops_at_the_first_validation_at_the_threshold():
    callback = StopWhenSolved(Criterion(threshold=0.99))
    below, sanity, solved = fake_trainer(0.98), fake_trainer(1.0, sanity=True), fake_trainer(0.995)
    for trainer in (below, sanity):
        callback.on_validation_end(trainer, None)
        assert not trainer.should_stop and callback.solved_step is None
    callback.on_validation_end(solved, None)
    assert solved.should_stop and callback.solved_step == 120


TINY = ["--data.init_args.num_train_examples=256", "--data.init_args.num_val_examples=32",
        "--data.init_args.num_test_examples=32", "--data.init_args.batch_size=8", "--model.init_args.stack.d_model=16",
        "--trainer.max_steps=12", "--trainer.val_check_interval=4", "--trainer.limit_val_batches=1",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


@pytest.mark.parametrize("stop, steps", [("true", 4), ("false", 12)])
def test_the_cli_stops_a_solved_run_unless_told_not_to(in_tmp, monkeypatch, caplog, stop, steps):
    # Every figure "solves" a task whose threshold is 0: the first validation (step 4) does.
    monkeypatch.setattr(MQAR, "criterion", Criterion(threshold=0.0))
    cli = build_cli(["fit", *TINY, f"--stop_when_solved={stop}"])
    assert cli.trainer.global_step == steps
    assert ("hybrids: solved at step 4: val/acc" in caplog.text) == (stop == "true")


def test_a_task_that_is_never_solved_gets_no_stop(in_tmp, monkeypatch):
    monkeypatch.setattr(MQAR, "criterion", Criterion(metric="val/loss", mode="min", threshold=None))
    cli = build_cli(["fit", *TINY])
    assert not any(isinstance(c, StopWhenSolved) for c in cli.trainer.callbacks)
    assert cli.trainer.global_step == 12


def test_a_solved_run_resumed_stops_at_once(in_tmp, monkeypatch, caplog):
    """The solved step travels in the checkpoint: resuming a solved run (a sweep's retry) does not
    train past the validation that solved it."""
    monkeypatch.setattr(MQAR, "criterion", Criterion(threshold=0.0))
    first = build_cli(["fit", *TINY])
    assert first.trainer.global_step == 4
    again = build_cli(["fit", *TINY, "--ckpt_path=last"])
    assert again.trainer.global_step == 4
    assert "this run was solved at step 4; not training further" in caplog.text
