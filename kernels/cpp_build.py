"""Build and load the C++ CPU kernels in ``kernels/csrc`` with the system's compiler, on first use.

The kernels are plain C++ with a C interface (no torch headers), so a build takes about a second
and is called through ``ctypes`` with tensors' data pointers. Built libraries are cached under
``$HYBRIDS_CACHE_DIR`` (default ``~/.cache/hybrids``), keyed by the source, the compiler, its
flags and the CPU, so an edit or another machine rebuilds.

No compiler (``$CXX``, else ``c++``, ``g++`` or ``clang++`` on the PATH), or a failed build, only
makes the ``"cpu"`` backends unavailable: callers fall back to pure PyTorch. OpenMP is used where
the compiler has it (``-fopenmp``) and left out otherwise (e.g. Apple clang), running one thread.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

SOURCE_DIR = Path(__file__).parent / "csrc"
CACHE_ENV = "HYBRIDS_CACHE_DIR"
# Set to "1" to make the C++ backends unavailable (e.g. to test the pure-PyTorch fallback).
DISABLE_ENV = "HYBRIDS_DISABLE_CPP"

# Tried in order until one compiles: native code with OpenMP, then less. Without
# -fno-trapping-math GCC leaves the float-to-int steps of the kernels' exp unvectorised (4x
# slower); neither flag changes a result (no -ffast-math: the arithmetic stays IEEE).
_BASE_FLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math"]
_FLAG_SETS = (
    [*_BASE_FLAGS, "-march=native", "-fopenmp"],
    [*_BASE_FLAGS, "-fopenmp"],
    [*_BASE_FLAGS, "-march=native"],
    _BASE_FLAGS,
)


class BuildError(RuntimeError):
    pass


def compiler() -> str | None:
    for candidate in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


def unavailable_reason(name: str = "selective_scan") -> str | None:
    """None if ``csrc/<name>.cpp`` builds and loads here, else why not (and how to fix it)."""
    if os.environ.get(DISABLE_ENV) == "1":
        return f"disabled by {DISABLE_ENV}=1"
    return _build_failure(name)


@functools.cache
def _build_failure(name: str) -> str | None:
    """Why ``name`` does not build here, or None; asked once per process (the dispatcher asks
    on every call, and a failing build would otherwise run the compiler each time)."""
    try:
        load(name)
    except BuildError as error:
        return str(error)
    return None


@functools.cache
def load(name: str) -> ctypes.CDLL:
    """Compile ``csrc/<name>.cpp`` (or reuse the cached build) and load it."""
    cxx = compiler()
    if cxx is None:
        raise BuildError("no C++ compiler found: install g++ or clang++, or set CXX")
    source = SOURCE_DIR / f"{name}.cpp"
    errors = []
    for flags in _FLAG_SETS:
        target = _cache_dir() / f"{name}-{_key(source, cxx, flags)}.so"
        if not target.exists():
            try:
                _compile(cxx, flags, source, target)
            except BuildError as error:
                errors.append(str(error))
                continue
        library = ctypes.CDLL(str(target))
        library.hybrids_build_flags = " ".join(flags)
        return library
    raise BuildError(f"could not build {source.name} with {cxx}: " + " | ".join(errors[-1:]))


def _cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "hybrids"
    path = Path(root) / "cpp"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _key(source: Path, cxx: str, flags: list[str]) -> str:
    digest = hashlib.sha256(source.read_bytes())
    for header in sorted(source.parent.glob("*.h")):  # what the sources include
        digest.update(header.read_bytes())
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    for part in (cxx, version, " ".join(flags), platform.machine(), _cpu_model()):
        digest.update(part.encode())
    return digest.hexdigest()[:16]


def _cpu_model() -> str:
    """What -march=native depends on: the CPU's model and feature flags, where readable."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    return "".join(line for line in lines[:30] if line.startswith(("model name", "flags")))


def _compile(cxx: str, flags: list[str], source: Path, target: Path) -> None:
    # Build beside the target and rename: concurrent first uses never load a half-written file.
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        partial = Path(tmp) / target.name
        command = [cxx, *flags, "-shared", "-fPIC", "-std=c++17", str(source), "-o", str(partial)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise BuildError(f"`{' '.join(command)}` failed: {result.stderr.strip()[-500:]}")
        os.replace(partial, target)


def contiguous(*tensors):
    """The tensors in C order, as the kernels read them; None (an absent input) stays None."""
    return tuple(t.contiguous() if t is not None else None for t in tensors)


def pointer(tensor) -> ctypes.c_void_p:
    """A tensor's data pointer for a C argument (None: a null pointer, an absent input)."""
    return ctypes.c_void_p(tensor.data_ptr() if tensor is not None else None)


_SUFFIXES = {"torch.float32": "f32", "torch.float64": "f64"}


def function(name: str, symbol: str, dtype):
    """``hybrids_<symbol>_<f32|f64>`` from the library built from ``csrc/<name>.cpp``: the
    kernels export one copy per dtype."""
    suffix = _SUFFIXES.get(str(dtype))
    if suffix is None:
        raise TypeError(f"the C++ kernels run in float32 or float64, got {dtype}")
    return getattr(load(name), f"hybrids_{symbol}_{suffix}")
