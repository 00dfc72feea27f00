"""MAD's task generators: their exact semantics (positions, vocabularies, which targets are
scored), checked by re-reading the examples with plain loops."""

from __future__ import annotations

import pytest
import torch

from hybrids.data.labels import IGNORE_INDEX
from hybrids.data.mad import (
    compression,
    fuzzy_in_context_recall,
    in_context_recall,
    kv_map,
    mad_selective_copying,
    memorization,
)
from hybrids.errors import ConfigError


def runs(tokens: list[int], kind) -> list[tuple[str, list[int], int]]:
    """Maximal runs of tokens of one kind: (kind, tokens, start)."""
    out: list[tuple[str, list[int], int]] = []
    for t, token in enumerate(tokens):
        k = kind(token)
        if out and out[-1][0] == k:
            out[-1][1].append(token)
        else:
            out.append((k, [token], t))
    return out


@pytest.mark.parametrize("vocab, noise_vocab, frac", [(16, 0, 0.0), (32, 16, 0.4)])
def test_in_context_recall_scores_the_repeats_and_the_probe(vocab, noise_vocab, frac):
    seq_len, n = 32, 200
    inputs, labels = in_context_recall(n, seq_len, vocab, noise_vocab, frac, seed=3)
    _, all_labels = in_context_recall(n, seq_len, vocab, noise_vocab, frac, seed=3, labels="all")
    assert inputs.shape == labels.shape == (n, seq_len)
    N = vocab - noise_vocab
    noise_slots = 0
    for row, lab, every in zip(inputs.tolist(), labels.tolist(), all_labels.tolist()):
        assert every == row[1:] + [IGNORE_INDEX]
        value_of: dict[int, int] = {}
        want = [IGNORE_INDEX] * seq_len
        for slot in range(seq_len // 2):
            a, b = row[2 * slot], row[2 * slot + 1]
            if a >= N:  # a noise slot: two noise tokens, never the last slot
                assert b >= N and a < vocab and b < vocab and slot < seq_len // 2 - 1
                noise_slots += 1
                continue
            assert 0 <= a < N // 2 <= b < N
            if a in value_of:
                assert value_of[a] == b  # a key keeps its value in the example
                want[2 * slot] = b
            value_of[a] = b
            if slot == seq_len // 2 - 1:  # the probe: a key shown before, always scored
                assert want[2 * slot] == b
        assert lab == want
        assert any(token < N for token in row[:-2:2])  # at least one pair before the probe
    slots = n * (seq_len // 2 - 1)
    assert noise_slots == 0 if frac == 0 else abs(noise_slots / slots - frac) < 0.05


def test_recall_generators_are_seeded_pure_functions():
    a = in_context_recall(8, 16, 16, seed=1)
    b = in_context_recall(8, 16, 16, seed=1)
    c = in_context_recall(8, 16, 16, seed=2)
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and not torch.equal(a[0], c[0])
    f1 = fuzzy_in_context_recall(4, 40, 16, seed=5)
    f2 = fuzzy_in_context_recall(4, 40, 16, seed=5)
    assert all(torch.equal(x, y) for x, y in zip(f1, f2))


@pytest.mark.parametrize("fixed_key_size, noise", [(False, (0, 0.0)), (True, (0, 0.0)), (False, (4, 0.3))])
def test_fuzzy_recall_pairs_motifs_and_scores_the_repeated_ones(fixed_key_size, noise):
    seq_len, vocab, k, v = 64, 20, 3, 3
    noise_vocab, frac = noise
    inputs, labels = fuzzy_in_context_recall(100, seq_len, vocab, k, v, noise_vocab, frac, fixed_key_size, seed=7)
    _, every = fuzzy_in_context_recall(100, seq_len, vocab, k, v, noise_vocab, frac, fixed_key_size, seed=7,
                                       labels="all")
    pad, N = vocab - 1, vocab - 1 - noise_vocab
    kind = lambda t: "pad" if t == pad else "key" if t < N // 2 else "value" if t < N else "noise"  # noqa: E731
    for row, lab, all_lab in zip(inputs.tolist(), labels.tolist(), every.tolist()):
        # The sequence with its last token (the label of the last input).
        full = row + [all_lab[-1]]
        assert all_lab[:-1] == full[1:-1]
        parts = runs(full, kind)
        if parts[0][0] == "pad":
            parts = parts[1:]
        assert pad not in full[len(full) - sum(len(p[1]) for p in parts):]  # pads only in front
        want = [IGNORE_INDEX] * len(full)
        seen: dict[tuple[int, ...], tuple[int, ...]] = {}
        i = 0
        while i < len(parts):
            if parts[i][0] == "noise":
                i += 1
                continue
            (key_kind, key, _), (value_kind, value, start) = parts[i], parts[i + 1]
            assert (key_kind, value_kind) == ("key", "value")
            assert 1 <= len(value) <= v and len(set(key)) == len(key) and len(set(value)) == len(value)
            if fixed_key_size:
                assert len(key) == k
            else:
                assert 1 <= len(key) <= k
            if tuple(key) in seen:
                assert seen[tuple(key)] == tuple(value)
                want[start:start + len(value)] = value
            seen[tuple(key)] = tuple(value)
            i += 2
        # The probe: the last pair, shown before, always scored.
        probe_key = tuple(parts[-2][1])
        assert want[-len(parts[-1][1]):] == parts[-1][1]
        assert sum(1 for j in range(0, len(parts) - 2) if tuple(parts[j][1]) == probe_key and parts[j][0] == "key") >= 1
        assert lab == want[1:]


def test_mad_selective_copying_layout():
    seq_len, k, vocab, n = 40, 6, 10, 300
    inputs, labels = mad_selective_copying(n, seq_len, k, vocab, seed=0)
    blank, copy = vocab - 2, vocab - 1
    gaps = torch.zeros(k)
    for row, lab in zip(inputs.tolist(), labels.tolist()):
        head, marker, tail = row[: seq_len - k - 1], row[seq_len - k - 1], row[seq_len - k:]
        assert marker == copy and tail == [blank] * k
        content = [t for t in head if t != blank]
        assert len(content) == k and all(0 <= t < vocab - 2 for t in content)
        assert head[-1] != blank  # blanks go before content tokens: the last one meets the copy token
        assert head.count(blank) == seq_len - 2 * k - 1
        assert lab == [IGNORE_INDEX] * (seq_len - k) + content
        position = 0
        for i in range(k):  # blanks before content token i
            run = 0
            while head[position] == blank:
                run, position = run + 1, position + 1
            gaps[i] += run
            position += 1
    # Each blank precedes a content token drawn uniformly: (seq_len - 2k - 1) / k blanks before each.
    expected = (seq_len - 2 * k - 1) / k
    assert torch.allclose(gaps / n, torch.full((k,), expected), rtol=0.15)


def test_compression_labels_every_position_with_its_input():
    inputs, labels = compression(50, 12, 8, seed=1)
    assert torch.equal(inputs, labels)
    assert (inputs[:, -1] == 7).all() and (inputs[:, :-1] < 7).all() and (inputs >= 0).all()


def test_memorization_asks_a_fixed_map():
    vocab = 21
    table = kv_map(vocab, map_seed=4)
    half = (vocab - 1) // 2
    assert table.shape == (half,) and len(set(table.tolist())) == half
    assert ((table >= half) & (table < vocab - 1)).all()
    for seed in (0, 1):
        inputs, labels = memorization(30, 10, vocab, map_seed=4, seed=seed)
        assert (inputs[:, 1::2] == vocab - 1).all() and (inputs[:, 0::2] < half).all()
        assert (labels[:, 0::2] == IGNORE_INDEX).all()
        assert torch.equal(labels[:, 1::2], table[inputs[:, 0::2]])
    assert not torch.equal(kv_map(vocab, 4), kv_map(vocab, 5))


@pytest.mark.parametrize("call, key", [
    (lambda: in_context_recall(1, 15, 16), "seq_len"),
    (lambda: in_context_recall(1, 16, 16, 0, 0.2), "noise_vocab_size"),
    (lambda: in_context_recall(1, 16, 16, 4, 1.0), "frac_noise"),
    (lambda: in_context_recall(1, 16, 16, labels="some"), "labels"),
    (lambda: fuzzy_in_context_recall(1, 64, 6), "vocab_size"),
    (lambda: fuzzy_in_context_recall(1, 10, 16), "seq_len"),
    (lambda: mad_selective_copying(1, 8, 4, 16), "seq_len"),
    (lambda: mad_selective_copying(1, 16, 4, 2), "vocab_size"),
    (lambda: memorization(1, 7, 16, 0), "seq_len"),
    (lambda: compression(1, 1, 16), "seq_len"),
])
def test_settings_without_examples_are_keyed(call, key):
    with pytest.raises(ConfigError) as err:
        call()
    assert err.value.key == key
