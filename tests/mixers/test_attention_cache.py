"""The preallocated KV cache (hybrids/parts/kv_cache.py) and the parallel ``prefill`` of the attention
mixers: prefill then step equals forward, chunked prefill equals forward, prefill never steps, the
cache is written in place and grows only by doubling, and state_size counts its live part.

Cases: every Attention / SparseAttention setting of tests/mixer_cases.py, plus sliding windows
far shorter than the sequence (ids ``sparse-w{window}-d{dilation}-g{globals}[-r{random}]...``).
"""

import pytest
import torch

from hybrids.mixers import Attention, SparseAttention, state_elements
from hybrids.parts.kv_cache import MIN_CAPACITY, KVCache
from mixer_cases import D_MODEL, MIXER_CASES

BATCH, LENGTH = 2, 24

CASES = {name: case for name, case in MIXER_CASES.items() if case[0] in (Attention, SparseAttention)}
CASES.update({
    "sparse-w3-d1-g0": (SparseAttention, {"heads": 4, "window": 3}),  # span 3: mask-free steps
    "sparse-w2-d3-g2-kv1": (
        SparseAttention, {"heads": 4, "kv_heads": 1, "window": 2, "dilation": 3, "global_tokens": 2},
    ),
    "sparse-w5-d1-g4-norope": (SparseAttention, {"heads": 2, "window": 5, "global_tokens": 4, "rotary": False}),
    "sparse-w2-d2-g1-r1": (
        SparseAttention, {"heads": 4, "kv_heads": 2, "window": 2, "dilation": 2, "global_tokens": 1,
                          "random_blocks": 1, "block_size": 4},
    ),
})
# L0 = 0 (an empty prompt), 1, inside the window, and well beyond every window span + globals.
PROMPTS = [0, 1, 5, 15, LENGTH]
CHUNKS = [(1, 1, 18), (5, 0, 10, 5), (12, 8), (3, 14, 3), (0, 20)]  # then steps to LENGTH


def make(case: str, dtype=torch.float64):
    cls, kwargs = CASES[case]
    torch.manual_seed(0)
    return cls(D_MODEL, **kwargs).to(dtype).eval()


def steps(mixer, x, state):
    """Step over x (B, n, D) from state: outputs (B, n, D) and the state."""
    outputs = []
    for t in range(x.shape[1]):
        y, state = mixer.step(x[:, t], state)
        outputs.append(y)
    return (torch.stack(outputs, dim=1) if outputs else x[:, :0].clone()), state


# -- the mixers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("prompt", PROMPTS)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)], ids=["f64", "f32"])
def test_prefill_then_step_matches_forward(case, prompt, dtype, tol):
    mixer = make(case, dtype)
    x = torch.randn(BATCH, LENGTH, D_MODEL, dtype=dtype)
    with torch.no_grad():
        expected = mixer(x)
        y_prompt, state = mixer.prefill(x[:, :prompt])
        assert state_elements(state) == BATCH * mixer.state_size(prompt)
        y_rest, state = steps(mixer, x[:, prompt:], state)
    torch.testing.assert_close(torch.cat((y_prompt, y_rest), dim=1), expected, rtol=tol, atol=tol)
    assert state.position == LENGTH
    assert state_elements(state) == BATCH * mixer.state_size(LENGTH)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("chunks", CHUNKS, ids=lambda c: "+".join(map(str, c)))
def test_chunked_prefill_matches_forward(case, chunks):
    mixer = make(case)
    x = torch.randn(BATCH, LENGTH, D_MODEL, dtype=torch.float64)
    with torch.no_grad():
        expected = mixer(x)
        outputs, state, start = [], None, 0
        for n in chunks:
            y, state = mixer.prefill(x[:, start : start + n], state)
            outputs.append(y)
            start += n
            assert state_elements(state) == BATCH * mixer.state_size(start)
        y_rest, state = steps(mixer, x[:, start:], state)
    torch.testing.assert_close(torch.cat((*outputs, y_rest), dim=1), expected, rtol=1e-10, atol=1e-10)
    assert state_elements(state) == BATCH * mixer.state_size(LENGTH)


