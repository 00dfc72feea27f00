"""LSH attention: the bucket rule written out pair by pair, the chunked backend against the dense
reference (outputs and gradients), the hash, memory without an (L, L) tensor, and the mixer's
own checks. Causality and forward/step parity run in the shared mixer-interface tests
(``tests/mixer_cases.py``: cases ``lsh*``).
"""

import math

import pytest
import torch
import torch.nn.functional as F

import hybrids.kernels.lsh as lsh
from hybrids.kernels.lsh import SELF_SCORE, bucket_ranks, lsh_attention, lsh_buckets
from hybrids.mixers import LSHAttention

# (batch, heads, L, head_dim, n_hashes, n_buckets, chunk_size)
CASES = [
    pytest.param(1, 1, 1, 4, 1, 2, 1, id="one-token"),
    pytest.param(2, 3, 37, 8, 3, 4, 4, id="L37-r3-b4-c4"),
    pytest.param(1, 2, 64, 4, 1, 2, 8, id="L64-r1-b2-c8"),
    pytest.param(2, 1, 50, 6, 2, 8, 1, id="chunk1"),
    pytest.param(1, 2, 40, 8, 2, 16, 64, id="chunk-beyond-L"),
]


def inputs(batch, heads, length, head_dim, n_hashes, n_buckets, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, length, head_dim, generator=g, dtype=dtype, requires_grad=True)
    v = torch.randn(batch, heads, length, head_dim, generator=g, dtype=dtype, requires_grad=True)
    rotations = torch.randn(n_hashes, head_dim, n_buckets // 2, generator=g, dtype=dtype)
    buckets = lsh_buckets(F.normalize(q.detach(), dim=-1), rotations)
    return q, v, buckets


def brute_force(q, k, v, buckets, chunk_size, scale):
    """The rule of the kernel's docstring, one (round, query, key) at a time, in float64."""
    batch, heads, length, _ = q.shape
    out = torch.zeros(q.shape, dtype=torch.float64)
    for b in range(batch):
        for h in range(heads):
            for i in range(length):
                partials = []
                for r in range(buckets.shape[2]):
                    bk = buckets[b, h, r].tolist()
                    rank = [sum(bk[j] == bk[t] for j in range(t)) for t in range(length)]
                    lowest = (rank[i] // chunk_size - 1) * chunk_size
                    keys = [j for j in range(i + 1) if bk[j] == bk[i] and rank[j] >= lowest]
                    scores = torch.tensor(
                        [SELF_SCORE if j == i else float(q[b, h, i] @ k[b, h, j]) * scale for j in keys],
                        dtype=torch.float64,
                    )
                    lse = torch.logsumexp(scores, 0)
                    partials.append((lse, (scores - lse).exp() @ v[b, h, keys].double()))
                lses = torch.stack([p[0] for p in partials])
                weights = (lses - torch.logsumexp(lses, 0)).exp()
                out[b, h, i] = sum(w * p[1] for w, p in zip(weights, partials))
    return out


def test_reference_is_the_rule_pair_by_pair():
    q, v, buckets = inputs(2, 2, 23, 4, 2, 4)
    k = F.normalize(q, dim=-1)
    with torch.no_grad():
        ours = lsh_attention(q, k, v, buckets, 3, backend="reference")
        rule = brute_force(q, k, v, buckets, 3, 0.5)
    # 1e-10: scores near SELF_SCORE = -5e4 carry float64 rounding of ~1e-11.
    torch.testing.assert_close(ours, rule, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("batch,heads,length,head_dim,n_hashes,n_buckets,chunk_size", CASES)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)], ids=["f64", "f32"])
