"""Issue 12, in a real Chromium against a real `localflow serve`: bulk actions that ask and say
how many, a live refresh that leaves the user's scroll, focus, ticks and selection alone, counts
that honour every filter, errors in plain sight, forms that report every mistake at once."""

from __future__ import annotations

import re

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
