"""The selective scan: the "torch" and "cpu" backends against the reference (outputs, last state,
every gradient), their memory, and backend dispatch. The Triton kernels have their own file.

Case ids read ``B2-D4-N3-L37-G2``: batch, dim, d_state, length, groups of B/C (``G0``: the
3-D (batch, d_state, L) form).
"""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import hybrids.kernels.scan.segmented as scan_torch
from hybrids.kernels import cpp_build
from hybrids.kernels.scan import BackendUnavailable, default_backend, selective_scan

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


def rel_rms(x, ref):
    x, ref = x.detach(), ref.detach()
    return float((x - ref).norm() / ref.norm().clamp_min(1e-300))


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


def run(inputs, backend, extras=True, softplus=True):
    """Output, last state and gradients of every input under a loss touching both outputs."""
    for x in inputs.values():
        x.grad = None
    kwargs = dict(inputs) if extras else {k: inputs[k] for k in NAMES[:5]}
    out, last = selective_scan(**kwargs, delta_softplus=softplus, return_last_state=True, backend=backend)
    (out.sin().sum() + (last**2).sum()).backward()
    grads = {name: inputs[name].grad for name in kwargs}
    return out, last, grads


def assert_matches_reference(inputs, backend, tol, **kwargs):
    out, last, grads = run(inputs, backend, **kwargs)
    ref_out, ref_last, ref_grads = run(inputs, "reference", **kwargs)
    assert out.dtype == ref_out.dtype and out.shape == ref_out.shape
    errors = {"out": rel_rms(out, ref_out), "last": rel_rms(last, ref_last)}
    errors.update({f"d{name}": rel_rms(grads[name], ref_grads[name]) for name in ref_grads})
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
    assert rel_rms(out.double(), ref_out) < 1e-5
    assert rel_rms(last.double(), ref_last) < 1e-5
    for name in NAMES:
        assert rel_rms(grads[name].double(), ref_grads[name]) < 1e-4, name


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("backend", ["torch", pytest.param("cpu", marks=needs_cpp)])
def test_half_precision_inputs_keep_a_float32_state(backend, dtype):
    inputs = {k: v.detach().to(dtype).requires_grad_() for k, v in make_inputs(2, 4, 8, 50, 0).items()}
    out, last, grads = run(inputs, backend)
    ref_out, ref_last, _ = run(inputs, "reference")  # the reference on the same rounded inputs
    assert out.dtype == dtype and last.dtype == torch.float32
    assert rel_rms(out.float(), ref_out.float()) < 1e-2
    assert rel_rms(last, ref_last) < 1e-5  # both accumulate in float32 from the same inputs
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
        assert rel_rms(got, ref) < 1e-10


@pytest.mark.parametrize("backend", ["reference", "torch", pytest.param("cpu", marks=needs_cpp)])
def test_empty_sequence(backend):
    inputs = {k: v.detach() for k, v in make_inputs(2, 4, 3, 0, 0).items()}
    out, last = selective_scan(**inputs, return_last_state=True, backend=backend)
    assert out.shape == (2, 4, 0) and torch.equal(last, torch.zeros(2, 4, 3, dtype=torch.float64))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the peak RSS from /proc (Linux)")
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
    code = textwrap.dedent(
        f"""
        import re, torch
        from hybrids.kernels.scan import selective_scan

        def kib(field):
            with open("/proc/self/status") as status:
                return int(re.search(rf"^{{field}}:\\s+(\\d+) kB", status.read(), re.MULTILINE).group(1))

        def peak_bytes(fn):
            with open("/proc/self/clear_refs", "w") as clear_refs:
                clear_refs.write("5")  # reset the high-water mark VmHWM to the current RSS
            before = kib("VmRSS")
            fn()
            return (kib("VmHWM") - before) * 1024

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
    )
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 17)}
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert child.returncode == 0, child.stderr
    peak, control = map(int, child.stdout.split())
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
    ],
    ids=["u", "delta", "A", "A-complex", "B", "C-groups", "D", "z", "delta_bias"],
)
def test_bad_arguments_name_the_argument(change, argument):
    inputs = small()
    change(inputs)
    with pytest.raises(ValueError, match=rf"^{argument}:"):
        selective_scan(**inputs, backend="reference")
