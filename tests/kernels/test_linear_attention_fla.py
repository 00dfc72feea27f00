"""The "fla" backend of linear attention (flash-linear-attention's kernels through an adapter).

On CPU fla's kernels cannot run (not even under Triton's interpreter), so the adapter is tested
against a stand-in ``fla`` package: functions with fla's documented signatures and its
(batch, L, heads, dim) layout, computing the recurrence step by step in that layout. If the
adapter handed over head-first tensors, routed a decay form to the wrong function, dropped the
scale or the initial state, the stand-in's answer would differ from our reference. On CUDA, with
fla installed, the real kernels are compared with the reference (GPU-marked).
"""

import sys
import types

import pytest
import torch

from hybrids.kernels.linear import LINEAR_ATTENTION, BackendUnavailable, linear_attention
from hybrids.kernels.linear.fla import fla_available, linear_attention_fla
from hybrids.kernels.linear.reference import linear_attention_reference
from helpers import relative_rms
from test_linear_attention import make_inputs, run


def _recurrence_sequence_first(q, k, v, g, scale, initial_state, output_final_state, vector):
    """fla's contract, written independently of ours: q, k (B, T, H, K), v (B, T, H, V), g (B, T,
    H) or (B, T, H, K); state (B, H, K, V)."""
    batch, length, heads, dk = q.shape
    dv = v.shape[-1]
    state = torch.zeros(batch, heads, dk, dv, dtype=torch.float64) if initial_state is None else initial_state.double()
    outputs = []
    for t in range(length):
        if g is not None:
            decay = g[:, t].double().exp()  # (B, H) or (B, H, K)
            state = state * (decay[..., None] if vector else decay[..., None, None])
        state = state + k[:, t].double()[..., :, None] * v[:, t].double()[..., None, :]
        outputs.append(scale * torch.einsum("bhk,bhkv->bhv", q[:, t].double(), state))
    o = torch.stack(outputs, dim=1).to(q.dtype)
    return o, (state.float() if output_final_state else None)


def _stand_in(calls: list, old_layout_keyword: bool = False) -> dict:
    """Modules ``fla``, ``fla.ops``, ``fla.ops.gla``, ``fla.ops.simple_gla`` with fla's signatures."""

    def check(q, k, v, g, initial_state, vector, head_first):
        assert head_first is False, "the adapter must ask old fla versions for the sequence-first layout"
        if q.dtype in (torch.float16, torch.bfloat16):  # fla's backward asserts this
            assert q.shape[-1] % 2 == 0 and v.shape[-1] % 2 == 0, "16-bit inputs need even K and V"
        for t in (q, k, v, g, initial_state):
            assert t is None or t.is_contiguous()
        assert k.shape == q.shape and v.shape[:3] == q.shape[:3]
        if g is not None:
            assert g.dtype == torch.float32 and g.shape == (q.shape[:4] if vector else q.shape[:3])
        if initial_state is not None:
            assert initial_state.dtype == torch.float32

    # Old fla versions defaulted to head_first=True: the adapter must pass False itself.
    def chunk_simple_gla(q, k, v, g=None, g_gamma=None, scale=None, initial_state=None, output_final_state=False,
                         head_first=True, **kwargs):
        check(q, k, v, g, initial_state, False, head_first)
        calls.append("chunk_simple_gla")
        scale = q.shape[-1] ** -0.5 if scale is None else scale
        return _recurrence_sequence_first(q, k, v, g, scale, initial_state, output_final_state, vector=False)

    def chunk_gla(q, k, v, g, scale=None, initial_state=None, output_final_state=False, head_first=True, **kwargs):
        check(q, k, v, g, initial_state, True, head_first)
        calls.append("chunk_gla")
        scale = q.shape[-1] ** -0.5 if scale is None else scale
        return _recurrence_sequence_first(q, k, v, g, scale, initial_state, output_final_state, vector=True)

    if not old_layout_keyword:  # fla >= 0.3: no head_first parameter at all
        def without(fn):
            def wrapped(q, k, v, g=None, scale=None, initial_state=None, output_final_state=False, **kwargs):
                assert "head_first" not in kwargs
                return fn(q, k, v, g, scale=scale, initial_state=initial_state, output_final_state=output_final_state,
                          head_first=False)
            return wrapped

        chunk_simple_gla, chunk_gla = without(chunk_simple_gla), without(chunk_gla)
    modules = {name: types.ModuleType(name) for name in ("fla", "fla.ops", "fla.ops.gla", "fla.ops.simple_gla")}
    modules["fla.ops.gla"].chunk_gla = chunk_gla
    modules["fla.ops.simple_gla"].chunk_simple_gla = chunk_simple_gla
    return modules


@pytest.fixture(params=[False, True], ids=["fla-0.3+", "fla-head_first-keyword"])
def stand_in(request, monkeypatch):
    calls = []
    for name, module in _stand_in(calls, old_layout_keyword=request.param).items():
        monkeypatch.setitem(sys.modules, name, module)
    return calls


def _inputs(decay, initial_state, length=13, dtype=torch.float64, seed=0, dk=4, dv=5):
    """Batch 2, 3 heads: ``make_inputs`` of the chunk tests, with odd widths by default."""
    return make_inputs(2, 3, length, dk, dv, decay, initial_state, dtype=dtype, seed=seed)


