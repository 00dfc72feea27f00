"""The selective scan: the "torch" and "cpu" backends against the reference (outputs, last state,
every gradient), with and without an initial state, chunked evaluation, their memory, and
backend dispatch; the reference itself against an independent dense (quadratic) formulation.
The Triton kernels have their own file.

Case ids read ``B2-D4-N3-L37-G2``: batch, dim, d_state, length, groups of B/C (``G0``: the
3-D (batch, d_state, L) form).
"""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

import hybrids.kernels.scan.segmented as scan_torch
from hybrids.kernels import cpp_build
from hybrids.kernels.scan import BackendUnavailable, default_backend, selective_scan
from helpers import MEMORY_METER_PLATFORM, peak_memory, relative_rms

needs_cpp = pytest.mark.skipif(cpp_build.unavailable_reason() is not None, reason="no C++ compiler here")

SHAPES = [  # (batch, dim, d_state, L, groups)
    (1, 1, 1, 1, 0),
    (2, 4, 3, 37, 0),
    (1, 6, 5, 70, 3),
    (2, 4, 16, 2, 2),
    (1, 8, 6, 101, 2),
    (2, 3, 4, 64, 1),
]
IDS = [f"B{b}-D{d}-N{n}-L{l}-G{g}" for b, d, n, l, g in SHAPES]
NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")

# "torch" is run under several tilings of (segments, steps per block), as (state elements per
# loop step, elements per block): one segment per step, a few segments, uneven last segments.
TORCH_PLANS = [(1 << 16, 1 << 18), (24, 120), (96, 576), (240, 240 * 7)]



def make_inputs(batch, dim, d_state, length, groups, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0, shift=0.0):
        return (torch.randn(*shape, generator=gen, dtype=dtype) * scale + shift).requires_grad_()

    bc = (batch, d_state, length) if groups == 0 else (batch, groups, d_state, length)
    return {
        "u": rand(batch, dim, length),
        "delta": rand(batch, dim, length, scale=0.5, shift=-1.0),
        "A": (-torch.rand(dim, d_state, generator=gen, dtype=dtype) * 2 - 0.1).requires_grad_(),
        "B": rand(*bc),
        "C": rand(*bc),
        "D": rand(dim),
        "z": rand(batch, dim, length),
        "delta_bias": rand(dim, scale=0.3),
    }


def with_initial_state(inputs, seed=1):
    """``inputs`` plus a random initial state (batch, dim, d_state) of their dtype, requiring grad."""
    gen = torch.Generator().manual_seed(seed)
    (batch, dim, _), d_state = inputs["u"].shape, inputs["A"].shape[1]
    h0 = torch.randn(batch, dim, d_state, generator=gen, dtype=inputs["u"].dtype)
    return {**inputs, "initial_state": h0.requires_grad_()}


def run(inputs, backend, extras=True, softplus=True):
    """Output, last state and gradients of every input under a loss touching both outputs."""
    for x in inputs.values():
        x.grad = None
    names = (NAMES if extras else NAMES[:5]) + (("initial_state",) if "initial_state" in inputs else ())
    kwargs = {k: inputs[k] for k in names}
    out, last = selective_scan(**kwargs, delta_softplus=softplus, return_last_state=True, backend=backend)
    (out.sin().sum() + (last**2).sum()).backward()
    grads = {name: inputs[name].grad for name in kwargs}
    return out, last, grads


def assert_matches_reference(inputs, backend, tol, **kwargs):
    out, last, grads = run(inputs, backend, **kwargs)
    ref_out, ref_last, ref_grads = run(inputs, "reference", **kwargs)
    assert out.dtype == ref_out.dtype and out.shape == ref_out.shape
    errors = {"out": relative_rms(out, ref_out), "last": relative_rms(last, ref_last)}
    errors.update({f"d{name}": relative_rms(grads[name], ref_grads[name]) for name in ref_grads})
    assert max(errors.values()) < tol, errors


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
@pytest.mark.parametrize("plan", TORCH_PLANS, ids=lambda p: f"step{p[0]}-block{p[1]}")
def test_torch_backend_matches_reference(shape, plan, monkeypatch):
    monkeypatch.setattr(scan_torch, "_STEP_ELEMENTS", plan[0])
    monkeypatch.setattr(scan_torch, "_BLOCK_ELEMENTS", plan[1])
    assert_matches_reference(make_inputs(*shape), "torch", 1e-10)


