"""The README's screenshot of the search page: a German query against the teacher's English index,
teacher and student side by side. Needs a running `make serve` (real models, the demo collection)
and Debian's Chromium; writes docs/ui/search.png.

    .venv/bin/python docs/ui/screenshot.py [http://127.0.0.1:8000]
"""

from __future__ import annotations

import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

URL = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000"
QUERY = "Ein Hund rennt über eine Wiese."
OUT = Path(__file__).with_name("search.png")

with sync_playwright() as p:
    browser = p.chromium.launch(
        executable_path="/usr/bin/chromium", args=["--no-sandbox", "--headless", "--disable-gpu"]
    )
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto(f"{URL}/ui")
    page.wait_for_selector("#right option:nth-child(2)", state="attached")
    page.fill("#query", QUERY)
    page.press("#query", "Enter")
    page.wait_for_selector("#side-left .hits li")
    page.wait_for_selector("#side-right .hits li")
    page.screenshot(path=str(OUT), full_page=True)
    browser.close()
print(f"wrote {OUT}")
