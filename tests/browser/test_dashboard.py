"""The dashboard in a real browser against a real `localflow serve`: live updates without
reloads, forms validated by the API's own rules, schedules, cancel, bulk actions, login + CSRF."""

from __future__ import annotations

import re
import time

import httpx
import pytest

from tests import procs
from tests.browser.conftest import (
    DESKTOP,
    PHONE,
    backfill_history,
    csrf_cookie,
    env_with,
    shot,
)

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api").expect

TOKEN = "s3cret-token-for-the-browser-test"
# Records every status a submitted task's card shows, and marks the page: a reload would
# lose both.
RECORD_STATUSES = """() => {
  window.__marker = "same page";
  window.__seen = [];
  const list = document.getElementById("submitted-list");
  new MutationObserver(() => {
    const card = list.querySelector(".submitted-card");
    const status = card && card.dataset.status;
    if (status && window.__seen[window.__seen.length - 1] !== status) window.__seen.push(status);
  }).observe(list, {subtree: true, childList: true, attributes: true});
}"""


# Resolves after htmx next swaps fresh content into the element with this id.
NEXT_REFRESH = """(id) => new Promise((resolve) => {
  document.body.addEventListener("htmx:afterSettle", function done(event) {
    if (event.detail.elt.id === id || event.target.id === id) {
      document.body.removeEventListener("htmx:afterSettle", done);
      resolve();
    }
  });
})"""


def submit(api: httpx.Client, payload: dict, **fields) -> str:
    r = api.post("/api/tasks", json={"type": "shell", "payload": payload, **fields})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_submit_shell_task_from_the_form_and_watch_it_succeed_without_reloading(page, api):
    page.goto("/dashboard/submit")
    page.evaluate(RECORD_STATUSES)
    page.get_by_label("Command", exact=True).fill("sh")
    page.get_by_label("Arguments", exact=True).fill("-c\nsleep 1.5; echo done")
    page.get_by_role("button", name="Submit task").click()

    card = page.locator("#submitted-list .submitted-card").first
    expect(card).to_have_attribute("data-status", "running")
    shot(page, "submit-running")
    expect(card).to_have_attribute("data-status", "succeeded", timeout=20_000)
    assert page.evaluate("window.__seen") == ["queued", "running", "succeeded"]
    assert page.evaluate("window.__marker") == "same page"  # never reloaded
    task = api.get(f"/api/tasks/{card.get_attribute('data-task-id')}").json()
    assert task["status"] == "succeeded"
    assert task["result"]["stdout"] == "done\n"
    # The form is fresh again, ready for the next task.
    expect(page.get_by_label("Command", exact=True)).to_have_value("")


def test_submit_form_shows_the_api_validation_errors_beside_their_fields(page, api):
    before = api.get("/api/tasks").json()["items"]
    page.goto("/dashboard/submit")
    page.get_by_text("Options: priority").click()
    page.get_by_label("Priority", exact=True).fill("5000")
    page.get_by_role("button", name="Submit task").click()

    expect(page.locator("#f-command-error")).to_have_text("is required")
    expect(page.get_by_label("Command", exact=True)).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#f-priority-error")).to_contain_text("1000")
    page.get_by_label("Command", exact=True).fill("echo")
    page.get_by_role("button", name="Submit task").click()
    expect(page.locator("#f-priority-error")).to_contain_text("1000")
    expect(page.locator("#f-command-error")).to_have_count(0)

    page.get_by_label("HTTP request").check()
    page.get_by_label("URL", exact=True).fill("ftp://example.test/file")
    page.get_by_label("Priority", exact=True).fill("")
    page.get_by_role("button", name="Submit task").click()
    expect(page.locator("#f-url-error")).to_contain_text("http:// or https://")
    shot(page, "submit-errors")
    assert api.get("/api/tasks").json()["items"] == before  # nothing was queued


