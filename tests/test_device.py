"""Device helpers: the memory an "auto" context is sized from."""

from __future__ import annotations

import os
import sys

import pytest
import torch

from qwen3vl_summarizer import device


def test_available_memory_counts_the_reclaimable_page_cache(tmp_path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 24000000 kB\nMemFree: 1000000 kB\nMemAvailable: 20000000 kB\n")
    assert device._linux_available_bytes(str(meminfo)) == 20_000_000 * 1024
    meminfo.write_text("MemTotal: 24000000 kB\nMemFree: 1000000 kB\n")  # a kernel older than 3.14
    assert device._linux_available_bytes(str(meminfo)) is None
    assert device._linux_available_bytes(str(tmp_path / "missing")) is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="MemAvailable is Linux's")
def test_the_cpu_reports_available_memory_not_only_free_pages() -> None:
    free_pages = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    available = device.free_bytes(torch.device("cpu"))
    assert available == device._linux_available_bytes()
    assert (
        available >= free_pages * 0.9
    )  # free pages are part of what is available (both read a moment apart)
