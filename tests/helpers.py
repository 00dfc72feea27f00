"""What the tests share: an error measure that scales with the values, and a peak-memory meter
that runs code in a fresh process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

# The tests' folder (on sys.path for every test and every process a test starts, so that helpers,
# mixer_cases, fault_injection and ray_tasks import anywhere) and the repository root.
TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

# Python source defining ``peak_bytes(fn)``: the rise of the resident set's high-water mark
# (Linux /proc) while ``fn`` runs. Pasted at the top of the code ``peak_memory`` runs.
PEAK_METER = textwrap.dedent(
    """
    import re

    def _kib(field):
        with open("/proc/self/status") as status:
            return int(re.search(rf"^{field}:\\s+(\\d+) kB", status.read(), re.MULTILINE).group(1))

    def peak_bytes(fn):
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # reset the high-water mark VmHWM to the current RSS
        before = _kib("VmRSS")
        fn()
        return (_kib("VmHWM") - before) * 1024
    """
)

MEMORY_METER_PLATFORM = sys.platform.startswith("linux")


def relative_rms(x: torch.Tensor, ref: torch.Tensor, floor: float = 0.0) -> float:
    """rms(x - ref) / max(rms(ref), floor), in float64 (complex128 for complex values): an error
    that scales with the values.

    ``floor`` bounds the scale from below where the reference may vanish identically (a
    gradient that is exactly zero is then held to an absolute error). Two empty tensors: 0.
    """
    wide = torch.complex128 if (x.is_complex() or ref.is_complex()) else torch.float64
    x, ref = x.detach().to(wide), ref.detach().to(wide)
    assert x.shape == ref.shape, f"shapes differ: {tuple(x.shape)} vs {tuple(ref.shape)}"
    if ref.numel() == 0:
        return 0.0
    rms = lambda t: float(t.abs().pow(2).mean().sqrt())  # noqa: E731  (|t|: complex values too)
    return rms(x - ref) / max(rms(ref), floor, 1e-300)


def peak_memory(code: str, timeout: float = 300) -> list[int]:
    """Run ``code`` in a fresh Python process after :data:`PEAK_METER` and return the integers it
    prints (on its last line).

    glibc is told to return freed blocks over 128 KiB to the system, so that the meter reads
    live memory rather than the allocator's retained heap. Tests should also measure a control
    allocation of known size, to show that the meter sees torch's memory.
    """
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 17)}
    source = PEAK_METER + "\n" + textwrap.dedent(code)
    child = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, timeout=timeout, env=env)
    assert child.returncode == 0, child.stderr
    return [int(v) for v in child.stdout.strip().splitlines()[-1].split()]


def outputs_and_parameter_gradients(module, x: torch.Tensor):
    """``module(x)`` and the gradient of ``sum(module(x)^2)`` for each parameter, by name: what two
    paths of one module must agree on."""
    out = module(x)
    grads = torch.autograd.grad(out.square().sum(), list(module.parameters()))
    return out, dict(zip((name for name, _ in module.named_parameters()), grads))


def assert_same_outputs_and_gradients(first, second, rtol: float, atol: float) -> None:
    """Two results of :func:`outputs_and_parameter_gradients` agree: outputs to (rtol, atol),
    each parameter's gradient to ten times those (named in the failure)."""
    torch.testing.assert_close(first[0], second[0], rtol=rtol, atol=atol)
    for name, grad in first[1].items():
        torch.testing.assert_close(grad, second[1][name], rtol=10 * rtol, atol=10 * atol, msg=name)
