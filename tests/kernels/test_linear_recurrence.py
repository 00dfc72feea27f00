"""The linear recurrence h[t] = a[t] h[t-1] + x[t]: the C++ backend against the reference loop
(outputs, last state and every gradient), edge lengths, dtypes, errors and dispatch."""

import pytest
import torch

from hybrids.kernels import BackendUnavailable, linear_recurrence
from hybrids.kernels.recurrence import BACKENDS, LINEAR_RECURRENCE
from helpers import relative_rms

needs_cpp = pytest.mark.skipif(
    LINEAR_RECURRENCE.backend("cpu").available("cpu") is not None, reason="no C++ compiler here"
)


def inputs(batch, length, dim, dtype=torch.float64, with_state=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(batch, length, dim, generator=g, dtype=dtype).requires_grad_()  # decays in [0, 1)
    x = torch.randn(batch, length, dim, generator=g, dtype=dtype).requires_grad_()
    h0 = torch.randn(batch, dim, generator=g, dtype=dtype).requires_grad_() if with_state else None
    return a, x, h0


@needs_cpp
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 7, 5), (3, 33, 17), (2, 64, 85)])
def test_cpu_matches_reference_with_gradients(shape, with_state):
    a, x, h0 = inputs(*shape, with_state=with_state)
    weights = torch.randn(*shape, dtype=torch.float64)
    last_weights = torch.randn(shape[0], shape[2], dtype=torch.float64)
    leaves = [t for t in (a, x, h0) if t is not None]
    results = {}
    for backend in ("reference", "cpu"):
        h, last = linear_recurrence(a, x, h0, return_last_state=True, backend=backend)
        loss = (h * weights).sum() + (last * last_weights).sum()
        results[backend] = (h, last, *torch.autograd.grad(loss, leaves))
    for name, got, want in zip(["h", "last", "da", "dx", "dh0"], results["cpu"], results["reference"]):
        assert relative_rms(got, want) < 1e-12, name


@needs_cpp
def test_the_recurrence_itself():
    a = torch.tensor([[[0.5], [0.25], [1.0]]], dtype=torch.float64)
    x = torch.tensor([[[1.0], [2.0], [3.0]]], dtype=torch.float64)
    h0 = torch.tensor([[4.0]], dtype=torch.float64)
    h = linear_recurrence(a, x, h0, backend="cpu")
    assert h.flatten().tolist() == [3.0, 2.75, 5.75]  # 0.5*4+1, 0.25*3+2, 1*2.75+3


@needs_cpp
def test_float32_and_half_inputs():
    a, x, h0 = inputs(2, 40, 9, dtype=torch.float64)
    expected = linear_recurrence(a, x, h0, backend="reference")
    got = linear_recurrence(a.float(), x.float(), h0.float(), backend="cpu")
    assert got.dtype == torch.float32 and relative_rms(got, expected) < 1e-6
    half = linear_recurrence(a.bfloat16(), x.bfloat16(), h0.bfloat16(), backend="cpu")
    assert half.dtype == torch.bfloat16 and relative_rms(half.double(), expected) < 2e-2


def test_empty_sequence_returns_the_initial_state():
    a, x, h0 = inputs(2, 0, 3)
    for backend in [b for b in BACKENDS if LINEAR_RECURRENCE.backend(b).available("cpu") is None]:
        h, last = linear_recurrence(a, x, h0, return_last_state=True, backend=backend)
        assert h.shape == (2, 0, 3) and torch.equal(last, h0)
        _, last = linear_recurrence(a, x, return_last_state=True, backend=backend)
        assert torch.equal(last, torch.zeros(2, 3, dtype=torch.float64))


@needs_cpp
def test_non_contiguous_inputs():
    a, x, h0 = inputs(2, 9, 6)
    at, xt = a.detach().transpose(1, 2).contiguous().transpose(1, 2), x.detach().transpose(1, 2).contiguous().transpose(1, 2)
    assert not at.is_contiguous()
    assert torch.equal(linear_recurrence(at, xt, h0, backend="cpu"), linear_recurrence(a, x, h0, backend="cpu"))


@pytest.mark.parametrize(
    "make, argument",
    [
        (lambda a, x, h0: (a[:, :-1], x, h0), "a"),
        (lambda a, x, h0: (a, x[0], h0), "x"),
        (lambda a, x, h0: (a, x, h0[:, :-1]), "initial_state"),
        (lambda a, x, h0: (a, x.long(), h0), "x"),
    ],
    ids=["a-shape", "x-2d", "state-shape", "x-int"],
)
def test_bad_arguments_name_the_argument(make, argument):
    a, x, h0 = (t.detach() if t is not None else None for t in inputs(2, 5, 4))
    with pytest.raises((ValueError, TypeError), match=f"^{argument}: "):
        linear_recurrence(*make(a, x, h0))


@needs_cpp
def test_dispatch_picks_cpu_and_has_nothing_for_cuda(monkeypatch):
    monkeypatch.delenv(LINEAR_RECURRENCE.env, raising=False)
    assert LINEAR_RECURRENCE.select("cpu", torch.float32) == "cpu"
    with pytest.raises(BackendUnavailable, match="no backend can run on cuda"):
        LINEAR_RECURRENCE.select("cuda", torch.float32)


def test_without_the_compiled_kernel_the_op_falls_back_to_the_reference(monkeypatch):
    from hybrids.kernels import cpp_build

    monkeypatch.delenv(LINEAR_RECURRENCE.env, raising=False)
    monkeypatch.setenv(cpp_build.DISABLE_ENV, "1")
    assert LINEAR_RECURRENCE.select("cpu", torch.float64) == "reference"
    a, x, h0 = inputs(2, 6, 3)
    assert linear_recurrence(a, x, h0).shape == (2, 6, 3)


def test_without_the_compiled_kernel_the_rglru_falls_back_to_the_scan(monkeypatch):
    """The reference loop is slower than the selective scan's pure-PyTorch path, so the RG-LRU
    takes the scan unless the environment asks for the recurrence by name."""
    from hybrids.kernels import cpp_build
    from hybrids.mixers import RGLRU

    monkeypatch.delenv(LINEAR_RECURRENCE.env, raising=False)
    monkeypatch.setenv(cpp_build.DISABLE_ENV, "1")
    assert not RGLRU(8)._uses_recurrence(torch.device("cpu"), torch.float32)
    assert RGLRU(8)(torch.randn(2, 5, 8)).shape == (2, 5, 8)
    monkeypatch.setenv(LINEAR_RECURRENCE.env, "reference")
    assert RGLRU(8)._uses_recurrence(torch.device("cpu"), torch.float32)
    monkeypatch.setenv(LINEAR_RECURRENCE.env, "cpu")
    with pytest.raises(BackendUnavailable, match="disabled"):
        RGLRU(8)(torch.randn(2, 5, 8))
