"""Threads for CPU training on a machine other processes share.

PyTorch's OpenMP threads spin-wait for each other at every parallel region's end; with one of them sharing a core
with another busy process, each region waits for a descheduled peer, and a step can take 15-20 times longer
(BENCHMARKS.md, "Training on a busy CPU"). Training therefore uses only the cores that are actually free when it
starts, and lets idle threads sleep (OMP_WAIT_POLICY=PASSIVE) when torch is not loaded yet.
"""

from __future__ import annotations

import os
import sys
import time


def _idle_ticks() -> dict[int, tuple[int, int]]:
    """Per CPU: (idle + iowait ticks, all ticks) from /proc/stat."""
    ticks: dict[int, tuple[int, int]] = {}
    with open("/proc/stat") as fh:
        for line in fh:
            name, *values = line.split()
            if name.startswith("cpu") and name != "cpu":
                nums = [int(v) for v in values]
                ticks[int(name[3:])] = (nums[3] + nums[4], sum(nums))
    return ticks


def free_cores(window: float = 0.5, busy: float = 0.5) -> int:
    """How many of this process's CPUs were less than `busy` occupied over the last `window` seconds (at least 1)."""
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    try:
        before = _idle_ticks()
        time.sleep(window)
        after = _idle_ticks()
    except (OSError, ValueError):
        return len(allowed)
    free = 0
    for cpu in allowed:
        if cpu in before and cpu in after:
            idle, total = (a - b for a, b in zip(after[cpu], before[cpu], strict=True))
            free += total > 0 and 1 - idle / total < busy
    return max(1, free)


def prepare_threads(requested: int | None = None) -> int:
    """Set torch's thread count (`requested`, or the free cores) and a passive OpenMP wait; the count chosen."""
    if "torch" not in sys.modules:
        # Read by the OpenMP runtime when torch loads it: too late to change once torch is imported.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    threads = requested or free_cores()
    import torch

    torch.set_num_threads(threads)
    return threads
