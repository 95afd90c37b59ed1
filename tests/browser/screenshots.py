"""Take the screenshots in docs/img/ from a real `localflow serve` in Debian's Chromium.

    uv run python tests/browser/screenshots.py

A fresh database in a temporary directory gets some history (for the chart), a failed task with
an error on stderr, tasks waiting to run and to retry, and a schedule; then each picture is
taken at the width it is shown at. Not a test: run it when the dashboard's look changes.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

from tests import procs
from tests.browser.conftest import (
    CHROMIUM,
    CHROMIUM_ARGS,
    DESKTOP,
    PHONE,
    SERVER_ENV,
    backfill_history,
    insert_tasks,
)

IMG = procs.REPO / "docs" / "img"


def seed(api: httpx.Client, db: Path) -> dict[str, str]:
    backfill_history(db, time.time())
    insert_tasks(db, 60, status="queued", type="shell", run_in=3600, attempts=0)
    insert_tasks(db, 3, status="queued", type="shell", run_in=240, attempts=1,
                 error="sh exited with status 1")
    failed = api.post("/api/tasks", json={"type": "shell", "max_attempts": 2, "payload": {
        "command": "sh", "args": ["-c", "echo 'migrating orders'; "
                                  "echo 'ERROR: connection refused to db-1:5432' >&2; exit 3"]},
    }).json()["id"]
    for n in range(3):
        api.post("/api/tasks", json={"type": "shell", "payload": {
            "command": "echo", "args": [f"report {n}"]}})
    schedule = api.post("/api/schedules", json={
        "name": "Nightly report", "cron_expr": "30 2 * * MON-FRI", "timezone": "Europe/Berlin",
        "task_type": "shell", "payload": {"command": "echo", "args": ["report"]},
    }).json()["id"]
    procs.wait_for_status(api, failed, {"failed"}, timeout=60)
    running = api.post("/api/tasks", json={"type": "shell", "payload": {
        "command": "sleep", "args": ["120"]}}).json()["id"]  # the workers table links it
    procs.wait_for_status(api, running, {"running"}, timeout=60)
    return {"failed": failed, "schedule": schedule, "running": running}


def main() -> None:
    from playwright.sync_api import expect, sync_playwright

    IMG.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "shots.db"
        proc = procs.start("serve", db, env=SERVER_ENV)
        try:
            with httpx.Client(base_url=proc.url, timeout=10) as api:
                ids = seed(api, db)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
                page = browser.new_page(viewport=DESKTOP, base_url=proc.url)
                page.goto("/dashboard")
                expect(page.locator("svg.chart rect").first).to_be_visible(timeout=15_000)
                page.screenshot(path=str(IMG / "dashboard-overview.png"), full_page=True)
                page.goto(f"/dashboard/tasks/{ids['failed']}")
                expect(page.locator("pre.tail").first).to_be_visible()
                page.screenshot(path=str(IMG / "dashboard-task.png"), full_page=True)
                page.goto("/dashboard/tasks?status=failed")
                page.screenshot(path=str(IMG / "dashboard-tasks.png"), full_page=True)
                page.goto("/dashboard/schedules")
                page.screenshot(path=str(IMG / "dashboard-schedules.png"), full_page=True)
                page.goto("/dashboard/system")
                page.screenshot(path=str(IMG / "dashboard-system.png"), full_page=True)
                page.goto("/dashboard/schedules/new")
                page.get_by_label("Name", exact=True).fill("Nightly report")
                page.get_by_label("Cron expression").fill("30 2 * * MON-FRI")
                page.get_by_label("Timezone").fill("Europe/Berlin")
                expect(page.locator("#cron-preview li")).to_have_count(5)
                page.screenshot(path=str(IMG / "dashboard-schedule.png"), full_page=True)
                phone = browser.new_page(viewport=PHONE, base_url=proc.url)
                phone.goto("/dashboard")
                expect(phone.locator("svg.chart rect").first).to_be_visible(timeout=15_000)
                phone.locator("svg.chart").click()  # a tap's numbers under the chart
                expect(phone.locator("#chart-readout")).to_contain_text("succeeded")
                phone.screenshot(path=str(IMG / "dashboard-overview-phone.png"), full_page=True)
                phone.goto("/dashboard/tasks?q=echo")
                phone.screenshot(path=str(IMG / "dashboard-tasks-phone.png"), full_page=True)
                api_cancel = httpx.post(f"{proc.url}/api/tasks/{ids['running']}/cancel")
                api_cancel.raise_for_status()
                browser.close()
        finally:
            proc.stop()
    print(f"screenshots written to {IMG}")


if __name__ == "__main__":
    main()
