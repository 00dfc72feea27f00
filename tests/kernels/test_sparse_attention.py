"""Sparse attention: the pattern's rule, the banded and flex backends against the dense reference,
the banded path's memory, and backend dispatch.

Case ids read ``L127-w8-d2-g3-r1``: length, window (``wNone`` = full attention), dilation,
global tokens, random blocks (of 16 positions here), then ``-nc`` for non-causal and ``-kvN``
for N key/value heads under four query heads.
"""


import pytest
import torch

import hybrids.kernels.sparse as sa
import hybrids.kernels.sparse.banded as banded
import hybrids.kernels.sparse.flex as flex
import hybrids.kernels.sparse.masked_sdpa as masked_sdpa
import hybrids.kernels.sparse.reference as reference
from hybrids.kernels.sparse import SparsePattern, sparse_attention
from helpers import MEMORY_METER_PLATFORM, peak_memory, relative_rms

BLOCK = 16  # random-block size in these tests, so that L <= 200 has several blocks
HEADS = 4


def case(L, window, dilation=1, global_tokens=0, random_blocks=0, causal=True, kv_heads=HEADS):
    pattern = SparsePattern(window, dilation, global_tokens, random_blocks, BLOCK, causal, seed=L)
    name = f"L{L}-w{window}-d{dilation}-g{global_tokens}-r{random_blocks}"
    name += "" if causal else "-nc"
    name += "" if kv_heads == HEADS else f"-kv{kv_heads}"
    return pytest.param(L, pattern, kv_heads, id=name)


PATTERN_CASES = [
    case(1, 4),
    case(17, 4),
    case(64, 1),  # the diagonal only
    case(17, 3, 2, 2, 1, causal=False, kv_heads=2),
    case(127, 8, 2, 3, 1, kv_heads=2),
    case(127, 8, 1, 0, 2, causal=False, kv_heads=1),
    case(129, 7, 4, 0, 3, kv_heads=2),
    case(200, 16, 3, 5, 2, kv_heads=1),
    case(200, 5, 1, 4, 0, causal=False),
    case(200, 5, 2, 3, 2, causal=False, kv_heads=2),
    case(200, 300, 1, 0, 0),  # the window outgrows the sequence
    case(200, None, 1, 2, 1, kv_heads=2),
    case(127, None, 1, 0, 0, causal=False, kv_heads=1),
]