def test_chunked_matches_reference(batch, heads, length, head_dim, n_hashes, n_buckets, chunk_size, dtype, tol):
    q, v, buckets = inputs(batch, heads, length, head_dim, n_hashes, n_buckets, dtype)
    k = F.normalize(q, dim=-1)
    grad = torch.randn(q.shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
    results = {}
    for backend in ("reference", "chunked"):
        out = lsh_attention(q, k, v, buckets, chunk_size, backend=backend)
        results[backend] = (out, *torch.autograd.grad(out, (q, v), grad, retain_graph=True))
    for name, ref, got in zip(("output", "dq", "dv"), results["reference"], results["chunked"]):
        torch.testing.assert_close(got, ref, rtol=tol, atol=tol, msg=lambda m: f"{name}: {m}")


def test_bfloat16_computes_in_float32_and_returns_bfloat16():
    q, v, buckets = inputs(1, 2, 40, 8, 2, 4, torch.float32)
    k = F.normalize(q, dim=-1)
    wide = lsh_attention(q, k, v, buckets, 4)
    narrow = lsh_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), buckets, 4)
    assert narrow.dtype == torch.bfloat16
    torch.testing.assert_close(narrow.float(), wide, rtol=0.05, atol=0.05)


def test_a_token_attends_to_itself_only_when_alone():
    # Every token in a bucket of its own: each can only see itself, so the output is v.
    q, v, _ = inputs(1, 1, 6, 4, 1, 2)
    alone = torch.arange(6).view(1, 1, 1, 6)
    torch.testing.assert_close(lsh_attention(q, q, v, alone, 2), v)
    # One bucket, chunk larger than L: token i > 0 attends to 0..i-1 only (its own weight is
    # exp(SELF_SCORE - ...) == 0), token 0 to itself.
    together = torch.zeros(1, 1, 1, 6, dtype=torch.int64)
    out = lsh_attention(q, q, v, together, 8)
    scores = (q @ q.transpose(-1, -2))[0, 0] * 0.5
    for i in range(1, 6):
        expected = scores[i, :i].softmax(0) @ v[0, 0, :i]
        torch.testing.assert_close(out[0, 0, i], expected)
    torch.testing.assert_close(out[0, 0, 0], v[0, 0, 0])


def test_chunks_are_cut_within_each_bucket():
    # One bucket, chunk 2: rank 5 (chunk 2) sees ranks 2..4 and itself, not 0..1.
    q, v, _ = inputs(1, 1, 6, 4, 1, 2)
    out = lsh_attention(q, q, v, torch.zeros(1, 1, 1, 6, dtype=torch.int64), 2)
    scores = (q @ q.transpose(-1, -2))[0, 0, 5, 2:5] * 0.5
    torch.testing.assert_close(out[0, 0, 5], scores.softmax(0) @ v[0, 0, 2:5])


def test_rounds_are_combined_by_their_normalisers():
    # Two rounds with the same buckets are one round (equal outputs, equal weights).
    q, v, buckets = inputs(1, 2, 30, 4, 1, 4)
    once = lsh_attention(q, q, v, buckets, 4)
    twice = lsh_attention(q, q, v, buckets.repeat(1, 1, 2, 1), 4)
    torch.testing.assert_close(twice, once)


def test_buckets_are_angular():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 50, 8, generator=g)
    rotations = torch.randn(4, 8, 5, generator=g)
    buckets = lsh_buckets(x, rotations)
    assert buckets.shape == (2, 3, 4, 50) and buckets.dtype == torch.int64
    assert 0 <= int(buckets.min()) and int(buckets.max()) < 10
    assert torch.equal(lsh_buckets(3.0 * x, rotations), buckets)  # scale-free
    # x and -x fall in opposite buckets of each pair (+/- of the same direction).
    assert torch.equal(lsh_buckets(-x, rotations), (buckets + 5) % 10)
    # Nearby vectors mostly share a bucket; random pairs mostly do not.
    near = lsh_buckets(x + 0.01 * torch.randn(x.shape, generator=g), rotations)
    far = lsh_buckets(torch.randn(x.shape, generator=g), rotations)
    assert (near == buckets).float().mean() > 0.95 and (far == buckets).float().mean() < 0.3


def test_bucket_ranks_count_earlier_tokens_of_the_bucket():
    buckets = torch.tensor([[2, 0, 2, 2, 1, 0]])
    ranks, counts = bucket_ranks(buckets, 3)
    assert ranks.tolist() == [[0, 0, 1, 2, 0, 1]] and counts.tolist() == [[2, 1, 3]]


