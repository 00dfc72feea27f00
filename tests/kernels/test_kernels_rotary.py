import math

import torch

from hybrids.kernels import apply_rotary, rotary_cos_sin


def test_rotary_is_a_rotation():
    x = torch.randn(2, 3, 10, 8, dtype=torch.float64)
    cos, sin = rotary_cos_sin(torch.arange(10), 8, dtype=torch.float64)
    y = apply_rotary(x, cos, sin)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))


def test_rotary_scores_depend_on_relative_position_only():
    q, k = torch.randn(8, dtype=torch.float64), torch.randn(8, dtype=torch.float64)

    def score(i, j):
        cos, sin = rotary_cos_sin(torch.tensor([i, j]), 8, dtype=torch.float64)
        rq = apply_rotary(q[None], cos[:1], sin[:1])
        rk = apply_rotary(k[None], cos[1:], sin[1:])
        return float((rq * rk).sum())

    assert math.isclose(score(3, 1), score(10, 8), rel_tol=1e-12)
    assert not math.isclose(score(3, 1), score(3, 2), rel_tol=1e-6)


def test_partial_rotary_leaves_the_rest():
    x = torch.randn(4, 10)
    cos, sin = rotary_cos_sin(torch.arange(4), 4)
    y = apply_rotary(x, cos, sin)
    torch.testing.assert_close(y[:, 4:], x[:, 4:])
    assert not torch.allclose(y[1:, :4], x[1:, :4])
