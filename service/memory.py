"""Hand freed heap memory back to the OS on a timer (glibc's ``malloc_trim``).

Why: under mixed traffic (tokenizers, onnxruntime, PyTorch and the store allocating from many
threads) glibc keeps freed pages inside its arenas, and it returns them on its own only from the
top of a heap. Resident memory then rises in steps although nothing is leaked, and an operator
cannot tell that from a leak. ``malloc_trim(0)`` also releases free pages inside the arenas
(``madvise(MADV_DONTNEED)``); it walks each arena under its lock, so it runs on a worker thread,
never on the event loop. The bytes it gave back are counted, so a trim that frees nothing (a
real leak) is visible as such. Other C libraries (musl, macOS) have no ``malloc_trim``: off there.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from collections.abc import Callable

from polyclip.service.metrics import Metrics, proc_status

log = logging.getLogger(__name__)


def glibc_malloc_trim() -> Callable[[], object] | None:
    """``malloc_trim(0)`` of the C library this process runs on, or None where it has none."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


class MemoryTrimmer:
    """Every ``interval_s`` seconds, one ``malloc_trim(0)`` on a worker thread."""

    def __init__(
        self, interval_s: float, metrics: Metrics, trim: Callable[[], object] | None
    ) -> None:
        self.interval_s = interval_s
        self.metrics = metrics
        self.trim = trim
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.interval_s <= 0:
            return
        if self.trim is None:
            log.info("memory_trim_interval_s is set, but this C library has no malloc_trim: off")
            return
        self._task = asyncio.create_task(self._run(), name="malloc-trim")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def trim_once(self) -> None:
        """One trim, counted with the anonymous resident memory it gave back."""
        assert self.trim is not None
        before = proc_status("RssAnon") or 0.0
        self.trim()
        released = max(0.0, before - (proc_status("RssAnon") or 0.0))
        self.metrics.memory_trims.inc()
        self.metrics.memory_trimmed.inc(released)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await asyncio.to_thread(self.trim_once)