@needs_cpp
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_cpu_backend_matches_reference(shape):
    assert_matches_reference(make_inputs(*shape), "cpu", 1e-10)


@pytest.mark.parametrize("backend", ["torch", pytest.param("cpu", marks=needs_cpp)])
@pytest.mark.parametrize("extras", [True, False], ids=["gated", "bare"])
def test_without_extras_and_softplus(backend, extras):
    """Without D, z and the delta bias, and with delta taken as given (no softplus)."""
    inputs = make_inputs(2, 4, 3, 45, 2)
    with torch.no_grad():
        inputs["delta"].abs_()  # a step must be >= 0 without the softplus
    assert_matches_reference(inputs, backend, 1e-10, extras=extras, softplus=False)


@pytest.mark.parametrize("backend", ["torch", pytest.param("cpu", marks=needs_cpp)])
def test_float32_at_length_1024(backend):
    """float32 against the float64 reference, over enough steps for rounding to accumulate."""
    inputs64 = make_inputs(1, 8, 16, 1024, 0)
    inputs32 = {k: v.detach().float().requires_grad_() for k, v in inputs64.items()}
    out, last, grads = run(inputs32, backend)
    ref_out, ref_last, ref_grads = run(inputs64, "reference")
    assert out.dtype == torch.float32 and last.dtype == torch.float32
    assert relative_rms(out.double(), ref_out) < 1e-5
    assert relative_rms(last.double(), ref_last) < 1e-5
    for name in NAMES:
        assert relative_rms(grads[name].double(), ref_grads[name]) < 1e-4, name


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("backend", ["torch", pytest.param("cpu", marks=needs_cpp)])
def test_half_precision_inputs_keep_a_float32_state(backend, dtype):
    inputs = {k: v.detach().to(dtype).requires_grad_() for k, v in make_inputs(2, 4, 8, 50, 0).items()}
    out, last, grads = run(inputs, backend)
    ref_out, ref_last, _ = run(inputs, "reference")  # the reference on the same rounded inputs
    assert out.dtype == dtype and last.dtype == torch.float32
    assert relative_rms(out.float(), ref_out.float()) < 1e-2
    assert relative_rms(last, ref_last) < 1e-5  # both accumulate in float32 from the same inputs
    assert all(grads[name].dtype == dtype for name in NAMES)


@pytest.mark.parametrize("backend", ["torch", pytest.param("cpu", marks=needs_cpp)])
def test_gradient_of_the_last_state_alone(backend):
    """A loss on the last state only (as when a scan's state feeds the next chunk)."""
    inputs = make_inputs(2, 4, 3, 33, 0)
    grads = {}
    for name in ("reference", backend):
        for x in inputs.values():
            x.grad = None
        _, last = selective_scan(**inputs, delta_softplus=True, return_last_state=True, backend=name)
        last.pow(2).sum().backward()
        grads[name] = [inputs[k].grad.clone() for k in ("u", "delta", "A", "B")]
    for got, ref in zip(grads[backend], grads["reference"]):
        assert relative_rms(got, ref) < 1e-10


@pytest.mark.parametrize("backend", ["reference", "torch", pytest.param("cpu", marks=needs_cpp)])
def test_empty_sequence(backend):
    inputs = {k: v.detach() for k, v in make_inputs(2, 4, 3, 0, 0).items()}
    out, last = selective_scan(**inputs, return_last_state=True, backend=backend)
    assert out.shape == (2, 4, 0) and torch.equal(last, torch.zeros(2, 4, 3, dtype=torch.float64))


# --------------------------------------------------------------------------------------------
# an initial state, and chunked evaluation


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
@pytest.mark.parametrize("plan", TORCH_PLANS, ids=lambda p: f"step{p[0]}-block{p[1]}")
def test_torch_backend_with_initial_state(shape, plan, monkeypatch):
    """Outputs, last state and the gradients of all inputs, initial_state included."""
    monkeypatch.setattr(scan_torch, "_STEP_ELEMENTS", plan[0])
    monkeypatch.setattr(scan_torch, "_BLOCK_ELEMENTS", plan[1])
    assert_matches_reference(with_initial_state(make_inputs(*shape)), "torch", 1e-10)


