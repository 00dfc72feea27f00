"""Running a test module's Triton cases in Triton's interpreter, in one subprocess.

The interpreter needs ``TRITON_INTERPRET=1`` in the environment *before triton is first
imported* in a process (Triton's library functions such as ``tl.sum`` are decorated at that
import). The rest of the suite may have imported triton already, and setting the variable in the
pytest process would leak into other tests, so a Triton test module runs its CPU cases in a
subprocess: the module itself run as a script with ``--worker ID ...``, printing the cases'
errors as one JSON line. Its parametrised tests read them from a module fixture built with
:func:`results`. Under pytest-xdist the first worker writes the results to the session's
temporary folder and the others read them.

The worker also fixes two things in Triton 3.9's interpreter (:func:`prepare_interpreter`):

- its generic associative scan calls the combine function once per element; it gets whole
  columns instead, in the same sequential order (about 10x faster, nothing else changes);
- it holds bfloat16 tensors as their 16-bit patterns (numpy has no bfloat16) and ``tl.dot``
  multiplies those patterns as integers; they are decoded to float32 first, which is what a GPU
  computes (bfloat16 operands, float32 accumulation).

A Triton test module defines its cases (objects with an ``id``), ``run_case(case, device)`` and
``error_checks(device)``, and::

    worker = triton_interpreter.worker_for(CASES, run_case, error_checks)

    @pytest.fixture(scope="module")
    def interpreter_results(request, tmp_path_factory):
        return triton_interpreter.results(request, tmp_path_factory, __file__)

    def test_against_reference(case, request):
        errors = triton_interpreter.outcome(request, case.id, lambda: run_case(case, "cuda"))

    if __name__ == "__main__":
        triton_interpreter.main(worker, __file__)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

TESTS = Path(__file__).resolve().parents[1]  # on the worker's path: helpers, mixer_cases, ...


def results(request, tmp_path_factory, module_file: str, test_name: str = "test_against_reference",
            timeout: float = 900) -> dict:  # fmt: skip
    """The worker's results for the cases of ``module_file``'s ``test_name`` that this session
    selected (``{case id: errors}``, plus whatever else the worker returns)."""
    from filelock import FileLock  # a dependency of torch

    selected = sorted(
        item.callspec.params["case"].id
        for item in request.session.items
        if getattr(item, "originalname", None) == test_name and hasattr(item, "callspec")
        and Path(str(item.fspath)).resolve() == Path(module_file).resolve()
    )
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by the workers of this run
    cache = root / f"{Path(module_file).stem}_interpreter.json"
    with FileLock(str(cache) + ".lock"):
        if cache.exists():
            return json.loads(cache.read_text())
        path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": path}
        proc = subprocess.run(
            [sys.executable, str(Path(module_file).resolve()), "--worker", *selected],
            env=env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if proc.returncode != 0:
            pytest.fail(f"the interpreter worker failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
        cache.write_text(proc.stdout.strip().splitlines()[-1])
        return json.loads(cache.read_text())


def worker_for(cases: Sequence, run_case: Callable[[Any, str], dict],
               error_checks: Callable[[str], dict]) -> Callable[[list[str]], dict]:  # fmt: skip
    """The worker of a test module: its cases ``ids`` (all if none) run on the CPU, each from seed
    0, a case that raises recorded as its traceback; plus ``"error_checks"``."""

    def worker(ids: list[str]) -> dict:
        out: dict[str, Any] = {}
        for case in cases:
            if ids and case.id not in ids:
                continue
            torch.manual_seed(0)
            try:
                out[case.id] = run_case(case, "cpu")
            except Exception:  # noqa: BLE001 (reported by the test of that case)
                out[case.id] = {"traceback": traceback.format_exc()}
        out["error_checks"] = error_checks("cpu")
        return out

    return worker


def unavailable_without_interpreter(calls: dict[str, Callable[[], Any]], error: type[Exception]) -> dict[str, str]:
    """Each call's ``error`` message when made with ``TRITON_INTERPRET`` unset (on a CPU, where a
    Triton backend must then refuse): name -> message, for the calls that refused."""
    messages = {}
    saved = os.environ.pop("TRITON_INTERPRET", None)
    try:
        for name, call in calls.items():
            try:
                call()
            except error as e:
                messages[name] = str(e)
    finally:
        if saved is not None:
            os.environ["TRITON_INTERPRET"] = saved
    return messages


def outcome(request, key: str, on_cuda: Callable[[], Any]) -> Any:
    """A result computed now on CUDA where there is a GPU, else the interpreter's (the module's
    ``interpreter_results`` fixture) under ``key``."""
    if torch.cuda.is_available():
        return on_cuda()
    return request.getfixturevalue("interpreter_results")[key]


def main(worker: Callable[[list[str]], dict], module_file: str) -> None:
    """The script entry of a Triton test module: ``--worker ID ...`` runs the cases in the
    interpreter and prints their results; anything else runs the module's tests under pytest."""
    if sys.argv[1:2] == ["--worker"]:
        assert os.environ.get("TRITON_INTERPRET") == "1", "the worker needs TRITON_INTERPRET=1"
        prepare_interpreter()
        print(json.dumps(worker(sys.argv[2:])))
    else:
        sys.exit(pytest.main([module_file, *sys.argv[1:]]))


def prepare_interpreter() -> None:
    """Apply the two fixes of the module docstring (each left out if the interpreter's internals
    have moved)."""
    _vectorise_scan()
    _decode_bfloat16_in_dot()


def _vectorise_scan() -> None:
    import numpy as np

    try:
        from triton.runtime.interpreter import ScanOps
    except ImportError:
        return
    if not hasattr(ScanOps, "generic_scan"):
        return

    def generic_scan(self, input):
        # Columns i (accumulated) and i + 1 (new) of every independent row at once.
        data = [np.moveaxis(arg.handle.data, self.axis, 0) for arg in input]
        outputs = [np.empty_like(x) for x in data]
        acc = None
        for i in range(data[0].shape[0]):
            cur = tuple(self.to_tensor(np.ascontiguousarray(x[i]), arg.dtype) for x, arg in zip(data, input))
            if acc is None:
                acc = cur
            else:
                res = self.combine_fn.fn(*acc, *cur)
                acc = res if isinstance(res, tuple) else (res,)
            for out, a in zip(outputs, acc):
                out[i] = a.handle.data
        return [
            self.to_tensor(np.ascontiguousarray(np.moveaxis(out, 0, self.axis)), arg.dtype)
            for out, arg in zip(outputs, input)
        ]

    ScanOps.generic_scan = generic_scan


def _decode_bfloat16_in_dot() -> None:
    import numpy as np
    import triton.language as tl
    from triton.runtime import interpreter

    if not hasattr(interpreter, "InterpreterBuilder"):
        return
    original = interpreter.InterpreterBuilder.create_dot

    def decoded(handle):
        if handle.dtype.scalar == tl.bfloat16:
            return (handle.data.astype(np.uint32) << 16).view(np.float32)
        return handle.data

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        if tl.bfloat16 not in (a.dtype.scalar, b.dtype.scalar):
            return original(self, a, b, d, input_precision, max_num_imprecise_acc)
        product = np.matmul(decoded(a), decoded(b), dtype=np.float32)
        return interpreter.TensorHandle(product.astype(d.data.dtype) + d.data, d.dtype.scalar)

    interpreter.InterpreterBuilder.create_dot = create_dot
