"""Peak-memory probes for one benchmark process (Linux RSS, CUDA allocator).

Peak RSS is read from ``VmHWM`` in ``/proc/self/status``. Between phases the high-water mark is
reset by writing ``5`` to ``/proc/self/clear_refs`` after handing freed heap back to the OS
(``malloc_trim``), so a phase's peak is the most memory resident while that phase ran — imports,
weights and whatever stays allocated included, the model set-up's temporary peak excluded. Where
either is unavailable, the peak is the whole process's (``getrusage`` maxrss) and ``scope`` says so.
"""

from __future__ import annotations

import ctypes
import resource
import sys
from pathlib import Path

import torch

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kb(field: str) -> int | None:
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def process_peak_mb() -> float:
    """Peak RSS of this whole process so far (MB); ru_maxrss is KiB on Linux, bytes on macOS."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def current_rss_mb() -> float | None:
    kb = _status_kb("VmRSS")
    return None if kb is None else kb / 1024


def release_free_heap() -> None:
    """Give freed malloc arenas back to the OS (glibc only; a no-op elsewhere)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Start a phase with :meth:`reset`, end it with :meth:`peak_rss_mb` / :meth:`peak_gpu_mb`."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.scope = "phase" if _status_kb("VmHWM") is not None and CLEAR_REFS.exists() else "process"

    def reset(self) -> None:
        release_free_heap()
        if self.scope == "phase":
            try:
                CLEAR_REFS.write_text("5")
            except OSError:
                self.scope = "process"
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_rss_mb(self) -> float:
        if self.scope == "phase":
            kb = _status_kb("VmHWM")
            if kb is not None:
                return kb / 1024
        return process_peak_mb()

    def peak_gpu_mb(self) -> float | None:
        if self.device.type != "cuda":
            return None
        torch.cuda.synchronize(self.device)
        return torch.cuda.max_memory_allocated(self.device) / (1024 * 1024)
