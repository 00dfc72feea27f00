"""Linear attention: the "chunk" and "cpu" (C++) backends against the reference (outputs, final state, every
gradient) for all three forms of the decay, with and without an initial state, at odd lengths
and chunk sizes that do not divide them; the reference against an independent dense (L, L)
formulation; the decode step against the reference; very negative decays; float32; argument
errors; dispatch.

Case ids read ``B2-H3-L33-K5-V4-C16``: batch, heads, length, key and value head dims, chunk size.
"""

import pytest
import torch
import torch.nn.functional as F

import hybrids.kernels as kernels
import hybrids.kernels.linear as linear
import hybrids.kernels.linear.chunk as chunk_module
import hybrids.kernels.linear.reference as reference_module
from hybrids.kernels.linear import LINEAR_ATTENTION, linear_attention, linear_attention_step
from hybrids.kernels.linear.chunk import linear_attention_chunk
from hybrids.kernels.linear.reference import linear_attention_reference
from helpers import relative_rms
from hybrids.kernels import cpp_build

# The C++ recurrence needs a compiler (HYBRIDS_DISABLE_CPP=1, or none installed: skipped).
NO_CPP = cpp_build.unavailable_reason("linear_attention")
CPU = pytest.param("cpu", marks=pytest.mark.skipif(NO_CPP is not None, reason=f"no C++ build: {NO_CPP}"))
needs_cpp = pytest.mark.skipif(NO_CPP is not None, reason=f"no C++ build: {NO_CPP}")

SHAPES = [  # (batch, heads, L, K, V, chunk size)
    (1, 1, 1, 3, 2, 16),
    (2, 2, 7, 4, 3, 4),
    (2, 3, 33, 5, 4, 16),
    (1, 2, 100, 8, 6, 64),
    (1, 1, 64, 4, 4, 16),
]
IDS = [f"B{b}-H{h}-L{l}-K{k}-V{v}-C{c}" for b, h, l, k, v, c in SHAPES]
DECAYS = ["none", "scalar", "vector"]