def brute_force_mask(pattern: SparsePattern, L: int) -> torch.Tensor:
    """The rule of the issue, one (i, j) at a time, with the drawn random key blocks."""
    table = pattern.random_key_blocks(L).tolist()
    window = L if pattern.window is None else pattern.window
    mask = torch.zeros(L, L, dtype=torch.bool)
    for i in range(L):
        for j in range(L):
            if pattern.causal and j > i:
                continue
            lag = abs(i - j)
            in_window = lag < window * pattern.dilation and lag % pattern.dilation == 0
            is_global = i < pattern.global_tokens or j < pattern.global_tokens
            is_random = j // pattern.block_size in table[i // pattern.block_size]
            mask[i, j] = in_window or is_global or is_random
    return mask


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Relative RMS error. The scale is floored at 1e-3 (the values here are of order one), so
    that a gradient that vanishes identically (dk with one key per query) is held to 1e-13."""
    return relative_rms(actual, expected, floor=1e-3)


def random_qkv(L, kv_heads, dtype=torch.float64, batch=2, head_dim=8, requires_grad=True):
    g = torch.Generator().manual_seed(L)
    shapes = [(batch, HEADS, L, head_dim), (batch, kv_heads, L, head_dim), (batch, kv_heads, L, head_dim)]
    return [torch.randn(s, generator=g, dtype=dtype).requires_grad_(requires_grad) for s in shapes]


# --------------------------------------------------------------------------------------------
# the pattern


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"window": 0}, "window"),
        ({"window": 2.5}, "window"),
        ({"window": 4, "dilation": 0}, "dilation"),
        ({"window": None, "dilation": 2}, "dilation"),
        ({"window": 4, "global_tokens": -1}, "global_tokens"),
        ({"window": 4, "random_blocks": -1}, "random_blocks"),
        ({"window": 4, "block_size": 0}, "block_size"),
        ({"window": 4, "causal": 1}, "causal"),
        ({"window": 4, "seed": "0"}, "seed"),
    ],
    ids=lambda x: x if isinstance(x, str) else None,
)
def test_pattern_validates_its_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=rf"^{argument}: "):
        SparsePattern(**kwargs)


@pytest.mark.parametrize("L, pattern, kv_heads", PATTERN_CASES)
def test_dense_mask_follows_the_rule(L, pattern, kv_heads):
    mask = pattern.dense_mask(L)
    assert mask.dtype == torch.bool and mask.shape == (L, L)
    assert torch.equal(mask, brute_force_mask(pattern, L))
    assert mask.diagonal().all(), "every query sees itself"


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "nc"])
def test_random_key_blocks_are_distinct_draws_in_range(causal):
    L, r = 200, 3
    table = SparsePattern(4, random_blocks=r, block_size=BLOCK, causal=causal).random_key_blocks(L)
    n_blocks = -(-L // BLOCK)
    assert table.shape == (n_blocks, r)
    for block, row in enumerate(table.tolist()):
        candidates = block + 1 if causal else n_blocks
        drawn = [b for b in row if b >= 0]
        assert len(drawn) == min(r, candidates) and row[len(drawn):] == [-1] * (r - len(drawn))
        assert drawn == sorted(set(drawn)) and all(0 <= b < candidates for b in drawn)


def test_random_key_blocks_are_uniform():
    """Each of 8 key blocks is drawn for the last query block with probability r / 8 = 1/4."""
    counts = torch.zeros(8)
    seeds = 800
    for seed in range(seeds):
        pattern = SparsePattern(4, random_blocks=2, block_size=BLOCK, causal=False, seed=seed)
        table = pattern.random_key_blocks(8 * BLOCK)
        counts[table[-1]] += 1
    assert ((counts / seeds - 0.25).abs() < 0.06).all(), counts / seeds


def test_random_blocks_are_deterministic_by_seed():
    L = 200

    def make(seed):
        return SparsePattern(4, random_blocks=2, block_size=BLOCK, seed=seed)

    assert torch.equal(make(0).dense_mask(L), make(0).dense_mask(L))
    assert torch.equal(make(0).random_key_blocks(L), make(0).random_key_blocks(L))
    assert not torch.equal(make(0).random_key_blocks(L), make(1).random_key_blocks(L))
    assert not torch.equal(make(0).dense_mask(L), make(1).dense_mask(L))


def test_causal_mask_of_a_prefix_is_the_prefix_of_the_mask():
    """What a decoder needs: the pattern of the first n tokens does not depend on what follows."""
    pattern = SparsePattern(5, dilation=2, global_tokens=2, random_blocks=2, block_size=BLOCK)
    full = pattern.dense_mask(200)
    for n in (1, 16, 17, 100):
        assert torch.equal(pattern.dense_mask(n), full[:n, :n])


# --------------------------------------------------------------------------------------------
# banded against the reference


@pytest.mark.parametrize("backend", ["banded", "masked_sdpa"])
@pytest.mark.parametrize("L, pattern, kv_heads", PATTERN_CASES)
def test_backend_matches_reference(L, pattern, kv_heads, backend):
    q, k, v = random_qkv(L, kv_heads)
    weights = torch.randn(2, HEADS, L, 8, dtype=torch.float64)  # a loss that mixes every output
    results = {}
    for name in ("reference", backend):
        out = sparse_attention(q, k, v, pattern, backend=name)
        results[name] = (out, *torch.autograd.grad((out * weights).sum(), (q, k, v)))
    for name, actual, expected in zip(("out", "dq", "dk", "dv"), results[backend], results["reference"]):
        assert torch.isfinite(actual).all(), name
        assert rel_err(actual, expected) < 1e-10, (name, rel_err(actual, expected))


@pytest.mark.parametrize("L, pattern, kv_heads", [PATTERN_CASES[i] for i in (4, 7, 9)])
def test_banded_chunks_give_the_same_result(L, pattern, kv_heads, monkeypatch):
    """Chunks of a few tiles (one at least) instead of one chunk for everything at these sizes."""
    q, k, v = random_qkv(L, kv_heads)
    weights = torch.randn(2, HEADS, L, 8, dtype=torch.float64)
    results = []
    for chunk_scores in (banded._CHUNK_SCORES, 1000):
        monkeypatch.setattr(banded, "_CHUNK_SCORES", chunk_scores)
        out = sparse_attention(q, k, v, pattern, backend="banded")
        results.append((out, *torch.autograd.grad((out * weights).sum(), (q, k, v))))
    for name, actual, expected in zip(("out", "dq", "dk", "dv"), *results):
        assert rel_err(actual, expected) < 1e-12, name


@pytest.mark.parametrize("backend", ["banded", "masked_sdpa"])
def test_scale_and_low_precision(backend):
    """A given scale is used; bfloat16 inputs get a float32 softmax and a bfloat16 output."""
    pattern = SparsePattern(6, dilation=2, global_tokens=2, random_blocks=1, block_size=BLOCK)
    q, k, v = random_qkv(100, 2, dtype=torch.float32, requires_grad=False)
    expected = sparse_attention(q, k, v, pattern, backend="reference", scale=0.3)
    assert rel_err(sparse_attention(q, k, v, pattern, backend=backend, scale=0.3), expected) < 1e-5
    out = sparse_attention(*(t.bfloat16() for t in (q, k, v)), pattern, backend=backend, scale=0.3)
    assert out.dtype == torch.bfloat16
    assert rel_err(out.float(), expected) < 2e-2  # bfloat16 rounding of inputs and output


@pytest.mark.skipif(not MEMORY_METER_PLATFORM, reason="reads the peak RSS from /proc (Linux)")
def test_banded_never_allocates_an_L_by_L_tensor():
    """Forward + backward at L = 16384, window 64, in a fresh process: the resident-set peak
    must stay under 128 MiB, an eighth of one (L, L) float32 tensor (1 GiB; the reference
    holds several and peaks above 6 GiB here). Likewise with dilation, global tokens and random
    blocks. The same meter must see a 256 MiB control allocation, so the figure is not blind
    to torch's allocations."""
    code = """
        import torch
        from hybrids.kernels.sparse import SparsePattern, sparse_attention

        # Warm-up at a small length: thread pools and BLAS buffers are not the kernel's memory.
        x = torch.randn(1, 2, 256, 16, requires_grad=True)
        sparse_attention(x, x, x, SparsePattern(64), backend="banded").sum().backward()

        L = 16384
        q, k, v = (torch.randn(1, 2, L, 16, requires_grad=True) for _ in range(3))
        peaks = []
        for pattern in (SparsePattern(64), SparsePattern(64, dilation=3, global_tokens=16, random_blocks=2)):
            peaks.append(peak_bytes(lambda: sparse_attention(q, k, v, pattern, backend="banded").sum().backward()))
            assert torch.isfinite(q.grad).all()
        control = peak_bytes(lambda: torch.ones(L, L // 4).sum())
        print(*peaks, control)
        """
    *banded, control = peak_memory(code, timeout=120)
    one_L_by_L = 16384 * 16384 * 4
    assert control >= 0.9 * one_L_by_L / 4, f"the meter missed a 256 MiB allocation ({control / 2**20:.0f} MiB)"
    for peak in banded:
        assert peak < one_L_by_L / 8, f"banded peaks {[round(p / 2**20) for p in banded]} MiB"


