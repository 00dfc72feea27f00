"""The Triton selective scan (forward and hand-written backward) against the reference.

Every case compares the output, the last state and every gradient (u, delta, A, B, C, D, z,
delta_bias, and initial_state where one is given) with the relative RMS error
``rms(x - ref) / rms(ref)``. Cases marked ``chunked`` also scan the sequence in pieces, each
starting from the last state of the one before, and compare with the scan of the whole.

Where to run the kernels: with CUDA, here, on CUDA tensors; without, in Triton's interpreter,
in one subprocess (``triton_interpreter``: this file run as a script with ``--worker``), whose
results the parametrised tests read from a module fixture.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

import triton_interpreter
from helpers import relative_rms

FP32_TOL = 1e-4
HALF_TOL = 1e-2
GRAD_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


@dataclasses.dataclass(frozen=True)
class Case:
    batch: int
    dim: int
    d_state: int
    length: int
    groups: int | None = None  # None: 3-D B and C; else 4-D with this many groups (B and C)
    groups_C: int | None = -1  # -1: as groups; None: 3-D C; else 4-D C with this many groups
    has_D: bool = True
    has_z: bool = True
    has_bias: bool = True
    softplus: bool = True
    last: bool = False  # return_last_state, with a gradient on the last state in the loss
    loss: str = "both"  # "both": out and (if last) last state; "last": the last state only
    dtype: str = "float32"
    strided: bool = False  # u, delta, z, B, C as transposed views (stride along L != 1)
    blocks: tuple = ()  # (("block_l", 8), ...) overrides of the launch configuration, or ("capability", 90)
    check_nograd: bool = False  # also run the forward without autograd (no states saved)
    initial_state: str | None = None  # the dtype of a random initial state; None: no initial state
    chunked: tuple = ()  # cut points: also scan in pieces chained by their last states

    @property
    def id(self) -> str:
        parts = [f"B{self.batch}-D{self.dim}-N{self.d_state}-L{self.length}"]
        if self.groups is not None:
            parts.append(f"G{self.groups}")
        if self.groups_C != -1:
            parts.append(f"GC{self.groups_C}")
        parts += [flag for flag, on in (("noD", not self.has_D), ("noz", not self.has_z),
                                        ("nobias", not self.has_bias), ("nosoftplus", not self.softplus),
                                        ("last", self.last), ("strided", self.strided)) if on]  # fmt: skip
        if self.initial_state is not None:
            parts.append("h0" + ("" if self.initial_state == "float32" else f"-{self.initial_state}"))
        if self.chunked:
            parts.append("chunked" + "-".join(map(str, self.chunked)))
        if self.loss != "both":
            parts.append(f"loss-{self.loss}")
        parts += [f"{k.replace('block_', 'b').replace('capability', 'sm')}{v}" for k, v in self.blocks]
        if self.dtype != "float32":
            parts.append({"bfloat16": "bf16", "float16": "fp16"}[self.dtype])
        return "-".join(parts)


CASES = [
    Case(2, 4, 4, 37, last=True, check_nograd=True),  # L not a multiple of BLOCK_L
    Case(1, 5, 5, 1, last=True),  # L = 1
    Case(2, 5, 3, 37, blocks=(("block_d", 2), ("block_d_bwd", 4))),  # dim % BLOCK_D != 0, N = 3
    Case(1, 4, 4, 130, groups=2, last=True),  # grouped B / C: 2 channels per group, 9 chunks
    Case(1, 6, 2, 20, groups=3, groups_C=1),  # 4-D B with 3 groups, 4-D C with 1 group
    Case(1, 4, 4, 23, groups_C=None, groups=2),  # 4-D B, 3-D C
    Case(2, 3, 4, 32),  # L a multiple of BLOCK_L: no padding
    Case(1, 3, 4, 19, has_D=False, has_z=False, has_bias=False, softplus=False),
    Case(1, 3, 4, 19, has_z=False, has_bias=False),
    Case(1, 3, 4, 19, has_D=False, softplus=False),
    Case(1, 3, 16, 19, last=True, loss="last"),  # no gradient on the output at all
    Case(2, 4, 4, 29, strided=True, last=True),
    Case(1, 4, 3, 41, blocks=(("block_l", 8),), last=True),  # 6 chunks of 8
    Case(2, 4, 4, 37, last=True, dtype="bfloat16"),
    Case(2, 4, 4, 37, groups=2, dtype="float16"),
    # From an initial state: its gradient too, and the other gradients with its effect.
    Case(2, 4, 4, 37, last=True, initial_state="float32", chunked=(16, 21)),  # 3 chunks, ragged
    Case(1, 5, 5, 1, last=True, initial_state="float32"),  # L = 1: h0's gradient is a[0] g[0] at once
    Case(1, 4, 4, 23, groups=2, initial_state="float64", blocks=(("block_l", 8),)),  # loss on out only
    Case(1, 3, 16, 19, last=True, loss="last", initial_state="float32"),  # loss on the last state only
    Case(1, 3, 4, 19, has_D=False, has_z=False, has_bias=False, softplus=False, initial_state="float32",
         chunked=(7,)),
    Case(1, 4, 4, 37, last=True, dtype="bfloat16", initial_state="float32"),
    # The block sizes of the GPU launch tables (capability 80 and 90 share them at these sizes:
    # BLOCK_L 64 at d_state 16, 16 above; BLOCK_D 2 and 1), with ragged chunks and channel blocks.
    Case(1, 5, 16, 150, last=True, initial_state="float32", blocks=(("capability", 90),)),
    Case(1, 5, 64, 37, last=True, dtype="bfloat16", blocks=(("capability", 90),)),
    Case(1, 3, 128, 37, groups=1, initial_state="float32", blocks=(("capability", 80),)),
]


# --------------------------------------------------------------------------------------------
# one case, on any device (runs in the worker on CPU, here on CUDA)


def rel_rms(x: torch.Tensor, ref: torch.Tensor) -> float:
    """rms(x - ref) / rms(ref); the absolute RMS where the reference is exactly 0 (the gradient
    of an input nothing depends on)."""
    return relative_rms(x, ref) if ref.abs().max() > 0 else relative_rms(x, ref, floor=1.0)


def make_inputs(case: Case, device, seed: int = 0) -> dict:
    """Mamba-like inputs: A = -(1..N) scaled per channel; delta around softplus(-1)."""
    g = torch.Generator().manual_seed(seed)
    b, d, n, L = case.batch, case.dim, case.d_state, case.length
    low = getattr(torch, case.dtype)

    def randn(*shape, scale=1.0, shift=0.0):
        return (torch.randn(*shape, generator=g) * scale + shift).to(device)

    def seq(*lead, **kw):  # (*lead, L), low precision, optionally a transposed view
        x = randn(*lead, L, **kw)
        if case.strided:
            x = x.movedim(-1, 1).contiguous().movedim(1, -1)  # same values, stride along L != 1
        return x.to(low)

    def bc(groups):
        return seq(b, n) if groups is None else seq(b, groups, n)

    groups_C = case.groups if case.groups_C == -1 else case.groups_C
    if case.softplus:
        delta = seq(b, d, scale=0.5, shift=-1.0)
    else:  # delta is used as is: keep it positive
        delta = (torch.rand(b, d, L, generator=g) * 0.3 + 0.02).to(device).to(low)
    A = -torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1) * (0.5 + torch.rand(d, 1, generator=g))
    inputs = dict(
        u=seq(b, d),
        delta=delta,
        A=A.to(device),
        B=bc(case.groups),
        C=bc(groups_C),
        D=randn(d) if case.has_D else None,
        z=seq(b, d) if case.has_z else None,
        delta_bias=randn(d, scale=0.5) if case.has_bias else None,
    )
    if case.initial_state is not None:  # drawn last: the other inputs stay those of the case without
        inputs["initial_state"] = randn(b, d, n).to(getattr(torch, case.initial_state))
    return inputs


def run_case(case: Case, device) -> dict:
    """Relative RMS errors of the Triton scan against the reference on the same inputs."""
    from hybrids.kernels.scan.reference import selective_scan_reference
    from hybrids.kernels.scan.triton_kernels import selective_scan_triton

    inputs = make_inputs(case, device)
    names = [k for k in (*GRAD_NAMES, "initial_state") if inputs.get(k) is not None]
    flags = (case.softplus, case.last)

    def call(fn, leaves, **kw):  # initial_state by keyword, the rest in selective_scan_fn's order
        args = [leaves[k] for k in GRAD_NAMES]
        return fn(*args, *flags, initial_state=leaves.get("initial_state"), **kw)

    def run(fn, cast, **kw):
        leaves = {k: (cast(v).detach().requires_grad_() if v is not None else None) for k, v in inputs.items()}
        res = call(fn, leaves, **kw)
        out, last = res if case.last else (res, None)
        return out, last, leaves

    # The reference runs in float32 on the very values the kernel reads.
    out, last, leaves = run(selective_scan_triton, lambda v: v, **dict(case.blocks))
    ref_out, ref_last, ref_leaves = run(selective_scan_reference, lambda v: v.float())
    g = torch.Generator().manual_seed(1)
    dout = torch.randn(out.shape, generator=g).to(device).to(out.dtype)
    dlast = torch.randn(ref_last.shape, generator=g).to(device) if case.last else None

    def loss(o, s):
        terms = [] if case.loss == "last" else [(o.float() * dout.float()).sum()]
        return sum(terms + ([(s * dlast).sum()] if s is not None else []))

    # allow_unused: with loss="last", z and D do not reach the loss (zero gradients).
    grads = torch.autograd.grad(loss(out, last), [leaves[k] for k in names], allow_unused=True, materialize_grads=True)
    ref_grads = torch.autograd.grad(
        loss(ref_out, ref_last), [ref_leaves[k] for k in names], allow_unused=True, materialize_grads=True
    )

    errors = {"out": rel_rms(out, ref_out)}
    if case.last:
        errors["last"] = rel_rms(last, ref_last)
        errors["last_dtype"] = str(last.dtype)
    errors["out_dtype"] = str(out.dtype)
    for k, gr, rg in zip(names, grads, ref_grads):
        errors[f"d{k}"] = rel_rms(gr, rg)
        assert gr.shape == inputs[k].shape and gr.dtype == inputs[k].dtype, (k, gr.shape, gr.dtype)
    if case.check_nograd:
        with torch.no_grad():  # inputs that require grad, but no backward can follow: no states
            res = call(selective_scan_triton, leaves, **dict(case.blocks))
        errors["nograd_out_max_diff"] = ((res[0] if case.last else res) - out).abs().max().item()
    if case.chunked:
        errors.update(chunked_errors(case, leaves, out, last if case.last else None))
    return errors


def chunked_errors(case: Case, leaves: dict, whole_out, whole_last) -> dict:
    """The scan in pieces cut at ``case.chunked``, each from the last state of the one before,
    against the scan of the whole (output, last state; both Triton, float32)."""
    from hybrids.kernels.scan.triton_kernels import selective_scan_triton

    with torch.no_grad():
        if whole_last is None:
            whole_out, whole_last = selective_scan_triton(
                *[leaves[k] for k in GRAD_NAMES], case.softplus, True, initial_state=leaves.get("initial_state"),
                **dict(case.blocks),
            )
        bounds = [0, *case.chunked, whole_out.shape[-1]]
        outs, state = [], leaves.get("initial_state")
        for start, stop in zip(bounds[:-1], bounds[1:]):
            piece = [v[..., start:stop] if k in ("u", "delta", "B", "C", "z") and v is not None else v
                     for k, v in ((k, leaves[k]) for k in GRAD_NAMES)]  # fmt: skip
            out, state = selective_scan_triton(*piece, case.softplus, True, initial_state=state, **dict(case.blocks))
            outs.append(out)
    return {"chunked_out": rel_rms(torch.cat(outs, dim=-1), whole_out), "chunked_last": rel_rms(state, whole_last)}


def expected_errors(case: Case) -> list[str]:
    return ["out"] + (["last"] if case.last else []) + [
        f"d{k}" for k, on in zip(GRAD_NAMES, (1, 1, 1, 1, 1, case.has_D, case.has_z, case.has_bias)) if on
    ] + (["dinitial_state"] if case.initial_state is not None else []) + (
        ["chunked_out", "chunked_last"] if case.chunked else []
    )


def check_errors(case: Case, errors: dict) -> None:
    if "traceback" in errors:
        pytest.fail(f"{case.id} raised:\n{errors['traceback']}")
    tol = FP32_TOL if case.dtype == "float32" else HALF_TOL
    assert set(expected_errors(case)) <= set(errors), errors
    bad = {k: errors[k] for k in expected_errors(case) if not errors[k] <= tol}
    assert not bad, f"relative RMS errors above {tol}: {bad} (all: {errors})"
    assert errors["out_dtype"] == f"torch.{case.dtype}"
    if case.last:
        assert errors["last_dtype"] == "torch.float32"
    if "nograd_out_max_diff" in errors:
        assert errors["nograd_out_max_diff"] == 0.0


# --------------------------------------------------------------------------------------------
# the worker: this file run as a script, under TRITON_INTERPRET=1


def error_checks(device) -> dict:
    """Messages of the errors the Triton entry points must raise on this machine."""
    from hybrids.kernels.scan import BackendUnavailable, selective_scan
    from hybrids.kernels.scan.triton_kernels import selective_scan_triton

    messages = {}
    x = make_inputs(Case(1, 2, 2, 3), device)
    try:
        selective_scan_triton(*[v.double() if v is not None else None for v in x.values()])
    except ValueError as e:
        messages["float64"] = str(e)
    if device == "cpu":
        messages.update(triton_interpreter.unavailable_without_interpreter(
            {"dispatcher": lambda: selective_scan(*x.values(), backend="triton"),
             "direct": lambda: selective_scan_triton(*x.values())}, BackendUnavailable))
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
    assert "float64" in messages.get("float64", ""), messages
    assert "backend='torch'" in messages["float64"]
    if not torch.cuda.is_available():
        for name in ("dispatcher", "direct"):
            assert "TRITON_INTERPRET=1" in messages.get(name, ""), messages
            assert "CUDA" in messages[name]


def test_backend_unavailable_in_this_process(monkeypatch):
    """In a CPU process without TRITON_INTERPRET, asking for "triton" says why and what to do."""
    if torch.cuda.is_available():
        pytest.skip("CUDA is available: the Triton backend can run")
    from hybrids.kernels.scan import BackendUnavailable, selective_scan

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x = make_inputs(Case(1, 2, 2, 3), "cpu")
    with pytest.raises(BackendUnavailable, match="TRITON_INTERPRET=1"):
        selective_scan(*x.values(), backend="triton")


@pytest.mark.gpu
@pytest.mark.parametrize(
    "case",
    [Case(2, 256, 16, 2048, last=True, dtype="bfloat16"), Case(2, 256, 16, 1000, dtype="float16"),
     Case(1, 128, 16, 777, groups=2, last=True), Case(1, 64, 64, 300, strided=True)],
    ids=lambda c: c.id,
)  # fmt: skip
def test_gpu_larger(case):
    check_errors(case, run_case(case, "cuda"))


@pytest.mark.gpu
def test_gpu_default_blocks_chunks():
    """The GPU block sizes (BLOCK_L = 64) with several chunks and a ragged end."""
    case = Case(2, 48, 16, 64 * 5 + 3, groups=2, last=True)
    check_errors(case, run_case(case, "cuda"))


@pytest.mark.gpu
def test_gpu_against_mamba_extension():
    """Our kernel against mamba_ssm's CUDA op, where it is installed (bf16, Mamba's setting)."""
    pytest.importorskip("selective_scan_cuda")
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    from hybrids.kernels.scan.triton_kernels import selective_scan_triton

    case = Case(2, 256, 16, 1024, last=True, dtype="bfloat16")
    x = make_inputs(case, "cuda")
    ours, ours_last = selective_scan_triton(*x.values(), True, True)
    theirs, theirs_last = selective_scan_fn(*x.values(), True, True)
    assert rel_rms(ours, theirs) < HALF_TOL
    assert rel_rms(ours_last, theirs_last) < 1e-3


if __name__ == "__main__":
    triton_interpreter.main(worker, __file__)
