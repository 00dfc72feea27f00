"""What the benchmark scripts share: best-of-N timing, the peak-memory meter, and running one
configuration in a fresh Python process.

Scripts import it as ``from common import ...`` (they run as ``python benchmarks/<script>.py``,
which puts this folder first on ``sys.path``).
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable


def status_kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status (VmRSS, VmHWM), in KiB (Linux)."""
    with open("/proc/self/status") as status:
        return int(re.search(rf"^{field}:\s+(\d+) kB", status.read(), re.MULTILINE).group(1))


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """Seconds of the fastest of ``repeats`` calls (the caller warms up first)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def return_freed_memory() -> None:
    """Make freed memory leave the resident set (glibc, Linux), from now on and now.

    glibc's malloc keeps freed blocks for reuse, and it raises its mmap threshold when a large
    block is freed, so after a first step the next one reuses memory that is already resident
    and the high-water mark hardly rises (the reference showed 2 MiB for 256 MiB of saved
    states). Fixing the threshold at 64 KiB makes every tensor of that size or more its own
    mapping, returned to the system when freed; ``malloc_trim`` gives back what is free now.
    The price is a little overcounting: each such block rounds up to whole pages plus a header
    page (about 6% on 64 KiB blocks, nothing that matters on large ones). Time is unaffected:
    :func:`time_and_peak` times before calling this.
    """
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_threshold = -1, -3  # mallopt parameters from glibc's malloc.h
    libc.mallopt(m_mmap_threshold, 64 * 1024)
    libc.mallopt(m_trim_threshold, 0)
    libc.malloc_trim(0)


def time_and_peak(step: Callable[[], object], repeats: int) -> dict:
    """One warm-up call, then ``{"seconds": best of repeats, "peak_mib": ...}``.

    Time is taken first, with the allocator as it is. Peak memory is then measured over one
    more call: the resident-set high-water mark during it minus the resident set before it (the
    mark reset through ``/proc/self/clear_refs``), with freed memory returned to the system
    (:func:`return_freed_memory`) so that memory kept from earlier calls does not hide it: what
    the computation itself allocates and touches, its inputs excluded. Meant to run in a fresh
    process (:func:`run_child`), so that another configuration's allocations do not count.
    """
    step()  # warm-up: thread pools, caches, libraries built on first use
    seconds = best_time(step, repeats)
    return_freed_memory()
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # reset the high-water mark VmHWM to the current resident set
    before = status_kib("VmRSS")
    step()
    return {"seconds": seconds, "peak_mib": (status_kib("VmHWM") - before) / 1024}


def run_child(script: str, config: dict) -> dict:
    """Run ``python script --child <config as JSON>`` and return the JSON it prints last."""
    child = subprocess.run(
        [sys.executable, script, "--child", json.dumps(config)], capture_output=True, text=True, check=False
    )
    if child.returncode:
        raise RuntimeError(f"configuration {config} failed:\n{child.stderr}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def cuda_time_ms(fn: Callable[[], object], warmup: int, repeats: int) -> float:
    """Median milliseconds of ``repeats`` timed calls (CUDA events), after ``warmup`` calls."""
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def saved_mib(loss) -> float:
    """MiB of the tensors autograd keeps for the backward pass of ``loss()`` (each storage once,
    counted through ``saved_tensors_hooks``): activation memory, exactly. Runs the backward pass
    too, so that nothing is left held."""
    import torch

    storages: dict[int, int] = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        value = loss()  # the forward pass only: what is held when the backward pass starts
    value.backward()
    return sum(storages.values()) / 2**20


def cuda_peak_and_ms(step: Callable[[], object], repeats: int) -> dict:
    """On CUDA: ``{"peak_mib": max_memory_allocated during one step minus before it, "ms": best
    of repeats}``, after a warm-up step."""
    import torch

    step()
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_allocated() - before) / 2**20

    def timed() -> None:
        step()
        torch.cuda.synchronize()

    return {"peak_mib": peak, "ms": 1e3 * best_time(timed, repeats)}
