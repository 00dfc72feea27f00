"""Long-sequence evaluation in chunks (hybrids.train.long_context): the same logits as one forward pass,
sub-batches that fit a memory budget, and a clear skip (not an out-of-memory kill) when a length
cannot fit."""

import lightning as L
import pytest
import torch

from hybrids import HybridLM, LanguageModel
from hybrids.data import InductionHeads, induction_heads
from hybrids.train.long_context import LengthTooLong, bytes_per_example, labelled_logits_chunked

STACKS = {
    "attention": {"A": {"class_path": "hybrids.mixers.Attention", "init_args": {"heads": 2}}},
    "mamba": {"M": {"class_path": "hybrids.mixers.Mamba", "init_args": {"d_state": 8}}},
    "s4d": {"D": {"class_path": "hybrids.mixers.S4D", "init_args": {"d_state": 16}}},
    "rglru": {"R": {"class_path": "hybrids.mixers.RGLRU", "init_args": {}}},
    "sliding_window": {"W": {"class_path": "hybrids.mixers.SparseAttention", "init_args": {"heads": 2, "window": 8}}},
}


def _stack(name: str) -> HybridLM:
    mixers = STACKS[name]
    return HybridLM(vocab_size=11, d_model=16, n_layers=2, pattern="".join(mixers), mixers=mixers).double().eval()


@pytest.mark.parametrize("name", list(STACKS))
def test_chunked_logits_equal_one_forward_pass(name):
    torch.manual_seed(0)
    model = _stack(name)
    inputs = torch.randint(0, 11, (5, 50))
    labels = torch.full_like(inputs, -100)
    labels[:, -1] = 3
    labels[1, 7] = 4
    labels[3, 23] = 5  # labels in several chunks and rows
    with torch.no_grad():
        full = model(inputs)
    mask = labels != -100
    # Chunks of 16 (the last one short) and a budget that fits two examples at a time.
    budget = 2 * bytes_per_example(model, 50, 16) + 1
    logits, targets, rows = labelled_logits_chunked(model, inputs, labels, chunk=16, budget=budget)
    assert torch.equal(targets, labels[mask]) and torch.equal(rows, mask.nonzero()[:, 0])
    torch.testing.assert_close(logits, full[mask], rtol=1e-9, atol=1e-9)


def test_growing_state_mixers_cost_more_with_length_and_fixed_ones_do_not():
    attention, mamba = _stack("attention"), _stack("mamba")
    assert bytes_per_example(attention, 2**20, 512) > 100 * bytes_per_example(attention, 2**12, 512)
    assert bytes_per_example(mamba, 2**20, 512) == bytes_per_example(mamba, 2**12, 512)


def test_length_too_long_is_an_error_naming_the_mixer():
    model = _stack("attention")
    inputs = torch.randint(0, 11, (2, 64))
    with pytest.raises(LengthTooLong, match="Attention"):
        labelled_logits_chunked(model, inputs, inputs, chunk=16, budget=1000)


def test_induction_test_skips_a_length_that_does_not_fit(monkeypatch):
    # A budget that fits attention at 128 tokens but not at 4,096: that length is skipped with a
    # warning, the others are logged.
    model = LanguageModel(stack=dict(vocab_size=8, d_model=16, n_layers=1, mixers=STACKS["attention"], pattern="A"))
    limit = bytes_per_example(model.model, 128, 64) * 4
    monkeypatch.setenv("HYBRIDS_EVAL_MEMORY_GB", str(limit / 2**30))
    data = InductionHeads(seq_len=32, vocab_size=8, eval_lengths=[128, 4096], num_test_examples=8,
                          num_eval_examples=4, eval_batch_size=4, eval_chunk=64)
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    with pytest.warns(UserWarning, match="length 4,096 skipped"):
        results = trainer.test(model, data, verbose=False)
    logged = {k for r in results for k in r}
    assert {"test/acc", "test/acc@32", "test/acc@128"} <= logged and "test/acc@4096" not in logged


def test_chunked_evaluation_matches_the_plain_one_at_the_training_length():
    # The same examples scored by the plain path (length <= chunk) and the chunked one.
    model = LanguageModel(stack=dict(vocab_size=8, d_model=16, n_layers=2, mixers=STACKS["mamba"], pattern="M"))
    inputs, labels = induction_heads(6, 40, 8, seed=0)
    model.eval()
    with torch.no_grad():
        plain = model.model.head(model.model.features(inputs)[:, -1])
    chunked, _, _ = labelled_logits_chunked(model.model, inputs, labels, chunk=16)
    torch.testing.assert_close(chunked, plain, rtol=1e-4, atol=1e-5)
