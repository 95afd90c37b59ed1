"""Every dashboard page checked by axe-core (vendored in tests/browser/vendor/, MPL-2.0, from
the npm package axe-core) in Chromium, in the light and the dark colour scheme: no violation
of WCAG 2.x A/AA (contrast included) or of axe's best practices."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests import procs
from tests.browser.conftest import DESKTOP, backfill_history, env_with, insert_tasks

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api").expect

AXE = Path(__file__).parent / "vendor" / "axe.min.js"
RUN_AXE = """async () => {
  const result = await axe.run(document, {
    runOnly: {type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa",
                                    "best-practice"]},
  });
  return result.violations.map((v) => ({
    id: v.id, help: v.help,
    nodes: v.nodes.slice(0, 5).map((n) => n.target.join(" ") + " :: " + n.failureSummary),
  }));
}"""


def _violations(page) -> list[dict]:
    page.add_script_tag(path=str(AXE))
    return page.evaluate(RUN_AXE)


def _report(found: dict[str, list[dict]]) -> str:
    return "\n".join(
        f"{page}: {v['id']} ({v['help']}): {node}"
        for page, violations in found.items() for v in violations for node in v["nodes"]
    )


@pytest.fixture(scope="module")
def seeded(live, live_db):
    """A server with something of everything: finished, failed with stderr, delayed, waiting to
    retry, cancelled, a schedule, and finished history for the chart."""
    import httpx

    backfill_history(live_db, time.time())
    insert_tasks(live_db, 2, status="queued", type="shell", run_in=3600, attempts=1,
                 error="sh exited with status 1")
    insert_tasks(live_db, 2, status="cancelled", type="shell")
    with httpx.Client(base_url=live.url, timeout=10) as api:
        failed = api.post("/api/tasks", json={"type": "shell", "max_attempts": 1, "payload": {
            "command": "sh", "args": ["-c", "echo out; echo 'ERROR: refused' >&2; exit 3"]}})
        ok = api.post("/api/tasks", json={"type": "shell", "payload": {"command": "echo"}})
        api.post("/api/tasks", json={"type": "shell", "payload": {"command": "echo"},
                                     "delay": 3600})
        schedule = api.post("/api/schedules", json={
            "name": "Nightly", "cron_expr": "0 2 * * *", "task_type": "shell",
            "payload": {"command": "echo"}}).json()
        procs.wait_for_status(api, failed.json()["id"], {"failed"})
        procs.wait_for_status(api, ok.json()["id"], {"succeeded"})
    return {
        "overview": "/dashboard", "tasks": "/dashboard/tasks",
        "failed tasks": "/dashboard/tasks?status=failed",
        "retrying tasks": "/dashboard/tasks?status=retrying",
        "failed task": f"/dashboard/tasks/{failed.json()['id']}",
        "succeeded task": f"/dashboard/tasks/{ok.json()['id']}",
        "submit": "/dashboard/submit", "schedules": "/dashboard/schedules",
        "new schedule": "/dashboard/schedules/new",
        "schedule": f"/dashboard/schedules/{schedule['id']}",
        "system": "/dashboard/system", "not found": "/dashboard/tasks/nope",
        "empty list": "/dashboard/tasks?type=nothing-of-this-type",
        "search": "/dashboard/tasks?q=refused", "time range": "/dashboard/tasks?created=24h",
        "nothing found": "/dashboard/tasks?q=nothing-like-this",
        "bad address": "/dashboard?hours=9",
    }


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_page_has_no_axe_violations(browser, live, seeded, scheme):
    context = browser.new_context(viewport=DESKTOP, base_url=live.url, color_scheme=scheme)
    page = context.new_page()
    found = {}
    for name, url in seeded.items():
        page.goto(url)
        expect(page.locator("h1")).to_be_visible()
        found[name] = _violations(page)
    # The chart's numbers after a click on it.
    page.goto("/dashboard")
    page.locator("svg.chart").click()
    expect(page.locator("#chart-readout")).to_contain_text("succeeded")
    found["overview, a bar's numbers"] = _violations(page)
    # The forms with their errors showing, and the overview's chart drawn.
    page.goto("/dashboard/submit")
    page.get_by_role("button", name="Submit task").click()
    expect(page.locator("#f-command-error")).to_be_visible()
    found["submit with errors"] = _violations(page)
    page.goto("/dashboard/schedules/new")
    page.get_by_label("Cron expression").fill("61 * * * *")
    page.get_by_role("button", name="Create schedule").click()
    expect(page.locator("#f-cron_expr-error")).to_be_visible()
    found["schedule with errors"] = _violations(page)
    context.close()
    assert not any(found.values()), _report(found)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_login_page_has_no_axe_violations(browser, tmp_path, scheme):
    env = env_with(LOCALFLOW_API_TOKEN="t0ken-for-the-axe-test")  # 16+ characters: main's rule
    proc = procs.start("serve", tmp_path / "a11y.db", env=env)
    try:
        context = browser.new_context(viewport=DESKTOP, base_url=proc.url, color_scheme=scheme)
        page = context.new_page()
        page.goto("/dashboard")
        found = {"login": _violations(page)}
        page.get_by_label("API token").fill("wrong")
        page.get_by_role("button", name="Log in").click()
        expect(page.locator("#token-error")).to_be_visible()
        found["login with an error"] = _violations(page)
        assert not any(found.values()), _report(found)
        context.close()
    finally:
        proc.stop()
