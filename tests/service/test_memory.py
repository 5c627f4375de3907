"""Freed heap memory goes back to the OS on a timer, and /metrics says how much."""

from __future__ import annotations

import ctypes
import time
from collections.abc import Callable

from polyclip.service.app import create_app
from polyclip.service.config import Settings
from polyclip.service.memory import MemoryTrimmer, glibc_malloc_trim
from polyclip.service.metrics import Metrics
from tests.live import local_client


def test_trim_gives_back_pages_glibc_keeps_inside_its_heap() -> None:
    """200 MB of small blocks freed under a block still in use stay resident (glibc returns only
    a heap's top on its own) until malloc_trim hands them back; the trim counts what it freed."""
    trim = glibc_malloc_trim()
    assert trim is not None  # Debian's glibc, as in the image and CI
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = [libc.malloc(1024) for _ in range(200_000)]
    for b in blocks:
        ctypes.memset(b, 1, 1024)  # touch: resident
    pin = libc.malloc(1024)  # above them all: the freed blocks are not the heap's top
    for b in blocks:
        libc.free(b)
    metrics = Metrics()
    trimmer = MemoryTrimmer(60.0, metrics, trim)
    trimmer.trim_once()
    libc.free(pin)
    assert metrics.memory_trims._value.get() == 1
    assert metrics.memory_trimmed._value.get() > 100e6


def series(text: str, name: str) -> float:
    return next(float(line.split()[1]) for line in text.splitlines() if line.startswith(name))


def test_server_trims_on_its_interval_and_not_when_off(
    make_settings: Callable[..., Settings],
) -> None:
    with local_client(create_app(make_settings(memory_trim_interval_s=0.05))) as api:
        deadline = time.monotonic() + 10
        while series(api.get("/metrics").text, "te_process_memory_trims_total") < 2:
            assert time.monotonic() < deadline, "no trims in 10 s at a 0.05 s interval"
            time.sleep(0.05)
    with local_client(create_app(make_settings(memory_trim_interval_s=0))) as api:
        time.sleep(0.3)
        assert series(api.get("/metrics").text, "te_process_memory_trims_total") == 0
