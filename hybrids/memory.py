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


def cgroup_room(proc: Path = Path("/proc"), cgroups: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Bytes left under this process's cgroup memory limit (a container's limit can be far below
    the host's free memory, and exceeding it kills the process without a word), or None.

    The usage counted is the cgroup's less its inactive page cache, as ``docker stats`` counts it:
    the raw usage includes cached files the kernel reclaims before it kills anything, and can
    sit near the limit in a container that has plenty of room."""
    try:
        groups = (proc / "self" / "cgroup").read_text().splitlines()
    except OSError:
        return None
    unified = next((line[3:] for line in groups if line.startswith("0::")), None)
    own = next((line.split(":", 2)[2] for line in groups if line.split(":")[1:2] == ["memory"]), "")
    v1 = cgroups / "memory" / own.lstrip("/")
    if not v1.is_dir():  # a cgroup namespace shows its own root here
        v1 = cgroups / "memory"
    candidates = [(v1 / "memory.limit_in_bytes", v1 / "memory.usage_in_bytes", v1 / "memory.stat", "total_inactive_file")]
    if unified is not None:  # v2
        folder = cgroups / unified.lstrip("/")
        candidates.insert(0, (folder / "memory.max", folder / "memory.current", folder / "memory.stat", "inactive_file"))
    for limit_file, usage_file, stat_file, cache_field in candidates:
        try:
            limit = limit_file.read_text().strip()
            if limit == "max":
                continue
            usage = int(usage_file.read_text())
        except (OSError, ValueError):
            continue
        return max(int(limit) - usage + _stat_field(stat_file, cache_field), 0)
    return None


def _stat_field(path: Path, field: str) -> int:
    """A field of a cgroup ``memory.stat`` file, in bytes (0 where it cannot be read)."""
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == field:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def format_bytes(n: float) -> str:
    """``"310.0 MB"``, ``"2.4 GB"``, ``"5.8 TB"``; past a petabyte in powers of ten (``"2.1e6 TB"``)."""
    if n >= 1e15:
        return f"{n / 1e12:.1e} TB".replace("e+0", "e").replace("e+", "e")
    if n >= 1e12:
        return f"{n / 1e12:,.1f} TB"
    return f"{n / 1e9:,.1f} GB" if n >= 1e8 else f"{n / 1e6:,.1f} MB"