@needs_cpp
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_cpu_backend_with_initial_state(shape):
    assert_matches_reference(with_initial_state(make_inputs(*shape)), "cpu", 1e-10)


@pytest.mark.parametrize("backend", ["torch", pytest.param("cpu", marks=needs_cpp)])
@pytest.mark.parametrize("extras", [True, False], ids=["gated", "bare"])
def test_initial_state_without_extras_and_softplus(backend, extras):
    inputs = with_initial_state(make_inputs(2, 4, 3, 45, 2))
    with torch.no_grad():
        inputs["delta"].abs_()
    assert_matches_reference(inputs, backend, 1e-10, extras=extras, softplus=False)


@pytest.mark.parametrize("backend", ["torch", pytest.param("cpu", marks=needs_cpp)])
def test_initial_state_gradient_through_the_last_state_alone(backend):
    """A loss on the last state only: every gradient, initial_state's included, comes through it."""
    inputs = with_initial_state(make_inputs(2, 4, 3, 33, 2))
    grads = {}
    for name in ("reference", backend):
        for x in inputs.values():
            x.grad = None
        _, last = selective_scan(**inputs, delta_softplus=True, return_last_state=True, backend=name)
        last.pow(2).sum().backward()
        # A gradient that autograd leaves out (C, D, z do not reach the last state) is zero.
        grads[name] = {k: x.grad.clone() if x.grad is not None else torch.zeros_like(x) for k, x in inputs.items()}
    for k in ("C", "D", "z"):
        assert not grads[backend][k].any() and not grads["reference"][k].any(), k
    errors = {k: relative_rms(grads[backend][k], grads["reference"][k]) for k in inputs if k not in ("C", "D", "z")}
    assert max(errors.values()) < 1e-10, errors


@pytest.mark.parametrize("backend", ["torch", pytest.param("cpu", marks=needs_cpp)])
@pytest.mark.parametrize(
    "dtype, state_dtype",
    [(torch.float32, torch.float64), (torch.float64, torch.float32), (torch.bfloat16, torch.float32)],
    ids=["fp32-state-fp64", "fp64-state-fp32", "bf16-state-fp32"],
)
def test_initial_state_of_another_dtype_is_cast(backend, dtype, state_dtype):
    """The state runs in the working precision; initial_state's gradient keeps its own dtype."""
    inputs = {k: v.detach().to(dtype).requires_grad_() for k, v in make_inputs(2, 4, 3, 21, 0).items()}
    h0 = with_initial_state(make_inputs(2, 4, 3, 21, 0))["initial_state"].detach()
    inputs["initial_state"] = h0.to(state_dtype).requires_grad_()
    out, last, grads = run(inputs, backend)
    ref_out, ref_last, ref_grads = run(inputs, "reference")  # the reference on the same values
    assert out.dtype == dtype and last.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert grads["initial_state"].dtype == state_dtype
    tol = {torch.float64: 1e-10, torch.float32: 1e-5, torch.bfloat16: 1e-2}[dtype]
    assert relative_rms(last, ref_last) < min(tol, 1e-5)  # both accumulate in float32 from the same inputs
    assert relative_rms(grads["initial_state"], ref_grads["initial_state"]) < tol


def _pieces(inputs, cuts):
    """``inputs`` split along L at ``cuts``: the time-varying tensors sliced, the rest shared."""
    length = inputs["u"].shape[-1]
    bounds = [0, *cuts, length]
    for start, stop in zip(bounds[:-1], bounds[1:]):
        yield {k: (v[..., start:stop] if k in ("u", "delta", "B", "C", "z") else v) for k, v in inputs.items()}


