"""Memory estimates checked before large allocations (``specs/errors.md``, "Resources").

Loading a file, simulating a scan, building a network and stitching a canvas each
estimate their memory first and refuse, with the figure and the limit, when it exceeds
what this machine has free -- instead of failing later inside the allocator.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["available_memory_bytes", "format_bytes", "memory_shortfall"]

_CGROUP_FILES = (
    ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
    (
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",  # cgroup v1
        "/sys/fs/cgroup/memory/memory.usage_in_bytes",
    ),
)


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def available_memory_bytes() -> int:
    """Bytes of memory this process can still allocate: the smaller of the system's
    available memory and the room left under a container (cgroup) limit."""
    candidates = []
    system = _meminfo_available()
    if system is None:
        try:
            system = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            system = None
    if system is not None:
        candidates.append(system)
    for limit_file, usage_file in _CGROUP_FILES:
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and usage is not None and limit < 1 << 60:
            candidates.append(max(0, limit - usage))
    # Unknown platform: do not refuse on a guess.
    return min(candidates) if candidates else 1 << 62


def format_bytes(n_bytes: float) -> str:
    """Human-readable size in binary units (``1.5 GiB``)."""
    value = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def memory_shortfall(needed_bytes: float, what: str) -> str | None:
    """None when ``needed_bytes`` fit in the available memory, else the sentence that
    says so: ``"<what> needs about X of memory but only Y is available"``."""
    available = available_memory_bytes()
    if needed_bytes <= available:
        return None
    return (
        f"{what} needs about {format_bytes(needed_bytes)} of memory but only "
        f"{format_bytes(available)} is available"
    )
