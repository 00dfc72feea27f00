"""Segment mode: documents read as consecutive segments per batch slot, and models that carry
their layers' states (memories) from one segment to the next."""

import lightning as L
import pytest
import torch

from hybrids import LanguageModel
from hybrids.data import ByteText
from hybrids.data.byte_text import BOUNDARY
from hybrids.data.segments import SegmentBatches
from hybrids.model.state_carry import CannotCarry, reset_slots
from hybrids.mixers import Mamba, MemorizingAttention

MIXERS = {
    "M": {"class_path": "hybrids.mixers.Mamba", "init_args": {"d_state": 4}},
    "X": {"class_path": "hybrids.mixers.MemorizingAttention",
          "init_args": {"heads": 2, "segment_length": 4, "memory_size": 64, "top_k": 8}},
    "A": {"class_path": "hybrids.mixers.Attention", "init_args": {"heads": 2}},
}


def read_back(batches: SegmentBatches):
    """Each slot's labelled tokens, split at the batches marked first: the documents it read."""
    docs = []
    current = [None] * batches.batch_size
    for i in range(len(batches)):
        inputs, labels, first = batches[i]
        for b in range(batches.batch_size):
            if first[b] and current[b]:
                docs.append(current[b])
            if first[b]:
                current[b] = []
            current[b].extend(inputs[b][labels[b] != -100].tolist())
    docs.extend(c for c in current if c)
    return docs


def test_every_document_is_read_once_in_order_by_one_slot():
    lengths = [1, 30, 7, 16, 17, 50, 3, 9]
    streams = [torch.arange(100 * d, 100 * d + n) for d, n in enumerate(lengths)]
    batches = SegmentBatches(streams, seq_len=8, batch_size=3, pad=-1)
    docs = read_back(batches)
    # The inputs of every labelled position: each document but its last token, each once.
    expected = [s[:-1].tolist() for s in streams if len(s) > 1]
    assert sorted(docs) == sorted(expected)
    inputs, labels, first = batches[0]
    assert first.all() and torch.equal(labels[0, :7], streams[1][1:8])  # labels: the next token
    assert batches.tokens() == sum(n - 1 for n in lengths)


def test_byte_text_segments_cover_the_split(tmp_path):
    for i in range(30):
        (tmp_path / f"doc{i:02d}.txt").write_text(chr(97 + i % 26) * (20 + 7 * i))
    data = ByteText(path=str(tmp_path), seq_len=16, batch_size=4, segments=True)
    data.setup("fit")
    plain = ByteText(path=str(tmp_path), seq_len=16, batch_size=4)
    plain.prepare_corpus()
    for split in ("train", "val", "test"):
        docs = read_back(data.sets[split])
        expected = sorted([BOUNDARY, *d.data][:-1] for d in plain.corpus.splits[split])
        assert sorted(docs) == expected
    batch = next(iter(data.train_dataloader()))
    assert len(batch) == 3 and batch[0].shape == (4, 16) and batch[2].dtype == torch.bool


def model(pattern, carry_state=True, **kwargs):
    torch.manual_seed(0)
    mixers = {k: v for k, v in MIXERS.items() if k in pattern}
    return LanguageModel(stack=dict(vocab_size=257, d_model=16, n_layers=len(pattern), pattern=pattern, mixers=mixers), carry_state=carry_state, **kwargs).double()


@pytest.mark.parametrize("pattern", ["MX", "X"])
def test_carried_segments_equal_the_whole_document(pattern):
    lm = model(pattern)
    tokens = torch.randint(0, 256, (2, 24))
    whole = lm.model.features(tokens)
    states, parts = [None] * len(lm.model.blocks), []
    for s in range(3):
        hidden, states = lm.model.segment_features(tokens[:, 8 * s : 8 * s + 8], states, [True] * len(states))
        parts.append(hidden)
    torch.testing.assert_close(torch.cat(parts, 1), whole, rtol=1e-9, atol=1e-9)
    assert not any(t.requires_grad for s in states for t in s.values() if isinstance(t, torch.Tensor))