# --------------------------------------------------------------------------------------------
# flex

needs_flex = pytest.mark.skipif(
    flex.flex_attention is None, reason="torch.nn.attention.flex_attention needs torch >= 2.5"
)
FLEX_CASES = [PATTERN_CASES[i] for i in (1, 3, 4, 7, 9, 11)]


@needs_flex
@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize("L, pattern, kv_heads", FLEX_CASES)
def test_flex_forward_matches_reference_on_cpu(L, pattern, kv_heads):
    """On CPU FlexAttention runs forward only (uncompiled), so this checks the block mask."""
    q, k, v = random_qkv(L, kv_heads, requires_grad=False)
    with torch.no_grad():
        out = sparse_attention(q, k, v, pattern, backend="flex")
    assert rel_err(out, sparse_attention(q, k, v, pattern, backend="reference")) < 1e-10


@needs_flex
def test_flex_on_cpu_refuses_inputs_that_need_grad():
    q, k, v = random_qkv(17, HEADS)
    with pytest.raises(NotImplementedError, match="backend='banded'"):
        sparse_attention(q, k, v, SparsePattern(4), backend="flex")


@needs_flex
def test_flex_block_mask_is_built_once_per_shape():
    pattern = SparsePattern(4, global_tokens=1, random_blocks=1, block_size=BLOCK)
    first = flex._block_mask(pattern, 40, torch.device("cpu"))
    assert flex._block_mask(pattern, 40, torch.device("cpu")) is first
    assert flex._block_mask(pattern, 41, torch.device("cpu")) is not first