def test_overview_counts_update_live(page, api):
    page.goto("/dashboard")
    succeeded = page.locator(".count-succeeded .count-n")
    expect(succeeded).to_have_text(re.compile(r"^[\d,]+$"))  # counted (not "…")
    before = int(succeeded.inner_text().replace(",", ""))
    page.evaluate("window.__marker = 'same page'")
    task_id = submit(api, {"command": "echo", "args": ["overview"]})
    procs.wait_for_status(api, task_id, {"succeeded"})
    expect(succeeded).to_have_text(str(before + 1))
    assert page.evaluate("window.__marker") == "same page"
    expect(page.locator("svg.chart")).to_be_visible()


def test_cancel_a_running_task_from_its_page(page, api):
    task_id = submit(api, {"command": "sleep", "args": ["30"]})
    procs.wait_for_status(api, task_id, {"running"})
    page.goto(f"/dashboard/tasks/{task_id}")
    live = page.locator("#task-live")
    expect(live).to_have_attribute("data-status", "running")
    shot(page, "task-running")
    page.get_by_role("button", name="Cancel", exact=True).click()
    expect(live).to_have_attribute("data-status", "cancelled", timeout=15_000)
    expect(page.locator(".attempt .badge-cancelled")).to_be_visible()
    assert api.get(f"/api/tasks/{task_id}").json()["status"] == "cancelled"


def test_task_detail_shows_attempts_and_can_retry_clone_and_delete(page, api):
    task_id = submit(
        api, {"command": "sh", "args": ["-c", "echo out; echo oops >&2; exit 3"]}, max_attempts=1
    )
    procs.wait_for_status(api, task_id, {"failed"})
    page.goto(f"/dashboard/tasks/{task_id}")
    expect(page.locator("#task-live")).to_have_attribute("data-status", "failed")
    first = page.locator('.attempt[data-attempt="1"]')
    expect(first.locator(".error-box").first).to_contain_text("3")
    first.get_by_text("Output").click()
    expect(first.locator("pre.output").last).to_contain_text("oops")
    shot(page, "task-failed")

    page.get_by_role("button", name="Retry now").click()
    expect(page.locator('.attempt[data-attempt="2"]')).to_be_visible(timeout=15_000)
    expect(page.locator("#task-live")).to_have_attribute("data-status", "failed")
    # The first attempt's output, opened before, stays open through the live updates.
    expect(first.locator("details")).to_have_attribute("open", "")

    page.get_by_role("link", name="Clone").click()
    expect(page).to_have_url(re.compile(rf"/dashboard/submit\?clone={task_id}"))
    expect(page.get_by_label("Command", exact=True)).to_have_value("sh")
    expect(page.get_by_label("Arguments", exact=True)).to_have_value(
        "-c\necho out; echo oops >&2; exit 3"
    )

    page.goto(f"/dashboard/tasks/{task_id}")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete").click()
    expect(page).to_have_url(re.compile(r"/dashboard/tasks\?notice="))
    expect(page.locator(".notice")).to_contain_text(f"Deleted task {task_id}")
    assert api.get(f"/api/tasks/{task_id}").status_code == 404


def test_bulk_retry_then_delete_of_ticked_failed_tasks(page, api):
    ids = [submit(api, {"command": "false"}, max_attempts=1) for _ in range(3)]
    for task_id in ids:
        procs.wait_for_status(api, task_id, {"failed"})
    page.goto("/dashboard/tasks?status=failed")
    for task_id in ids:
        page.locator(f"#sel-{task_id}").check()
    # Let a live refresh of the table pass: the ticks must survive it.
    page.evaluate(NEXT_REFRESH, "tasks-live")
    for task_id in ids:
        expect(page.locator(f"#sel-{task_id}")).to_be_checked()
    page.get_by_role("button", name="Retry selected").click()
    expect(page.locator(".notice")).to_contain_text("Retry: 3 of 3 task(s) done.")
    for task_id in ids:  # `false` fails again: a second attempt was spent
        assert procs.wait_for_status(api, task_id, {"failed"})["attempts"] == 2

    page.goto("/dashboard/tasks?status=failed")
    for task_id in ids:
        page.locator(f"#sel-{task_id}").check()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete selected").click()
    expect(page.locator(".notice")).to_contain_text("Delete: 3 of 3 task(s) done.")
    for task_id in ids:
        assert api.get(f"/api/tasks/{task_id}").status_code == 404


