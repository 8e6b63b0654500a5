"""The device a model runs on: which one, in which dtype, how much memory it has free, giving memory back.

One home for what the loader, the engine and the plan ask of the hardware, so that each question has one
answer: ``pick_device("auto")`` is CUDA, then MPS, then the CPU; ``pick_dtype("auto")`` bfloat16 on GPUs
that support it; :func:`free_bytes` and :func:`total_bytes` are what the context and chunk sizing read.
"""

from __future__ import annotations

import contextlib
import gc
import os

import torch

from .errors import OptionsError

CPU_MEMORY_FALLBACK_BYTES = 8 * 2**30  # a CPU whose memory the OS does not report is planned with this
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def pick_device(device: str = "auto") -> torch.device:
    """``auto`` = CUDA, then MPS, then CPU."""
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` = bfloat16 on GPUs that support it, float16 on other GPUs, float32 on CPU."""
    if dtype != "auto":
        try:
            return DTYPES[dtype]
        except KeyError:
            raise OptionsError(
                f"model.dtype must be auto, bfloat16, float16 or float32, got {dtype!r}"
            ) from None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def free_bytes(device: torch.device) -> int:
    """Memory free on ``device`` now, bytes (the CPU: available physical memory)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "mps":
        return int(torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory())
    if (available := _linux_available_bytes()) is not None:
        return available
    with contextlib.suppress(ValueError, OSError, AttributeError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return CPU_MEMORY_FALLBACK_BYTES


def _linux_available_bytes(meminfo: str = "/proc/meminfo") -> int | None:
    """Linux's MemAvailable, bytes: free memory plus the page cache it can reclaim. ``SC_AVPHYS_PAGES``
    counts free pages only, and reading a few GB of files (a model, a virtualenv) drops it to a fraction of
    what is really available: an "auto" context then shrank to a few thousand tokens. None off Linux."""
    try:
        with open(meminfo, encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def total_bytes(device: torch.device) -> int | None:
    """A GPU's whole memory, bytes: the same answer whatever runs beside it. None elsewhere (the CPU and
    MPS share the machine's memory, whose limit is not the device's)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[1])
    return None


def empty_cache(device: torch.device) -> None:
    """Hand the allocator's cached blocks on ``device`` back to the driver."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


def release_memory() -> None:
    """Give memory no longer referenced back (after a model or a KV cache was dropped)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def is_out_of_memory(e: BaseException) -> bool:
    """Whether ``e`` is a device running out of memory (CUDA's own error, or MPS's RuntimeError)."""
    return isinstance(e, torch.OutOfMemoryError) or (
        isinstance(e, RuntimeError) and "out of memory" in str(e).lower()
    )
