"""Parallel prefill of the recurrent mixers (S4, S4D, Mamba, RG-LRU): ``prefill`` then ``step``
continues exactly as ``forward``, chunked prefill equals one call, and the state is ``step``'s.

The shared contract of every mixer (causality, forward vs step, state size) is in
test_mixer_interface.py; this file checks that these four prefill through their parallel
kernels with the kernels' initial and final states, never by stepping.
"""

import copy

import pytest
import torch

import hybrids.mixers.mamba as mamba_module
from hybrids.mixers import RGLRU, S4, S4D, Mamba, Mixer, state_elements
from helpers import relative_rms
from mixer_cases import D_MODEL, MIXER_CASES

RECURRENT = (S4, S4D, Mamba, RGLRU)
BATCH, LENGTH = 2, 21
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}

# The shared settings of the four classes, plus measures, ranks, inits, conv widths and scan
# backends they do not cover.
CASES = {name: case for name, case in MIXER_CASES.items() if case[0] in RECURRENT}
CASES |= {
    "s4-lagt": (S4, {"d_state": 8, "measure": "lagt"}),
    "s4-legs-rank3-lmax64": (S4, {"d_state": 6, "rank": 3, "l_max": 64}),  # l_max above the length
    "s4d-inv": (S4D, {"d_state": 8, "init": "inv"}),
    "s4d-real-bilinear": (S4D, {"d_state": 4, "init": "real", "discretization": "bilinear"}),
    "mamba-conv1-torch-scan": (Mamba, {"d_state": 2, "d_conv": 1, "conv_bias": False, "scan_backend": "torch"}),
    "rglru-conv1-torch-scan": (RGLRU, {"d_rnn": 8, "d_conv": 1, "scan_backend": "torch"}),
}
# Settings whose forward and step already differ by more than 1e-5 in float32 (ill-conditioned
# dense powers): checked in float64 only.
FLOAT64_ONLY = {
    "s4-fout-rank2": (S4, {"d_state": 8, "measure": "fout", "rank": 2}),
    "s4-fourier2": (S4, {"d_state": 10, "measure": "fourier2"}),
}
# Longer than the kernels' chunk of 256 (Vandermonde tables, Krylov chunks, scan segments).
LONG = {
    "s4-legs": (S4, {"d_state": 4}),
    "s4d-legs": (S4D, {"d_state": 4}),
    "mamba": (Mamba, {"d_state": 4, "expand": 1}),
    "rglru": (RGLRU, {"d_rnn": 8}),
}


def make(cls, kwargs, dtype=torch.float64) -> Mixer:
    torch.manual_seed(0)
    return cls(D_MODEL, **kwargs).to(dtype).eval()


def run_steps(mixer, x, state=None):
    """Feed x (B, L, D) one token at a time from ``state``: outputs (B, L, D) and the state."""
    state = mixer.init_state(x.shape[0]) if state is None else state
    outputs = []
    for t in range(x.shape[1]):
        y, state = mixer.step(x[:, t], state)
        outputs.append(y)
    return (torch.stack(outputs, dim=1) if outputs else torch.zeros_like(x)), state


def assert_states_close(got: dict, expected: dict, tol: float) -> None:
    assert got.keys() == expected.keys()
    for key in expected:
        if isinstance(expected[key], torch.Tensor):
            assert relative_rms(got[key], expected[key]) < tol, key
        else:  # a count (the tokens seen, where a mixer keeps one)
            assert got[key] == expected[key], key


def prefill_then_step_matches_forward(cls, kwargs, dtype, length, prompt_lengths):
    mixer = make(cls, kwargs, dtype)
    x = torch.randn(BATCH, length, D_MODEL, dtype=dtype)
    tol = TOLERANCE[dtype]
    with torch.no_grad():
        whole = mixer(x)  # first: S4 with l_max None attunes its kernel to the whole length
        for L0 in prompt_lengths:
            y_prompt, state = mixer.prefill(x[:, :L0])
            y_rest, _ = run_steps(mixer, x[:, L0:], state)
            torch.testing.assert_close(torch.cat((y_prompt, y_rest), 1), whole, rtol=tol, atol=tol, msg=f"L0={L0}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", CASES)