def test_find_a_task_by_its_idempotency_key(page, api):
    task_id = submit(api, {"command": "echo"}, idempotency_key="report-2026-11-28")
    page.goto("/dashboard/tasks")
    page.get_by_label("Find a task by id or idempotency key").fill("report-2026-11-28")
    page.get_by_label("Find a task by id or idempotency key").press("Enter")
    expect(page).to_have_url(re.compile(rf"/dashboard/tasks/{task_id}$"))
    page.goto("/dashboard/tasks?q=no-such-key")
    expect(page.locator(".notice.warn")).to_contain_text("no-such-key")


def test_a_bad_cron_expression_shows_an_inline_error_and_creates_nothing(page, api):
    before = api.get("/api/schedules").json()
    page.goto("/dashboard/schedules/new")
    page.get_by_label("Name", exact=True).fill("Broken")
    cron = page.get_by_label("Cron expression")
    cron.fill("*/5 * * * *")
    expect(page.locator("#cron-preview li")).to_have_count(5)  # the preview follows typing
    cron.fill("61 * * * *")
    expect(page.locator("#cron-preview-error")).to_contain_text("61 * * * *")
    page.get_by_label("Command", exact=True).fill("echo")
    page.get_by_role("button", name="Create schedule").click()

    expect(page.locator("#f-cron_expr-error")).to_contain_text(
        "minute must be 0\N{EN DASH}59, got 61")
    expect(page.get_by_label("Cron expression")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Cron expression")).to_have_value("61 * * * *")  # kept as typed
    shot(page, "schedule-bad-cron")
    assert page.url.endswith("/dashboard/schedules/new")
    assert api.get("/api/schedules").json() == before


def test_create_pause_and_delete_a_schedule(page, api):
    page.goto("/dashboard/schedules/new")
    page.get_by_label("Name", exact=True).fill("Nightly report")
    page.get_by_label("Cron expression").fill("30 2 * * MON-FRI")
    page.get_by_label("Timezone").fill("Europe/Berlin")
    expect(page.locator("#cron-preview li")).to_have_count(5)
    expect(page.locator("#cron-preview li").first).to_contain_text("02:30")
    page.get_by_label("Command", exact=True).fill("echo")
    page.get_by_label("Arguments", exact=True).fill("report")
    shot(page, "schedule-form")
    page.get_by_role("button", name="Create schedule").click()

    expect(page).to_have_url(re.compile(r"/dashboard/schedules\?notice="))
    row = page.locator("tr[data-schedule-id]", has_text="Nightly report")
    expect(row).to_have_attribute("data-enabled", "true")
    schedule_id = row.get_attribute("data-schedule-id")
    created = api.get(f"/api/schedules/{schedule_id}").json()
    assert (created["cron_expr"], created["timezone"]) == ("30 2 * * MON-FRI", "Europe/Berlin")
    assert created["payload"]["args"] == ["report"]
    shot(page, "schedules")

    row.get_by_role("button", name="Pause").click()
    expect(row).to_have_attribute("data-enabled", "false")
    assert api.get(f"/api/schedules/{schedule_id}").json()["enabled"] is False

    row.get_by_role("button", name="Run now").click()
    expect(page.locator(".notice")).to_contain_text("Started task")
    expect(row.locator(".badge").last).to_have_text(re.compile("queued|running|succeeded"))

    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Delete").click()
    expect(row).to_have_count(0)
    assert api.get(f"/api/schedules/{schedule_id}").status_code == 404


def test_every_page_at_desktop_and_phone_width(browser, live, live_db, api):
    backfill_history(live_db, time.time())
    failed = submit(api, {"command": "sh", "args": ["-c", "echo no >&2; exit 1"]}, max_attempts=2)
    for n in range(4):
        submit(api, {"command": "echo", "args": [f"hello {n}"]})
    submit(api, {"command": "echo", "args": ["later"]}, delay=3600)
    schedule = api.post("/api/schedules", json={
        "name": "Health check", "cron_expr": "*/5 * * * *", "task_type": "http",
        "payload": {"url": f"{live.url}/health"},
    }).json()
    procs.wait_for_status(api, failed, {"failed"}, timeout=30)
    pages = {
        "overview": "/dashboard", "tasks": "/dashboard/tasks",
        "task": f"/dashboard/tasks/{failed}", "submit": "/dashboard/submit",
        "schedules": "/dashboard/schedules", "schedule": f"/dashboard/schedules/{schedule['id']}",
        "system": "/dashboard/system",
    }
    for label, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        # (the chart is drawn from a snapshot a few seconds old: wait for the backfill in it)
        context = browser.new_context(viewport=viewport, base_url=live.url)
        page = context.new_page()
        page.goto("/dashboard")
        expect(page.locator("svg.chart rect")).not_to_have_count(0, timeout=10_000)
        # minutes with tasks: a bar each (the backfill shows up with a refresh of the chart)
        page.wait_for_function("document.querySelectorAll('svg.chart g').length > 20",
                               timeout=20_000)
        for name, url in pages.items():
            page.goto(url)
            expect(page.locator("h1")).to_be_visible()
            # Wide tables scroll inside their box; the page itself never scrolls sideways.
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= viewport["width"], f"{name} is {width}px wide at {label} width"
            shot(page, f"{name}-{label}")
        context.close()
    system = api.get("/dashboard/system").text
    assert "api_token" in system and "not set" in system


def test_login_once_then_csrf_guards_every_post(browser, tmp_path):
    proc = procs.start("serve", tmp_path / "auth.db", env=env_with(LOCALFLOW_API_TOKEN=TOKEN))
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    try:
        context = browser.new_context(viewport=DESKTOP, base_url=proc.url)
        page = context.new_page()
        page.goto("/dashboard/tasks")
        expect(page).to_have_url(re.compile(r"/dashboard/login\?next=/dashboard/tasks"))
        page.get_by_label("API token").fill("not-the-token")
        page.get_by_role("button", name="Log in").click()
        expect(page.locator("#token-error")).to_be_visible()
        shot(page, "login")

        page.get_by_label("API token").fill(TOKEN)
        page.get_by_role("button", name="Log in").click()
        expect(page).to_have_url(re.compile(r"/dashboard/tasks$"))
        session = next(c for c in context.cookies() if c["name"] == "localflow_session")
        assert session["httpOnly"] and session["sameSite"] == "Strict"
        assert TOKEN not in session["value"]
        page.goto("/dashboard/system")  # the session holds: no second login
        expect(page.locator("h1")).to_have_text("System")

        post = """async ([headers]) => {
            const r = await fetch("/dashboard/submit", {
                method: "POST", body: "type=shell&command=echo",
                headers: {"content-type": "application/x-www-form-urlencoded", ...headers},
            });
            return r.status;
        }"""
        assert page.evaluate(post, [{}]) == 403  # no CSRF token: refused
        assert page.evaluate(post, [{"x-csrftoken": "0" * 128}]) == 403  # a forged one too
        tasks = httpx.get(f"{proc.url}/api/tasks", headers=bearer).json()["items"]
        assert tasks == []  # and nothing was queued
        assert page.evaluate(post, [{"x-csrftoken": csrf_cookie(page)}]) == 201

        # The page's own forms carry the token: submitting through the UI works.
        page.goto("/dashboard/submit")
        page.get_by_label("Command", exact=True).fill("echo")
        page.get_by_role("button", name="Submit task").click()
        expect(page.locator("#submitted-list .submitted-card")).to_have_count(1)
        assert len(httpx.get(f"{proc.url}/api/tasks", headers=bearer).json()["items"]) == 2

        page.get_by_role("button", name="Log out").click()
        expect(page).to_have_url(re.compile(r"/dashboard/login"))
        page.goto("/dashboard")
        expect(page).to_have_url(re.compile(r"/dashboard/login\?next=/dashboard"))
        context.close()
        # Without any cookie: a fragment poll is sent to the login page, a POST is refused.
        anonymous = httpx.get(f"{proc.url}/dashboard/tasks", headers={"HX-Request": "true"})
        assert anonymous.status_code == 401
        assert anonymous.headers["HX-Redirect"].startswith("/dashboard/login")
    finally:
        proc.stop()
