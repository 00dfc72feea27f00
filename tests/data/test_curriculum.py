"""Length curricula of the synthetic tasks (hybrids.data.curriculum): which length each batch
has, that every example of a length is used once per pass, validation and test at seq_len,
exact resumption, and keyed errors."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest
import torch

from hybrids.cli.fit import build_cli
from hybrids.data import MQAR, InductionHeads, SelectiveCopying
from hybrids.data.curriculum import CurriculumOrder, pool_sizes
from hybrids.errors import ConfigError
from hybrids.train.callbacks import Paused


def shapes(module) -> list[int]:
    module.setup("fit")
    return [inputs.shape[1] for inputs, _ in module.train_dataloader()]


def test_stages_switch_length_at_the_given_steps_and_evaluation_stays_at_seq_len():
    data = MQAR(seq_len=64, num_kv_pairs=4, num_train_examples=96, num_val_examples=16, batch_size=8,
                train_lengths=[16, 32, 64], length_steps=[3, 7])
    assert shapes(data) == [16] * 3 + [32] * 4 + [64] * 5
    assert {inputs.shape[1] for inputs, _ in data.val_dataloader()} == {64}
    data.setup("test")
    assert {inputs.shape[1] for inputs, _ in data.test_dataloader()} == {64}


def test_a_mix_draws_one_length_per_batch_about_evenly():
    data = InductionHeads(seq_len=64, vocab_size=16, num_train_examples=3000, batch_size=10, train_lengths=[8, 16, 32])
    counts = Counter(shapes(data))
    assert set(counts) == {8, 16, 32} and sum(counts.values()) == 300
    assert all(70 <= n <= 130 for n in counts.values()), counts
    # The labels follow the inputs' length: one answer, at the last position, per example.
    inputs, labels = next(iter(data.train_dataloader()))
    assert labels.shape == inputs.shape and ((labels != -100).sum(1) == 1).all()


def test_each_length_uses_its_examples_once_per_pass_in_a_fresh_order():
    order = CurriculumOrder(pool_sizes(40, 2), batch_size=4, batches_per_epoch=10, seed=3, length_steps=[5])
    order.set_epoch(0)
    first = list(order)
    order.set_epoch(1)
    second = list(order)
    short = torch.cat([idx for length, idx in first if length == 0])
    long_ = torch.cat([idx for length, idx in first + second if length == 1])
    assert sorted(short.tolist()) == list(range(20)), "5 batches of 4: the 20 short examples once each"
    passes = [long_[i:i + 20].tolist() for i in (0, 20, 40)]  # 5 batches in epoch 0, 10 in epoch 1
    assert len(long_) == 60 and all(sorted(p) == list(range(20)) for p in passes)
    assert passes[0] != passes[1] != passes[2], "a fresh permutation for each pass"
    order.set_epoch(1)
    order.resume_at(1, 6)
    assert [(l, i.tolist()) for l, i in order] == [(l, i.tolist()) for l, i in second[6:]]
    assert pool_sizes(10, 3) == [4, 3, 3]


@pytest.mark.parametrize("module, kwargs, key, words", [
    (MQAR, {"train_lengths": [10]}, "train_lengths", "10: 10 is too short for num_kv_pairs=4"),
    (MQAR, {"train_lengths": [16, 16]}, "train_lengths", "repeated"),
    (MQAR, {"train_lengths": []}, "train_lengths", "non-empty"),
    (MQAR, {"length_steps": [5]}, "length_steps", "needs train_lengths"),
    (MQAR, {"train_lengths": [16, 64], "length_steps": [5, 9]}, "length_steps", "must list 1 step"),
    (MQAR, {"train_lengths": [16, 32, 64], "length_steps": [9, 5]}, "length_steps", "increase"),
    (SelectiveCopying, {"train_lengths": [8]}, "train_lengths", "8: 8 is too short for num_tokens=16"),
    (InductionHeads, {"train_lengths": [2]}, "train_lengths", "must be at least 3"),
])
def test_bad_curricula_name_the_argument(module, kwargs, key, words):
    with pytest.raises(ConfigError) as info:
        module(**kwargs)
    assert info.value.full_key == f"data.init_args.{key}" and words in info.value.message, info.value


TINY = ["--data.init_args.num_train_examples=160", "--data.init_args.num_val_examples=16",
        "--data.init_args.num_test_examples=16", "--data.init_args.batch_size=8", "--model.init_args.stack.d_model=16",
        "--trainer.max_epochs=2", "--trainer.val_check_interval=5", "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        "--data.init_args.train_lengths=[16, 32, 64]", "--data.init_args.length_steps=[4, 12]"]


def logged(folder: Path) -> dict:
    out = {}
    for version in sorted(folder.glob("version_*")):
        for row in csv.DictReader((version / "metrics.csv").open()):
            out.update({(int(row["step"]), k): v for k, v in row.items() if v and k.startswith("val/")})
    return out


def test_a_curriculum_run_from_the_cli_resumes_exactly(in_tmp):
    full = build_cli(["fit", *TINY, "--trainer.logger.init_args.name=full"])
    assert full.trainer.global_step == 40
    with pytest.raises(Paused):
        build_cli(["fit", *TINY, "--trainer.logger.init_args.name=cut", "--pause_at_step=8"])
    build_cli(["fit", *TINY, "--trainer.logger.init_args.name=cut", "--ckpt_path=last"])
    assert logged(Path("runs/full")) == logged(Path("runs/cut")) and len(logged(Path("runs/full"))) >= 8


def test_a_bad_curriculum_on_the_command_line_is_one_keyed_line(in_tmp, capsys):
    with pytest.raises(SystemExit) as info:
        build_cli(["fit", *TINY[:-1], "--data.init_args.length_steps=[12, 4]"])
    assert info.value.code == 2
    assert "data.init_args.length_steps: must increase, got [12, 4]" in capsys.readouterr().err