@pytest.mark.parametrize("backend", ["reference", "torch", pytest.param("cpu", marks=needs_cpp)])
@pytest.mark.parametrize(
    "shape, cuts, from_state",
    [((2, 4, 3, 45, 2), (17,), False), ((1, 6, 5, 70, 3), (1, 33), True), ((2, 3, 4, 64, 0), (31, 32), True)],
    ids=["B2-D4-N3-L45-G2-two", "B1-D6-N5-L70-G3-three-h0", "B2-D3-N4-L64-G0-three-h0"],
)
def test_chunked_evaluation_equals_one_scan(backend, shape, cuts, from_state):
    """Scanning in pieces, each starting from the last state of the one before, gives the
    outputs, the last state and (through the chain of states) the gradients of one scan."""
    inputs = make_inputs(*shape)
    if from_state:
        inputs = with_initial_state(inputs)
    whole, whole_last, whole_grads = run(inputs, backend)

    for x in inputs.values():
        x.grad = None
    outs, state = [], inputs.get("initial_state")
    for piece in _pieces(inputs, cuts):
        piece["initial_state"] = state
        out, state = selective_scan(**piece, delta_softplus=True, return_last_state=True, backend=backend)
        outs.append(out)
    out = torch.cat(outs, dim=-1)
    (out.sin().sum() + (state**2).sum()).backward()
    errors = {"out": relative_rms(out, whole), "last": relative_rms(state, whole_last)}
    errors.update({f"d{k}": relative_rms(inputs[k].grad, g) for k, g in whole_grads.items()})
    assert max(errors.values()) < 1e-12, errors


@pytest.mark.parametrize("backend", ["reference", "torch", pytest.param("cpu", marks=needs_cpp)])
def test_empty_sequence_returns_the_initial_state(backend):
    inputs = {k: v.detach() for k, v in with_initial_state(make_inputs(2, 4, 3, 0, 0)).items()}
    out, last = selective_scan(**inputs, return_last_state=True, backend=backend)
    assert out.shape == (2, 4, 0) and torch.equal(last, inputs["initial_state"])


# --------------------------------------------------------------------------------------------
# an independent oracle for the reference: the dense (quadratic, "attention-like") form


