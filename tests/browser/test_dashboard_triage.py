"""Issue 12, in a real Chromium against a real `localflow serve`: bulk actions that ask and say
how many, a live refresh that leaves the user's scroll, focus, ticks and selection alone, counts
that honour every filter, errors in plain sight, forms that report every mistake at once."""

from __future__ import annotations

import re
import sqlite3

import httpx
import pytest

from tests import procs
from tests.browser.conftest import insert_tasks

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api").expect

# Resolves after htmx next refreshes the element with this id (a poll answered and swapped).
NEXT_REFRESH = """(id) => new Promise((resolve) => {
  document.body.addEventListener("htmx:afterSettle", function done(event) {
    const elt = event.detail.elt;
    if ((elt && elt.id === id) || event.target.id === id) {
      document.body.removeEventListener("htmx:afterSettle", done);
      resolve();
    }
  });
})"""


def count_of(api: httpx.Client, task_type: str, status: str | None = None) -> int:
    """Tasks of this type (and status) through the REST API, walking every page."""
    n, cursor = 0, None
    while True:
        params = {"type": task_type, "limit": 500, **({"status": status} if status else {})}
        if cursor:
            params["cursor"] = cursor
        page = api.get("/api/tasks", params=params).json()
        n += len(page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            return n


class Asked(list):
    handler = None


def answer_dialogs(page, accept: bool) -> Asked:
    """Answer every dialog the page opens; returns the list of their messages."""
    asked = Asked()

    def handle(dialog) -> None:
        asked.append(dialog.message)
        dialog.accept() if accept else dialog.dismiss()

    asked.handler = handle
    page.on("dialog", handle)
    return asked


def bulk_requests(page) -> list[str]:
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if "/tasks/bulk" in r.url else None)
    return sent


# -- 1. destructive bulk actions ask, naming the count; dismissing changes nothing ----------

def test_bulk_delete_of_every_matching_task_asks_with_the_count_and_dismiss_keeps_them(
    page, api, live_db
):
    insert_tasks(live_db, 30, status="failed", type="bulk-confirm")
    page.goto("/dashboard/tasks?type=bulk-confirm")
    # (a first count may arrive with the next refresh rather than with the page)
    expect(page.locator("label", has_text="Every task matching")).to_contain_text("(30)")
    sent = bulk_requests(page)
    page.get_by_label(re.compile("Every task matching this filter")).check()

    asked = answer_dialogs(page, accept=False)
    page.get_by_role("button", name="Delete selected").click()
    expect(page.locator("#bulk-status")).to_have_text("Nothing was changed.")
    assert len(asked) == 1 and asked[0].startswith("Delete 30 tasks?"), asked
    page.evaluate(NEXT_REFRESH, "tasks-live")  # time for a request to go out, if one would
    assert sent == []
    assert count_of(api, "bulk-confirm") == 30

    # Cancel is destructive too; ticking two rows asks about two.
    page.get_by_label(re.compile("Every task matching this filter")).uncheck()
    boxes = page.locator('input[name="ids"]')
    boxes.nth(0).check()
    boxes.nth(1).check()
    page.get_by_role("button", name="Cancel selected").click()
    expect(page.locator("#bulk-status")).to_have_text("Nothing was changed.")
    assert len(asked) == 2 and asked[1].startswith("Cancel 2 tasks?"), asked
    assert sent == []

    page.get_by_label(re.compile("Every task matching this filter")).check()
    page.remove_listener("dialog", asked.handler)
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Delete selected").click()
    expect(page.locator(".notice")).to_contain_text("Delete: 30 of 30 task(s) done.")
    assert count_of(api, "bulk-confirm") == 0


# -- 2. nothing ticked: a plain sentence, never a 500 ---------------------------------------

def test_a_bulk_button_with_nothing_ticked_says_so(page, api, live_db):
    insert_tasks(live_db, 3, status="failed", type="bulk-empty")
    page.goto("/dashboard/tasks?type=bulk-empty")
    errors: list[str] = []
    page.on("response", lambda r: errors.append(r.url) if r.status >= 500 else None)
    page.get_by_role("button", name="Retry selected").click()
    expect(page.get_by_text("Tick at least one task first.")).to_be_visible()
    expect(page.locator("#toast")).not_to_contain_text("Error 500")
    assert errors == []
    assert count_of(api, "bulk-empty", "failed") == 3


