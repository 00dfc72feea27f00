"""The tasks beyond MQAR: selective copying, induction heads and byte-level text, as the
generators' docstrings state them, and their metrics (exact copies, accuracy per length, bpb)."""

import math

import lightning as L
import pytest
import torch

from hybrids import LanguageModel
from hybrids.data import ByteText, InductionHeads, SelectiveCopying, induction_heads, selective_copying
from hybrids.data.byte_text import BOUNDARY, ByteChunks, byte_stream
from hybrids.data.corpus import Document, load_corpus, split_of
from hybrids.errors import ConfigError

# -- selective copying ---------------------------------------------------------------------------


@pytest.mark.parametrize("selective", [True, False])
def test_selective_copying_structure(selective):
    n, seq_len, k, vocab = 200, 40, 6, 12
    inputs, labels = selective_copying(n, seq_len, k, vocab, seed=3, selective=selective)
    assert inputs.shape == labels.shape == (n, seq_len) and inputs.dtype == labels.dtype == torch.int64
    region = seq_len - k
    assert (inputs[:, region:] == 1).all()  # the markers
    assert (labels[:, :region] == -100).all()  # labelled only at the markers
    head = inputs[:, :region]
    assert not (head == 1).any()  # no marker among the content
    content = head != 0
    assert (content.sum(1) == k).all()  # exactly k content tokens, distinct positions
    assert ((head[content] >= 2) & (head[content] < vocab)).all()
    for row in range(n):
        # The labels are the content tokens in the order of their positions.
        assert labels[row, region:].tolist() == head[row][content[row]].tolist()
    if not selective:
        assert content[:, :k].all()  # at the front
    else:
        first = content.float().argmax(1)
        assert (first > 0).any()  # scattered: some examples do not start with content


def test_selective_copying_is_deterministic_by_seed():
    a = selective_copying(50, 32, 4, 10, seed=1)
    b = selective_copying(50, 32, 4, 10, seed=1)
    c = selective_copying(50, 32, 4, 10, seed=2)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("args, key", [((10, 6, 8), "seq_len"), ((10, 2, 2), "vocab_size"), ((0, 1, 5), "seq_len")])
def test_selective_copying_rejects_impossible_settings(args, key):
    with pytest.raises(ConfigError, match=key):
        selective_copying(4, *args)


# -- induction heads -----------------------------------------------------------------------------


def test_induction_heads_structure():
    n, seq_len, vocab = 500, 30, 9
    inputs, labels = induction_heads(n, seq_len, vocab, seed=5)
    assert inputs.shape == labels.shape == (n, seq_len) and inputs.dtype == torch.int64
    assert ((inputs >= 1) & (inputs < vocab)).all()
    assert ((inputs == 1).sum(1) == 2).all()  # the trigger exactly twice
    assert (inputs[:, -1] == 1).all()  # ... once at the end
    p = (inputs[:, :-1] == 1).float().argmax(1)
    assert (p <= seq_len - 3).all()
    assert p.min() == 0 and p.max() == seq_len - 3  # every allowed position occurs (500 draws of 28)
    answers = inputs[torch.arange(n), p + 1]
    assert (answers >= 2).all()
    assert (labels[:, :-1] == -100).all() and torch.equal(labels[:, -1], answers)


def test_induction_heads_is_deterministic_and_rejects_short_lengths():
    assert torch.equal(induction_heads(20, 16, 8, 0)[0], induction_heads(20, 16, 8, 0)[0])
    assert not torch.equal(induction_heads(20, 16, 8, 0)[0], induction_heads(20, 16, 8, 1)[0])
    with pytest.raises(ConfigError, match="seq_len"):
        induction_heads(1, 2, 8)


def test_induction_data_module_test_lengths_and_blocks():
    dm = InductionHeads(seq_len=16, vocab_size=8, eval_lengths=[64, 32, 16], num_test_examples=10,
                        num_eval_examples=7, eval_batch_size=3)
    assert dm.test_lengths == [16, 32, 64]
    dm.setup("test")
    loaders = dm.test_dataloader()
    assert len(loaders) == 3
    first = next(iter(loaders[0]))[0]
    assert first.shape[1] == 16
    batches = list(loaders[2])
    assert [b[0].shape for b in batches] == [(3, 64), (3, 64), (1, 64)]  # 7 examples in blocks of 3
    for inputs, labels in batches:
        assert (inputs[:, -1] == 1).all() and (labels[:, -1] >= 2).all()
    # Deterministic: the same blocks from a new module.
    dm2 = InductionHeads(seq_len=16, vocab_size=8, eval_lengths=[64], num_eval_examples=7, eval_batch_size=3)
    dm2.setup("test")
    assert torch.equal(next(iter(dm2.test_dataloader()[1]))[0], batches[0][0])


# -- byte-level text -----------------------------------------------------------------------------


