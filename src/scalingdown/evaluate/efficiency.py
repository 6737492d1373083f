"""Efficiency figures that go beside accuracy: parameters, peak memory, hardware, versions."""

from __future__ import annotations

import os
import platform
import resource
import sys
from importlib import metadata
from pathlib import Path

import torch


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak: CUDA's counters on a GPU; on Linux, the process's resident high-water mark
    (`VmHWM`, reset through /proc/self/clear_refs after handing freed heap back), so a model evaluated
    after training in one process is not charged the training's peak."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
    except (OSError, AttributeError):
        pass  # not Linux/glibc: the lifetime peak (ru_maxrss) is what there is


def peak_memory(device: torch.device) -> dict:
    """Peak memory since the last reset: CUDA's max allocated on a GPU, else the process's peak RSS.

    The CPU figure is the whole process's high-water mark since `reset_peak_memory` (Python,
    libraries and data included; `process_peak_rss`), or since the process began where it cannot be
    reset (`process_max_rss`), so it bounds the model's footprint from above; `kind` says which."""
    if device.type == "cuda":
        return {"bytes": int(torch.cuda.max_memory_allocated(device)), "kind": "cuda_max_allocated"}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return {"bytes": int(line.split()[1]) * 1024, "kind": "process_peak_rss"}
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024  # Linux reports KiB, macOS bytes
    return {"bytes": int(rss * scale), "kind": "process_max_rss"}


def package_versions(names: tuple[str, ...] = ("scalingdown", "torch", "transformers", "tokenizers")) -> dict:
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def hardware(device: torch.device | None = None) -> dict:
    info = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device) if device is not None else "cpu",
    }
    if device is not None and device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["gpu_count"] = torch.cuda.device_count()
    return info
