"""The queues page and the queue filter in Chromium against a real `localflow serve`: pause,
resume and a limit set from the page land in the database (as PUT /api/queues would); a bad
limit shows its error beside the box, changes nothing, and the live refresh leaves the box
alone; the task list filters by queue; axe finds nothing in either colour scheme."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.browser.conftest import DESKTOP, shot
from tests.browser.test_dashboard_a11y import _report, _violations

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api").expect

# Counts the live region's poll attempts (the ones dashboard.js holds back included).
COUNT_POLLS = """() => {
  window.__polls = 0;
  document.body.addEventListener("htmx:beforeRequest", (event) => {
    if (event.detail.elt && event.detail.elt.id === "queues-live") window.__polls += 1;
  });
}"""


def waiting_task(api: httpx.Client, queue: str) -> str:
    """A task that stays queued (due in an hour), so the counts hold still."""
    r = api.post("/api/tasks", json={"type": "shell", "payload": {"command": "true"},
                                     "queue": queue, "delay": 3600})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def queue_of(api: httpx.Client, name: str) -> dict:
    return api.get(f"/api/queues/{name}").json()


def test_pause_resume_and_set_a_limit_from_the_queues_page(page, api):
    waiting_task(api, "bq-reports")
    page.goto("/dashboard")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Queues").click()
    expect(page.locator("h1")).to_have_text("Queues")
    page.evaluate("window.__marker = 'same page'")
    row = page.locator('tr[data-queue="bq-reports"]')
    expect(row).to_have_attribute("data-paused", "false")
    expect(row.locator('td[data-count="queued"]')).to_have_text("1")

    row.get_by_role("button", name="Pause bq-reports").click()
    expect(row).to_have_attribute("data-paused", "true")
    expect(page.get_by_role("status")).to_contain_text("Paused bq-reports")
    assert queue_of(api, "bq-reports")["paused"] is True
    row.get_by_role("button", name="Resume bq-reports").click()
    expect(row).to_have_attribute("data-paused", "false")
    assert queue_of(api, "bq-reports")["paused"] is False

    box = row.get_by_label("Concurrency limit of bq-reports")
    box.fill("3")
    row.get_by_role("button", name="Set limit").click()
    expect(row).to_have_attribute("data-limit", "3")
    assert queue_of(api, "bq-reports")["concurrency"] == 3
    shot(page, "queues")

    # Live: a new task shows up in the counts without a reload.
    waiting_task(api, "bq-reports")
    expect(row.locator('td[data-count="queued"]')).to_have_text("2")
    assert page.evaluate("window.__marker") == "same page"


def test_a_bad_limit_shows_an_inline_error_and_changes_nothing(page, api):
    waiting_task(api, "bq-strict")
    assert api.put("/api/queues/bq-strict", json={"concurrency": 2}).status_code == 200
    page.goto("/dashboard/queues")
    page.evaluate(COUNT_POLLS)
    row = page.locator('tr[data-queue="bq-strict"]')
    box = row.get_by_label("Concurrency limit of bq-strict")
    expect(box).to_have_value("2")
    for typed in ("0", "lots"):
        box.fill(typed)
        row.get_by_role("button", name="Set limit").click()
        error = page.locator("#limit-bq-strict-error")
        expect(error).to_contain_text("Concurrency limit")
        expect(box).to_have_attribute("aria-invalid", "true")
        assert queue_of(api, "bq-strict")["concurrency"] == 2
    # Two polls come and go: the box keeps what was typed and its error stays.
    page.wait_for_function("window.__polls >= 2", timeout=60_000)
    expect(box).to_have_value("lots")
    expect(page.locator("#limit-bq-strict-error")).to_be_visible()
    shot(page, "queues-bad-limit")

    box.fill("5")
    row.get_by_role("button", name="Set limit").click()
    expect(row).to_have_attribute("data-limit", "5")
    expect(page.locator("#limit-bq-strict-error")).to_have_count(0)
    assert queue_of(api, "bq-strict")["concurrency"] == 5


def test_the_task_list_filters_by_queue(page, api):
    mine = [waiting_task(api, "bf-mine") for _ in range(2)]
    other = waiting_task(api, "bf-other")
    page.goto("/dashboard/tasks")
    expect(page.locator(f'tr[data-task-id="{other}"]')).to_be_visible()
    page.get_by_label("Queue", exact=True).fill("bf-mine")
    page.get_by_label("Queue", exact=True).press("Enter")
    expect(page).to_have_url(re.compile(r"queue=bf-mine"))
    expect(page.locator("tr[data-task-id]")).to_have_count(2)
    for task_id in mine:
        expect(page.locator(f'tr[data-task-id="{task_id}"]')).to_contain_text("bf-mine")
    expect(page.locator(f'tr[data-task-id="{other}"]')).to_have_count(0)
    # The chips count this queue only.
    expect(page.locator(".status-pills a", has_text="all")).to_contain_text("2")
    # A task's queue links to its queue's list.
    page.goto(f"/dashboard/tasks/{other}")
    page.locator('a[data-queue="bf-other"]').click()
    expect(page).to_have_url(re.compile(r"queue=bf-other"))
    expect(page.locator("tr[data-task-id]")).to_have_count(1)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_queues_page_has_no_axe_violations(browser, live, api, scheme):
    waiting_task(api, "bq-axe")
    api.put("/api/queues/bq-axe-paused", json={"paused": True, "concurrency": 4})
    context = browser.new_context(viewport=DESKTOP, base_url=live.url, color_scheme=scheme)
    page = context.new_page()
    page.goto("/dashboard/queues")
    expect(page.locator('tr[data-queue="bq-axe-paused"]')).to_have_attribute(
        "data-paused", "true")
    found = {"queues": _violations(page)}
    row = page.locator('tr[data-queue="bq-axe"]')
    row.get_by_label("Concurrency limit of bq-axe").fill("-1")
    row.get_by_role("button", name="Set limit").click()
    expect(page.locator("#limit-bq-axe-error")).to_be_visible()
    found["queues with a bad limit"] = _violations(page)
    page.goto("/dashboard/tasks?queue=bq-axe")
    found["tasks of a queue"] = _violations(page)
    page.goto("/dashboard/system")
    found["system with retention"] = _violations(page)
    context.close()
    assert not any(found.values()), _report(found)