def test_chunked_never_forms_an_l_by_l_tensor():
    # L = 2^16: an (L, L) float32 tensor would take 16 GiB. The chunked path scores L * 3c.
    length = 1 << 16
    q = torch.randn(1, 1, length, 8, requires_grad=True)
    v = torch.randn(1, 1, length, 8)
    buckets = lsh_buckets(q.detach(), torch.randn(1, 8, 32))
    out = lsh_attention(q, F.normalize(q, dim=-1), v, buckets, 16)
    out.sum().backward()
    assert out.shape == q.shape and torch.isfinite(q.grad).all()


def test_bad_arguments_are_named():
    q, v, buckets = inputs(1, 2, 8, 4, 2, 4)
    with pytest.raises(ValueError, match="chunk_size"):
        lsh_attention(q, q, v, buckets, 0)
    with pytest.raises(TypeError, match="buckets"):
        lsh_attention(q, q, v, buckets.float(), 2)
    with pytest.raises(ValueError, match="buckets"):
        lsh_attention(q, q, v, buckets[..., :5], 2)
    with pytest.raises(ValueError, match="v:"):
        lsh_attention(q, q, v[..., :3], buckets, 2)
    with pytest.raises(ValueError, match="unknown lsh_attention backend"):
        lsh_attention(q, q, v, buckets, 2, backend="dense")
    for kwargs, name in (({"n_buckets": 3}, "n_buckets"), ({"n_hashes": 0}, "n_hashes"),
                         ({"chunk_size": 0}, "chunk_size"), ({"heads": 3}, "heads"),
                         ({"backend": "fast"}, "backend")):
        with pytest.raises(ValueError, match=name):
            LSHAttention(16, **kwargs)


def test_environment_variable_picks_the_backend(monkeypatch):
    q, v, buckets = inputs(1, 1, 16, 4, 1, 2)
    called = []
    monkeypatch.setattr(lsh.reference, "lsh_attention_reference",
                        lambda *a: called.append(1) or torch.zeros_like(a[0]))
    monkeypatch.setenv(lsh.BACKEND_ENV, "reference")
    lsh_attention(q, q, v, buckets, 4)
    assert called


def test_mixer_rotations_are_kept_in_the_checkpoint():
    torch.manual_seed(0)
    a = LSHAttention(16, heads=2, n_buckets=4, chunk_size=4, seed=1)
    b = LSHAttention(16, heads=2, n_buckets=4, chunk_size=4, seed=2)
    assert not torch.equal(a.rotations, b.rotations)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 20, 16)
    torch.testing.assert_close(b(x), a(x))


def test_mixer_backends_agree_and_state_counts_keys_and_values():
    torch.manual_seed(0)
    mixer = LSHAttention(16, heads=2, n_buckets=4, n_hashes=3, chunk_size=2).double()
    x = torch.randn(2, 33, 16, dtype=torch.float64)
    reference = LSHAttention(16, heads=2, n_buckets=4, n_hashes=3, chunk_size=2, backend="reference").double()
    reference.load_state_dict(mixer.state_dict())
    torch.testing.assert_close(mixer(x), reference(x), rtol=1e-12, atol=1e-12)
    assert mixer.state_size(33) == 2 * 16 * 33
    _, state = mixer.prefill(x)
    assert state.buckets.shape == (2, 2, 3, 33) and int(state.counts.sum()) == 2 * 2 * 3 * 33


@pytest.mark.parametrize("backend", ["reference", "chunked"])
def test_a_chunk_longer_than_the_sequence_is_the_rule_with_that_chunk(backend):
    """chunk_size beyond L is capped at L inside lsh_attention (no padding to 10^12 tokens): by
    the rule, any chunk >= L puts every earlier key of a bucket in reach, so the output is the
    rule's with the huge chunk."""
    q, v, buckets = inputs(1, 2, 19, 4, 2, 4)
    k = F.normalize(q, dim=-1)
    with torch.no_grad():
        ours = lsh_attention(q, k, v, buckets, 10**12, backend=backend)
        rule = brute_force(q, k, v, buckets, 10**12, 0.5)
    torch.testing.assert_close(ours, rule, rtol=1e-10, atol=1e-10)
