"""The SparseAttention mixer: forward against a dense masked reference, forward against step over
sequences longer than the window, prefill (whole and chunked) against both, the bounded decoding
cache, full attention against Attention, and argument errors. (The shared contract is also
checked by tests/mixers/test_mixer_interface.py, prefill and the cache by tests/mixers/test_attention_cache.py.)

Case ids read ``w4-d2-g3-r0-kv2``: window (``wNone`` = full), dilation, global tokens, random
blocks (of ``BLOCK`` positions), key/value heads under four query heads; ``-norope`` without
rotary positions.
"""

import math

import pytest
import torch

from hybrids.errors import ConfigError
from hybrids.kernels import apply_rotary, rotary_cos_sin
from hybrids.mixers import Attention, SparseAttention, state_elements
from hybrids.model.mixer_specs import build_mixer

D_MODEL, HEADS, BATCH, LENGTH, BLOCK = 16, 4, 2, 40, 4


def case(window, dilation=1, global_tokens=0, random_blocks=0, kv_heads=HEADS, rotary=True):
    kwargs = dict(
        heads=HEADS, kv_heads=kv_heads, window=window, dilation=dilation, global_tokens=global_tokens,
        random_blocks=random_blocks, block_size=BLOCK, rotary=rotary,
    )
    name = f"w{window}-d{dilation}-g{global_tokens}-r{random_blocks}-kv{kv_heads}" + ("" if rotary else "-norope")
    return pytest.param(kwargs, id=name)


CASES = [
    case(4, 2, 3, kv_heads=2),  # span 7 + 3 globals, far shorter than LENGTH
    case(4, 2, 3, rotary=False),
    case(5, 3, 0, kv_heads=1),
    case(1),  # the diagonal only
    case(1, 1, 2),
    case(6, 1, 2, 2, kv_heads=2),  # BigBird: window, globals and random blocks
    case(3, 2, 0, 1, kv_heads=1),
    case(64),  # the window outgrows the sequence
    case(None, 1, 2, kv_heads=2),
]


def make(kwargs, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    return SparseAttention(D_MODEL, **kwargs).to(dtype).eval()


def run_steps(mixer, x, state=None):
    state = mixer.init_state(x.shape[0]) if state is None else state
    outputs = []
    for t in range(x.shape[1]):
        y, state = mixer.step(x[:, t], state)
        outputs.append(y)
    return torch.stack(outputs, dim=1), state


def dense_reference(mixer: SparseAttention, x: torch.Tensor) -> torch.Tensor:
    """The mixer written out from its weights: projections, rotary, a softmax under
    ``pattern.dense_mask``, with the query heads of a group repeated over their KV head."""
    b, length, _ = x.shape
    hd, kvh = mixer.head_dim, mixer.kv_heads
    q = (x @ mixer.q_proj.weight.T).view(b, length, mixer.heads, hd).transpose(1, 2)
    kv = (x @ mixer.kv_proj.weight.T).view(b, length, 2, kvh, hd)
    k, v = kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)
    if mixer.rotary:
        cos, sin = rotary_cos_sin(torch.arange(length), hd, mixer.rotary_base, dtype=x.dtype)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    group = mixer.heads // kvh
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
    scores = scores.masked_fill(~mixer.pattern.dense_mask(length), -math.inf)
    y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, length, mixer.heads * hd)
    return y @ mixer.out_proj.weight.T


