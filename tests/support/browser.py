"""A page opened in a real headless Chromium from the system packages (driven by playwright with its
``executable_path``: no browser is ever downloaded), with what a person would notice going wrong."""

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

REQUIRE_BROWSER_ENV = "EVERGREEN_REQUIRE_BROWSER"
"""Set (CI installs Chromium): a missing browser fails the browser tests instead of skipping them."""
CHROMIUM_NAMES = ("chromium", "chromium-browser")


class BrowserMissing(RuntimeError):
    pass


def chromium_binary() -> str:
    found = next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)
    if found is None:
        raise BrowserMissing(f"no Chromium on PATH ({', '.join(CHROMIUM_NAMES)}): apt-get install -y chromium; "
                             "playwright's own browsers are never downloaded")
    return found


def chromium_or_skip() -> str:
    import pytest

    try:
        binary = chromium_binary()
        import playwright  # noqa: F401  (the test extra; missing on a machine without `pip install -e .[test]`)
    except (BrowserMissing, ImportError) as exc:
        if os.environ.get(REQUIRE_BROWSER_ENV):
            raise
        pytest.skip(str(exc))
    return binary


@dataclass(frozen=True)
class Opened:
    console_errors: list[str]
    requests: list[str]
    """Every URL the page asked for, its own included."""
    plot_sizes: list[tuple[float, float]]
    """Width and height of every ``<svg>`` as laid out."""
    seconds: float
    """From navigation to the load event."""


def open_page(path: Path, binary: str) -> Opened:
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=binary, args=["--no-sandbox"])  # root in CI containers
        try:
            page = browser.new_page()
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("request", lambda request: requests.append(request.url))
            start = time.perf_counter()
            page.goto(path.resolve().as_uri(), wait_until="load")
            seconds = time.perf_counter() - start
            sizes = page.eval_on_selector_all("svg", "els => els.map(e => { const r = e.getBoundingClientRect(); return [r.width, r.height]; })")
        finally:
            browser.close()
    return Opened(errors, requests, [(float(w), float(h)) for w, h in sizes], seconds)
