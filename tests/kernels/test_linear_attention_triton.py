"""The Triton linear attention (chunked forward, hand-written backward) against the reference.

Every case compares the output, the final state and every gradient (q, k, v, g, and
initial_state where one is given) with the relative RMS error ``rms(x - ref) / rms(ref)``; the
reference runs in float32 on the very values the kernel reads. Lengths are odd (1, 7, 33, 70)
and the chunk sizes (16, 32) do not divide them; all three forms of the decay (none, a scalar
per head, one per key dimension), with and without an initial state, with a loss on the
output and the final state or on the final state alone.

Case ids read ``B1-H2-L33-K5-V6-C16-vector-h0``: batch, heads, length, key and value head dims,
chunk size, decay, flags.

Where to run the kernels: with CUDA, here, on CUDA tensors; without, in Triton's interpreter,
in one subprocess (``triton_interpreter``: this file run as a script with ``--worker``), whose
results the parametrised tests read from a module fixture.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

import triton_interpreter
from helpers import relative_rms

FP32_TOL = 1e-4
HALF_TOL = 1e-2
GRAD_NAMES = ("q", "k", "v", "g", "initial_state")


@dataclasses.dataclass(frozen=True)
class Case:
    batch: int
    heads: int
    length: int
    dk: int
    dv: int
    chunk: int
    decay: str = "none"  # "none", "scalar" (batch, heads, L) or "vector" (batch, heads, L, K)
    initial_state: bool = False
    loss: str = "both"  # "both": the output and the final state; "state": the final state only
    dtype: str = "float32"  # of q, k, v
    aux_dtype: str = "float32"  # of g and the initial state
    block_v: int | None = None  # value columns per program (None: all of them in one block)
    block_k: int | None = None  # key rows of the state per program (None: all of them in one block)
    capability: int | None = None  # the launch table of this GPU (chunk and blocks) instead of the above
    strong: bool = False  # log-decays of -50, and -1000 at a few steps
    large_state: bool = False  # keys near 60 and values near 1: the state passes float16's 65504
    chunked: tuple = ()  # cut points: also run in pieces chained by their final states
    check_nograd: bool = False  # also run the forward without autograd (no states saved)

    @property
    def id(self) -> str:
        chunk = f"-C{self.chunk}" if self.chunk else ""
        parts = [f"B{self.batch}-H{self.heads}-L{self.length}-K{self.dk}-V{self.dv}{chunk}", self.decay]
        parts += [flag for flag, on in (("h0", self.initial_state), ("strong", self.strong), ("large", self.large_state),
                                        ("nograd", self.check_nograd)) if on]  # fmt: skip
        if self.block_v:
            parts.append(f"bv{self.block_v}")
        if self.block_k:
            parts.append(f"bk{self.block_k}")
        if self.capability:
            parts.append(f"sm{self.capability}")
        if self.loss != "both":
            parts.append(f"loss-{self.loss}")
        if self.chunked:
            parts.append("chunked" + "-".join(map(str, self.chunked)))
        if self.aux_dtype != "float32":
            parts.append(f"aux-{self.aux_dtype}")
        if self.dtype != "float32":
            parts.append({"bfloat16": "bf16", "float16": "fp16"}[self.dtype])
        return "-".join(parts)


CASES = [
    # Every length with every form of the decay, from zero and from an initial state.
    Case(1, 2, length, 5, 6, 32 if length == 70 else 16, decay, h0)
    for length in (1, 7, 33, 70)
    for decay in ("none", "scalar", "vector")
    for h0 in (False, True)
] + [
    # The loss on the final state only: no gradient reaches the output (q's is zero).
    *(Case(1, 2, 33, 5, 6, 16, decay, True, loss="state") for decay in ("none", "scalar", "vector")),
    # Two value blocks: dq, dk and dg are sums of the blocks' shares. Pieces chained by their states.
    Case(2, 1, 37, 4, 20, 16, "scalar", True, block_v=16, chunked=(16, 21), check_nograd=True),
    Case(1, 2, 37, 4, 20, 16, "vector", True, block_v=16, chunked=(5,)),
    # Two key blocks (the second one part padding): o and dv are sums of the blocks' shares, and
    # so is dg for a scalar decay; with value blocks too, and in half precision.
    *(Case(1, 2, 37, 20, 6, 16, decay, True, block_k=16) for decay in ("none", "scalar", "vector")),
    Case(2, 1, 37, 20, 20, 16, "scalar", True, block_k=16, block_v=16, chunked=(16, 21), check_nograd=True),
    Case(1, 2, 37, 36, 20, 16, "vector", True, block_k=16, block_v=16, loss="state"),
    *(Case(1, 2, 37, 20, 6, 16, decay, True, block_k=16, dtype="bfloat16") for decay in ("none", "scalar", "vector")),
    # The chunk of 64 that no or a scalar decay use on a GPU.
    *(Case(1, 1, 70, 5, 6, 64, decay, True) for decay in ("none", "scalar")),
    # The GPU launch tables (chunks of 64 for half inputs, 32 for float32, 16 for a vector decay;
    # key blocks of 32 or 64 and value blocks of 32 or 64 per kernel): head dims that several
    # blocks cover, the last one partly, over several chunks. bfloat16 runs its bfloat16
    # products (the worker fixes the interpreter's bfloat16 tl.dot), float16 its TF32 ones.
    *(Case(1, 1, 150, 80, 72, 0, decay, True, dtype=dtype, capability=90)
      for decay in ("none", "scalar", "vector") for dtype in ("float32", "bfloat16", "float16")),
    # A float16 state past 65504 (float32 in the kernels): the output is finite and right (the loss
    # on the state alone: dq itself, about S dO, would pass 65504).
    Case(1, 1, 1300, 16, 16, 0, "none", dtype="float16", loss="state", capability=90, large_state=True),
    # g and the initial state in other dtypes: their gradients come back in them.
    Case(1, 1, 19, 3, 5, 16, "vector", True, aux_dtype="float64"),
    # Log-decays down to -1000: everything finite, nothing overflows.
    *(Case(2, 2, 40, 4, 3, 32, decay, True, strong=True) for decay in ("scalar", "vector")),
    # Half precision in, float32 state and arithmetic.
    *(Case(1, 2, 37, 5, 6, 16, decay, True, dtype="bfloat16") for decay in ("none", "scalar", "vector")),
    Case(1, 2, 37, 5, 6, 16, "vector", True, dtype="float16", aux_dtype="bfloat16"),
]


# --------------------------------------------------------------------------------------------
# one case, on any device (runs in the worker on CPU, here on CUDA)


def rel_rms(x: torch.Tensor, ref: torch.Tensor, floor: float = 0.0) -> float:
    """rms(x - ref) / rms(ref); the absolute RMS where the reference is exactly 0 (the gradient
    of an input nothing depends on)."""
    return relative_rms(x, ref, floor=floor) if ref.abs().max() > 0 else relative_rms(x, ref, floor=1.0)


def make_inputs(case: Case, device, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    b, h, L, dk, dv = case.batch, case.heads, case.length, case.dk, case.dv
    low, aux = getattr(torch, case.dtype), getattr(torch, case.aux_dtype)

    def randn(*shape):
        return torch.randn(*shape, generator=gen)

    inputs = {"q": randn(b, h, L, dk).to(low), "k": randn(b, h, L, dk).to(low), "v": randn(b, h, L, dv).to(low)}
    if case.large_state:  # sum_t k_t v_t^T grows to about 60 L, the outputs stay small
        inputs = {"q": (0.01 * randn(b, h, L, dk)).to(low), "k": (60 + randn(b, h, L, dk)).to(low),
                  "v": (1 + 0.1 * randn(b, h, L, dv)).to(low)}  # fmt: skip
    inputs["g"] = None
    if case.decay != "none":
        g = F.logsigmoid(randn(b, h, L, *((dk,) if case.decay == "vector" else ())) + 1.5)
        if case.strong:
            g[:, :, 3:30] = -50.0
            g[:, :, 11] = -1000.0
            g[:, -1, 33] = -1000.0
        inputs["g"] = g.to(aux)
    inputs["initial_state"] = randn(b, h, dk, dv).to(aux) if case.initial_state else None
    return {name: x.to(device) if x is not None else None for name, x in inputs.items()}


def run_case(case: Case, device, backend: str = "direct") -> dict:
    """Relative RMS errors of the Triton backend against the reference on the same inputs.
    ``backend="dispatch"``: through ``linear_attention`` with its default choice and launch
    configuration (the case's chunk and blocks are not used)."""
    from hybrids.kernels.linear import linear_attention
    from hybrids.kernels.linear.reference import linear_attention_reference
    from hybrids.kernels.linear.triton_chunk import linear_attention_triton

    inputs = make_inputs(case, device)
    names = [n for n in GRAD_NAMES if inputs[n] is not None]
    options = dict(chunk_size=case.chunk, block_v=case.block_v, block_k=case.block_k)
    if case.capability is not None:
        options = dict(capability=case.capability)
    kernel = linear_attention_triton
    if backend == "dispatch":  # the dispatcher's choice of backend and launch
        kernel, options = linear_attention, {}

    def run(fn, cast, **kw):
        leaves = {n: (cast(x).detach().requires_grad_() if x is not None else None) for n, x in inputs.items()}
        o, state = fn(**leaves, output_final_state=True, **kw)
        return o, state, leaves

    o, state, leaves = run(kernel, lambda x: x, **options)
    ref_o, ref_state, ref_leaves = run(linear_attention_reference, lambda x: x.float())
    gen = torch.Generator().manual_seed(1)
    dout = torch.randn(o.shape, generator=gen).to(device)
    dstate = torch.randn(ref_state.shape, generator=gen).to(device)

    def loss(o, s):
        return (0 if case.loss == "state" else (o.float() * dout).sum()) + (s * dstate).sum()

    grads = torch.autograd.grad(loss(o, state), [leaves[n] for n in names], allow_unused=True, materialize_grads=True)
    ref_grads = torch.autograd.grad(
        loss(ref_o, ref_state), [ref_leaves[n] for n in names], allow_unused=True, materialize_grads=True
    )
    errors = {"o": rel_rms(o, ref_o), "final_state": rel_rms(state, ref_state)}
    errors["dtypes"] = [str(o.dtype), str(state.dtype)]
    errors["finite"] = all(bool(torch.isfinite(x).all()) for x in (o, state, *grads))
    for n, gr, rg in zip(names, grads, ref_grads):
        assert gr.shape == inputs[n].shape and gr.dtype == inputs[n].dtype, (n, gr.shape, gr.dtype)
        errors[f"d{n}"] = rel_rms(gr, rg)
    if case.strong:
        # dg comes from q dq - k dk summed over later positions: its error is absolute, a rounding
        # of those terms, while the true dg here is as small as exp(-50). Measure it on their scale.
        terms = (ref_leaves["q"] * ref_grads[names.index("q")]).detach().double()
        errors["dg"] = relative_rms(grads[names.index("g")], ref_grads[names.index("g")],
                                    floor=float(terms.pow(2).mean().sqrt()))
    if case.check_nograd:
        with torch.no_grad():  # inputs that require grad, but no backward can follow: no states saved
            o2, state2 = kernel(**leaves, output_final_state=True, **options)
        errors["nograd_max_diff"] = max((o2 - o).abs().max().item(), (state2 - state).abs().max().item())
    if case.chunked:
        with torch.no_grad():
            bounds = [0, *case.chunked, case.length]
            outs, s = [], leaves["initial_state"]
            for start, stop in zip(bounds[:-1], bounds[1:]):
                piece = {n: leaves[n][:, :, start:stop] for n in ("q", "k", "v")}
                g = leaves["g"][:, :, start:stop] if leaves["g"] is not None else None
                out, s = kernel(**piece, g=g, initial_state=s, output_final_state=True, **options)
                outs.append(out)
        errors["chunked_o"] = rel_rms(torch.cat(outs, dim=2), o)
        errors["chunked_state"] = rel_rms(s, state)
    return errors


def expected_errors(case: Case) -> list[str]:
    return ["o", "final_state", "dq", "dk", "dv"] + (["dg"] if case.decay != "none" else []) + (
        ["dinitial_state"] if case.initial_state else []
    ) + (["chunked_o", "chunked_state"] if case.chunked else [])


def check_errors(case: Case, errors: dict) -> None:
    if "traceback" in errors:
        pytest.fail(f"{case.id} raised:\n{errors['traceback']}")
    tol = FP32_TOL if case.dtype == "float32" else HALF_TOL
    assert set(expected_errors(case)) <= set(errors), errors
    bad = {k: errors[k] for k in expected_errors(case) if not errors[k] <= tol}
    assert not bad, f"relative RMS errors above {tol}: {bad} (all: {errors})"
    assert errors["dtypes"] == [f"torch.{case.dtype}", "torch.float32"], errors["dtypes"]
    assert errors["finite"]
    if "nograd_max_diff" in errors:
        assert errors["nograd_max_diff"] == 0.0


# --------------------------------------------------------------------------------------------
# the worker: this file run as a script, under TRITON_INTERPRET=1


def error_checks(device) -> dict:
    """Messages of the errors the Triton entry points must raise on this machine."""
    from hybrids.kernels.linear import BackendUnavailable, linear_attention
    from hybrids.kernels.linear.triton_chunk import linear_attention_triton

    messages = {}
    x = make_inputs(Case(1, 1, 3, 2, 2, 16), device)
    try:
        linear_attention_triton(x["q"].double(), x["k"].double(), x["v"].double())
    except ValueError as e:
        messages["float64"] = str(e)
    try:
        linear_attention_triton(x["q"], x["k"], x["v"], chunk_size=24)
    except ValueError as e:
        messages["chunk_size"] = str(e)
    if device == "cpu":
        messages.update(triton_interpreter.unavailable_without_interpreter(
            {"dispatcher": lambda: linear_attention(x["q"], x["k"], x["v"], backend="triton"),
             "direct": lambda: linear_attention_triton(x["q"], x["k"], x["v"])}, BackendUnavailable))
    return messages


worker = triton_interpreter.worker_for(CASES, run_case, error_checks)


@pytest.fixture(scope="module")
def interpreter_results(request, tmp_path_factory):
    """All selected CPU cases, computed in one subprocess under TRITON_INTERPRET=1."""
    return triton_interpreter.results(request, tmp_path_factory, __file__)


# --------------------------------------------------------------------------------------------
# tests


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_against_reference(case, request):
    check_errors(case, triton_interpreter.outcome(request, case.id, lambda: run_case(case, "cuda")))


def test_errors(request):
    messages = triton_interpreter.outcome(request, "error_checks", lambda: error_checks("cuda"))
    assert "float64" in messages.get("float64", "") and "backend='chunk'" in messages["float64"], messages
    assert messages.get("chunk_size", "").startswith("chunk_size: expected a power of two"), messages
    if not torch.cuda.is_available():
        for name in ("dispatcher", "direct"):
            assert "TRITON_INTERPRET=1" in messages.get(name, ""), messages
            assert "CUDA" in messages[name]


def test_backend_unavailable_in_this_process(monkeypatch):
    """In a CPU process without TRITON_INTERPRET, asking for "triton" says why and how to get it."""
    if torch.cuda.is_available():
        pytest.skip("CUDA is available: the Triton backend can run")
    from hybrids.kernels.linear import LINEAR_ATTENTION, BackendUnavailable, linear_attention

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv(LINEAR_ATTENTION.env, raising=False)
    x = make_inputs(Case(1, 1, 3, 2, 2, 16), "cpu")
    with pytest.raises(BackendUnavailable, match="TRITON_INTERPRET=1.*pip install triton"):
        linear_attention(x["q"], x["k"], x["v"], backend="triton")
    monkeypatch.setenv(LINEAR_ATTENTION.env, "triton")
    with pytest.raises(BackendUnavailable, match="TRITON_INTERPRET=1"):
        linear_attention(x["q"], x["k"], x["v"])


def test_dispatch_prefers_triton_on_cuda_only(monkeypatch):
    """Automatic choice: "triton" for CUDA tensors (not float64), never on CPU, even under the
    interpreter (the availability test reads only the environment and imports triton)."""
    pytest.importorskip("triton")
    from hybrids.kernels.linear import LINEAR_ATTENTION

    monkeypatch.delenv(LINEAR_ATTENTION.env, raising=False)
    for interpret in (None, "1"):
        if interpret:
            monkeypatch.setenv("TRITON_INTERPRET", interpret)
        else:
            monkeypatch.delenv("TRITON_INTERPRET", raising=False)
        assert LINEAR_ATTENTION.select("cuda", torch.bfloat16) == "triton"
        assert LINEAR_ATTENTION.select("cuda", torch.float64) == "chunk"
        assert LINEAR_ATTENTION.select("cpu", torch.float32) in ("cpu", "chunk")  # chunk without a C++ compiler


@pytest.mark.gpu
@pytest.mark.parametrize(
    "case",
    [Case(2, 4, 1000, 64, 64, 64, "scalar", True, dtype="bfloat16"),
     Case(2, 4, 777, 64, 128, 16, "vector", True, dtype="bfloat16"),
     Case(1, 2, 300, 128, 64, 64, "none", True),
     Case(1, 2, 333, 64, 96, 64, "scalar", True, loss="state", block_v=32),
     Case(1, 2, 333, 32, 64, 16, "vector", True, chunked=(100, 161))],
    ids=lambda c: c.id,
)  # fmt: skip
def test_gpu_larger(case):
    check_errors(case, run_case(case, "cuda"))


@pytest.mark.gpu
@pytest.mark.parametrize("head_dim", [64, 128, 256])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_gpu_default_launch_config(head_dim, dtype):
    """The GPU defaults (the launch table of ``triton_chunk._gpu_tiles`` for this GPU: chunks of
    64, or 16 for a vector decay; key and value blocks that split head dims above 64) through the
    dispatcher, which picks "triton" for CUDA tensors, against the reference in float32, with
    gradients."""
    for decay in ("none", "scalar", "vector"):
        case = Case(2, 3, 64 * 4 + 5, head_dim, head_dim + 32, 64, decay, True, dtype=dtype)
        errors = run_case(case, "cuda", backend="dispatch")
        check_errors(case, errors)


if __name__ == "__main__":
    triton_interpreter.main(worker, __file__)
