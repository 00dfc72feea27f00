"""MemorizingAttention and its kNN memory: retrieval against brute force (exact: the same keys;
approximate: recall@k bounded below), eviction, clearing at document boundaries, the gate, and
the mixer against a dense reference written from its definition. Causality, forward/step parity
and state counting run in the shared mixer-interface tests (cases ``memorizing*``).
"""

import math
import sys

import pytest
import torch
import torch.nn.functional as F

from hybrids.mixers import MemorizingAttention
from hybrids.parts.knn_memory import KNNMemory, faiss_or_none

# faiss-cpu is a test extra (pyproject), so CI runs these; elsewhere only they are skipped.
needs_faiss = pytest.mark.skipif(faiss_or_none() is None, reason="faiss-cpu is not installed")


def unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def filled(search="torch", index="exact", batch=2, heads=2, n=300, dim=16, capacity=512, seed=0):
    memory = KNNMemory(batch, heads, dim, capacity, index=index, search=search)
    keys = unit(batch, heads, n, dim, seed=seed)
    memory.write(keys, torch.randn(batch, heads, n, dim))
    return memory, keys


def brute_force_top_k(queries, keys, k):
    return (queries @ keys.transpose(-1, -2)).topk(k, dim=-1).indices


@pytest.mark.parametrize("search", ["torch", pytest.param("faiss", marks=needs_faiss)])
def test_exact_search_finds_the_brute_force_top_k(search):
    memory, keys = filled(search)
    queries = unit(2, 2, 50, 16, seed=1)
    indices, valid = memory.search(queries, 8)
    assert valid.all()
    expected = brute_force_top_k(queries, keys, 8)
    assert torch.equal(indices.sort(-1).values, expected.sort(-1).values)


@needs_faiss
@pytest.mark.parametrize("index,floor", [("hnsw", 0.9), ("ivf", 0.6)])
def test_approximate_search_recall_is_bounded_below(index, floor):
    memory, keys = filled("faiss", index, n=2000, capacity=2048)
    queries = unit(2, 2, 200, 16, seed=1)
    indices, valid = memory.search(queries, 16)
    expected = brute_force_top_k(queries, keys, 16)
    hits = (indices[..., :, None] == expected[..., None, :]).any(-1) & valid
    recall = hits.float().mean().item()
    print(f"{index}: recall@16 = {recall:.3f}")  # reported with pytest -s
    assert recall >= floor


def test_a_full_memory_evicts_its_oldest_entries():
    memory = KNNMemory(1, 1, 4, capacity=5)
    keys = unit(1, 1, 8, 4)
    memory.write(keys[:, :, :3], keys[:, :, :3])
    memory.write(keys[:, :, 3:], keys[:, :, 3:])  # 8 written, the first 3 evicted
    assert memory.count.tolist() == [5] and memory.state_elements() == 5 * 2 * 4
    indices, valid = memory.search(keys[:, :, :], 5)
    held = {tuple(r) for r in memory.keys[0, 0].tolist()}
    assert held == {tuple(r) for r in keys[0, 0, 3:].tolist()}
    # Each of the 5 surviving keys finds itself first; the evicted ones are gone.
    found_self = memory.keys[0, 0][indices[0, 0, 3:, 0]]
    torch.testing.assert_close(found_self, keys[0, 0, 3:])


@pytest.mark.parametrize("search", ["torch", pytest.param("faiss", marks=needs_faiss)])
def test_faiss_and_torch_agree_after_eviction(search):
    memory = KNNMemory(1, 2, 8, capacity=40, search=search)
    for seed in range(5):  # 5 x 12 = 60 writes into 40 slots: wraps, faiss rebuilds
        memory.write(unit(1, 2, 12, 8, seed=seed), torch.zeros(1, 2, 12, 8))
        queries = unit(1, 2, 10, 8, seed=100 + seed)
        indices, valid = memory.search(queries, 4)
        held = int(memory.count[0])
        expected = brute_force_top_k(queries, memory.keys[:, :, :held], min(4, held))
        assert valid.all() and torch.equal(indices.sort(-1).values, expected.sort(-1).values)


def test_clearing_one_sequence_leaves_the_others():
    memory, _ = filled(batch=3)
    memory.clear(torch.tensor([False, True, False]))
    assert memory.count.tolist() == [300, 0, 300]
    _, valid = memory.search(unit(3, 2, 4, 16), 5)
    assert valid[0].all() and not valid[1].any() and valid[2].all()