# -- 3. the live refresh leaves scroll, focus, ticks and a text selection alone -------------

def test_live_refresh_keeps_scroll_focus_ticks_and_selection(page, live_db):
    ids = insert_tasks(live_db, 90, status="succeeded", type="refresh-keeps")
    page.goto("/dashboard/tasks?type=refresh-keeps&limit=100")
    box = page.locator(f"#sel-{ids[45]}")
    box.check()
    page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
    scrolled = page.evaluate("window.scrollY")
    assert scrolled > 1000
    page.evaluate(NEXT_REFRESH, "tasks-live")
    assert page.evaluate("window.scrollY") == scrolled  # not pulled back to the ticked box
    expect(box).to_be_checked()
    assert page.evaluate("document.activeElement.id") == f"sel-{ids[45]}"

    # Focus a link and select a task id, as someone copying it would.
    link = page.get_by_role("link", name=ids[3], exact=True)
    link.focus()
    page.evaluate("""(id) => {
      window.__focused = document.activeElement;
      const a = [...document.querySelectorAll("a.mono")].find((x) => x.textContent === id);
      const range = document.createRange();
      range.selectNodeContents(a);
      getSelection().removeAllRanges();
      getSelection().addRange(range);
    }""", ids[3])
    page.evaluate(NEXT_REFRESH, "tasks-live")
    assert page.evaluate("document.activeElement === window.__focused")
    assert page.evaluate("getSelection().toString()") == ids[3]
    assert page.evaluate("window.scrollY") == scrolled


def test_overview_refresh_keeps_focus(page):
    page.goto("/dashboard")
    page.locator(".count-succeeded a").first.focus()
    page.evaluate("window.__focused = document.activeElement")
    page.evaluate(NEXT_REFRESH, "overview-live")
    assert page.evaluate("document.activeElement === window.__focused")


# -- 7. every count honours every filter ----------------------------------------------------

def test_counts_honour_the_type_filter(page, live_db):
    insert_tasks(live_db, 5, status="failed", type="counted")
    insert_tasks(live_db, 2, status="succeeded", type="counted")
    insert_tasks(live_db, 4, status="failed", type="not-counted")
    page.goto("/dashboard/tasks?type=counted")
    pills = page.locator(".status-pills")
    expect(pills.get_by_role("link", name=re.compile(r"^failed"))).to_contain_text("5")
    expect(pills.get_by_role("link", name=re.compile(r"^succeeded"))).to_contain_text("2")
    expect(pills.get_by_role("link", name=re.compile(r"^all"))).to_contain_text("7")
    expect(page.get_by_label(re.compile("Every task matching this filter"))).to_be_visible()
    expect(page.locator("label", has_text="Every task matching")).to_contain_text("(7)")
    page.goto("/dashboard/tasks?type=counted&status=failed")
    expect(page.locator("label", has_text="Every task matching")).to_contain_text("(5)")


def test_overview_counts_link_to_their_lists(page, api):
    page.goto("/dashboard")
    link = page.locator(".count-failed a").first
    expect(link).to_have_attribute("href", re.compile("status=failed"))


# -- 4. the real error in plain sight --------------------------------------------------------

def submit(api: httpx.Client, payload: dict, **fields) -> str:
    r = api.post("/api/tasks", json={"type": "shell", "payload": payload, **fields})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_a_failed_task_shows_the_tail_of_stderr_beside_the_exit_status(page, api):
    cause = "ERROR: connection refused to db-1:5432"
    task_id = submit(api, {"command": "sh", "args": [
        "-c", f"echo starting; echo noise >&2; echo '{cause}' >&2; exit 3"]}, max_attempts=1)
    procs.wait_for_status(api, task_id, {"failed"})
    page.goto(f"/dashboard/tasks/{task_id}")
    status_card = page.locator(".status-card")
    expect(status_card).to_contain_text("sh exited with status 3")
    expect(status_card.locator("pre.tail")).to_be_visible()  # no section to open first
    expect(status_card.locator("pre.tail")).to_contain_text(cause)
    expect(status_card.locator("pre.tail")).not_to_contain_text("starting")  # stdout is not it
    attempt = page.locator('.attempt[data-attempt="1"]')
    expect(attempt.locator("pre.tail")).to_be_visible()
    expect(attempt.locator("pre.tail")).to_contain_text(cause)

    page.goto("/dashboard/tasks?status=failed&type=shell")
    row = page.locator(f"#row-{task_id}")
    expect(row.locator(".row-error")).to_contain_text("exited with status 3")
    expect(row.locator(".row-error")).to_contain_text(cause)


