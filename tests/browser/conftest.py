"""A real `localflow serve` and Debian's headless Chromium driven by Playwright.

Screenshots go to artifacts/screenshots/ (gitignored); CI keeps them as test artifacts.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import procs

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]
SHOTS = procs.REPO / "artifacts" / "screenshots"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
# The worker's own metrics port is fixed by default; tests run several servers at once.
SERVER_ENV = {"LOCALFLOW_METRICS_ADDR": "off"}


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium to run the browser tests")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[procs.Proc]:
    """One server (API, worker, scheduler) shared by a module's tests; no token: no login."""
    proc = procs.start("serve", tmp_path_factory.mktemp("dash") / "dash.db", env=SERVER_ENV)
    yield proc
    proc.stop()


@pytest.fixture
def api(live: procs.Proc) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, timeout=10) as client:
        yield client


@pytest.fixture
def page(browser, live: procs.Proc) -> Iterator[object]:
    context = browser.new_context(viewport=DESKTOP, base_url=live.url)
    pg = context.new_page()
    pg.set_default_timeout(15_000)
    yield pg
    context.close()


def shot(page, name: str) -> Path:
    """Save a full-page screenshot as a test artifact."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def csrf_cookie(page) -> str:
    cookies = page.context.cookies()
    return next(c["value"] for c in cookies if c["name"].startswith("localflow_csrf"))


def env_with(**extra: str) -> dict[str, str]:
    return {**SERVER_ENV, **extra}

