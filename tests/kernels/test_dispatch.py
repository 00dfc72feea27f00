"""The kernel dispatcher: selection order, errors, the registry, and the package layout it serves."""

import importlib
import pkgutil
import subprocess
import sys

import pytest
import torch

import hybrids.kernels as kernels
from hybrids.kernels.dispatch import Backend, BackendUnavailable, Op

def _unavailable(device):
    return "the frobnicator package is not installed"


def toy_op():
    """An op declared only for these tests (not registered under a real name)."""
    op = Op(
        "toy_test_op",
        (
            Backend("reference", "math:fsum", priority=0, automatic=()),
            Backend("slow", "math:fsum", priority=10),
            Backend("cpu_fast", "math:fsum", devices=("cpu",), dtypes=(torch.float32,), priority=30),
            Backend(
                "missing", "math:fsum", devices=("cpu",), priority=50, available=_unavailable,
                install="pip install frobnicator",
            ),
            Backend(
                "picky", "math:fsum", priority=40,
                accepts=lambda call: "it cannot start from a state" if call.get("state") else None,
            ),
        ),
    )
    kernels.REGISTRY.pop("toy_test_op")
    return op


def test_automatic_choice_is_the_highest_priority_backend_that_fits(monkeypatch):
    op = toy_op()
    monkeypatch.delenv(op.env, raising=False)
    assert op.env == "HYBRIDS_TOY_TEST_OP_BACKEND"
    # "missing" (50) is unavailable, so "picky" (40) wins while it accepts the call ...
    assert op.select("cpu", torch.float32) == "picky"
    # ... then "cpu_fast" (30) for float32, "slow" (10) for float64; "reference" never.
    assert op.select("cpu", torch.float32, state=True) == "cpu_fast"
    assert op.select("cpu", torch.float64, state=True) == "slow"
    assert op.select("cuda", torch.float32, state=True) == "slow"


def test_argument_beats_environment_which_beats_automatic(monkeypatch):
    op = toy_op()
    monkeypatch.setenv(op.env, "slow")
    assert op.select("cpu", torch.float32) == "slow"
    assert op.select("cpu", torch.float32, backend="reference") == "reference"


def test_unknown_names_list_the_valid_ones(monkeypatch):
    op = toy_op()
    with pytest.raises(ValueError, match=r"^backend: unknown toy_test_op backend 'fast'; valid: reference, slow"):
        op.select("cpu", torch.float32, backend="fast")
    monkeypatch.setenv(op.env, "fast")
    with pytest.raises(ValueError, match=r"^HYBRIDS_TOY_TEST_OP_BACKEND: unknown"):
        op.select("cpu", torch.float32)


@pytest.mark.parametrize(
    "backend, device, dtype, call, message",
    [
        ("missing", "cpu", torch.float32, {}, "frobnicator package is not installed; to get it: pip install frobnicator"),
        ("missing", "cuda", torch.float32, {}, "runs on cpu tensors, got cuda; also the frobnicator package"),
        ("cpu_fast", "cpu", torch.float64, {}, "takes float32 inputs, got float64"),
        ("picky", "cpu", torch.float32, {"state": True}, "cannot start from a state"),
    ],
)
def test_forced_backend_that_cannot_run_says_why_and_how(backend, device, dtype, call, message, monkeypatch):
    op = toy_op()
    for how in ("argument", "environment"):
        if how == "environment":
            monkeypatch.setenv(op.env, backend)
        with pytest.raises(BackendUnavailable, match=f"toy_test_op backend '{backend}' cannot run here: .*{message}"):
            op.select(device, dtype, backend=backend if how == "argument" else None, **call)


def test_repeated_backend_names_are_refused():
    with pytest.raises(ValueError, match="repeat"):
        Op("toy_repeat", (Backend("a", "math:fsum"), Backend("a", "math:fsum")))


def test_every_op_is_registered_and_its_backends_import():
    expected = {
        "selective_scan", "selective_state_update", "causal_conv1d", "causal_conv1d_update",
        "sparse_attention", "cauchy", "vandermonde", "fft_conv",
    }
    assert expected <= set(kernels.REGISTRY)
    for op in kernels.REGISTRY.values():
        assert op.env == f"HYBRIDS_{op.name.upper()}_BACKEND"
        for backend in op.backends:
            module, _, attr = backend.entry.partition(":")
            if backend.name == "triton":
                continue  # importing triton's module needs triton; covered by the interpreter tests
            assert callable(getattr(importlib.import_module(module), attr)), backend.entry
        assert op.automatic("cpu", torch.float32) in op.names


def test_no_module_is_shadowed_by_a_function():
    """``import hybrids.kernels.<sub> as m`` gives a module for every subpackage/module."""
    names = [m.name for m in pkgutil.iter_modules(kernels.__path__)]
    assert {"scan", "conv", "sparse", "ssm", "dispatch"} <= set(names)
    for name in names:
        assert not hasattr(kernels, name) or getattr(kernels, name).__class__.__name__ == "module", name
        module = importlib.import_module(f"hybrids.kernels.{name}")
        assert getattr(kernels, name) is module
    for public in kernels.__all__:
        assert public not in names, f"hybrids.kernels.{public} is both a module and a re-exported name"


def test_every_public_name_of_the_op_packages_is_re_exported():
    for package in ("scan", "conv", "sparse", "ssm"):
        module = importlib.import_module(f"hybrids.kernels.{package}")
        for name in module.__all__:
            if name.isupper() or name == "BackendUnavailable":
                continue  # op declarations and constants stay in their package
            assert getattr(kernels, name) is getattr(module, name), f"{package}.{name} is not in hybrids.kernels"
    assert kernels.SparsePattern and kernels.sparse_attention


def test_python_m_hybrids_kernels_prints_every_op():
    out = subprocess.run([sys.executable, "-m", "hybrids.kernels"], capture_output=True, text=True, check=True).stdout
    for op in kernels.REGISTRY:
        if op.startswith("toy"):
            continue
        assert f"\n{op}  (force one with HYBRIDS_{op.upper()}_BACKEND" in out
    assert "default: cpu -> " in out


def test_the_former_state_update_variable_still_works_with_a_warning(monkeypatch):
    from hybrids.kernels.scan.step import SELECTIVE_STATE_UPDATE as op

    monkeypatch.delenv(op.env, raising=False)
    monkeypatch.setenv("HYBRIDS_STATE_UPDATE_BACKEND", "torch")
    with pytest.warns(FutureWarning, match="HYBRIDS_STATE_UPDATE_BACKEND is renamed HYBRIDS_SELECTIVE_STATE_UPDATE_BACKEND"):
        assert op.select("cpu", torch.float32) == "torch"
    monkeypatch.setenv("HYBRIDS_STATE_UPDATE_BACKEND", "nonsense")
    with pytest.raises(ValueError, match="^HYBRIDS_STATE_UPDATE_BACKEND: unknown"), pytest.warns(FutureWarning):
        op.select("cpu", torch.float32)


def test_describe_shows_a_forced_backend(monkeypatch):
    monkeypatch.setenv("HYBRIDS_SPARSE_ATTENTION_BACKEND", "reference")
    text = kernels.describe()
    assert "forced by HYBRIDS_SPARSE_ATTENTION_BACKEND=reference: cpu -> reference" in text