# -- 8. forms report every mistake at once, focus the first, word cron errors by field ------

def test_the_submit_form_reports_every_mistake_at_once_and_focuses_the_first(page, api):
    before = api.get("/api/tasks", params={"limit": 1}).json()["items"]
    page.goto("/dashboard/submit")
    page.get_by_label("Environment", exact=True).fill("NOEQUALS")
    page.get_by_text("Options: priority").click()
    page.get_by_label("Priority", exact=True).fill("5000")
    page.get_by_role("button", name="Submit task").click()
    expect(page.locator("#f-command-error")).to_have_text("is required")
    expect(page.locator("#f-env-error")).to_contain_text("NAME=value")
    expect(page.locator("#f-priority-error")).to_contain_text("1000")
    expect(page.get_by_label("Command", exact=True)).to_be_focused()
    assert api.get("/api/tasks", params={"limit": 1}).json()["items"] == before


def test_the_schedule_form_reports_cron_and_timezone_together_worded_by_field(page, api):
    before = api.get("/api/schedules").json()
    page.goto("/dashboard/schedules/new")
    page.get_by_label("Name", exact=True).fill("Both wrong")
    page.get_by_label("Cron expression").fill("*/7 25 * * *")
    expect(page.locator("#cron-preview-error")).to_contain_text(
        "hour must be 0\N{EN DASH}23, got 25")
    page.get_by_label("Timezone").fill("Mars/Olympus")
    page.get_by_label("Command", exact=True).fill("echo")
    page.get_by_role("button", name="Create schedule").click()
    expect(page.locator("#f-cron_expr-error")).to_contain_text(
        "hour must be 0\N{EN DASH}23, got 25")
    expect(page.locator("#f-timezone-error")).to_contain_text("Mars/Olympus")
    expect(page.get_by_label("Cron expression")).to_be_focused()
    assert api.get("/api/schedules").json() == before


# -- 5. ready / scheduled / retrying apart; Run now; Took; attempts agree after a retry -------

def test_waiting_tasks_are_shown_apart_as_scheduled_retrying_and_ready(page, live_db):
    scheduled = insert_tasks(live_db, 3, status="queued", type="views", run_in=3600, attempts=0)
    retrying = insert_tasks(live_db, 2, status="queued", type="views", run_in=3600, attempts=1,
                            error="exit 1")
    page.goto("/dashboard/tasks?type=views")
    pills = page.locator(".status-pills")
    expect(pills.get_by_role("link", name=re.compile(r"^queued"))).to_contain_text("5")
    expect(pills.get_by_role("link", name=re.compile(r"^scheduled"))).to_contain_text("3")
    expect(pills.get_by_role("link", name=re.compile(r"^retrying"))).to_contain_text("2")
    expect(pills.get_by_role("link", name=re.compile(r"^ready"))).to_contain_text("0")
    pills.get_by_role("link", name=re.compile(r"^retrying")).click()
    expect(page.locator("tr[data-task-id]")).to_have_count(2)
    for task_id in retrying:
        expect(page.locator(f"#row-{task_id}")).to_be_visible()
    page.locator("#f-status").select_option("scheduled")
    expect(page.locator("tr[data-task-id]")).to_have_count(3)
    assert {page.locator("tr[data-task-id]").nth(i).get_attribute("data-task-id")
            for i in range(3)} == set(scheduled)
    page.goto("/dashboard")
    expect(page.locator(".count-queued [data-view=retrying]")).to_be_visible()


def test_run_now_on_a_delayed_task(page, api):
    task_id = submit(api, {"command": "echo", "args": ["brought forward"]}, delay=3600)
    page.goto(f"/dashboard/tasks/{task_id}")
    page.get_by_role("button", name="Run now").click()
    expect(page.locator("#task-live")).to_have_attribute("data-status", "succeeded",
                                                         timeout=20_000)
    assert api.get(f"/api/tasks/{task_id}").json()["result"]["stdout"] == "brought forward\n"


