"""Service fixtures: tiny real models in two spaces, settings, in-process and live servers.

Model layout (all tiny, random, built in code by tests/tiny.py):
  clip-tiny     a CLIP dual encoder, space "clip", 16-d (text + image)  ← alias ``teacher``
  student-tiny  an XLM-R student distilled into space "clip", 16-d      ← alias ``student``
  other-tiny    an XLM-R student in space "other", 8-d                  (space mismatch)
  baddim-tiny   claims space "clip" but gives 8-d vectors               (dimension mismatch)
"""

from __future__ import annotations

import asyncio
import base64
import io
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from PIL import Image

from encoders.sentence import SentenceEncoder
from service.app import create_app
from service.config import ModelConfig, Settings

PREFIXES = {"query": "query: ", "passage": "passage: "}


@pytest.fixture(scope="session")
def model_dirs(tiny_dir: Path, clip_dir: Path, xlmr_dir: Path) -> dict[str, Path]:
    def student(name: str, dim: int, space: str) -> Path:
        out = tiny_dir / f"svc-{name}"
        if not out.exists():
            enc = SentenceEncoder.new_student(
                xlmr_dir,
                dimension=dim,
                space=space,
                teacher=space,
                prefixes=PREFIXES,
                max_seq_length=32,  # the tiny backbone has 34 positions
                name=name,
            )
            enc.save(out)
        return out

    return {
        "clip-tiny": clip_dir,
        "student-tiny": student("student", 16, "clip"),
        "other-tiny": student("other", 8, "other"),
        "baddim-tiny": student("baddim", 8, "clip"),
    }


@pytest.fixture
def make_settings(model_dirs: dict[str, Path], tmp_path: Path) -> Callable[..., Settings]:
    """Settings for the tiny models; keyword arguments override (``limits=...``, ...)."""

    def make(models: dict[str, dict[str, Any]] | None = None, **overrides: Any) -> Settings:
        cfgs = {name: {"path": str(path)} for name, path in model_dirs.items()}
        for name, extra in (models or {}).items():
            cfgs[name] = {**cfgs.get(name, {}), **extra}
        values: dict[str, Any] = {
            "models": {n: ModelConfig(**c) for n, c in cfgs.items()},
            "aliases": {"teacher": "clip-tiny", "student": "student-tiny"},
            "data_dir": tmp_path / "qdrant",
            "qdrant_url": None,
            "api_key": None,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def client(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    """The real app (real models, real embedded Qdrant) in-process."""
    with TestClient(create_app(make_settings()), raise_server_exceptions=False) as c:
        yield c


def png_bytes(size: tuple[int, int] = (40, 30), color: str = "red", fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, fmt)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(30)


def wait_ready(base: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{base} did not become ready")


async def wait_queued(http: httpx.AsyncClient, model: str, n: int, timeout: float = 10) -> None:
    """Until ``n`` inputs wait in ``model``'s queue: a fact to wait on, not a guessed sleep."""
    line = f'te_queue_size{{model="{model}"}} {float(n)}'
    async with asyncio.timeout(timeout):
        while line not in (await http.get("/metrics")).text:
            await asyncio.sleep(0.02)