def test_byte_chunks_are_contiguous_shifted_and_ignore_boundaries():
    docs = [Document("a", b"hello"), Document("b", b""), Document("c", b"xyz")]
    stream = byte_stream(docs)
    assert stream.tolist() == [BOUNDARY, *b"hello", BOUNDARY, BOUNDARY, *b"xyz"]
    chunks = ByteChunks(stream, seq_len=4)
    assert len(chunks) == (len(stream) - 1) // 4 == 2
    x0, y0 = chunks[0]
    x1, _ = chunks[1]
    assert x0.tolist() == stream[:4].tolist() and x1.tolist() == stream[4:8].tolist()
    assert y0.tolist() == [*b"hell"]
    _, y1 = chunks[1]
    assert y1.tolist() == [ord("o"), -100, -100, ord("x")]  # a boundary is not a byte to predict


def test_corpus_split_is_stable_disjoint_and_by_document(tmp_path):
    for i in range(60):
        (tmp_path / f"doc{i:02d}.txt").write_text(f"document {i} " * 20)
    (tmp_path / ".hidden").write_text("not read")
    a, b = load_corpus(tmp_path), load_corpus(tmp_path)
    assert a.checksum == b.checksum and a.size == sum(len(f"document {i} " * 20) for i in range(60))
    names = {split: [d.name for d in docs] for split, docs in a.splits.items()}
    assert names == {split: [d.name for d in docs] for split, docs in b.splits.items()}
    every = [n for split in names.values() for n in split]
    assert sorted(every) == sorted(f"doc{i:02d}.txt" for i in range(60)) and len(set(every)) == 60
    assert all(names.values())  # no split empty with 60 documents
    for split, members in names.items():
        assert all(split_of(n) == split for n in members)
    # A document's split does not depend on the others: remove half, the rest stay put.
    for i in range(0, 60, 2):
        (tmp_path / f"doc{i:02d}.txt").unlink()
    c = load_corpus(tmp_path)
    for split, docs in c.splits.items():
        assert {d.name for d in docs} <= set(names[split])


def test_single_file_split_by_bytes_and_errors(tmp_path):
    path = tmp_path / "book.txt"
    path.write_bytes(bytes(range(256)) * 40)  # 10,240 bytes
    corpus = load_corpus(path)
    parts = [corpus.splits[s][0].data for s in ("train", "val", "test")]
    assert b"".join(parts) == path.read_bytes()
    assert [len(p) for p in parts] == [9216, 512, 512]
    with pytest.raises(FileNotFoundError):
        load_corpus(tmp_path / "missing")
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        load_corpus(tmp_path / "empty.txt")


def test_default_corpus_is_the_standard_library_and_stable():
    corpus = load_corpus()
    assert "python-stdlib" in corpus.name
    assert corpus.size > 5_000_000
    names = {split: {d.name for d in docs} for split, docs in corpus.splits.items()}
    assert not (names["train"] & names["val"]) and not (names["train"] & names["test"]) and not (names["val"] & names["test"])
    assert "os.py" in set().union(*names.values())
    assert not any(n.startswith("test/") or "/test/" in n or "site-packages" in n for n in set().union(*names.values()))
    assert load_corpus().checksum == corpus.checksum


def test_bits_per_byte_is_the_loss_over_ln2(tmp_path):
    (tmp_path / "t.txt").write_bytes(b"abracadabra " * 400)
    data = ByteText(path=str(tmp_path / "t.txt"), seq_len=32, batch_size=8)
    model = LanguageModel(stack=dict(vocab_size=data.vocab_size, d_model=16, n_layers=1))
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, limit_test_batches=2)
    result = trainer.test(model, data, verbose=False)[0]
    assert result["test/bpb"] == pytest.approx(result["test/loss"] / math.log(2), rel=1e-6)
    # An untrained model is near uniform over 257 tokens: about log2(257) = 8.01 bits.
    assert 7.0 < result["test/bpb"] < 9.0
    assert ByteText.decode(ByteText.encode("héllo, wörld")) == "héllo, wörld"


# -- metrics -------------------------------------------------------------------------------------


def test_exact_copy_metric_counts_examples_with_every_label_right():
    data = SelectiveCopying(seq_len=12, num_tokens=3, vocab_size=8, num_test_examples=4, batch_size=4)
    data.setup("test")
    inputs, labels = data.test_set.tensors
    model = LanguageModel(stack=dict(vocab_size=8, d_model=8, n_layers=1))
    targets = labels.clone()
    targets[0, -2] = (targets[0, -2] - 2 + 1) % 6 + 2  # one wrong token, in example 0
    one_hot = torch.nn.functional.one_hot(targets.clamp(min=0), 8).float() * 10
    # A model that outputs those targets: hidden states are the logits, the head an identity.
    model.model.features = lambda x: one_hot  # noqa: E731
    model.model.head = torch.nn.Identity()
    model.model.head.out_features = 8
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    result = trainer.test(model, data, verbose=False)[0]
    assert result["test/acc"] == pytest.approx(11 / 12)
    assert result["test/exact"] == pytest.approx(3 / 4)