@pytest.mark.gpu
@needs_flex
@pytest.mark.parametrize("L, pattern, kv_heads", FLEX_CASES)
def test_flex_matches_reference_on_cuda(L, pattern, kv_heads):
    q, k, v = (t.detach().float().cuda().requires_grad_() for t in random_qkv(L, kv_heads))
    results = {}
    for backend in ("reference", "flex"):
        out = sparse_attention(q, k, v, pattern, backend=backend)
        results[backend] = (out, *torch.autograd.grad(out.square().sum(), (q, k, v)))
    for name, actual, expected in zip(("out", "dq", "dk", "dv"), results["flex"], results["reference"]):
        assert rel_err(actual, expected) < 1e-4, (name, rel_err(actual, expected))


# --------------------------------------------------------------------------------------------
# dispatch and arguments


def test_default_backend_on_cpu_is_masked_sdpa_when_short_and_banded_beyond(monkeypatch):
    calls = []
    monkeypatch.delenv(sa.BACKEND_ENV, raising=False)
    monkeypatch.setattr(banded, "sparse_attention_banded", lambda *args: calls.append("banded") or args[0])
    monkeypatch.setattr(masked_sdpa, "sparse_attention_masked_sdpa", lambda *args: calls.append("masked") or args[0])
    longest = masked_sdpa.AUTOMATIC_MAX_LENGTH
    for length in (8, longest, longest + 1):
        q, k, v = random_qkv(length, HEADS, requires_grad=False)
        sparse_attention(q, k, v, SparsePattern(4))
    assert calls == ["masked", "masked", "banded"]
    # Asked for by name, the dense path runs at any length (the length rule is only a preference).
    sparse_attention(q, k, v, SparsePattern(4), backend="masked_sdpa")
    assert calls[-1] == "masked"


def test_environment_variable_forces_a_backend(monkeypatch):
    calls = []
    monkeypatch.setenv(sa.BACKEND_ENV, "reference")
    monkeypatch.setattr(reference, "sparse_attention_reference", lambda *args: calls.append("reference") or args[0])
    q, k, v = random_qkv(8, HEADS, requires_grad=False)
    sparse_attention(q, k, v, SparsePattern(4))
    assert calls == ["reference"]
    monkeypatch.setenv(sa.BACKEND_ENV, "dense")
    with pytest.raises(ValueError, match=f"^{sa.BACKEND_ENV}: .*'dense'.*reference, banded, masked_sdpa, flex"):
        sparse_attention(q, k, v, SparsePattern(4))


def test_unknown_backend_lists_the_valid_ones():
    q, k, v = random_qkv(8, HEADS, requires_grad=False)
    with pytest.raises(ValueError, match="^backend: .*'dense'.*reference, banded, masked_sdpa, flex"):
        sparse_attention(q, k, v, SparsePattern(4), backend="dense")