@pytest.mark.parametrize("case", CASES)
def test_chunked_prefill_in_float32(case):
    mixer = make(case, torch.float32)
    x = torch.randn(BATCH, LENGTH, D_MODEL)
    with torch.no_grad():
        y1, state = mixer.prefill(x[:, :7])
        y2, state = mixer.prefill(x[:, 7:19], state)
        y3, _ = steps(mixer, x[:, 19:], state)
        torch.testing.assert_close(torch.cat((y1, y2, y3), dim=1), mixer(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", CASES)
def test_prefill_is_parallel(case, monkeypatch):
    """prefill never falls back to step, from an empty state or continuing from one."""
    mixer = make(case)
    x = torch.randn(BATCH, LENGTH, D_MODEL, dtype=torch.float64)

    def no_step(*args, **kwargs):
        raise AssertionError("prefill called step")

    monkeypatch.setattr(mixer, "step", no_step)
    with torch.no_grad():
        _, state = mixer.prefill(x[:, :3])
        _, state = mixer.prefill(x[:, 3:17], state)
        _, state = mixer.prefill(x[:, 17:], state)
    assert state.position == LENGTH


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("shape", [(2, 0), (0, 5), (0, 0)], ids=["L0", "batch0", "both0"])
def test_prefill_of_empty_inputs(case, shape):
    mixer = make(case, torch.float32)
    batch, length = shape
    with torch.no_grad():
        y, state = mixer.prefill(torch.randn(batch, length, D_MODEL))
        assert y.shape == (batch, length, D_MODEL)
        assert state.position == length and state_elements(state) == batch * mixer.state_size(length)
        y, state = mixer.prefill(torch.randn(batch, 0, D_MODEL), state)  # an empty chunk continues
        assert y.shape == (batch, 0, D_MODEL) and state.position == length
        y_t, state = mixer.step(torch.randn(batch, D_MODEL), state)
    assert y_t.shape == (batch, D_MODEL)
    assert state_elements(state) == batch * mixer.state_size(length + 1)


def test_prefill_allocates_the_prompt_once_and_steps_write_in_place():
    mixer = make("attention")
    x = torch.randn(1, 40, D_MODEL, dtype=torch.float64)
    with torch.no_grad():
        _, cache = mixer.prefill(x[:, :20])
        assert cache.capacity == 20 and cache.reallocations == 0
        pointer = cache["k"].data_ptr()
        _, cache = mixer.step(x[:, 20], cache)  # full: doubles once ...
        assert cache.capacity == 40 and cache.reallocations == 1 and cache["k"].data_ptr() != pointer
        pointer = cache["k"].data_ptr()
        y, cache = steps(mixer, x[:, 21:], cache)  # ... then writes in place up to 40 tokens
        assert cache.reallocations == 1 and cache["k"].data_ptr() == pointer
    torch.testing.assert_close(y, mixer(x)[:, 21:], rtol=1e-10, atol=1e-10)


def test_decoding_4096_tokens_never_reallocates_a_cache_with_room():
    """A cache allocated for the whole decode keeps its buffers: no copy of the cache per token."""
    torch.manual_seed(0)
    mixer = Attention(D_MODEL, heads=2).double().eval()
    prompt, new = 8, 4096
    x = torch.randn(1, prompt + new, D_MODEL, dtype=torch.float64)
    with torch.no_grad():
        cache = mixer.init_state(1, max_len=prompt + new)
        k_pointer, v_pointer = cache._k.data_ptr(), cache._v.data_ptr()
        _, cache = mixer.prefill(x[:, :prompt], cache)
        outputs = []
        for t in range(prompt, prompt + new):
            y, cache = mixer.step(x[:, t], cache)
            outputs.append(y)
            assert cache._k.data_ptr() == k_pointer and cache._v.data_ptr() == v_pointer
        expected = mixer(x)[:, prompt:]
    assert cache.reallocations == 0 and cache.length == prompt + new
    torch.testing.assert_close(torch.stack(outputs, dim=1), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", ["attention", "sparse-window", "sparse-gqa-random"])
def test_a_growing_cache_reallocates_only_when_it_doubles(case):
    mixer = make(case)
    new = 4096 if case == "attention" else 256
    moves, reallocations, pointer = 0, 0, None
    with torch.no_grad():
        cache = mixer.init_state(1)
        for x_t in torch.randn(new, 1, D_MODEL, dtype=torch.float64):
            capacity = cache.capacity
            _, cache = mixer.step(x_t, cache)
            grew = cache.capacity != capacity
            if grew:  # a growth point: new buffers, at least twice as large
                assert cache.capacity >= max(2 * capacity, 1) or cache.capacity == cache.bound
                reallocations += 1
            # Between growth points the buffer stays where it is (the allocator may hand a freed
            # address out again at a growth point, so only moves are counted, not addresses).
            if pointer is not None and cache["k"].data_ptr() != pointer:
                assert grew, "the cache moved without growing"
                moves += 1
            pointer = cache["k"].data_ptr()
    assert cache.reallocations == reallocations and moves <= reallocations
    if cache.bound is None:  # 16, 32, ..., 4096 (or 256): log2 of the length, not the length
        assert cache.capacity == new and reallocations == (new // MIN_CAPACITY).bit_length()
    else:  # a ring stops at its bound: global tokens + window span
        assert cache.capacity == cache.length == mixer.global_tokens + mixer.window_span
    assert state_elements(cache) == mixer.state_size(new)


def test_max_len_preallocates_and_is_clipped_to_the_window_bound():
    window = make("sparse-window")  # 2 globals + span 7
    assert window.init_state(3, max_len=1000).capacity == 9
    assert make("attention").init_state(3, max_len=1000).capacity == 1000
    assert state_elements(make("attention").init_state(3, max_len=1000)) == 0


# -- the cache itself ---------------------------------------------------------------------------


def tokens(start: int, n: int, batch=2, heads=3, head_dim=4):
    """K (and V = -K) whose every element is the token's position: (batch, heads, n, head_dim)."""
    k = torch.arange(start, start + n, dtype=torch.float64)[None, None, :, None].expand(batch, heads, n, head_dim)
    return k.clone(), -k


@pytest.mark.parametrize("keep_first,keep_last", [(0, None), (0, 3), (2, 3), (4, 1), (3, 8)])
@pytest.mark.parametrize(
    "blocks", [(1,) * 20, (5, 0, 7, 1, 1, 6), (20,), (2, 9, 9)], ids=lambda b: "+".join(map(str, b))
)
def test_cache_keeps_the_first_and_the_latest_tokens(keep_first, keep_last, blocks):
    cache = KVCache(2, 3, 4, keep_first=keep_first, keep_last=keep_last, dtype=torch.float64)
    position = 0
    for n in blocks:
        cache.append(*tokens(position, n))
        position += n
        kept = list(range(position)) if keep_last is None else (
            list(range(min(position, keep_first))) + list(range(max(keep_first, position - keep_last), position))
        )
        assert cache.position == position and cache.length == len(kept)
        assert sorted(cache.slot_positions().tolist()) == kept
        k, v = cache.live()  # slot order: each slot holds the position slot_positions names
        torch.testing.assert_close(k[0, 0, :, 0], cache.slot_positions().double())
        torch.testing.assert_close(cache["v"], -cache["k"])
        ordered_k, ordered_v = cache.ordered()
        torch.testing.assert_close(ordered_k[1, 2, :, 3], torch.tensor(kept, dtype=torch.float64))
        torch.testing.assert_close(ordered_v, -ordered_k)
        assert cache.state_elements() == state_elements(cache) == 2 * 2 * 3 * 4 * len(kept)
        if cache.bound is not None:
            assert cache.capacity <= cache.bound


def test_cache_clone_is_independent():
    cache = KVCache(1, 1, 2, keep_first=1, keep_last=2, dtype=torch.float64)
    cache.append(*tokens(0, 4, 1, 1, 2))
    copy = cache.clone()
    copy.append(*tokens(4, 1, 1, 1, 2))
    assert cache.position == 4 and copy.position == 5
    assert sorted(cache.slot_positions().tolist()) == [0, 2, 3]
    assert sorted(copy.slot_positions().tolist()) == [0, 3, 4]
    assert cache["k"].data_ptr() != copy["k"].data_ptr()


def test_cache_arguments_are_checked():
    with pytest.raises(ValueError, match=r"^k, v: expected \(batch=2, kv_heads=3, n, head_dim=4\)"):
        KVCache(2, 3, 4).append(torch.zeros(2, 3, 1, 5), torch.zeros(2, 3, 1, 5))
    with pytest.raises(ValueError, match=r"^keep_last: "):
        KVCache(1, 1, 1, keep_last=0)
    with pytest.raises(ValueError, match=r"^keep_first: "):
        KVCache(1, 1, 1, keep_first=2)
    with pytest.raises(ValueError, match=r"^capacity: "):
        KVCache(1, 1, 1, capacity=-1)
