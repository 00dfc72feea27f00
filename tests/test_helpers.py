"""The shared test helpers measure what they claim."""

import torch

from helpers import relative_rms


def test_relative_rms_scales_and_counts_imaginary_parts():
    ref = torch.tensor([3.0, 4.0], dtype=torch.float64)
    assert relative_rms(ref * 1.1, ref) == pytest_approx(0.1)
    z = torch.tensor([1 + 1j, 1 - 1j])
    assert relative_rms(z.conj(), z) == pytest_approx(2 ** 0.5)  # only the imaginary parts differ
    assert relative_rms(torch.zeros(0), torch.zeros(0)) == 0.0
    assert relative_rms(torch.tensor([1e-3], dtype=torch.float64), torch.tensor([0.0]), floor=1.0) == pytest_approx(1e-3)


def pytest_approx(value):
    import pytest

    return pytest.approx(value, rel=1e-12)