def reference(mixer, x):
    """The mixer's definition, dense, for top_k >= memory_size: query t of segment s attends
    locally to its segment's keys <= t, and over every held key of segments < s (the latest
    memory_size of them), mixed by sigmoid(gate) where the memory is not empty."""
    b, length, _ = x.shape
    h, d, seg = mixer.heads, mixer.head_dim, mixer.segment_length
    q = F.normalize(mixer.q_proj(x).view(b, length, h, d).transpose(1, 2), dim=-1)
    k, v = mixer.kv_proj(x).view(b, length, 2, h, d).permute(2, 0, 3, 1, 4)
    k = F.normalize(k, dim=-1)
    scale = mixer.log_scale.exp()
    gate = torch.sigmoid(mixer.gate)
    out = torch.zeros(b, h, length, d, dtype=x.dtype)
    for t in range(length):
        start = (t // seg) * seg
        for head in range(h):
            local_scores = (q[:, head, t : t + 1] @ k[:, head, start : t + 1].transpose(-1, -2))[:, 0] * scale[head]
            local = torch.einsum("bn,bnd->bd", local_scores.softmax(-1), v[:, head, start : t + 1])
            first = max(0, start - mixer.memory_size)
            if start == 0 or mixer.memory_size == 0:
                out[:, head, t] = local
                continue
            mem_scores = (q[:, head, t : t + 1] @ k[:, head, first:start].transpose(-1, -2))[:, 0] * scale[head]
            retrieved = torch.einsum("bn,bnd->bd", mem_scores.softmax(-1), v[:, head, first:start])
            out[:, head, t] = gate[head] * retrieved + (1 - gate[head]) * local
    return mixer.out_proj(out.transpose(1, 2).reshape(b, length, h * d))


@pytest.mark.parametrize("memory_size", [0, 6, 100])
def test_mixer_matches_its_dense_definition(memory_size):
    torch.manual_seed(0)
    # top_k = memory_size: every held key is retrieved (a larger top_k is refused).
    mixer = MemorizingAttention(16, heads=2, segment_length=4, memory_size=memory_size, top_k=max(memory_size, 1),
                                rotary=False).double()
    with torch.no_grad():
        mixer.gate.copy_(torch.tensor([0.7, -1.2]))
    x = torch.randn(2, 19, 16, dtype=torch.float64)
    torch.testing.assert_close(mixer(x), reference(mixer, x), rtol=1e-10, atol=1e-10)


def test_gate_shuts_the_memory_off_or_uses_it_alone():
    torch.manual_seed(0)
    mixer = MemorizingAttention(16, heads=2, segment_length=4, memory_size=64, top_k=64, rotary=False).double()
    x = torch.randn(2, 16, 16, dtype=torch.float64)
    without = MemorizingAttention(16, heads=2, segment_length=4, memory_size=0, rotary=False).double()
    without.load_state_dict(mixer.state_dict())
    with torch.no_grad():
        mixer.gate.fill_(-60.0)  # sigmoid = 1e-26: local attention alone
    torch.testing.assert_close(mixer(x), without(x), rtol=1e-12, atol=1e-12)
    # Open gate: from the second segment on, the output no longer depends on the local keys of
    # earlier positions of the same segment.
    with torch.no_grad():
        mixer.gate.fill_(60.0)
    y = mixer(x)
    x2 = x.clone()
    x2[:, 5] += 1.0  # segment 1, position 1: a local key of queries 6 and 7, in no memory yet
    y2 = mixer(x2)
    torch.testing.assert_close(y2[:, 6:8], y[:, 6:8], rtol=1e-9, atol=1e-9)
    assert not torch.allclose(y2[:, 5], y[:, 5])


def test_gradients_reach_queries_and_gate_but_not_the_memory():
    torch.manual_seed(0)
    mixer = MemorizingAttention(16, heads=2, segment_length=4, memory_size=16, top_k=4)
    x = torch.randn(2, 12, 16, requires_grad=True)
    y, state = mixer.prefill(x)
    y[:, 8:].sum().backward()  # the third segment: memory of segments 0 and 1
    assert mixer.gate.grad is not None and mixer.gate.grad.abs().sum() > 0
    assert not state["memory"].keys.requires_grad
    # Memory entries are detached: the last segment's loss reaches earlier tokens only through
    # nothing (no local keys there, memory detached).
    assert x.grad[:, :8].abs().sum() == 0 and x.grad[:, 8:].abs().sum() > 0


def test_memory_carries_across_prefill_calls_and_clears_per_sequence():
    torch.manual_seed(0)
    mixer = MemorizingAttention(16, heads=2, segment_length=4, memory_size=32, top_k=8).double()
    x = torch.randn(2, 16, 16, dtype=torch.float64)
    whole = mixer(x)
    state = None
    parts = []
    for s in range(4):  # one segment per call, as the segment-recurrent data mode feeds them
        y, state = mixer.prefill(x[:, 4 * s : 4 * s + 4], state)
        parts.append(y)
    torch.testing.assert_close(torch.cat(parts, 1), whole, rtol=1e-10, atol=1e-10)
    # Clearing sequence 0 before its last segment: it then sees no memory, sequence 1 does.
    state = None
    for s in range(3):
        _, state = mixer.prefill(x[:, 4 * s : 4 * s + 4], state)
    MemorizingAttention.clear_memory(state, torch.tensor([True, False]))
    y, _ = mixer.prefill(x[:, 12:], state)
    fresh = mixer(x[:, 12:])  # sequence 0's last segment with an empty memory
    torch.testing.assert_close(y[0], fresh[0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(y[1], whole[1, 12:], rtol=1e-10, atol=1e-10)


def test_state_size_counts_the_memory():
    mixer = MemorizingAttention(16, heads=2, segment_length=4, memory_size=6, top_k=6)
    per_token = 2 * 16
    assert mixer.state_size(3) == 3 * per_token  # the current segment only
    assert mixer.state_size(9) == (6 + 1) * per_token  # 8 done, 6 kept; 1 in the segment
    assert mixer.state_size(400) == 6 * per_token


def test_bad_arguments_are_named():
    for kwargs, name in (({"segment_length": 0}, "segment_length"), ({"memory_size": -1}, "memory_size"),
                         ({"top_k": 0}, "top_k"), ({"index": "lsh"}, "index"), ({"search": "annoy"}, "search"),
                         ({"index": "hnsw", "search": "torch"}, "needs search='faiss'"), ({"hnsw_m": 0}, "hnsw_m"),
                         ({"ivf_lists": 0}, "ivf_lists"), ({"ivf_probe": 0}, "ivf_probe")):
        with pytest.raises(ValueError, match=name):
            MemorizingAttention(16, **kwargs)


def test_top_k_beyond_the_memory_is_refused():
    # The memory hands back at most memory_size keys: a larger top_k used to be cut silently.
    with pytest.raises(ValueError, match=r"^top_k: 64 exceeds memory_size \(32\).*top_k <= 32"):
        MemorizingAttention(16, heads=2, memory_size=32, top_k=64)
    MemorizingAttention(16, heads=2, memory_size=32, top_k=32)
    MemorizingAttention(16, heads=2, memory_size=0, top_k=64)  # retrieval off: top_k unused


def test_segment_length_is_checked_against_the_data_sequence_length():
    """Segment mode feeds seq_len tokens per batch and clears memories at document boundaries:
    check_sequence_length refuses up front what reset_state would refuse at the first boundary
    (before: a ValueError at the validation sanity check), and names a segment_length that fits."""
    mixer = MemorizingAttention(16, heads=2, segment_length=96)
    with pytest.raises(ValueError, match=r"^segment_length: 96 does not divide the data's seq_len \(128\).*"
                                         r"use segment_length 64 .* a multiple of 96$"):
        mixer.check_sequence_length(128)
    for seq_len in (96, 192):
        mixer.check_sequence_length(seq_len)
    # The check agrees with what training does: a boundary after one batch of seq_len tokens.
    first = torch.tensor([True, False])
    for segment_length, seq_len in ((4, 8), (4, 6), (3, 9), (5, 7)):
        mixer = MemorizingAttention(16, heads=2, segment_length=segment_length)
        _, state = mixer.prefill(torch.randn(2, seq_len, 16))
        try:
            mixer.check_sequence_length(seq_len)
            fits = True
        except ValueError:
            fits = False
        if fits:
            mixer.reset_state(state, first)
        else:
            with pytest.raises(ValueError, match="multiple of it"):
                mixer.reset_state(state, first)


def test_faiss_missing_is_a_keyed_value_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` raises ImportError
    assert faiss_or_none() is None
    with pytest.raises(ValueError, match=r"^search: 'faiss' needs the faiss package.*pip install -e '\.\[faiss\]'"):
        MemorizingAttention(16, heads=2, search="faiss")
    # An approximate index implies faiss: the index is what asked for it.
    with pytest.raises(ValueError, match=r"^index: 'hnsw' is approximate and searches with faiss, which is not"):
        MemorizingAttention(16, heads=2, index="hnsw")
    with pytest.raises(ValueError, match=r"^search: 'faiss' needs the faiss package"):
        KNNMemory(1, 1, 4, 8, search="faiss")
    MemorizingAttention(16, heads=2)  # the exact torch search needs nothing