def test_prefill_then_step_equals_forward(case, dtype):
    prefill_then_step_matches_forward(*CASES[case], dtype, LENGTH, (0, 1, 6, 15, LENGTH))


@pytest.mark.parametrize("case", FLOAT64_ONLY)
def test_prefill_then_step_equals_forward_float64_only(case):
    prefill_then_step_matches_forward(*FLOAT64_ONLY[case], torch.float64, LENGTH, (0, 1, 6, 15, LENGTH))


@pytest.mark.parametrize("case", LONG)
def test_long_prefill_then_step_equals_forward(case):
    prefill_then_step_matches_forward(*LONG[case], torch.float64, 300, (257, 300))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", CASES)
def test_chunked_prefill_equals_forward_and_ends_in_steps_state(case, dtype):
    """Two or three prefills, each from the last one's state (an empty chunk among them), give
    forward's outputs and the state that stepping through the whole reaches."""
    mixer = make(*CASES[case], dtype)
    x = torch.randn(BATCH, LENGTH, D_MODEL, dtype=dtype)
    tol = TOLERANCE[dtype]
    with torch.no_grad():
        whole = mixer(x)
        _, stepped = run_steps(mixer, x)
        for sizes in [(8, 13), (1, 0, 20), (5, 9, 7)]:
            state, outputs, start = None, [], 0
            for size in sizes:
                y, state = mixer.prefill(x[:, start : start + size], state)
                outputs.append(y)
                start += size
            torch.testing.assert_close(torch.cat(outputs, 1), whole, rtol=tol, atol=tol, msg=str(sizes))
            assert_states_close(state, stepped, tol)


@pytest.mark.parametrize("case", CASES)
def test_prefill_does_not_step(case, monkeypatch):
    mixer = make(*CASES[case])

    def no_step(*args, **kwargs):
        raise AssertionError("prefill stepped through the prompt")

    monkeypatch.setattr(mixer, "step", no_step)
    x = torch.randn(BATCH, LENGTH, D_MODEL, dtype=torch.float64)
    with torch.no_grad():
        _, state = mixer.prefill(x[:, :12])
        mixer.prefill(x[:, 12:], state)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=["f64", "f32", "bf16"])
@pytest.mark.parametrize("case", CASES)
def test_prefill_state_has_init_states_layout(case, dtype):
    """Same keys, shapes and dtypes as init_state's, the allocated size state_size counts, and
    tensors of their own (not views that keep the prompt's activations alive)."""
    mixer = make(*CASES[case], dtype)
    x = torch.randn(BATCH, 7, D_MODEL, dtype=dtype)
    empty = mixer.init_state(BATCH)
    with torch.no_grad():
        _, state = mixer.prefill(x)
        _, continued = mixer.prefill(x, state)
    for s, seen in ((state, 7), (continued, 14)):
        assert s.keys() == empty.keys()
        for key, value in s.items():
            if not isinstance(value, torch.Tensor):
                assert key == "position" and value == seen and empty[key] == 0, key
                continue
            assert (value.shape, value.dtype, value.device) == (empty[key].shape, empty[key].dtype, empty[key].device), key
            assert value.untyped_storage().nbytes() == value.numel() * value.element_size(), key
        assert state_elements(s) == BATCH * mixer.state_size(7) == state_elements(empty)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("shape", [(BATCH, 0), (0, 5), (0, 0)], ids=["L0", "batch0", "both0"])
