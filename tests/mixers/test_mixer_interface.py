"""The mixer contract of docs/design.md, checked once for every mixer class and setting."""

import importlib
import inspect
import pkgutil

import pytest
import torch

import hybrids.mixers
from hybrids.mixers import Mixer, state_elements
from mixer_cases import D_MODEL, MIXER_CASES

BATCH, LENGTH = 2, 13


def make(case: str, dtype=torch.float64) -> torch.nn.Module:
    cls, kwargs = MIXER_CASES[case]
    torch.manual_seed(0)
    return cls(D_MODEL, **kwargs).to(dtype).eval()


def run_steps(mixer, x):
    """Feed x (B, L, D) one token at a time: outputs (B, L, D) and the final state."""
    state = mixer.init_state(x.shape[0])
    outputs = []
    for t in range(x.shape[1]):
        y, state = mixer.step(x[:, t], state)
        outputs.append(y)
    return (torch.stack(outputs, dim=1) if outputs else torch.zeros_like(x)), state


def concrete_mixer_classes() -> set[type]:
    """Every non-abstract Mixer subclass defined in any module of hybrids.mixers, exported or not."""
    found = set()
    for info in pkgutil.iter_modules(hybrids.mixers.__path__, "hybrids.mixers."):
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, Mixer) and obj.__module__ == module.__name__ and not inspect.isabstract(obj) \
                    and not obj.__name__.startswith("_"):
                found.add(obj)
    return found


def test_every_mixer_class_has_cases():
    """The guard: a mixer added without a case in tests/mixer_cases.py fails here, so every mixer
    gets the whole contract below (causality, forward == step, prefill, state size...)."""
    mixers = concrete_mixer_classes()
    assert {"Mamba", "Attention", "S4D"} <= {c.__name__ for c in mixers}
    covered = {cls for cls, _ in MIXER_CASES.values()}
    assert mixers <= covered, f"mixers without interface test cases (add them to tests/mixer_cases.py): {mixers - covered}"


@pytest.mark.parametrize("case", MIXER_CASES)
def test_shape_and_dtype(case):
    mixer = make(case, torch.float32)
    x = torch.randn(BATCH, LENGTH, D_MODEL)
    y = mixer(x)
    assert y.shape == x.shape and y.dtype == x.dtype


@pytest.mark.parametrize("case", MIXER_CASES)
@pytest.mark.parametrize("t", [0, 5, LENGTH - 1])
def test_causality(case, t):
    """Changing tokens from position t on leaves outputs before t unchanged (and changes t)."""
    mixer = make(case)
    x = torch.randn(BATCH, LENGTH, D_MODEL, dtype=torch.float64)
    changed = x.clone()
    changed[:, t:] = torch.randn_like(changed[:, t:])
    y, y_changed = mixer(x), mixer(changed)
    torch.testing.assert_close(y_changed[:, :t], y[:, :t], rtol=0, atol=1e-12)
    assert not torch.allclose(y_changed[:, t], y[:, t]), "output at t ignores the input at t"


@pytest.mark.parametrize("case", MIXER_CASES)
def test_gradient_causality(case):
    """d y[:, t] / d x[:, s] vanishes for every s > t (checked through the sum of early outputs).

    FFT convolutions leave round-off (~1e-16 relative) where exact zeros belong, hence the bound.
    """
    mixer = make(case)
    x = torch.randn(BATCH, LENGTH, D_MODEL, dtype=torch.float64, requires_grad=True)
    t = LENGTH // 2
    mixer(x)[:, : t + 1].sum().backward()
    scale = x.grad[:, : t + 1].abs().max()
    assert x.grad[:, t + 1 :].abs().max() <= 1e-12 * scale
    assert torch.count_nonzero(x.grad[:, t]) > 0


@pytest.mark.parametrize("case", MIXER_CASES)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_forward_matches_step(case, dtype, tol):
    mixer = make(case, dtype)
    x = torch.randn(BATCH, LENGTH, D_MODEL, dtype=dtype)
    with torch.no_grad():
        parallel = mixer(x)
        recurrent, _ = run_steps(mixer, x)
    torch.testing.assert_close(recurrent, parallel, rtol=tol, atol=tol)


@pytest.mark.parametrize("case", MIXER_CASES)
@pytest.mark.parametrize("length", [0, 1, LENGTH])
def test_state_size_matches_allocated_state(case, length):
    mixer = make(case)
    x = torch.randn(BATCH, length, D_MODEL, dtype=torch.float64)
    with torch.no_grad():
        _, state = run_steps(mixer, x)
    assert state_elements(state) == BATCH * mixer.state_size(length)