@pytest.mark.parametrize("kwargs", CASES)
def test_forward_matches_dense_masked_reference(kwargs):
    mixer = make(kwargs)
    x = torch.randn(BATCH, LENGTH, D_MODEL, dtype=torch.float64)
    with torch.no_grad():
        expected = dense_reference(mixer, x)
        torch.testing.assert_close(mixer(x), expected, rtol=1e-10, atol=1e-10)
        mixer.backend = "reference"
        torch.testing.assert_close(mixer(x), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kwargs", CASES)
def test_forward_matches_step(kwargs):
    mixer = make(kwargs)
    x = torch.randn(BATCH, LENGTH, D_MODEL, dtype=torch.float64)
    with torch.no_grad():
        recurrent, state = run_steps(mixer, x)
        torch.testing.assert_close(recurrent, mixer(x), rtol=1e-10, atol=1e-10)
    assert state.position == LENGTH
    assert state_elements(state) == BATCH * mixer.state_size(LENGTH)


@pytest.mark.parametrize("kwargs", CASES)
@pytest.mark.parametrize("prompt", [1, 13, 33])
def test_prefill_then_step_matches_forward(kwargs, prompt):
    mixer = make(kwargs)
    x = torch.randn(BATCH, LENGTH, D_MODEL, dtype=torch.float64)
    with torch.no_grad():
        y_prompt, state = mixer.prefill(x[:, :prompt])
        assert state_elements(state) == BATCH * mixer.state_size(prompt)
        y_rest, state = run_steps(mixer, x[:, prompt:], state)
        torch.testing.assert_close(torch.cat((y_prompt, y_rest), dim=1), mixer(x), rtol=1e-10, atol=1e-10)
    assert state.position == LENGTH
    assert state_elements(state) == BATCH * mixer.state_size(LENGTH)


@pytest.mark.parametrize("backend", ["banded", "reference"])
@pytest.mark.parametrize("kwargs", CASES)
def test_chunked_prefill_matches_dense_reference(kwargs, backend):
    """Chunks that start inside the globals, inside the window and far past it: each continues
    exactly (the cached keys in front of the chunk, at their true relative positions)."""
    mixer = make(kwargs)
    mixer.backend = backend
    x = torch.randn(BATCH, LENGTH, D_MODEL, dtype=torch.float64)
    with torch.no_grad():
        outputs, state, start = [], None, 0
        for n in (2, 1, 6, 17, 14):
            y, state = mixer.prefill(x[:, start : start + n], state)
            outputs.append(y)
            start += n
        torch.testing.assert_close(torch.cat(outputs, dim=1), dense_reference(mixer, x), rtol=1e-10, atol=1e-10)
    assert state_elements(state) == BATCH * mixer.state_size(LENGTH)


def test_prefill_keeps_the_globals_and_the_last_window_span():
    mixer = make(dict(heads=HEADS, kv_heads=2, window=4, dilation=2, global_tokens=3))
    span = (4 - 1) * 2 + 1
    x = torch.randn(1, LENGTH, D_MODEL, dtype=torch.float64)
    with torch.no_grad():
        _, state = mixer.prefill(x)
        _, stepped = run_steps(mixer, x)
    assert state.capacity == state.length == 3 + span  # allocated at the bound, not for LENGTH
    assert sorted(state.slot_positions().tolist()) == [0, 1, 2, *range(LENGTH - span, LENGTH)]
    torch.testing.assert_close(state.ordered()[0], stepped.ordered()[0], rtol=1e-12, atol=1e-12)


def test_step_in_float32_matches_forward():
    mixer = make(CASES[0].values[0], torch.float32)
    x = torch.randn(BATCH, LENGTH, D_MODEL)
    with torch.no_grad():
        torch.testing.assert_close(run_steps(mixer, x)[0], mixer(x), rtol=1e-5, atol=1e-5)


def test_the_pattern_matters():
    """The sparse output differs from full attention with the same weights (beyond the window)."""
    sparse, full = make(CASES[0].values[0]), make({**CASES[0].values[0], "window": None, "dilation": 1})
    x = torch.randn(BATCH, LENGTH, D_MODEL, dtype=torch.float64)
    with torch.no_grad():
        y_sparse, y_full = sparse(x), full(x)
    # Globals (the first 3 queries) and queries whose window covers everything agree ...
    torch.testing.assert_close(y_sparse[:, :3], y_full[:, :3], rtol=1e-10, atol=1e-10)
    # ... later ones do not.
    assert (y_sparse[:, 12:] - y_full[:, 12:]).abs().amax() > 1e-3


def test_state_is_bounded_for_local_patterns():
    mixer = make(dict(heads=HEADS, kv_heads=2, window=4, dilation=2, global_tokens=3))
    per_token = 2 * 2 * (D_MODEL // HEADS)
    span = (4 - 1) * 2 + 1
    assert mixer.state_size(100) == mixer.state_size(1000) == per_token * (3 + span)
    assert mixer.state_size(5) == per_token * 5  # never more than full attention's cache
    assert mixer.state_size(0) == 0
    x = torch.randn(1, LENGTH, D_MODEL, dtype=torch.float64)
    with torch.no_grad():
        _, state = run_steps(mixer, x)
    assert state_elements(state) == per_token * (3 + span)
    # The 3 global tokens and the last window span, in a buffer that stopped growing at that bound.
    assert state["k"].shape[2] == state.capacity == 3 + span
    assert sorted(state.slot_positions().tolist()) == [0, 1, 2, *range(LENGTH - span, LENGTH)]


@pytest.mark.parametrize("kwargs", [dict(window=None), dict(window=4, random_blocks=1, block_size=BLOCK)])
def test_state_grows_for_full_attention_and_random_blocks(kwargs):
    mixer = make(dict(heads=HEADS, **kwargs))
    assert mixer.state_size(1000) == 10 * mixer.state_size(100) == 10 * 2 * D_MODEL * 100


def test_full_window_matches_attention_with_the_same_weights():
    attention = Attention(D_MODEL, heads=HEADS, kv_heads=2).double().eval()
    sparse = SparseAttention(D_MODEL, heads=HEADS, kv_heads=2, window=None).double().eval()
    sparse.load_state_dict(attention.state_dict())  # same parameter names: checkpoints load across
    x = torch.randn(BATCH, LENGTH, D_MODEL, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(sparse(x), attention(x), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(run_steps(sparse, x)[0], attention(x), rtol=1e-10, atol=1e-10)
    assert sparse.state_size(LENGTH) == attention.state_size(LENGTH)


def test_random_blocks_depend_on_the_seed():
    x = torch.randn(1, LENGTH, D_MODEL, dtype=torch.float64)
    outputs = []
    for seed in (0, 1):
        torch.manual_seed(0)
        mixer = SparseAttention(D_MODEL, window=2, random_blocks=1, block_size=BLOCK, seed=seed).double().eval()
        with torch.no_grad():
            outputs.append(mixer(x))
    assert not torch.allclose(*outputs)


def test_trains_through_the_banded_backend():
    mixer = make(CASES[5].values[0], torch.float32).train()
    x = torch.randn(BATCH, LENGTH, D_MODEL, requires_grad=True)
    mixer(x).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in mixer.parameters())


BAD_ARGUMENTS = [
    ({"heads": 0}, "heads"),
    ({"heads": 3}, "heads"),  # 16 is not divisible by 3
    ({"kv_heads": 3}, "kv_heads"),
    ({"kv_heads": 0}, "kv_heads"),
    ({"head_dim": 5}, "head_dim"),  # rotary needs an even head_dim
    ({"window": 0}, "window"),
    ({"window": 2.5}, "window"),
    ({"dilation": 0}, "dilation"),
    ({"window": None, "dilation": 2}, "dilation"),
    ({"global_tokens": -1}, "global_tokens"),
    ({"random_blocks": -1}, "random_blocks"),
    ({"block_size": 0}, "block_size"),
    ({"dropout": 0.1}, "dropout"),
    ({"backend": "fast"}, "backend"),
]


@pytest.mark.parametrize("kwargs,argument", BAD_ARGUMENTS, ids=[f"{a}={k[a]}" for k, a in BAD_ARGUMENTS])
def test_bad_arguments_name_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=rf"^{argument}: "):
        SparseAttention(D_MODEL, **kwargs)


def test_bad_argument_names_the_config_key():
    spec = {"class_path": "hybrids.mixers.SparseAttention", "init_args": {"window": 8, "dropout": 0.1}}
    with pytest.raises(ConfigError) as info:
        build_mixer(spec, D_MODEL, key="mixers.A")
    assert info.value.key == "mixers.A.init_args.dropout"
    assert "dropout=0.0" in info.value.message