def test_empty_prefill(case, shape):
    """Batch 0 or L = 0: empty outputs and init_state's layout; an empty chunk keeps the state."""
    mixer = make(*CASES[case], torch.float32)
    batch, length = shape
    with torch.no_grad():
        y, state = mixer.prefill(torch.randn(batch, length, D_MODEL))
        assert y.shape == (batch, length, D_MODEL)
        empty = mixer.init_state(batch)
        layout = lambda st: {k: (v.shape, v.dtype) if isinstance(v, torch.Tensor) else v for k, v in st.items()}  # noqa: E731
        assert layout(state) == {**layout(empty), **({"position": length} if "position" in empty else {})}
        assert state_elements(state) == batch * mixer.state_size(length)
        _, before = mixer.prefill(torch.randn(batch, 6, D_MODEL))
        y, after = mixer.prefill(torch.randn(batch, 0, D_MODEL), before)
    assert y.shape == (batch, 0, D_MODEL)
    assert_states_close(after, before, 1e-7)


def test_s4_prefill_longer_than_l_max_grows_the_kernel():
    """A prompt longer than l_max doubles the kernel length (warning once, C unchanged), as
    forward does, and prefill + step still give what stepping the untouched mixer gives; so does
    a chunk longer than the length the first prefill attuned the kernel to."""
    x = torch.randn(BATCH, 45, D_MODEL, dtype=torch.float64)
    for l_max in (8, None):
        mixer = make(S4, {"d_state": 8, "l_max": l_max})
        untouched = copy.deepcopy(mixer)
        with torch.no_grad():
            stepped, _ = run_steps(untouched, x)
            if l_max is None:
                y1, state = mixer.prefill(x[:, :3])  # attunes C~ to the first input's length
                assert int(mixer.l_max) == 3
                y2, state = mixer.prefill(x[:, 3:30], state)  # 27 > 3: doubled to 48
                assert int(mixer.l_max) == 48
            else:
                with pytest.warns(UserWarning, match="doubling the kernel length to 32"):
                    y1, state = mixer.prefill(x[:, :30])
                assert int(mixer.l_max) == 32
                y2 = x[:, :0]
            y3, _ = run_steps(mixer, x[:, 30:], state)  # step's recurrence rebuilt for the new length
            prefilled = torch.cat((y1, y2, y3), 1)
            whole = mixer(x)
        torch.testing.assert_close(prefilled, stepped, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(whole, stepped, rtol=1e-10, atol=1e-10)


def test_mamba_prefill_takes_the_unfused_path_where_forward_takes_the_fused_block(monkeypatch):
    """mamba_ssm's fused block returns no state: prefill runs our kernels even where forward
    would hand the block to it."""

    def fused(*args, **kwargs):
        raise AssertionError("the fused block ran")

    monkeypatch.setattr(mamba_module, "_mamba_inner_fn", lambda: fused)
    monkeypatch.setattr(mamba_module, "_FUSED_DEVICES", ("cuda", "cpu"))
    mixer = make(Mamba, {"d_state": 4}, torch.float32)
    assert mixer.fused_path_unavailable("cpu", torch.float32) is None
    x = torch.randn(BATCH, 9, D_MODEL)
    with pytest.raises(AssertionError, match="the fused block ran"):
        mixer(x)
    with torch.no_grad():
        y, state = mixer.prefill(x)
        monkeypatch.setattr(mamba_module, "_FUSED_DEVICES", ("cuda",))
        torch.testing.assert_close(y, mixer(x), rtol=1e-5, atol=1e-5)
        assert_states_close(state, run_steps(mixer, x)[1], 1e-5)


def test_s4_inference_cache_follows_the_parameters():
    """Without gradients S4 reuses its kernel and dense system per parameter version: the cached
    path equals the uncached one, and an in-place parameter update (an optimiser step) is seen."""
    torch.manual_seed(0)
    m = S4(8, d_state=8).double().eval()
    x = torch.randn(2, 40, 8, dtype=torch.float64)
    for _ in range(2):
        with torch.no_grad():
            cached_y, cached_state = m.prefill(x)
        y, state = m.prefill(x)  # grad mode: computed afresh
        torch.testing.assert_close(cached_y, y.detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(cached_state["x"], state["x"].detach(), rtol=1e-12, atol=1e-12)
        with torch.no_grad():
            m.log_dt.add_(0.3)  # the next round must not reuse the old kernel