def dense_selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                         initial_state=None):  # fmt: skip
    """The scan without a recurrence: with S[t] = sum_{r <= t} delta[r] per channel,

        h[t] = sum_{s <= t} exp(A (S[t] - S[s])) delta[s] B[s] u[s] + exp(A S[t]) h0
        y[t] = sum_{s <= t} (C[t] . exp(A (S[t] - S[s])) B[s]) delta[s] u[s] + C[t] . exp(A S[t]) h0

    as an explicit (L x L) lower-triangular matrix per (batch, channel), plus D u, gated by
    silu(z). Returns the output and h[L-1] (the initial state when L = 0). Small sizes only:
    it holds (batch, dim, d_state, L, L) tensors."""
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    batch, dim, length = u.shape

    def per_channel(x):  # (batch, d_state, L) or (batch, groups, d_state, L) -> (batch, dim, d_state, L)
        x = x.unsqueeze(1) if x.ndim == 3 else x
        return x.repeat_interleave(dim // x.shape[1], dim=1)

    B, C = per_channel(B), per_channel(C)
    S = delta.cumsum(-1)  # (batch, dim, L)
    causal = torch.ones(length, length, dtype=torch.bool).tril()  # [t, s]: s <= t
    # Mask before exponentiating: above the diagonal S[t] - S[s] < 0 and exp(A (S[t] - S[s])) could overflow.
    gap = torch.where(causal, S[..., :, None] - S[..., None, :], torch.zeros((), dtype=S.dtype))
    decay = torch.exp(A[None, :, :, None, None] * gap[:, :, None])  # (batch, dim, N, t, s)
    kernel = torch.einsum("bdnt,bdnts,bdns->bdts", C, decay, B) * causal  # (batch, dim, t, s)
    x = delta * u
    y = torch.einsum("bdts,bds->bdt", kernel, x)
    h0 = torch.zeros(batch, dim, A.shape[1], dtype=u.dtype) if initial_state is None else initial_state
    from_h0 = torch.exp(A[None, :, :, None] * S[:, :, None, :]) * h0[..., None]  # (batch, dim, N, L)
    y = y + (C * from_h0).sum(2)
    if D is not None:
        y = y + D[:, None] * u
    if z is not None:
        y = y * F.silu(z)
    if length == 0:
        return y, h0
    last = (decay[..., -1, :] * B * x[:, :, None, :]).sum(-1) + from_h0[..., -1]  # row t = L-1 of the sums
    return y, last


ORACLE_CASES = [  # (batch, dim, d_state, L, groups, extras, softplus, initial_state)
    (2, 4, 3, 13, 2, True, True, True),
    (2, 4, 3, 13, 2, True, True, False),
    (1, 3, 2, 9, 0, False, False, True),
    (1, 3, 2, 9, 0, False, False, False),
    (1, 6, 4, 20, 3, True, False, True),
    (2, 2, 5, 1, 1, True, True, True),
    (1, 4, 2, 17, 0, True, True, True),
]


@pytest.mark.parametrize(
    "case", ORACLE_CASES,
    ids=[f"B{b}-D{d}-N{n}-L{l}-G{g}" + ("" if e else "-bare") + ("" if s else "-nosoftplus") + ("-h0" if h else "")
         for b, d, n, l, g, e, s, h in ORACLE_CASES],
)  # fmt: skip
def test_reference_matches_the_dense_form(case):
    """The reference (a loop over time) against the dense form (no loop, no recurrence):
    output, last state and the gradients of every input, both through autograd, float64."""
    batch, dim, d_state, length, groups, extras, softplus, has_h0 = case
    inputs = make_inputs(batch, dim, d_state, length, groups)
    if has_h0:
        inputs = with_initial_state(inputs)
    if not softplus:
        with torch.no_grad():
            inputs["delta"].abs_()
    names = (NAMES if extras else NAMES[:5]) + (("initial_state",) if has_h0 else ())
    kwargs = {k: inputs[k] for k in names}
    results = {}
    for name, fn in (
        ("reference", lambda: selective_scan(**kwargs, delta_softplus=softplus, return_last_state=True,
                                             backend="reference")),
        ("dense", lambda: dense_selective_scan(**kwargs, delta_softplus=softplus)),
    ):  # fmt: skip
        out, last = fn()
        grads = torch.autograd.grad(out.sin().sum() + (last**2).sum(), [kwargs[k] for k in names])
        results[name] = {"out": out, "last": last, **{f"d{k}": g for k, g in zip(names, grads)}}
    errors = {k: relative_rms(results["reference"][k], ref) for k, ref in results["dense"].items()}
    assert max(errors.values()) < 1e-10, errors


@pytest.mark.skipif(not MEMORY_METER_PLATFORM, reason="reads the peak RSS from /proc (Linux)")
@pytest.mark.parametrize(
    "backend, budget",
    [("torch", 1.0), pytest.param("cpu", 0.5, marks=needs_cpp)],
    ids=["torch-under-one-volume", "cpu-under-half"],
)
def test_no_batch_dim_length_state_tensor(backend, budget):
    """Forward + backward at batch 1, dim 128, d_state 32, L 4096 in a fresh process. One
    (batch, dim, L, d_state) float32 tensor (a "volume") is 64 MiB and the reference holds
    several; the peak must stay under ``budget`` volumes: under one, so no such tensor can
    exist, for "torch" (whose segment blocks and (batch, dim, L) working copies, 2 MiB each, add
    up to about half of one), and under half of one for "cpu" (about a quarter, mostly the
    per-thread copies of dB and dC and the saved chunk states). glibc is told to return large
    freed blocks to the system, so that the meter reads live memory rather than the allocator's
    retained heap. A 64 MiB control allocation checks that the meter sees torch's memory."""
    code = f"""
        import torch
        from hybrids.kernels.scan import selective_scan

        def inputs(length):
            torch.manual_seed(0)
            return [torch.randn(1, 128, length, requires_grad=True), torch.rand(1, 128, length, requires_grad=True),
                    (-torch.rand(128, 32)).requires_grad_(), torch.randn(1, 32, length, requires_grad=True),
                    torch.randn(1, 32, length, requires_grad=True)]

        scan = lambda xs: selective_scan(*xs, backend="{backend}").sum().backward()
        scan(inputs(256))  # warm-up: thread pools, the C++ library
        xs = inputs(4096)
        peak = peak_bytes(lambda: scan(xs))
        assert torch.isfinite(xs[1].grad).all()
        control = peak_bytes(lambda: torch.ones(128, 4096, 32).sum())
        print(peak, control)
        """
    peak, control = peak_memory(code)
    volume = 128 * 4096 * 32 * 4
    assert control >= 0.9 * volume, f"the meter missed a 64 MiB allocation ({control / 2**20:.0f} MiB)"
    assert peak < budget * volume, f"peak {peak / 2**20:.0f} MiB"


# --------------------------------------------------------------------------------------------
# dispatch


def small():
    return {k: v.detach() for k, v in make_inputs(1, 2, 2, 5, 0).items()}


def test_default_backend_on_cpu(monkeypatch):
    monkeypatch.delenv("HYBRIDS_SELECTIVE_SCAN_BACKEND", raising=False)
    expected = "cpu" if cpp_build.unavailable_reason() is None else "torch"
    assert default_backend(torch.empty(0)) == expected
    monkeypatch.setenv(cpp_build.DISABLE_ENV, "1")
    assert default_backend(torch.empty(0)) == "torch"
    out = selective_scan(**small())  # runs through the fallback
    torch.testing.assert_close(out, selective_scan(**small(), backend="reference"), rtol=1e-12, atol=1e-12)


def test_environment_variable_forces_a_backend(monkeypatch):
    calls = []
    monkeypatch.setattr(scan_torch, "_scan", lambda *args: calls.append(1) or scan_torch._SegmentedScan.apply(*args))
    monkeypatch.setenv("HYBRIDS_SELECTIVE_SCAN_BACKEND", "torch")
    selective_scan(**small())
    assert calls
    monkeypatch.setenv("HYBRIDS_SELECTIVE_SCAN_BACKEND", "nonsense")
    with pytest.raises(ValueError, match="HYBRIDS_SELECTIVE_SCAN_BACKEND.*valid"):
        selective_scan(**small())


def test_missing_backends_say_how_to_get_them(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(BackendUnavailable, match=r"mamba-ssm.*|CUDA"):
        selective_scan(**small(), backend="extension")
    with pytest.raises(ValueError, match="unknown selective_scan backend 'fast'"):
        selective_scan(**small(), backend="fast")
    monkeypatch.setenv(cpp_build.DISABLE_ENV, "1")
    with pytest.raises(BackendUnavailable, match="HYBRIDS_DISABLE_CPP"):
        selective_scan(**small(), backend="cpu")


@pytest.mark.parametrize(
    "change, argument",
    [
        (lambda x: x.update(u=x["u"][0]), "u"),
        (lambda x: x.update(delta=x["delta"][..., :-1]), "delta"),
        (lambda x: x.update(A=x["A"][:1]), "A"),
        (lambda x: x.update(A=x["A"].to(torch.complex128)), "A"),
        (lambda x: x.update(B=x["B"][:, :1]), "B"),
        (lambda x: x.update(C=torch.zeros(1, 3, 2, 5, dtype=torch.float64)), "C"),
        (lambda x: x.update(D=x["D"][:1]), "D"),
        (lambda x: x.update(z=x["z"][..., 1:]), "z"),
        (lambda x: x.update(delta_bias=torch.zeros(3, dtype=torch.float64)), "delta_bias"),
        (lambda x: x.update(initial_state=torch.zeros(1, 2, 3, dtype=torch.float64)), "initial_state"),
        (lambda x: x.update(initial_state=torch.zeros(2, 2, 2, dtype=torch.float64)), "initial_state"),
        (lambda x: x.update(initial_state=torch.zeros(1, 2, 2, 1, dtype=torch.float64)), "initial_state"),
        (lambda x: x.update(initial_state=torch.zeros(1, 2, 2, dtype=torch.float64, device="meta")), "initial_state"),
    ],
    ids=["u", "delta", "A", "A-complex", "B", "C-groups", "D", "z", "delta_bias",
         "initial_state-d_state", "initial_state-batch", "initial_state-ndim", "initial_state-device"],  # fmt: skip
)
@pytest.mark.parametrize("backend", ["reference", "torch", pytest.param("cpu", marks=needs_cpp)])
def test_bad_arguments_name_the_argument(change, argument, backend):
    inputs = small()
    change(inputs)
    with pytest.raises(ValueError, match=rf"^{argument}:"):
        selective_scan(**inputs, backend=backend)


@pytest.mark.parametrize("backend", ["reference", "torch", pytest.param("cpu", marks=needs_cpp)])
@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex128])
def test_initial_state_of_a_non_floating_dtype_is_a_type_error(backend, dtype):
    with pytest.raises(TypeError, match=r"^initial_state:.*floating"):
        selective_scan(**small(), initial_state=torch.zeros(1, 2, 2, dtype=dtype), backend=backend)
