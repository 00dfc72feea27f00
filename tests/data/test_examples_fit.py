"""Synthetic tasks refuse, at construction, sets that would not fit in memory (they are generated
whole at setup), keyed at the argument that makes them large; and seeds, workers and rates out of
range."""

import pytest

from hybrids.data import MQAR, InductionHeads, SelectiveCopying
from hybrids.errors import ConfigError


@pytest.fixture
def one_gigabyte(monkeypatch):
    monkeypatch.setattr("hybrids.data.synthetic.available_memory", lambda device: 10**9)


@pytest.mark.parametrize("task, settings, key", [
    (MQAR, {"num_train_examples": 10**9}, "num_train_examples"),
    (MQAR, {"seq_len": 2**22, "num_kv_pairs": 4}, "seq_len"),
    (SelectiveCopying, {"num_test_examples": 10**8}, "num_test_examples"),
    (InductionHeads, {"num_val_examples": 10**8}, "num_val_examples"),
    (InductionHeads, {"eval_lengths": [2**24], "eval_batch_size": 64}, "eval_batch_size"),
])
def test_sets_that_do_not_fit_are_refused(one_gigabyte, task, settings, key):
    with pytest.raises(ConfigError) as refused:
        task(**settings)
    assert refused.value.key == key
    assert "more than the 1.0 GB of memory available" in refused.value.message


def test_sets_that_fit_are_made(one_gigabyte):
    MQAR(num_train_examples=1000)


@pytest.mark.parametrize("settings, key", [
    ({"seed": -1}, "seed"), ({"num_workers": 10**6}, "num_workers"), ({"power_a": float("inf")}, "power_a"),
])
def test_values_out_of_range(settings, key):
    with pytest.raises(ConfigError) as refused:
        MQAR(**settings)
    assert refused.value.key == key
