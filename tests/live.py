"""Live servers for tests: a free loopback port, waiting for readiness, an in-thread uvicorn."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from polyclip.service.app import create_app
from polyclip.service.config import Settings

START_TIMEOUT_S = 180.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(
    url: str,
    proc: subprocess.Popen | None = None,
    log: Path | None = None,
    *,
    path: str = "/ready",
    timeout: float = START_TIMEOUT_S,
) -> None:
    """Poll ``path`` until it answers 200; fail with the server's log if it exits or hangs."""
    tail = (lambda: log.read_text()[-3000:]) if log is not None else (lambda: "")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{tail()}")
        try:
            if httpx.get(f"{url}{path}", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    if proc is not None:
        proc.kill()
    pytest.fail(f"{url} not ready in {timeout} s:\n{tail()}")


@contextmanager
def live_server(settings: Settings, config_file: Path | None = None) -> Iterator[str]:
    """A real uvicorn server on 127.0.0.1 in a thread; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings, config_file), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


async def wait_queued(http: httpx.AsyncClient, model: str, n: int, timeout: float = 10) -> None:
    """Until ``n`` inputs wait in ``model``'s queue: a fact to wait on, not a guessed sleep."""
    line = f'te_queue_size{{model="{model}"}} {float(n)}'
    async with asyncio.timeout(timeout):
        while line not in (await http.get("/metrics")).text:
            await asyncio.sleep(0.02)


def local_client(app: object, client: tuple[str, int] = ("127.0.0.1", 50000)) -> TestClient:
    """The in-process app as a client at ``client`` (loopback by default) reaching the server
    by its loopback address: the defaults (Host names, admin routes without a key) apply as
    for ``polyclip serve``."""
    return TestClient(
        app,  # type: ignore[arg-type]
        base_url="http://127.0.0.1",
        client=client,
        raise_server_exceptions=False,
    )
