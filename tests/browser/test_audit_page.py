"""The audit trail page in Chromium: a Cancel clicked in the dashboard shows up there as a
dashboard action, the filters and the pager work, and axe-core finds no violation in the light
or the dark colour scheme (docs/audit.md)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests import procs
from tests.browser.conftest import DESKTOP, SERVER_ENV, shot
from tests.browser.test_dashboard_a11y import _report, _violations

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api").expect


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[procs.Proc]:
    # A worker that serves no queue anyone uses: tasks stay queued, so they can be cancelled.
    db = tmp_path_factory.mktemp("audit-page") / "lf.db"
    proc = procs.start("serve", db, env={**SERVER_ENV, "LOCALFLOW_QUEUES": "nobody-uses-this"})
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def history(server: procs.Proc) -> dict[str, str]:
    """30 cancels through the API, a queue limit and a schedule created and paused."""
    with httpx.Client(base_url=server.url, timeout=30) as api:
        ids = []
        for _ in range(30):
            t = api.post("/api/tasks", json={"type": "shell", "payload": {"command": "echo"}})
            ids.append(t.json()["id"])
            assert api.post(f"/api/tasks/{ids[-1]}/cancel").status_code == 200
        assert api.put("/api/queues/reports", json={"concurrency": 2}).status_code == 200
        s = api.post("/api/schedules", json={
            "name": "Nightly", "cron_expr": "0 2 * * *", "task_type": "shell",
            "payload": {"command": "echo"}}).json()
        assert api.put(f"/api/schedules/{s['id']}", json={"enabled": False}).status_code == 200
        fresh = api.post("/api/tasks", json={"type": "shell", "payload": {"command": "echo"}})
    return {"task": ids[0], "schedule": s["id"], "fresh": fresh.json()["id"]}


def test_a_dashboard_cancel_appears_filters_and_paging_work(browser, server, history):
    context = browser.new_context(viewport=DESKTOP, base_url=server.url)
    page = context.new_page()
    page.set_default_timeout(30_000)
    # A real click, with the page's own CSRF header.
    page.goto(f"/dashboard/tasks/{history['fresh']}")
    page.get_by_role("button", name="Cancel", exact=True).click()
    expect(page.locator("#task-live")).to_contain_text("cancelled")

    page.goto("/dashboard")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Audit").click()
    expect(page.locator("h1")).to_have_text("Audit trail")
    newest = page.locator("table.audit tbody tr").first
    expect(newest).to_contain_text("task.cancel")
    expect(newest).to_contain_text(history["fresh"])
    expect(newest).to_contain_text("dashboard")
    expect(page.locator("table.audit tbody tr").nth(1)).to_contain_text("schedule.pause")
    expect(page.locator("table.audit tbody tr")).to_have_count(34)

    page.get_by_label("Action").select_option("queue.limit")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("table.audit tbody tr")).to_have_count(1)
    expect(page.locator("table.audit")).to_contain_text("reports")
    expect(page.locator("table.audit")).to_contain_text('"concurrency": 2')
    assert "action=queue.limit" in page.url

    page.goto("/dashboard/audit")
    page.get_by_label("Target").fill(history["schedule"])
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("table.audit tbody tr")).to_have_count(2)
    page.get_by_role("link", name="Clear filters").click()

    page.get_by_label("Per page").select_option("25")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("table.audit tbody tr")).to_have_count(25)
    page.get_by_role("link", name="Older →").click()
    expect(page.locator("table.audit tbody tr")).to_have_count(9)
    expect(page.locator("table.audit tbody tr").last).to_contain_text(history["task"])
    page.get_by_role("link", name="← Newest").click()
    expect(page.locator("table.audit tbody tr")).to_have_count(25)

    page.goto("/dashboard/audit?target=has%20space")
    expect(page.get_by_role("alert").filter(has_text="target:")).to_be_visible()
    shot(page, "audit-bad-filter")
    context.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_audit_page_has_no_axe_violations(browser, server, history, scheme):
    context = browser.new_context(viewport=DESKTOP, base_url=server.url, color_scheme=scheme)
    page = context.new_page()
    page.set_default_timeout(30_000)
    found = {}
    for name, url in {
        "audit": "/dashboard/audit",
        "audit filtered": "/dashboard/audit?action=schedule.pause",
        "audit empty": "/dashboard/audit?target=nothing",
        "audit bad filter": "/dashboard/audit?action=nope",
    }.items():
        page.goto(url)
        expect(page.locator("h1")).to_be_visible()
        found[name] = _violations(page)
    shot(page, f"audit-{scheme}")
    context.close()
    assert not any(found.values()), _report(found)