def test_took_is_the_attempts_own_time_not_the_backoff_between_them(page, live_db):
    (task_id,) = insert_tasks(live_db, 1, status="failed", type="took", attempts=2,
                              max_attempts=2, error="exit 1")
    with sqlite3.connect(live_db, timeout=30) as conn:
        finished = conn.execute("SELECT finished_at FROM tasks WHERE id = ?",
                                (task_id,)).fetchone()[0]
        conn.execute("UPDATE tasks SET started_at = ? WHERE id = ?", (finished - 600, task_id))
        conn.executemany(
            "INSERT INTO task_attempts (task_id, attempt, started_at, finished_at, outcome,"
            " error) VALUES (?, ?, ?, ?, 'failed', 'exit 1')",
            [(task_id, 1, finished - 600, finished - 598),
             (task_id, 2, finished - 3, finished)],
        )
    page.goto(f"/dashboard/tasks/{task_id}")
    took = page.locator(".timings div", has_text="Took").locator("dd")
    expect(took).to_have_text("5.0 s")  # 2 s + 3 s of work; not the 10 min between
    page.goto("/dashboard/tasks?type=took")
    expect(page.locator(f"#row-{task_id} td").last).to_have_text("5.0 s")


def test_attempt_count_and_max_attempts_agree_after_a_retry(page, api):
    task_id = submit(api, {"command": "false"}, max_attempts=1)
    procs.wait_for_status(api, task_id, {"failed"})
    page.goto(f"/dashboard/tasks/{task_id}")
    expect(page.locator(".status-line")).to_contain_text("attempt 1 of 1")
    page.get_by_role("button", name="Retry now").click()
    expect(page.locator('.attempt[data-attempt="2"]')).to_be_visible(timeout=15_000)
    expect(page.locator(".status-line")).to_contain_text("attempt 2 of 2")
    max_attempts = page.locator("dt", has_text="Max attempts").locator(
        "xpath=following-sibling::dd")
    expect(max_attempts).to_have_count(1)
    expect(max_attempts).to_have_text("2")


# -- 10. a big bulk action shows its progress; buttons disabled while it runs --------------

