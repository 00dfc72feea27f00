"""One dispatcher for every kernel op: which backend runs a call, and why another cannot.

An op (``selective_scan``, ``causal_conv1d``, ...) declares its backends once, in its package's
``__init__``, as :class:`Backend` records: where each runs (device types and input dtypes), how
to tell it can run here, how to install it, its priority, and where its function lives. A call
then asks :meth:`Op.select` for a backend name:

1. ``backend=`` given by the caller wins;
2. else the op's environment variable (``HYBRIDS_<OP>_BACKEND``, e.g.
   ``HYBRIDS_SELECTIVE_SCAN_BACKEND=torch``) forces one for the whole process;
3. else the available backend of highest priority that serves the tensors' device and dtype,
   accepts the call's arguments and, if it has a ``prefers`` rule, is preferred for them (e.g. a
   dense path only for short inputs); references are chosen this way only where declared as a
   fallback.

A backend asked for by name (1 or 2) that cannot run raises :class:`BackendUnavailable`, whose
message says why and how to get it; an unknown name raises ``ValueError`` listing the valid ones.

``python -m hybrids.kernels`` prints :func:`describe`: per op, each backend's availability here
and the backend each device would use.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
DEVICES = ("cpu", "cuda")


class BackendUnavailable(RuntimeError):
    """A backend was asked for by name but cannot run here; the message says how to get it."""


def _always(device: str) -> str | None:
    return None


def triton_available(device: str) -> str | None:
    """The ``available`` rule of every Triton backend: None if Triton is installed and the tensors
    are on CUDA (or on CPU under Triton's interpreter, for tests), else why not."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return "Triton is not installed: `pip install triton` (Linux x86_64/aarch64)"
    if device != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        return (
            f"Triton kernels need CUDA tensors, got {device}; on CPU they run only in Triton's "
            "interpreter (set TRITON_INTERPRET=1 before importing triton, for tests)"
        )
    return None


@dataclass(frozen=True)
class Backend:
    """One way of computing an op.

    Attributes:
        name: what ``backend=`` and the environment variable call it.
        entry: ``"module:function"`` of its implementation, imported on first use (so that an
            optional package is only imported where it is used).
        devices: device types it serves (``"cpu"``, ``"cuda"``).
        dtypes: input dtypes it takes.
        priority: among the available backends that fit a call, the highest wins.
        available: device type -> None if it can run here, else why not (checked lazily: may
            import an optional package or build a C++ library).
        accepts: the call's keyword arguments -> None if it takes them, else why not (e.g. a
            conv width the CUDA package lacks, or an initial state it cannot start from).
        install: how to get it where it is missing.
        automatic: device types on which it may be chosen automatically; empty for references
            and for paths that only run for tests (Triton's interpreter on CPU).
        prefers: the call's keyword arguments -> None if it is worth choosing automatically for
            them, else why not (e.g. a dense path that beats a tiled one only on short inputs).
            Unlike ``accepts`` it does not apply when the backend is asked for by name.
    """

    name: str
    entry: str
    devices: tuple[str, ...] = DEVICES
    dtypes: tuple[torch.dtype, ...] = FLOATS
    priority: int = 0
    available: Callable[[str], str | None] = _always
    accepts: Callable[[Mapping[str, Any]], str | None] | None = None
    install: str = ""
    automatic: tuple[str, ...] | None = None  # None: every device in `devices`
    prefers: Callable[[Mapping[str, Any]], str | None] | None = None

    def auto_devices(self) -> tuple[str, ...]:
        return self.devices if self.automatic is None else self.automatic

    def reason_not(self, device: str, dtype: torch.dtype | None, call: Mapping[str, Any]) -> str | None:
        """None if this backend can run a call on ``device`` with inputs of ``dtype``, else why not."""
        if device not in self.devices:
            return f"it runs on {' or '.join(self.devices)} tensors, got {device}"
        if dtype is not None and dtype not in self.dtypes:
            names = ", ".join(str(d).removeprefix("torch.") for d in self.dtypes)
            return f"it takes {names} inputs, got {str(dtype).removeprefix('torch.')}"
        why = self.available(device)
        if why is None and self.accepts is not None:
            why = self.accepts(call)
        return why


@dataclass
class Op:
    """A kernel op and its backends; see the module docstring."""

    name: str
    backends: tuple[Backend, ...]
    env: str = ""
    # Former names of the environment variable, still honoured (with a warning).
    env_aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.env = self.env or f"HYBRIDS_{self.name.upper()}_BACKEND"
        names = [b.name for b in self.backends]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: backend names repeat: {names}")
        REGISTRY[self.name] = self

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.backends)

    def backend(self, name: str) -> Backend:
        for b in self.backends:
            if b.name == name:
                return b
        raise ValueError(f"{self.name}: unknown backend {name!r}; valid: {', '.join(self.names)}")

    def select(
        self,
        device: torch.device | str,
        dtype: torch.dtype | None = None,
        backend: str | None = None,
        **call: Any,
    ) -> str:
        """The backend to run a call whose main input lives on ``device`` with ``dtype``.

        ``call`` holds whatever the backends' ``accepts`` checks read (e.g. ``width=4`` or
        ``initial_state=True``).
        """
        device = torch.device(device).type
        forced_by = "backend"
        if backend is None:
            backend, forced_by = self.forced()
        if backend is not None:
            if backend not in self.names:
                raise ValueError(f"{forced_by}: unknown {self.name} backend {backend!r}; valid: {', '.join(self.names)}")
            chosen = self.backend(backend)
            why = chosen.reason_not(device, dtype, call)
            if why and device not in chosen.devices:
                # Say also what else it would need on its own device (e.g. a package to install).
                elsewhere = chosen.available(chosen.devices[0])
                why = f"{why}; also {elsewhere}" if elsewhere else why
            if why:
                hint = f"; to get it: {chosen.install}" if chosen.install and chosen.install not in why else ""
                raise BackendUnavailable(f"{self.name} backend {backend!r} cannot run here: {why}{hint}")
            return backend
        return self.automatic(device, dtype, **call)

    def forced(self) -> tuple[str | None, str]:
        """(the backend the environment forces, or None; the variable that forces it)."""
        value = os.environ.get(self.env)
        if value:
            return value, self.env
        for alias in self.env_aliases:
            if os.environ.get(alias):
                warnings.warn(f"{alias} is renamed {self.env}; set that instead", FutureWarning, stacklevel=3)
                return os.environ[alias], alias
        return None, self.env

    def automatic(self, device: str, dtype: torch.dtype | None = None, **call: Any) -> str:
        """The backend chosen when nothing is forced: the highest-priority one that fits."""
        reasons = []
        for b in sorted(self.backends, key=lambda b: -b.priority):
            if device not in b.auto_devices():
                continue
            why = b.reason_not(device, dtype, call)
            if why is None and b.prefers is not None:
                why = b.prefers(call)
            if why is None:
                return b.name
            reasons.append(f"{b.name}: {why}")
        raise BackendUnavailable(f"{self.name}: no backend can run on {device} ({'; '.join(reasons) or 'none declared'})")

    def function(self, name: str) -> Callable:
        """The implementation of backend ``name``, imported on first use.

        Looked up on every call (the import is cached by Python), so a test can replace the
        function on its module. A module already imported is read from ``sys.modules``, which
        torch.compile can trace, where ``importlib.import_module`` would end its graph.
        """
        module, _, attr = self.backend(name).entry.partition(":")
        loaded = sys.modules.get(module)
        return getattr(loaded if loaded is not None else importlib.import_module(module), attr)


