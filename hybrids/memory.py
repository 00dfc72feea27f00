"""How much memory a request may still take, so that an impossible one is refused before it is
allocated: a decode state (``hybrids generate``), a model's weights (:mod:`hybrids.model.size_check`)
or a synthetic task's examples (:mod:`hybrids.data.synthetic`).

An allocation that does not fit fails in the allocator with a traceback at best; one between the
free memory and the machine's total is often granted (Linux overcommits) and then kills the process,
or a neighbour, when it is first written. A request is compared with :func:`available_memory`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch


def available_memory(device: torch.device | str = "cpu") -> int | None:
    """Bytes that can still be allocated on ``device``, or None where it cannot be told."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    available = None
    try:  # Linux: the kernel's own estimate (free memory plus reclaimable caches)
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if available is None:  # elsewhere (psutil is not a dependency)
        for pages in ("SC_AVPHYS_PAGES", "SC_PHYS_PAGES"):
            try:
                available = os.sysconf(pages) * os.sysconf("SC_PAGE_SIZE")
                break
            except (ValueError, OSError, AttributeError):
                continue
    room = cgroup_room()
    if room is not None:
        available = room if available is None else min(available, room)
    return available


def cgroup_room() -> int | None:
    """Bytes left under this process's cgroup memory limit (a container's limit can be far below
    the host's free memory, and exceeding it kills the process without a word), or None."""
    try:
        groups = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    unified = next((line[3:] for line in groups if line.startswith("0::")), None)
    candidates = [("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")]  # v1
    if unified is not None:  # v2
        folder = Path("/sys/fs/cgroup", unified.lstrip("/"))
        candidates.insert(0, (folder / "memory.max", folder / "memory.current"))
    for limit_file, usage_file in candidates:
        try:
            limit = Path(limit_file).read_text().strip()
            if limit == "max":
                continue
            return max(int(limit) - int(Path(usage_file).read_text()), 0)
        except (OSError, ValueError):
            continue
    return None


def format_bytes(n: float) -> str:
    """``"310.0 MB"``, ``"2.4 GB"``, ``"5.8 TB"``; past a petabyte in powers of ten (``"2.1e6 TB"``)."""
    if n >= 1e15:
        return f"{n / 1e12:.1e} TB".replace("e+0", "e").replace("e+", "e")
    if n >= 1e12:
        return f"{n / 1e12:,.1f} TB"
    return f"{n / 1e9:,.1f} GB" if n >= 1e8 else f"{n / 1e6:,.1f} MB"