def test_training_steps_carry_and_reset_per_slot():
    lm = model("MX")
    inputs = torch.randint(0, 256, (3, 8))
    labels = torch.randint(0, 256, (3, 8))
    lm._shared_step((inputs, labels, torch.ones(3, dtype=torch.bool)), "val")
    memory = lm._segments.states["val"][1]["memory"]
    assert memory.count.tolist() == [8, 8, 8]
    lm._shared_step((inputs, labels, torch.tensor([False, True, False])), "val")
    memory = lm._segments.states["val"][1]["memory"]
    assert memory.count.tolist() == [16, 8, 16]  # slot 1 started a new document
    assert lm._segments.states["val"][0]["ssm"].abs().sum() > 0  # Mamba's state travels too
    lm.on_validation_epoch_start()  # a new pass over the split starts with empty states
    assert "val" not in lm._segments.states


def test_without_carry_state_only_memories_travel():
    lm = model("MX", carry_state=False)
    batch = (torch.randint(0, 256, (2, 8)), torch.randint(0, 256, (2, 8)), torch.ones(2, dtype=torch.bool))
    lm._shared_step(batch, "train")
    states = lm._segments.states["train"]
    assert states[0] is None and states[1]["memory"].count.tolist() == [8, 8]


def test_what_cannot_be_carried_is_refused_at_the_first_segment():
    batch = (torch.randint(0, 256, (2, 8)), torch.randint(0, 256, (2, 8)), torch.ones(2, dtype=torch.bool))
    with pytest.raises(CannotCarry, match="Attention cannot carry its state"):
        model("A")._shared_step(batch, "train")
    six = (torch.randint(0, 256, (2, 6)), torch.randint(0, 256, (2, 6)), torch.ones(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="multiple of its segment_length"):
        model("X", carry_state=False)._shared_step(six, "train")
    model("A", carry_state=False)._shared_step(batch, "train")  # attention not carried: fine


def test_training_epochs_deal_documents_anew_and_resume_mid_epoch():
    from hybrids.data.segments import SegmentOrder

    streams = [torch.arange(100 * d, 100 * d + 5 + 3 * d) for d in range(12)]
    batches = SegmentBatches(streams, seq_len=4, batch_size=3, pad=-1, shuffle_seed=7)
    assert batches.slots_of(0) != batches.slots_of(1)
    for epoch in (0, 1):
        docs = []
        current = [[] for _ in range(3)]
        for i in range(batches.batches(epoch)):
            inputs, labels, first = batches[(epoch, i)]
            for b in range(3):
                if first[b] and current[b]:
                    docs.append(current[b])
                    current[b] = []
                current[b].extend(inputs[b][labels[b] != -100].tolist())
        docs.extend(c for c in current if c)
        assert sorted(docs) == sorted(s[:-1].tolist() for s in streams)
    order = SegmentOrder(batches)
    order.set_epoch(1)
    assert list(order) == [(1, i) for i in range(batches.batches(1))]
    order.resume_at(1, 3)
    assert list(order)[0] == (1, 3)


def test_generic_reset_returns_the_fresh_rows():
    mixer = Mamba(8, d_state=2)
    _, state = mixer.prefill(torch.randn(3, 5, 8))
    reset = reset_slots(mixer, state, torch.tensor([False, True, False]))
    assert reset["ssm"][1].abs().sum() == 0 and torch.equal(reset["ssm"][0], state["ssm"][0])


def test_memorizing_refuses_a_boundary_inside_a_segment():
    mixer = MemorizingAttention(16, heads=2, segment_length=4)
    _, state = mixer.prefill(torch.randn(2, 6, 16))
    with pytest.raises(ValueError, match="multiple of it"):
        mixer.reset_state(state, torch.tensor([True, False]))


def test_segment_mode_trains_with_lightning(tmp_path):
    for i in range(20):
        (tmp_path / f"doc{i:02d}.txt").write_text("abcdefgh " * (5 + i))
    data = ByteText(path=str(tmp_path), seq_len=8, batch_size=2, segments=True)
    lm = model("MX").float()
    trainer = L.Trainer(max_epochs=1, limit_train_batches=6, limit_val_batches=3, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(lm, datamodule=data)
    assert torch.isfinite(trainer.callback_metrics["val/bpb"])
    assert lm._segments.states["train"][1]["memory"].holds_any()