# Every op registers itself here when its package is imported (hybrids.kernels imports them all).
REGISTRY: dict[str, Op] = {}


def describe(ops: Mapping[str, Op] | None = None) -> str:
    """A plain-text report: per op, each backend's availability here and the automatic choice per device."""
    ops = REGISTRY if ops is None else ops
    cuda_here = torch.cuda.is_available()
    lines = [f"torch {torch.__version__}; CUDA device: {torch.cuda.get_device_name(0) if cuda_here else 'none'}"]
    for op in ops.values():
        lines.append("")
        lines.append(f"{op.name}  (force one with {op.env}=<name> or backend=)")
        for b in sorted(op.backends, key=lambda b: -b.priority):
            states = []
            for device in b.devices:
                why = b.available(device)
                label = "cuda (no device here)" if device == "cuda" and not cuda_here else device
                states.append(f"{label}: {'available' if why is None else 'unavailable, ' + why}")
            auto = b.auto_devices()
            if not auto:
                auto = "  [only when asked for]"
            elif set(auto) != set(b.devices):
                auto = f"  [chosen automatically on {', '.join(auto)} only]"
            else:
                auto = ""
            if b.prefers is not None and b.auto_devices():
                auto = (auto[:-1] + ", " if auto else "  [") + "for the calls its rule prefers]"
            lines.append(f"  {b.name:<11} priority {b.priority:>3}  {'; '.join(states)}{auto}")
        choices = []
        forced, by = op.forced()
        for device in DEVICES:
            try:
                choice = op.select(device, torch.float32) if forced else op.automatic(device, torch.float32)
            except (BackendUnavailable, ValueError) as err:
                choice = f"none ({err})"
            if device == "cuda" and not cuda_here:
                choice += " (if a CUDA device were present)"
            choices.append(f"{device} -> {choice}")
        heading = f"forced by {by}={forced}" if forced else "default"
        lines.append(f"  {heading}: " + ", ".join(choices))
        preferring = [f"{b.name} on {'/'.join(b.auto_devices())}" for b in op.backends if b.prefers and b.auto_devices()]
        if preferring and not forced:
            lines.append(f"  instead, for the calls its rule prefers: {', '.join(preferring)}")
    return "\n".join(lines)