@pytest.mark.parametrize("case", MIXER_CASES)
def test_state_follows_parameters_dtype(case):
    mixer = make(case, torch.float64)
    state = mixer.init_state(BATCH)
    tensors = [v for v in state.values() if isinstance(v, torch.Tensor) and (v.is_floating_point() or v.is_complex())]
    assert tensors and all(v.real.dtype == torch.float64 for v in tensors)


@pytest.mark.parametrize("case", MIXER_CASES)
@pytest.mark.parametrize("shape", [(2, 0), (0, 5), (0, 0)], ids=["L0", "batch0", "both0"])
def test_empty_inputs_give_empty_outputs(case, shape):
    """L = 0 or batch 0: forward, backward and step return empty results instead of crashing."""
    mixer = make(case, torch.float32)
    batch, length = shape
    x = torch.randn(batch, length, D_MODEL, requires_grad=True)
    y = mixer(x)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad.shape == x.shape
    y_t, state = mixer.step(torch.randn(batch, D_MODEL), mixer.init_state(batch))
    assert y_t.shape == (batch, D_MODEL)
    assert state_elements(state) == batch * mixer.state_size(1)


@pytest.mark.parametrize("case", MIXER_CASES)
def test_bad_inputs_name_the_argument(case):
    mixer = make(case, torch.float32)
    with pytest.raises(TypeError, match=r"^x: expected a floating-point tensor"):
        mixer(torch.ones(2, 5, D_MODEL, dtype=torch.long))
    with pytest.raises(ValueError, match=rf"^x: expected \(batch, L, d_model\) with d_model={D_MODEL}, got shape \(2, 5, {D_MODEL + 1}\)"):
        mixer(torch.randn(2, 5, D_MODEL + 1))
    with pytest.raises(ValueError, match=r"^x: expected \(batch, L, d_model\)"):
        mixer(torch.randn(5, D_MODEL))
    with pytest.raises(ValueError, match=r"^x: expected \(batch, d_model\)"):
        mixer.step(torch.randn(2, 1, D_MODEL), mixer.init_state(2))


def steps_from(mixer, x, state):
    """Feed x (B, L, D) one token at a time from ``state``: outputs (B, L, D)."""
    outputs = []
    for t in range(x.shape[1]):
        y, state = mixer.step(x[:, t], state)
        outputs.append(y)
    return torch.stack(outputs, dim=1) if outputs else torch.zeros_like(x)


@pytest.mark.parametrize("case", MIXER_CASES)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_prefill_matches_forward_and_steps_continue_from_its_state(case, dtype, tol):
    """``prefill`` of a prompt gives forward's outputs on it, and stepping on from its state
    gives forward's outputs on the rest (the state is the one stepping would have reached)."""
    mixer = make(case, dtype)
    x = torch.randn(BATCH, LENGTH, D_MODEL, dtype=dtype)
    k = LENGTH // 2 + 1
    with torch.no_grad():
        full = mixer(x)
        y, state = mixer.prefill(x[:, :k])
        rest = steps_from(mixer, x[:, k:], state)
    torch.testing.assert_close(y, full[:, :k], rtol=tol, atol=tol)
    torch.testing.assert_close(rest, full[:, k:], rtol=tol, atol=tol)


@pytest.mark.parametrize("case", MIXER_CASES)
def test_chunked_prefill_equals_one_prefill(case):
    """A prompt prefilled in pieces, each continuing from the state of the one before, gives the
    outputs of one prefill of the whole, and a state that continues the same."""
    mixer = make(case)
    x = torch.randn(BATCH, LENGTH, D_MODEL, dtype=torch.float64)
    after = torch.randn(BATCH, 3, D_MODEL, dtype=torch.float64)
    with torch.no_grad():
        whole, whole_state = mixer.prefill(x)
        outputs, state = [], None
        for start, stop in ((0, 1), (1, 6), (6, LENGTH)):
            y, state = mixer.prefill(x[:, start:stop], state)
            outputs.append(y)
        continued, continued_whole = steps_from(mixer, after, state), steps_from(mixer, after, whole_state)
    torch.testing.assert_close(torch.cat(outputs, dim=1), whole, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(continued, continued_whole, rtol=1e-10, atol=1e-10)
