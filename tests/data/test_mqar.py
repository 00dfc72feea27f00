"""Structure of the MQAR generator and its data module."""

import pytest
import torch

from hybrids.data import IGNORE_INDEX, MQAR, multiquery_ar
from hybrids.errors import ConfigError

N, SEQ_LEN, PAIRS, VOCAB = 200, 64, 4, 128


@pytest.fixture(scope="module")
def examples():
    return multiquery_ar(N, SEQ_LEN, PAIRS, VOCAB, seed=3)


def test_shapes_and_dtypes(examples):
    inputs, labels = examples
    assert inputs.shape == labels.shape == (N, SEQ_LEN)
    assert inputs.dtype == labels.dtype == torch.long
    assert 0 <= inputs.min() and inputs.max() < VOCAB


def test_kv_pairs_at_front_keys_then_values(examples):
    inputs, _ = examples
    keys, values = inputs[:, 0 : 2 * PAIRS : 2], inputs[:, 1 : 2 * PAIRS : 2]
    assert ((1 <= keys) & (keys < VOCAB // 2)).all(), "keys come from the first half (0 excluded)"
    assert ((VOCAB // 2 <= values) & (values < VOCAB)).all(), "values come from the second half"
    for row in keys:
        assert len(set(row.tolist())) == PAIRS, "keys of one example are distinct"


def test_labels_only_where_a_value_is_recalled(examples):
    inputs, labels = examples
    labelled = labels != IGNORE_INDEX
    assert (labelled.sum(dim=1) == PAIRS).all(), "one label per key-value pair"
    assert not labelled[:, : 2 * PAIRS].any(), "no labels inside the context"
    for i in range(N):
        pairs = dict(zip(inputs[i, 0 : 2 * PAIRS : 2].tolist(), inputs[i, 1 : 2 * PAIRS : 2].tolist()))
        positions = labelled[i].nonzero()[:, 0]
        queried = inputs[i, positions].tolist()
        assert sorted(queried) == sorted(pairs), "each key is queried exactly once"
        for pos, key in zip(positions.tolist(), queried):
            assert labels[i, pos] == pairs[key], "the label at a query is the value of its key"
            assert (pos - 2 * PAIRS) % 2 == 0, "queries stand at even offsets of the query region"


def test_power_law_favours_short_gaps():
    inputs, labels = multiquery_ar(2000, 256, 4, 512, power_a=0.01, seed=0)
    offsets = (labels != IGNORE_INDEX).nonzero()[:, 1] - 8
    # p(g) ~ g^(a - 1) with a = 0.01 is close to 1/g: the first quarter of the query region
    # gets most of the queries, far more than the uniform law's quarter.
    assert (offsets < 62).float().mean() > 0.6
    uniform_inputs, uniform_labels = multiquery_ar(2000, 256, 4, 512, power_a=1.0, seed=0)
    uniform_offsets = (uniform_labels != IGNORE_INDEX).nonzero()[:, 1] - 8
    assert 0.15 < (uniform_offsets < 62).float().mean() < 0.35


def test_filler_is_randomised_or_zero():
    inputs, labels = multiquery_ar(50, SEQ_LEN, PAIRS, VOCAB, random_non_queries=False, seed=0)
    query = labels != IGNORE_INDEX
    filler = ~query
    filler[:, : 2 * PAIRS] = False
    assert (inputs[filler] == 0).all()
    randomised, _ = multiquery_ar(50, SEQ_LEN, PAIRS, VOCAB, random_non_queries=True, seed=0)
    assert (randomised[filler] != 0).float().mean() > 0.9


def test_deterministic_by_seed():
    a = multiquery_ar(20, SEQ_LEN, PAIRS, VOCAB, seed=7)
    b = multiquery_ar(20, SEQ_LEN, PAIRS, VOCAB, seed=7)
    c = multiquery_ar(20, SEQ_LEN, PAIRS, VOCAB, seed=8)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize(
    "kwargs,key",
    [
        ({"seq_len": 63}, "seq_len"),
        ({"num_kv_pairs": 17}, "seq_len"),
        ({"vocab_size": 8}, "vocab_size"),
        ({"num_kv_pairs": 0}, "num_kv_pairs"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_settings_name_the_argument(kwargs, key):
    with pytest.raises(ConfigError) as info:
        MQAR(**kwargs)
    assert info.value.key == key


def test_datamodule_train_validation_and_test_sets_differ():
    dm = MQAR(seq_len=32, num_kv_pairs=2, vocab_size=64, num_train_examples=100, num_val_examples=40,
              num_test_examples=50, batch_size=10)
    dm.setup()
    train_inputs, train_labels = next(iter(dm.train_dataloader()))
    assert train_inputs.shape == (10, 32)
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (100, 40, 50)
    sets = {"train": dm.train_set.tensors[0], "val": dm.val_set.tensors[0], "test": dm.test_set.tensors[0]}
    rows = {name: {tuple(row.tolist()) for row in tensor} for name, tensor in sets.items()}
    for a, b in [("train", "val"), ("train", "test"), ("val", "test")]:
        assert not rows[a] & rows[b], f"{a} and {b} share examples"
    # Validation is what the loaders evaluate during fit; test only in `test`.
    assert torch.equal(next(iter(dm.val_dataloader()))[0], sets["val"][:10])
    assert torch.equal(next(iter(dm.test_dataloader()))[0], sets["test"][:10])
    again = MQAR(seq_len=32, num_kv_pairs=2, vocab_size=64, num_train_examples=100, num_val_examples=40,
                 num_test_examples=50)
    again.setup()
    for name in ("val_set", "test_set"):
        assert torch.equal(getattr(again, name).tensors[0], getattr(dm, name).tensors[0])


def test_order_seed_changes_the_training_order_not_the_sets():
    def first_batch(order_seed):
        dm = MQAR(seq_len=32, num_kv_pairs=2, vocab_size=64, num_train_examples=100, batch_size=10, order_seed=order_seed)
        dm.setup()
        return dm, next(iter(dm.train_dataloader()))[0]

    default, batch_default = first_batch(None)
    same, batch_same = first_batch(0)  # None means the data seed (0)
    other, batch_other = first_batch(7)
    assert torch.equal(batch_default, batch_same)
    assert not torch.equal(batch_default, batch_other)
    for name in ("train_set", "val_set", "test_set"):
        assert torch.equal(getattr(default, name).tensors[0], getattr(other, name).tensors[0])


def test_order_seed_must_be_a_non_negative_integer():
    with pytest.raises(ConfigError) as info:
        MQAR(order_seed=-1)
    assert info.value.key == "order_seed"


def test_gap_sampler_draws_without_replacement_with_the_given_law():
    from hybrids.data.mqar import _sample_without_replacement

    p = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    draws = _sample_without_replacement(p.log().expand(100_000, 3), 2, torch.Generator().manual_seed(0))
    assert (draws[:, 0] != draws[:, 1]).all()
    first = torch.bincount(draws[:, 0], minlength=3) / len(draws)
    torch.testing.assert_close(first, p.float(), atol=0.01, rtol=0)
    # P(first = 0, second = 1) = 0.5 * 0.3 / (1 - 0.5) = 0.3 for sequential draws.
    both = ((draws[:, 0] == 0) & (draws[:, 1] == 1)).float().mean()
    assert abs(float(both) - 0.3) < 0.01


def test_values_are_distinct_within_an_example(examples):
    inputs, _ = examples
    for row in inputs[:, 1 : 2 * PAIRS : 2]:
        assert len(set(row.tolist())) == PAIRS


def test_generation_in_chunks_keeps_the_structure(monkeypatch):
    import hybrids.data.mqar as mqar

    monkeypatch.setattr(mqar, "CHUNK_EXAMPLES", 7)
    inputs, labels = mqar.multiquery_ar(20, SEQ_LEN, PAIRS, VOCAB, seed=1)
    assert inputs.shape == (20, SEQ_LEN)
    assert ((labels != IGNORE_INDEX).sum(1) == PAIRS).all()
    again = mqar.multiquery_ar(20, SEQ_LEN, PAIRS, VOCAB, seed=1)
    assert torch.equal(inputs, again[0]) and torch.equal(labels, again[1])
    assert not torch.equal(inputs[:7], inputs[7:14]), "each chunk draws fresh examples"


def test_shuffle_order_is_a_function_of_seed_and_epoch():
    from hybrids.data.datamodule import EpochShuffle

    sampler = EpochShuffle(10, seed=3)
    first = list(sampler)
    assert sorted(first) == list(range(10))
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first
    resumed = EpochShuffle(10, seed=3)
    resumed.set_epoch(1)
    assert list(resumed) == second, "a resumed run sees the order the uninterrupted run would"