@pytest.mark.parametrize("backend", ["banded", "masked_sdpa"])
def test_masks_first_built_under_inference_mode_serve_training(backend):
    """The cached masks and tables must be ordinary tensors: evaluating under inference_mode
    first (a validation pass) and training after must work."""
    pattern = SparsePattern(3, dilation=2, global_tokens=1, random_blocks=1, block_size=8, seed=11)
    q, k, v = random_qkv(37, HEADS, dtype=torch.float32)
    with torch.inference_mode():
        sparse_attention(q.detach(), k.detach(), v.detach(), pattern, backend=backend)
    sparse_attention(q, k, v, pattern, backend=backend).sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()


@pytest.mark.parametrize("backend", ["reference", "banded", "masked_sdpa", "flex"])
def test_empty_sequence(backend):
    q = torch.zeros(2, HEADS, 0, 8)
    assert sparse_attention(q, q, q, SparsePattern(4), backend=backend).shape == (2, HEADS, 0, 8)


@pytest.mark.parametrize(
    "shapes, argument",
    [
        (((2, 4, 8), (2, 4, 8), (2, 4, 8)), "q"),
        (((2, 4, 8, 8), (2, 3, 8, 8), (2, 3, 8, 8)), "k"),
        (((2, 4, 8, 8), (2, 2, 9, 8), (2, 2, 9, 8)), "k"),
        (((2, 4, 8, 8), (2, 2, 8, 8), (2, 1, 8, 8)), "v"),
    ],
    ids=["q-3d", "k-heads", "k-length", "v-shape"],
)
def test_bad_shapes_name_the_argument(shapes, argument):
    q, k, v = (torch.zeros(s) for s in shapes)
    with pytest.raises(ValueError, match=f"^{argument}: "):
        sparse_attention(q, k, v, SparsePattern(4))


@pytest.mark.parametrize("backend", ["reference", "banded", "masked_sdpa"])
def test_more_random_blocks_than_exist_is_all_of_them(backend):
    """random_blocks beyond the number of blocks draws every block: the table is no wider than
    the blocks (random_blocks 10^12 allocated nothing of that size) and the output is the same as
    with random_blocks equal to the number of blocks."""
    L = 70  # 5 blocks of 16
    huge, exact = (SparsePattern(4, random_blocks=r, block_size=BLOCK, seed=3) for r in (10**12, 5))
    assert huge.random_key_blocks(L).shape == (5, 5)
    assert torch.equal(huge.random_key_blocks(L), exact.random_key_blocks(L))
    q, k, v = random_qkv(L, HEADS)
    with torch.no_grad():
        assert rel_err(sparse_attention(q, k, v, huge, backend=backend),
                       sparse_attention(q, k, v, exact, backend=backend)) == 0


@pytest.mark.parametrize("huge, capped", [
    ({"window": 4, "dilation": 10**12}, {"window": 4, "dilation": 300}),
    ({"window": 10**12}, {"window": 300}),
    ({"window": 4, "global_tokens": 10**12}, {"window": 4, "global_tokens": 300}),
    ({"window": 4, "random_blocks": 2, "block_size": 10**12}, {"window": 4, "random_blocks": 2, "block_size": 300}),
], ids=["dilation", "window", "global", "block"])
@pytest.mark.parametrize("backend", ["reference", "banded", "masked_sdpa"])
def test_lengths_beyond_the_sequence_act_as_the_sequence(huge, capped, backend):
    """A window, dilation, global span or block longer than L is capped at L before a backend
    sizes anything by it (SparsePattern.within): the rule is the same (dense masks equal), and
    so are the outputs, at L = 300 where the CPU default is the banded backend."""
    L = 300
    assert torch.equal(SparsePattern(**huge).dense_mask(L), SparsePattern(**capped).dense_mask(L))
    assert SparsePattern(**huge).within(L) == SparsePattern(**capped)
    q, k, v = random_qkv(L, HEADS, batch=1)
    with torch.no_grad():
        assert rel_err(sparse_attention(q, k, v, SparsePattern(**huge), backend=backend),
                       sparse_attention(q, k, v, SparsePattern(**capped), backend=backend)) == 0
