"""What the benchmarks share: one line naming the machine, and a median time of a call."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path


def machine() -> str:
    """One line describing this machine."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__}"


def machine_with_gpu(device) -> str:
    """:func:`machine`, followed by the GPU's name when ``device`` (a torch.device) is a CUDA one."""
    import torch

    return machine() + (f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else "")


def synchronizer(device) -> Callable[[], None]:
    """What waits for ``device``'s queued work: CUDA runs asynchronously, a CPU does not."""
    import torch

    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def timed(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after one warm-up run."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