def make_inputs(batch, heads, length, dk, dv, decay, initial_state=False, dtype=torch.float64, seed=0):
    """q, k, v, g (a log-decay in (-inf, 0), or None) and optionally an initial state, requiring grad."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    inputs = {
        "q": rand(batch, heads, length, dk), "k": rand(batch, heads, length, dk), "v": rand(batch, heads, length, dv),
    }
    if decay != "none":
        shape = (batch, heads, length) + ((dk,) if decay == "vector" else ())
        inputs["g"] = F.logsigmoid(rand(*shape) + 1.5)
    if initial_state:
        inputs["initial_state"] = rand(batch, heads, dk, dv)
    return {name: x.to(dtype).requires_grad_() for name, x in inputs.items()}


def run(fn, inputs, **kwargs):
    """Output, final state and the gradients of every input under a loss touching both."""
    for x in inputs.values():
        x.grad = None
    o, state = fn(**inputs, output_final_state=True, **kwargs)
    (o.sin().sum() + (state**2).sum()).backward()
    return o, state, {name: x.grad for name, x in inputs.items()}


def errors_against_reference(inputs, fn, **kwargs):
    o, state, grads = run(fn, inputs, **kwargs)
    ref_o, ref_state, ref_grads = run(linear_attention_reference, inputs)
    assert o.dtype == ref_o.dtype and o.shape == ref_o.shape and state.shape == ref_state.shape
    errors = {"o": relative_rms(o, ref_o), "final_state": relative_rms(state, ref_state)}
    # The floor holds a gradient that is exactly zero (dg at L = 1 from a zero state) to an absolute error.
    errors.update({f"d{name}": relative_rms(grads[name], ref_grads[name], floor=1e-8) for name in ref_grads})
    return errors


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
@pytest.mark.parametrize("decay", DECAYS)
@pytest.mark.parametrize("initial_state", [False, True], ids=["zero-state", "initial-state"])
def test_chunk_matches_reference(shape, decay, initial_state):
    *dims, size = shape
    inputs = make_inputs(*dims, decay, initial_state)
    errors = errors_against_reference(inputs, linear_attention_chunk, chunk_size=size)
    assert max(errors.values()) < 1e-10, errors


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
@pytest.mark.parametrize("decay", DECAYS)
@pytest.mark.parametrize("initial_state", [False, True], ids=["zero-state", "initial-state"])
@needs_cpp
def test_cpu_recurrence_matches_reference(shape, decay, initial_state):
    from hybrids.kernels.linear.cpp import linear_attention_cpu

    *dims, _ = shape
    inputs = make_inputs(*dims, decay, initial_state)
    errors = errors_against_reference(inputs, linear_attention_cpu)
    assert max(errors.values()) < 1e-10, errors


@pytest.mark.parametrize("decay", DECAYS)
def test_public_function_defaults_to_chunk_of_64_and_k_to_the_minus_half(decay, monkeypatch):
    monkeypatch.delenv(LINEAR_ATTENTION.env, raising=False)
    inputs = make_inputs(2, 2, 70, 4, 5, decay, initial_state=True)
    errors = errors_against_reference(inputs, linear_attention)
    assert max(errors.values()) < 1e-10, errors


@pytest.mark.parametrize("decay", ["scalar", "vector"])
def test_reference_matches_dense_formulation(decay):
    """o_t = scale * (sum_{s<=t} (q_t . (D[t, s] * k_s)) v_s + q_t . (P_t * S_0)), with the decay
    products D[t, s] = prod_{s<r<=t} exp(g_r) and P_t = prod_{r<=t} exp(g_r) written out."""
    batch, heads, length, dk, dv, scale = 1, 2, 6, 3, 2, 0.7
    inputs = {name: x.detach() for name, x in make_inputs(batch, heads, length, dk, dv, decay, True).items()}
    q, k, v, s0 = inputs["q"], inputs["k"], inputs["v"], inputs["initial_state"]
    a = inputs["g"].exp()
    a = a[..., None].expand(batch, heads, length, dk) if decay == "scalar" else a  # per key dim
    ones = torch.ones(batch, heads, dk, dtype=torch.float64)
    D = torch.zeros(batch, heads, length, length, dk, dtype=torch.float64)
    for t in range(length):
        for s in range(t + 1):
            D[:, :, t, s] = a[:, :, s + 1 : t + 1].prod(dim=2) if t > s else ones
    P = torch.stack([a[:, :, : t + 1].prod(dim=2) for t in range(length)], dim=2)  # (batch, heads, L, K)
    o = torch.einsum("bhtk,bhtsk,bhsk,bhsv->bhtv", q, D, k, v) + torch.einsum("bhtk,bhkv->bhtv", q * P, s0)
    final = P[:, :, -1, :, None] * s0 + torch.einsum("bhsk,bhsv->bhkv", D[:, :, -1] * k, v)
    ref_o, ref_final = linear_attention_reference(q, k, v, inputs["g"], scale, s0, output_final_state=True)
    assert relative_rms(ref_o, scale * o) < 1e-13
    assert relative_rms(ref_final, final) < 1e-13


@pytest.mark.parametrize("decay", DECAYS)
@pytest.mark.parametrize("state_dtype", [torch.float64, torch.float32])
def test_step_token_by_token_matches_reference(decay, state_dtype):
    inputs = {name: x.detach() for name, x in make_inputs(2, 3, 9, 4, 5, decay, True).items()}
    ref_o, ref_state = linear_attention_reference(**inputs, scale=0.5, output_final_state=True)
    state = inputs["initial_state"].to(state_dtype).clone()
    g = inputs.get("g")
    outs = [
        linear_attention_step(
            inputs["q"][:, :, t], inputs["k"][:, :, t], inputs["v"][:, :, t], None if g is None else g[:, :, t],
            state, scale=0.5,
        )
        for t in range(9)
    ]
    tol = 1e-13 if state_dtype == torch.float64 else 1e-6
    assert state.dtype == state_dtype
    assert relative_rms(torch.stack(outs, dim=2), ref_o) < tol
    assert relative_rms(state, ref_state) < tol


@pytest.mark.parametrize("decay", ["scalar", "vector"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_very_negative_decays_stay_finite(decay, dtype):
    """Log-decays of -50 (-1000 at a few steps): cumulative sums reach -1600 within a chunk, where
    exp(-cumsum) would overflow even in float64; outputs and gradients must stay finite, and
    agree with the reference."""
    inputs = make_inputs(2, 2, 40, 4, 3, decay, initial_state=True, dtype=torch.float64)
    with torch.no_grad():
        g = inputs["g"]
        g[:, :, 3:30] = -50.0
        g[:, :, 11] = -1000.0
        g[:, 1, 33] = -1000.0
    inputs = {name: x.detach().to(dtype).requires_grad_() for name, x in inputs.items()}
    o, state, grads = run(linear_attention_chunk, inputs, chunk_size=32)
    for name, t in {"o": o, "final_state": state, **{f"d{n}": x for n, x in grads.items()}}.items():
        assert torch.isfinite(t).all(), name
    if dtype == torch.float64:
        errors = errors_against_reference(inputs, linear_attention_chunk, chunk_size=32)
        assert max(errors.values()) < 1e-10, errors


@pytest.mark.parametrize("decay", DECAYS)
def test_float32_agrees_with_float64(decay):
    inputs64 = make_inputs(2, 2, 100, 8, 8, decay, initial_state=True)
    inputs32 = {name: x.detach().float().requires_grad_() for name, x in inputs64.items()}
    o, state, grads = run(linear_attention, inputs32)
    ref_o, ref_state, ref_grads = run(linear_attention_reference, inputs64)
    assert o.dtype == torch.float32 and state.dtype == torch.float32
    assert grads["q"].dtype == torch.float32
    errors = {"o": relative_rms(o, ref_o), "final_state": relative_rms(state, ref_state)}
    errors.update({f"d{name}": relative_rms(grads[name], ref_grads[name]) for name in grads})
    assert max(errors.values()) < 1e-5, errors


@pytest.mark.parametrize("backend", ["chunk", CPU, "reference"])
def test_split_sequence_with_state_passed_along_equals_whole(backend):
    inputs = {name: x.detach() for name, x in make_inputs(1, 2, 50, 4, 3, "vector", True).items()}
    whole, final = linear_attention(**inputs, output_final_state=True, backend=backend)
    first = {name: x[:, :, :21] if x.ndim == 4 and name != "initial_state" else x for name, x in inputs.items()}
    rest = {name: x[:, :, 21:] for name, x in inputs.items() if name != "initial_state"}
    o1, mid = linear_attention(**first, output_final_state=True, backend=backend)
    o2, end = linear_attention(**rest, initial_state=mid, output_final_state=True, backend=backend)
    assert relative_rms(torch.cat([o1, o2], dim=2), whole) < 1e-13
    assert relative_rms(end, final) < 1e-13


@pytest.mark.parametrize("backend", ["chunk", CPU, "reference"])
@pytest.mark.parametrize("initial_state", [False, True], ids=["zero-state", "initial-state"])
def test_empty_sequence(backend, initial_state):
    inputs = {name: x.detach() for name, x in make_inputs(2, 3, 0, 4, 5, "vector", initial_state).items()}
    o, state = linear_attention(**inputs, output_final_state=True, backend=backend)
    assert o.shape == (2, 3, 0, 5) and state.shape == (2, 3, 4, 5)
    expected = inputs["initial_state"] if initial_state else torch.zeros(2, 3, 4, 5, dtype=torch.float64)
    assert torch.equal(state, expected)


def test_without_final_state_returns_the_output_alone():
    inputs = {name: x.detach() for name, x in make_inputs(1, 1, 5, 2, 2, "scalar").items()}
    for backend in ("chunk", "reference") + (() if NO_CPP else ("cpu",)):
        o = linear_attention(**inputs, backend=backend)
        assert isinstance(o, torch.Tensor) and o.shape == (1, 1, 5, 2)


def _bad(**changes):
    base = {name: x.detach() for name, x in make_inputs(2, 2, 5, 3, 4, "scalar", True).items()}
    return {**base, **changes}


@pytest.mark.parametrize(
    "changes, error, message",
    [
        ({"q": torch.zeros(2, 5, 3, dtype=torch.float64)}, ValueError, r"^q: expected \(batch, heads, L, K\)"),
        ({"k": torch.zeros(2, 2, 5, 4, dtype=torch.float64)}, ValueError, r"^k: expected q's shape"),
        ({"v": torch.zeros(2, 2, 6, 4, dtype=torch.float64)}, ValueError, r"^v: expected \(batch=2, heads=2, L=5, V\)"),
        ({"k": torch.zeros(2, 2, 5, 3)}, ValueError, r"^k: expected q's dtype torch.float64, got torch.float32"),
        ({"q": torch.zeros(2, 2, 5, 3, dtype=torch.int64)}, TypeError, r"^q: expected a floating-point tensor"),
        ({"g": torch.zeros(2, 2, 5, 4, dtype=torch.float64)}, ValueError, r"^g: expected None, \(batch, heads, L\)"),
        ({"g": torch.zeros(2, 5, dtype=torch.float64)}, ValueError, r"^g: expected"),
        ({"initial_state": torch.zeros(2, 2, 4, 3, dtype=torch.float64)}, ValueError,
         r"^initial_state: expected \(batch=2, heads=2, K=3, V=4\)"),
        ({"scale": "0.5"}, ValueError, r"^scale: expected a finite real number"),
        ({"scale": float("nan")}, ValueError, r"^scale: expected a finite real number"),
        ({"scale": True}, ValueError, r"^scale: expected a finite real number"),
    ],
    ids=["q-ndim", "k-shape", "v-length", "k-dtype", "q-integer", "g-last-dim", "g-ndim", "initial-state",
         "scale-str", "scale-nan", "scale-bool"],
)
def test_argument_errors_name_the_argument(changes, error, message):
    with pytest.raises(error, match=message):
        linear_attention(**_bad(**changes))


def test_default_chunk_size_is_small_for_a_vector_decay_only(monkeypatch):
    from hybrids.kernels.linear.chunk import default_chunk_size

    g3, g4 = torch.zeros(1, 1, 5), torch.zeros(1, 1, 5, 2)
    assert default_chunk_size(None) == default_chunk_size(g3) == 64 and default_chunk_size(g4) == 16
    inputs = make_inputs(1, 2, 40, 3, 2, "vector", initial_state=True)
    with torch.no_grad():
        default = linear_attention_chunk(**inputs)
        assert torch.equal(default, linear_attention_chunk(**inputs, chunk_size=16, sub_chunk_size=4))


@pytest.mark.parametrize("size,sub", [(16, 4), (12, 4), (64, 16), (32, 1), (8, 8), (6, 4)],
                         ids=["C16-c4", "C12-c4", "C64-c16", "C32-c1", "C8-c8", "C6-c4-direct"])
@pytest.mark.parametrize("initial_state", [False, True], ids=["zero-state", "initial-state"])
def test_vector_decay_sub_chunks_match_reference(size, sub, initial_state):
    """Sub-chunked scores (c < C) and the direct (C, C, K) form (c = C, or c not dividing C)."""
    inputs = make_inputs(2, 2, 71, 5, 3, "vector", initial_state)
    errors = errors_against_reference(inputs, linear_attention_chunk, chunk_size=size, sub_chunk_size=sub)
    assert max(errors.values()) < 1e-10, errors


@pytest.mark.parametrize("group_elements", [1, 2000], ids=["one-chunk-a-group", "a-few-chunks-a-group"])
def test_vector_decay_scores_in_groups_of_chunks_match_reference(monkeypatch, group_elements):
    monkeypatch.setattr(chunk_module, "_SCORE_GROUP_ELEMENTS", group_elements)
    inputs = make_inputs(2, 2, 75, 5, 3, "vector", initial_state=True)
    errors = errors_against_reference(inputs, linear_attention_chunk, chunk_size=8, sub_chunk_size=4)
    assert max(errors.values()) < 1e-10, errors


@pytest.mark.parametrize("decay", DECAYS)
def test_chunk_takes_an_empty_batch(decay):
    inputs = make_inputs(0, 2, 40, 3, 2, decay, initial_state=True)
    o, state, grads = run(linear_attention_chunk, inputs)
    assert o.shape == (0, 2, 40, 2) and state.shape == (0, 2, 3, 2)
    assert all(grads[name].shape == inputs[name].shape for name in inputs)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("backend", ["reference", "chunk", CPU])
@pytest.mark.parametrize("decay", ["scalar", "vector"])
def test_a_log_decay_of_minus_infinity_is_a_hard_reset(backend, decay, dtype):
    """g = -inf at step r: the state restarts there, so outputs from r on equal a fresh run on
    the suffix (zero initial state, in float64), and nothing is NaN, gradients included. In
    float32 the floor that stands for -inf enters the chunk's cumulative sums, so it must be
    small enough for float32 to resolve the decays beside it (the error was 3e-4 at -1e4)."""
    inputs = make_inputs(2, 2, 45, 4, 3, decay, initial_state=True, dtype=dtype)
    reset = 23
    with torch.no_grad():
        inputs["g"][:, :, reset] = float("-inf")
    o, state, grads = run(linear_attention, inputs, backend=backend)
    assert all(torch.isfinite(x).all() for x in (o, state, *grads.values()))
    suffix = {name: x.detach()[:, :, reset:].double() for name, x in inputs.items() if name != "initial_state"}
    suffix["g"][:, :, 0] = 0.0
    with torch.no_grad():
        o_fresh, state_fresh = linear_attention(**suffix, output_final_state=True, backend="reference")
    if dtype == torch.float64:
        torch.testing.assert_close(o[:, :, reset:].detach(), o_fresh, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(state.detach(), state_fresh, rtol=1e-10, atol=1e-10)
    else:
        assert relative_rms(o[:, :, reset:].detach(), o_fresh) < 1e-5  # 1.3e-4 with a floor of -1e4
        assert relative_rms(state.detach(), state_fresh) < 1e-5


def test_the_log_decay_floor_decays_to_exactly_zero():
    """The floor stands for -inf: exp of it is 0 in the working precision, and so is its gradient."""
    for dtype, work in ((torch.float16, torch.float32), (torch.bfloat16, torch.float32),
                        (torch.float32, torch.float32), (torch.float64, torch.float64)):  # fmt: skip
        floor = torch.tensor(linear.log_decay_floor(dtype), dtype=work, requires_grad=True)
        decay = floor.exp()
        decay.backward()
        assert decay.item() == 0.0 and floor.grad.item() == 0.0, dtype
    assert linear.log_decay_floor(torch.float32) >= -200.0  # near 0: float32 resolves the sums beside it


def test_vector_decay_sub_chunks_survive_very_negative_decays():
    inputs = make_inputs(1, 2, 50, 4, 3, "vector", initial_state=True)
    with torch.no_grad():
        inputs["g"].mul_(400)  # log-decays of -100s: exp(-b) alone would overflow
    errors = errors_against_reference(inputs, linear_attention_chunk, chunk_size=16, sub_chunk_size=4)
    assert max(errors.values()) < 1e-10, errors


def test_chunk_size_must_be_a_positive_integer():
    inputs = _bad()
    for size in (0, -3, 2.0, True):
        with pytest.raises(ValueError, match=r"^chunk_size: expected a positive integer"):
            linear_attention_chunk(**inputs, chunk_size=size)
    for decay, length in (("vector", 8), ("scalar", 8), ("none", 0)):
        some = make_inputs(1, 1, length, 2, 2, decay)
        for sub in (0, 2.0, True):
            with pytest.raises(ValueError, match=r"^sub_chunk_size: expected a positive integer or None"):
                linear_attention_chunk(**some, sub_chunk_size=sub)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"state": torch.zeros(2, 3, 4)}, r"^state: expected \(batch, heads, K, V\)"),
        ({"q": torch.zeros(2, 3, 5)}, r"^q: expected \(batch=2, heads=3, K=4\)"),
        ({"v": torch.zeros(2, 3, 4)}, r"^v: expected \(batch=2, heads=3, V=5\)"),
        ({"g": torch.zeros(2, 3, 5)}, r"^g: expected None, \(batch, heads\)"),
        ({"k": torch.zeros(2, 3, 4, dtype=torch.float64)}, r"^k: expected q's dtype"),
        ({"scale": float("inf")}, r"^scale:"),
    ],
    ids=["state", "q", "v", "g", "k-dtype", "scale"],
)
def test_step_argument_errors_name_the_argument(changes, message):
    args = {"q": torch.zeros(2, 3, 4), "k": torch.zeros(2, 3, 4), "v": torch.zeros(2, 3, 5), "g": torch.zeros(2, 3),
            "state": torch.zeros(2, 3, 4, 5), **changes}
    with pytest.raises(ValueError, match=message):
        linear_attention_step(**args)


@needs_cpp
def test_dispatch_picks_the_cpp_recurrence_on_cpu_and_the_environment_forces_reference(monkeypatch):
    import hybrids.kernels.linear.cpp as cpp_module

    monkeypatch.delenv(LINEAR_ATTENTION.env, raising=False)
    assert LINEAR_ATTENTION.env == "HYBRIDS_LINEAR_ATTENTION_BACKEND" == linear.BACKEND_ENV
    assert linear.BACKENDS == ("reference", "chunk", "cpu", "triton", "fla")
    assert LINEAR_ATTENTION.select("cpu", torch.float32) == "cpu"
    # CUDA tensors get "triton" where it is installed: see test_linear_attention_triton.py
    calls = []

    def spy(name, fn):
        def wrapped(*args, **kwargs):
            calls.append(name)
            return fn(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(chunk_module, "linear_attention_chunk", spy("chunk", chunk_module.linear_attention_chunk))
    monkeypatch.setattr(cpp_module, "linear_attention_cpu", spy("cpu", cpp_module.linear_attention_cpu))
    monkeypatch.setattr(
        reference_module, "linear_attention_reference", spy("reference", reference_module.linear_attention_reference)
    )
    inputs = _bad()
    linear_attention(**inputs)
    monkeypatch.setenv(LINEAR_ATTENTION.env, "reference")
    linear_attention(**inputs)
    linear_attention(**inputs, backend="chunk")  # the argument beats the environment
    assert calls == ["cpu", "reference", "chunk"]
    monkeypatch.setenv(LINEAR_ATTENTION.env, "no-such-backend")
    with pytest.raises(ValueError, match="^HYBRIDS_LINEAR_ATTENTION_BACKEND: unknown linear_attention backend"):
        linear_attention(**inputs)


def test_public_names_are_re_exported_and_the_package_is_not_shadowed():
    for name in linear.__all__:
        if name.isupper() or name == "BackendUnavailable":
            continue
        assert getattr(kernels, name) is getattr(linear, name), name
    assert kernels.linear is linear and "linear" not in kernels.__all__
    assert kernels.REGISTRY["linear_attention"] is LINEAR_ATTENTION


@needs_cpp
def test_on_cpu_the_recurrence_is_chosen_where_it_is_faster(monkeypatch):
    """The measured rule (kernels/linear/__init__.py): a vector decay, or a small state per head,
    goes to the C++ recurrence; large feature maps without a vector decay to the chunked form."""
    monkeypatch.delenv(LINEAR_ATTENTION.env, raising=False)
    pick = lambda decay, k, v: LINEAR_ATTENTION.select("cpu", torch.float32, decay=decay, key_dim=k, value_dim=v)  # noqa: E731
    assert pick("vector", 64, 64) == pick("vector", 32, 32) == "cpu"  # GLA
    assert pick("scalar", 16, 16) == pick("scalar", 8, 8) == "cpu"  # Mamba-2
    assert pick("scalar", 32, 32) == pick(None, 153, 32) == pick(None, 64, 32) == "chunk"  # RetNet, Based, Performer
