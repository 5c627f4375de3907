"""The search page in a real browser: headless Chromium (Debian's) driven by Playwright, against
a live server on the tiny models. Without a browser the test is skipped, except under
``CI=true``, where a missing browser fails the run (``.ci/run`` installs it)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from polyclip.service.config import Settings
from tests.live import live_server

CHROMIUM = os.environ.get("POLYCLIP_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run"]
FLAGS += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
HOSTILE = '<img src=x onerror="document.title=1">'
DOCS = [
    {"id": 1, "text": "a dog runs in the park", "payload": {"text": "a dog runs in the park"}},
    {"id": 2, "text": "two children sit on the street", "payload": {"text": "two children"}},
    {"id": 3, "text": "a red cat", "payload": {"text": HOSTILE, "lang": "en"}},
]


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if sync_playwright is None or not shutil.which(CHROMIUM):
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs Chromium at {CHROMIUM} and Playwright for the browser test")
        pytest.skip("no Chromium/Playwright here (apt-get install chromium; CI installs it)")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


def start(make_settings: Callable[..., Settings], **overrides: object):
    server = live_server(make_settings(**overrides))
    base = server.__enter__()
    headers = {"Authorization": f"Bearer {overrides['api_key']}"} if "api_key" in overrides else {}
    httpx.post(f"{base}/collections", json={"name": "docs", "model": "teacher"}, headers=headers)
    httpx.post(f"{base}/collections/docs/points", json={"items": DOCS}, headers=headers)
    return server, base


def test_search_side_by_side_errors_and_payloads_as_text(
    browser: object, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    server, base = start(make_settings)
    try:
        page = browser.new_page(viewport={"width": 1100, "height": 800})  # type: ignore[attr-defined]
        response = page.goto(f"{base}/")
        assert page.url == f"{base}/ui"
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp
        page.wait_for_selector("#right option:nth-child(2)", state="attached")
        assert page.input_value("#left") == "teacher" and page.input_value("#right") == "student"
        page.fill("#query", "a dog runs")
        page.press("#query", "Enter")  # the keyboard is enough
        page.wait_for_selector("#side-right .hits li")
        assert page.locator("#side-left .hits li").count() == 3
        assert "ms" in page.inner_text("#side-left .latency")
        assert page.inner_text("#overlap").startswith("overlap@3:")
        # A payload written by a client is shown as text; nothing of it runs.
        assert HOSTILE in page.inner_text("#side-left")
        assert page.locator("#side-left img").count() == 0 and page.title() == "polyclip search"
        page.screenshot(path=str(tmp_path / "search.png"), full_page=True)
        assert (tmp_path / "search.png").read_bytes()[:4] == b"\x89PNG"  # (docs/ui/screenshot.py)
        # Another model: a space the collection does not hold is a message, not a blank page.
        page.select_option("#right", "other-tiny")
        page.click("#go")
        page.wait_for_selector("#message:not([hidden])")
        assert "space_mismatch" in page.inner_text("#message")
        assert page.locator("#side-left .hits li").count() == 3  # the other side still answers
        # Phone width: the two sides stack.
        page.set_viewport_size({"width": 390, "height": 800})
        left, right = (page.locator(f"#side-{s}").bounding_box() for s in ("left", "right"))
        assert right["y"] > left["y"] + left["height"] - 1
        page.close()
    finally:
        server.__exit__(None, None, None)


def test_the_page_asks_for_the_key_and_keeps_it_in_the_tab(
    browser: object, make_settings: Callable[..., Settings]
) -> None:
    server, base = start(make_settings, api_key="s3cret")
    try:
        assert httpx.get(f"{base}/ui").status_code == 200  # the page itself is public
        page = browser.new_page()  # type: ignore[attr-defined]
        page.goto(f"{base}/ui")
        page.wait_for_selector("#message:not([hidden])")
        assert "401" in page.inner_text("#message")
        page.click("#key-button")
        page.fill("#key-input", "s3cret")
        page.press("#key-input", "Enter")
        page.wait_for_selector("#right option:nth-child(2)", state="attached")
        page.fill("#query", "a red cat")
        page.click("#go")
        page.wait_for_selector("#side-left .hits li")
        assert "s3cret" not in page.url
        assert page.evaluate("sessionStorage.getItem('polyclip-api-key')") == "s3cret"
        assert page.evaluate("localStorage.length") == 0
        page.close()
    finally:
        server.__exit__(None, None, None)