@pytest.mark.parametrize("decay", ["none", "scalar", "vector"])
@pytest.mark.parametrize("initial_state", [False, True], ids=["zero-state", "initial-state"])
def test_adapter_matches_reference_through_stand_in(stand_in, decay, initial_state):
    inputs = _inputs(decay, initial_state)
    o, state, grads = run(linear_attention_fla, inputs, scale=0.7)
    ref_o, ref_state, ref_grads = run(linear_attention_reference, inputs, scale=0.7)
    assert stand_in == ["chunk_gla" if decay == "vector" else "chunk_simple_gla"]
    assert o.shape == ref_o.shape and o.dtype == ref_o.dtype
    assert state.dtype == torch.float32 and state.shape == ref_state.shape
    assert relative_rms(o, ref_o) < 1e-6  # g and the initial state go over in float32
    assert relative_rms(state.double(), ref_state) < 1e-6  # the stand-in hands the state back in float32
    for name, grad in grads.items():  # autograd through the stand-in and the adapter's transposes
        assert relative_rms(grad, ref_grads[name]) < 1e-6, name


def test_adapter_keeps_dtype_and_default_scale(stand_in):
    inputs = _inputs("scalar", False, dtype=torch.bfloat16)
    with torch.no_grad():
        o = linear_attention_fla(inputs["q"], inputs["k"], inputs["v"], inputs["g"])
        ref = linear_attention_reference(*(inputs[n].double() for n in ("q", "k", "v", "g")))
    assert o.dtype == torch.bfloat16 and o.shape == ref.shape
    assert relative_rms(o.double(), ref) < 2e-2  # bf16 inputs and output


@pytest.mark.parametrize("decay", ["scalar", "vector"])
def test_adapter_pads_odd_widths_of_16_bit_inputs_exactly(stand_in, decay):
    inputs = _inputs(decay, True, dtype=torch.bfloat16, dk=3, dv=5)
    o, state, grads = run(linear_attention_fla, inputs)
    wide = {name: x.detach().double().requires_grad_() for name, x in inputs.items()}
    ref_o, ref_state, ref_grads = run(linear_attention_reference, wide)
    assert o.dtype == torch.bfloat16 and o.shape == ref_o.shape and state.shape == ref_state.shape
    assert relative_rms(o.double(), ref_o) < 2e-2 and relative_rms(state.double(), ref_state) < 1e-6
    for name, grad in grads.items():
        assert grad.shape == inputs[name].shape
        assert relative_rms(grad.double(), ref_grads[name]) < 3e-2, name


def test_adapter_empty_sequence_needs_no_kernel(stand_in):
    inputs = _inputs("vector", True, length=0)
    o, state, grads = run(linear_attention_fla, inputs)
    assert stand_in == [] and o.shape == (2, 3, 0, 5)
    assert torch.equal(state, inputs["initial_state"].detach().float())
    assert grads["q"].shape == inputs["q"].shape


def test_fla_is_never_chosen_automatically_and_refused_on_cpu():
    assert "fla" in LINEAR_ATTENTION.names
    assert LINEAR_ATTENTION.select("cpu", torch.float32) in ("cpu", "chunk")  # chunk without a C++ compiler
    why = fla_available("cpu")
    assert why is not None and ("CUDA" in why or "not installed" in why)
    q = torch.randn(1, 1, 4, 2)
    with pytest.raises(BackendUnavailable, match="fla"):
        linear_attention(q, q, q, backend="fla")


@pytest.mark.gpu
@pytest.mark.parametrize("decay", ["none", "scalar", "vector"])
@pytest.mark.parametrize("initial_state", [False, True], ids=["zero-state", "initial-state"])
def test_fla_kernels_match_reference_on_cuda(decay, initial_state):
    pytest.importorskip("fla", reason="flash-linear-attention is not installed (pip install -e '.[fla]')")
    cpu = _inputs(decay, initial_state, length=200, dtype=torch.float32, seed=1)
    cuda = {name: x.detach().cuda().requires_grad_() for name, x in cpu.items()}
    o, state, grads = _run_fla_on_cuda(cuda)
    ref_o, ref_state, ref_grads = run(linear_attention_reference, cpu)
    errors = {"o": relative_rms(o.cpu(), ref_o), "final_state": relative_rms(state.cpu(), ref_state)}
    errors.update({f"d{n}": relative_rms(g.cpu(), ref_grads[n], floor=1e-6) for n, g in grads.items()})
    # fla's kernels use TF32 matrix products on recent GPUs: a few 1e-3 relative.
    assert max(errors.values()) < 1e-2, errors


@pytest.mark.gpu
@pytest.mark.parametrize("decay", ["none", "vector"])
def test_fla_kernels_take_bf16_with_odd_widths_on_cuda(decay):
    pytest.importorskip("fla", reason="flash-linear-attention is not installed (pip install -e '.[fla]')")
    cpu = _inputs(decay, True, length=100, dtype=torch.float32, seed=2, dk=8, dv=17)  # v as a normalised mixer's
    cuda = {name: (x.detach().bfloat16() if name in "qkv" else x.detach()).cuda().requires_grad_()
            for name, x in cpu.items()}
    o, state, grads = _run_fla_on_cuda(cuda)
    wide = {name: x.detach().cpu().double().requires_grad_() for name, x in cuda.items()}
    ref_o, ref_state, ref_grads = run(linear_attention_reference, wide)
    assert o.dtype == torch.bfloat16 and o.shape == ref_o.shape
    assert relative_rms(o.cpu().double(), ref_o) < 3e-2
    for name, grad in grads.items():
        assert relative_rms(grad.cpu().double(), ref_grads[name], floor=1e-6) < 5e-2, name


def _run_fla_on_cuda(inputs):
    """``_run`` with backend "fla"; skips where fla itself refuses the hardware (its Hopper guard)."""
    try:
        return run(lambda **kw: linear_attention(**kw, backend="fla"), inputs)
    except RuntimeError as err:
        if "Hopper" in str(err):  # fla-core 0.6 + Triton 3.4-3.7.0 on H100/H200: fla refuses its gated backward
            pytest.skip(f"fla refuses this case on this GPU: {err}")
        raise
