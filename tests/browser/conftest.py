"""A real `localflow serve` and Debian's headless Chromium driven by Playwright.

Screenshots go to artifacts/screenshots/ (gitignored); CI keeps them as test artifacts.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shared.ids import new_id
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


# Module scope, not session: Playwright's sync API keeps an event loop running on this thread
# while it is open, and pytest-asyncio cannot start the async tests that come after it.
@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium to run the browser tests")
    sync_api = pytest.importorskip("playwright.sync_api")
    # expect() gives up after 5 s by default: too little on a busy machine, and only a slow
    # machine (not a wrong page) would take that long.
    sync_api.expect.set_options(timeout=30_000)
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def live_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dash") / "dash.db"


@pytest.fixture(scope="module")
def live(live_db: Path) -> Iterator[procs.Proc]:
    """One server (API, worker, scheduler) shared by a module's tests; no token: no login."""
    proc = procs.start("serve", live_db, env=SERVER_ENV)
    yield proc
    proc.stop()


def backfill_history(db: Path, now: float, hours: float = 3.0, every: float = 20.0) -> int:
    """Tasks that finished over the past hours, written straight into the database file (the
    API cannot backdate): something for the throughput chart to draw. Returns how many."""
    rng = random.Random(5)
    rows = []
    t = now - hours * 3600
    while t < now - 120:
        burst = rng.choice((0, 1, 1, 2, 3, 5, 8)) if int(t / 1800) % 2 else rng.choice((0, 1, 2))
        for _ in range(burst):
            status = "failed" if rng.random() < 0.12 else "succeeded"
            rows.append((new_id(t), status, t - 1, t))
        t += every
    with sqlite3.connect(db, timeout=30) as conn:
        conn.executemany(
            "INSERT INTO tasks (id, type, payload, status, priority, run_at, attempts,"
            " max_attempts, timeout, created_at, updated_at, started_at, finished_at)"
            " VALUES (?1, 'shell', '{\"command\":\"true\",\"args\":[],\"env\":{}}', ?2, 0,"
            " ?3, 1, 1, 300, ?3, ?4, ?3, ?4)",
            rows,
        )
    return len(rows)


@pytest.fixture
def api(live: procs.Proc) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, timeout=10) as client:
        yield client


@pytest.fixture
def page(browser, live: procs.Proc) -> Iterator[object]:
    context = browser.new_context(viewport=DESKTOP, base_url=live.url)
    pg = context.new_page()
    pg.set_default_timeout(30_000)  # generous: a busy machine is slow, not wrong
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



def insert_tasks(
    db: Path, n: int, *, status: str = "succeeded", type: str = "shell", run_in: float = 0.0,
    attempts: int = 1, max_attempts: int = 3, error: str | None = None,
) -> list[str]:
    """n tasks written straight into the database file (faster than the API for volume, and
    able to make states the API cannot: a task waiting to retry, one due in a day). A type
    other than shell/http keeps a test's tasks apart from every other test's. Newest last."""
    now = time.time()
    finished = now if status in ("succeeded", "failed", "cancelled") else None
    rows = [
        (new_id(now - n + i), type, status, now + run_in, attempts, max_attempts, error,
         now - n + i, finished, now - n + i if attempts else None)
        for i in range(n)
    ]
    with sqlite3.connect(db, timeout=30) as conn:
        conn.executemany(
            "INSERT INTO tasks (id, type, payload, status, priority, run_at, attempts,"
            " max_attempts, timeout, last_error, created_at, updated_at, started_at,"
            " finished_at)"
            " VALUES (?1, ?2, '{\"command\":\"true\",\"args\":[],\"env\":{}}', ?3, 0, ?4, ?5,"
            " ?6, 300, ?7, ?8, ?8, ?10, ?9)",
            rows,
        )
    return [r[0] for r in rows]