WATCH_BULK = """() => {
  window.__progress = [];
  new MutationObserver(() => {
    const bar = document.querySelector("[data-bulk-running]");
    if (!bar) return;
    const buttons = [...document.querySelectorAll(".bulk-buttons button")];
    window.__progress.push({text: bar.textContent.trim().replace(/\\s+/g, " "),
                            disabled: buttons.every((b) => b.disabled)});
  }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def test_a_big_bulk_action_shows_progress_until_it_is_done(page, api, live_db):
    # Enough tasks for the progress line to be polled many times before the end.
    insert_tasks(live_db, 1500, status="queued", type="bulk-big", run_in=3600, attempts=0)
    page.goto("/dashboard/tasks?type=bulk-big")
    page.get_by_label(re.compile("Every task matching this filter")).check()
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Cancel selected").click()
    expect(page.locator("[data-bulk-running]")).to_contain_text(
        re.compile(r"Cancelling [\d,]+ of 1,500 tasks"))
    expect(page.get_by_role("button", name="Delete selected")).to_be_disabled()
    expect(page.locator(".notice")).to_contain_text("Cancel: 1500 of 1500 task(s) done.",
                                                    timeout=90_000)
    assert count_of(api, "bulk-big", "cancelled") == 1500


def test_bulk_progress_is_drawn_before_the_action_ends(page, live_db):
    insert_tasks(live_db, 400, status="queued", type="bulk-watch", run_in=3600, attempts=0)
    page.goto("/dashboard/tasks?type=bulk-watch")
    page.evaluate(WATCH_BULK)
    # Hold the page on the progress line: the redirect that ends it is not followed.
    page.route("**/dashboard/tasks/bulk/*", lambda route: route.abort())
    page.get_by_label(re.compile("Every task matching this filter")).check()
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Cancel selected").click()
    bar = page.locator("[data-bulk-running]")
    expect(bar).to_contain_text(re.compile(r"Cancelling [\d,]+ of 400 tasks"))
    progress = page.evaluate("window.__progress")
    assert progress and all(p["disabled"] for p in progress), progress
    for name in ("Retry selected", "Cancel selected", "Delete selected"):
        expect(page.get_by_role("button", name=name)).to_be_disabled()


# -- 9. Pause / Run now on the schedule's edit page keep unsaved edits -----------------------

def test_pause_and_run_now_on_the_edit_page_keep_unsaved_edits(page, api):
    schedule = api.post("/api/schedules", json={
        "name": "Edit me", "cron_expr": "0 3 * * *", "task_type": "shell",
        "payload": {"command": "echo", "args": ["before"]}}).json()
    page.goto(f"/dashboard/schedules/{schedule['id']}")
    page.evaluate("window.__marker = 'same page'")
    page.get_by_label("Name", exact=True).fill("Edited, not saved yet")
    page.get_by_label("Arguments", exact=True).fill("after")

    page.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("button", name="Resume")).to_be_visible()
    assert api.get(f"/api/schedules/{schedule['id']}").json()["enabled"] is False
    expect(page.get_by_label("Name", exact=True)).to_have_value("Edited, not saved yet")
    expect(page.get_by_label("Arguments", exact=True)).to_have_value("after")
    # The form follows the pause, so saving does not quietly resume it.
    expect(page.locator("#f-enabled")).not_to_be_checked()

    page.get_by_role("button", name="Run now").click()
    expect(page.locator("#schedule-status .notice")).to_contain_text("Started task")
    expect(page.get_by_label("Name", exact=True)).to_have_value("Edited, not saved yet")
    assert page.evaluate("window.__marker") == "same page"

    page.get_by_role("button", name="Save changes").click()
    expect(page).to_have_url(re.compile(r"/dashboard/schedules\?notice="))
    saved = api.get(f"/api/schedules/{schedule['id']}").json()
    assert (saved["name"], saved["payload"]["args"], saved["enabled"]) == (
        "Edited, not saved yet", ["after"], False)


# -- 11. session expiry says so, returns to the page, keeps the form ------------------------

def test_an_expired_session_says_so_returns_to_the_page_and_keeps_the_form(browser, tmp_path):
    from api.dashboard.security import SESSION_COOKIE
    from tests.browser.conftest import DESKTOP, env_with

    token = "expiry-test-token"
    proc = procs.start("serve", tmp_path / "expiry.db", env=env_with(LOCALFLOW_API_TOKEN=token))
    try:
        context = browser.new_context(viewport=DESKTOP, base_url=proc.url)
        page = context.new_page()
        page.goto("/dashboard/schedules/new")
        page.get_by_label("API token").fill(token)
        page.get_by_role("button", name="Log in").click()
        expect(page).to_have_url(re.compile(r"/dashboard/schedules/new$"))
        page.get_by_label("Name", exact=True).fill("Typed before expiry")
        page.get_by_label("Command", exact=True).fill("echo")

        # The session runs out: the browser still sends a cookie, but it names no live
        # session on the server (sessions are server-side: past their 7 days, or ended by a
        # restart, the server has forgotten them).
        stale = "a-session-this-server-never-made-or-has-forgotten"
        context.add_cookies([{"name": SESSION_COOKIE, "value": stale, "url": proc.url}])
        page.get_by_label("Cron expression").fill("*/10 * * * *")  # the preview asks the server

        expect(page).to_have_url(re.compile(r"/dashboard/login"))
        assert "preview" not in page.url  # never the fragment the page was polling
        expect(page.locator(".notice")).to_contain_text("session expired")
        page.get_by_label("API token").fill(token)
        page.get_by_role("button", name="Log in").click()
        expect(page).to_have_url(re.compile(r"/dashboard/schedules/new$"))
        expect(page.get_by_label("Name", exact=True)).to_have_value("Typed before expiry")
        expect(page.get_by_label("Command", exact=True)).to_have_value("echo")
        expect(page.get_by_label("Cron expression")).to_have_value("*/10 * * * *")
        expect(page.locator(".notice")).to_contain_text("Restored")
        context.close()
    finally:
        proc.stop()
