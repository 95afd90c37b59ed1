"""Issue 12's "Should" list, in a real Chromium against a real `localflow serve`: cron in plain
words with its timezone, search by command, arguments and error text, a time range, type as a
choice, a "← Newer" link, workers named as their attempts name them and linked to their
tasks, a chart with a scale and numbers on a tap, the phone's "What" column, the failed list
at 1366 px, the System page's settings, and a readable page for a hand-edited address."""

from __future__ import annotations

import re
import sqlite3
import time
import uuid

import pytest

from shared.ids import new_id
from tests import procs
from tests.browser.conftest import DESKTOP, PHONE, insert_tasks

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api").expect


def _token() -> str:
    return uuid.uuid4().hex[:10]


def _context_page(browser, live, viewport, **options):
    context = browser.new_context(viewport=viewport, base_url=live.url, **options)
    page = context.new_page()
    page.set_default_timeout(30_000)
    return context, page


def _no_sideways_scroll(page) -> list[str]:
    """Elements that scroll sideways (their content wider than their box)."""
    return page.evaluate("""() => [...document.querySelectorAll('main *:not(.sr-only)')]
      .filter(e => e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX !== 'visible')
      .map(e => e.tagName + '.' + e.className + ' ' + e.scrollWidth + '>' + e.clientWidth)""")


# -- cron in plain words, the timezone always shown, what the schedule runs ----------------

@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_schedules_say_the_cron_in_words_with_the_timezone_and_what_runs(
    browser, live, api, viewport
):
    name = f"Weekday report {_token()}"
    made = api.post("/api/schedules", json={
        "name": name, "cron_expr": "0 9 * * MON-FRI", "timezone": "Europe/Paris",
        "task_type": "shell", "payload": {"command": "echo", "args": ["report", "--all"]},
    }).json()
    context, page = _context_page(browser, live, viewport)
    try:
        page.goto("/dashboard/schedules")
        row = page.locator(f"#schedule-{made['id']}")
        expect(row).to_contain_text("At 09:00, Monday through Friday (Europe/Paris)")
        expect(row).to_contain_text("echo report --all")
        # The next fire as the wall clock in Paris shows it (CET in winter, CEST in summer).
        expect(row).to_contain_text(re.compile(r"09:00 CES?T"))
        page.goto(f"/dashboard/schedules/{made['id']}")
        preview = page.locator("#cron-preview")
        expect(preview).to_contain_text("At 09:00, Monday through Friday (Europe/Paris)")
        page.get_by_label("Cron expression").fill("*/15 * * * *")
        expect(preview).to_contain_text("Every 15 minutes (Europe/Paris)")
        page.get_by_label("Timezone").fill("Asia/Tokyo")
        expect(preview).to_contain_text("Every 15 minutes (Asia/Tokyo)")
    finally:
        context.close()
        api.delete(f"/api/schedules/{made['id']}")


# -- search, time range, type choice, "← Newer" ---------------------------------------------

def test_search_finds_tasks_by_command_arguments_and_error_text(page, api, live_db):
    word = _token()
    by_arg = api.post("/api/tasks", json={"type": "shell", "payload": {
        "command": "echo", "args": ["--label", f"Nightly-{word}"]}}).json()
    failed = insert_tasks(live_db, 2, status="failed", type="shell",
                          error=f"ERROR: connection refused to db-{word}:5432")
    page.goto("/dashboard/tasks")
    page.get_by_label(re.compile("search commands, arguments and errors")).fill(
        f"nightly-{word}")  # another case than the argument's
    page.get_by_role("button", name="Find").click()
    rows = page.locator("table.tasks tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-task-id", by_arg["id"])
    expect(page.locator("#narrowed")).to_contain_text(f"nightly-{word}")

    page.get_by_label(re.compile("search commands")).fill(f"refused to db-{word}")
    page.get_by_role("button", name="Find").click()
    expect(rows).to_have_count(2)
    assert sorted(rows.evaluate_all("rs => rs.map(r => r.dataset.taskId)")) == sorted(failed)
    # A filter changed beside a search keeps the search.
    page.locator("#f-status").select_option("succeeded")
    expect(page.locator(".notice.warn")).to_contain_text(f"refused to db-{word}")
    assert "q=refused" in page.url
    page.locator("#f-status").select_option("failed")
    expect(rows).to_have_count(2)

    page.goto(f"/dashboard/tasks?q=nothing-{word}")
    expect(page.locator(".notice.warn")).to_contain_text(
        f"No task has the id or idempotency key nothing-{word}, nor that text")


def test_created_within_a_time_range(page, live_db):
    kind = f"range-{_token()}"
    now = time.time()
    old = [new_id(now - 3 * 86400 + i) for i in range(3)]
    with sqlite3.connect(live_db, timeout=30) as conn:
        conn.executemany(
            "INSERT INTO tasks (id, type, payload, status, priority, run_at, attempts,"
            " max_attempts, timeout, created_at, updated_at, finished_at)"
            " VALUES (?1, ?2, '{\"command\":\"true\",\"args\":[],\"env\":{}}', 'succeeded', 0,"
            " ?3, 1, 1, 300, ?3, ?3, ?3)",
            [(i, kind, now - 3 * 86400) for i in old],
        )
    new = insert_tasks(live_db, 2, status="succeeded", type=kind)
    page.goto(f"/dashboard/tasks?type={kind}")
    rows = page.locator("table.tasks tbody tr")
    expect(rows).to_have_count(5)
    page.get_by_label("Created").select_option(label="in the last 24 hours")
    expect(rows).to_have_count(2)
    assert sorted(rows.evaluate_all("rs => rs.map(r => r.dataset.taskId)")) == sorted(new)
    assert "created=24h" in page.url
    page.get_by_label("Created").select_option(label="in the last 7 days")
    expect(rows).to_have_count(5)


def test_type_is_a_choice_of_the_known_types(page):
    page.goto("/dashboard/tasks")
    choice = page.locator("select#f-type")
    expect(choice).to_be_visible()
    assert choice.locator("option").all_inner_texts() == ["any", "shell", "http"]
    choice.select_option("http")
    expect(page).to_have_url(re.compile(r"type=http"))


def test_a_newer_link_goes_back_a_page(page, live_db):
    kind = f"pager-{_token()}"
    ids = list(reversed(insert_tasks(live_db, 7, status="succeeded", type=kind)))  # newest 1st
    page.goto(f"/dashboard/tasks?type={kind}&limit=3")
    first_ids = lambda: page.locator("table.tasks tbody tr").evaluate_all(  # noqa: E731
        "rs => rs.map(r => r.dataset.taskId)")
    expect(page.locator("table.tasks tbody tr").first).to_have_attribute("data-task-id", ids[0])
    expect(page.get_by_role("link", name="← Newer")).to_have_count(0)
    page.get_by_role("link", name="Older →").click()
    expect(page.locator("table.tasks tbody tr").first).to_have_attribute("data-task-id", ids[3])
    page.get_by_role("link", name="Older →").click()
    expect(page.locator("table.tasks tbody tr").first).to_have_attribute("data-task-id", ids[6])
    page.get_by_role("link", name="← Newer").click()
    expect(page.locator("table.tasks tbody tr").first).to_have_attribute("data-task-id", ids[3])
    assert first_ids() == ids[3:6]
    page.get_by_role("link", name="← Newer").click()
    expect(page.locator("table.tasks tbody tr").first).to_have_attribute("data-task-id", ids[0])
    assert first_ids() == ids[0:3]
    expect(page.get_by_role("link", name="← Newer")).to_have_count(0)


# -- workers: one name everywhere, and the tasks each one runs --------------------------------

def test_the_workers_table_names_workers_as_attempts_do_and_links_their_tasks(page, api):
    task = api.post("/api/tasks", json={"type": "shell", "payload": {
        "command": "sleep", "args": ["30"]}}).json()
    try:
        procs.wait_for_status(api, task["id"], {"running"})
        page.goto(f"/dashboard/tasks/{task['id']}")
        worker = page.locator(".attempt .worker-id").first.inner_text().strip()
        assert worker
        page.goto("/dashboard")
        row = page.locator("tr", has=page.locator(".worker-id", has_text=worker))
        expect(row).to_have_count(1)
        link = row.get_by_role("link", name=f"Task {task['id']}, running on {worker}")
        expect(link).to_be_visible()
        link.click()
        expect(page).to_have_url(re.compile(f"/dashboard/tasks/{task['id']}$"))
    finally:
        api.post(f"/api/tasks/{task['id']}/cancel")


# -- the chart: a scale, a tap for numbers, a burst that shows ------------------------------

def _history(db, now: float) -> None:
    """A busy minute of 400 successes and, half an hour earlier, a lone failure."""
    busy = [(new_id(now - 90 - i / 1000), "succeeded", now - 95, now - 90) for i in range(400)]
    lone = [(new_id(now - 1800), "failed", now - 1805, now - 1800)]
    with sqlite3.connect(db, timeout=30) as conn:
        conn.executemany(
            "INSERT INTO tasks (id, type, payload, status, priority, run_at, attempts,"
            " max_attempts, timeout, created_at, updated_at, started_at, finished_at)"
            " VALUES (?1, 'chart-history', '{}', ?2, 0, ?3, 1, 1, 300, ?3, ?4, ?3, ?4)",
            busy + lone,
        )


@pytest.fixture(scope="module")
def history(live, live_db):
    _history(live_db, time.time())


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_the_chart_has_a_scale_a_lone_failure_shows_and_a_tap_gives_numbers(
    browser, live, history, viewport
):
    context, page = _context_page(browser, live, viewport, has_touch=True)
    try:
        page.goto("/dashboard?hours=1")
        chart = page.locator("svg.chart")
        expect(chart).to_be_visible()
        scale = page.locator(".chart-y span").all_inner_texts()
        top = int(scale[0].replace(",", ""))
        assert scale[-1] == "0" and top >= 400 and int(scale[1].replace(",", "")) == top // 2
        # Every bar with something in it is drawn at least a pixel tall and wide: the lone
        # failure beside a minute of 400 as well.
        sizes = page.locator("svg.chart rect").evaluate_all(
            "rs => rs.map(r => { const b = r.getBoundingClientRect();"
            " return [b.width, b.height]; })")
        assert sizes and min(h for _, h in sizes) >= 1 and min(w for w, _ in sizes) >= 1, sizes
        # A tap on the busy minute says its numbers (titles only show on hover).
        busiest = page.evaluate("""() => {
          const data = JSON.parse(document.querySelector('svg.chart').dataset.buckets);
          let best = 0;
          data.forEach((b, i) => { if (b[1] + b[2] > data[best][1] + data[best][2]) best = i; });
          return [best, data.length];
        }""")
        box = chart.bounding_box()
        x = box["x"] + box["width"] * (busiest[0] + 0.5) / busiest[1]
        page.touchscreen.tap(x, box["y"] + box["height"] - 2)
        readout = page.locator("#chart-readout")
        expect(readout).to_contain_text(re.compile(r"\d\d:\d\d UTC: [\d,]+ succeeded, \d+ failed"))
        n = int(re.search(r"UTC: ([\d,]+) succeeded", readout.inner_text()).group(1)
                .replace(",", ""))
        assert n >= 400
        # The next refresh leaves the readout as the tap left it.
        text = readout.inner_text()
        page.wait_for_function(
            "() => new Promise(r => document.body.addEventListener('htmx:afterSettle', r,"
            " {once: true})).then(() => true)")
        assert readout.inner_text() == text
    finally:
        context.close()


# -- the task list at phone width and at 1366 px ---------------------------------------------

def test_the_phone_task_list_keeps_what(browser, live, api):
    word = _token()
    task = api.post("/api/tasks", json={"type": "shell", "payload": {
        "command": "echo", "args": [f"phone-{word}"]}}).json()
    context, page = _context_page(browser, live, PHONE)
    try:
        page.goto(f"/dashboard/tasks?q=phone-{word}")
        what = page.locator(f"#row-{task['id']} td.what")
        expect(what).to_be_visible()
        expect(what).to_contain_text(f"echo phone-{word}")
        assert not _no_sideways_scroll(page)
    finally:
        context.close()


def test_the_failed_list_fits_1366_px_with_took(browser, live, api):
    word = _token()
    script = ("echo 'ERROR: connection refused to db-1:5432 while running the nightly backup of "
              f"the orders database' >&2; exit 3  # {word}: a long command line, as real ones are")
    made = [api.post("/api/tasks", json={"type": "shell", "max_attempts": 1, "payload": {
        "command": "sh", "args": ["-c", script]}}).json()["id"] for _ in range(3)]
    for task_id in made:
        procs.wait_for_status(api, task_id, {"failed"})
    context, page = _context_page(browser, live, {"width": 1366, "height": 800})
    try:
        page.goto(f"/dashboard/tasks?status=failed&q={word}")
        expect(page.locator("table.tasks tbody tr")).to_have_count(3)
        took = page.get_by_role("columnheader", name="Took")
        expect(took).to_be_visible()
        assert took.bounding_box()["x"] + took.bounding_box()["width"] <= 1366
        assert not _no_sideways_scroll(page)
        # ...and not by squeezing the error into a column a word wide (it once was ~80 px, the
        # failed row a dozen lines tall; ~235 px now that a queue column shares the width).
        error = page.locator("table.tasks .row-error").first.bounding_box()
        assert error["width"] >= 200, error
    finally:
        context.close()


# -- the System page ----------------------------------------------------------------------

DURATION = re.compile(r"^(forever \(never pruned\)|(\d+(\.\d+)? (ms|s|min|h|d) ?)+)$")


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_system_settings_have_units_variables_meanings_and_wrap(browser, live, viewport):
    context, page = _context_page(browser, live, viewport)
    try:
        page.goto("/dashboard/system")
        # Every setting (retention has its own table above).
        rows = page.locator("table.config.settings tbody tr")
        expect(rows.first).to_be_visible()
        settings = rows.evaluate_all("""rs => rs.map(r => ({
            name: r.querySelector('.setting').innerText.trim(),
            value: r.querySelector('.value').innerText.trim(),
            env: r.querySelector('.env').innerText.trim(),
            meaning: r.querySelector('.meaning').innerText.trim(),
            shown: [...r.querySelectorAll('.env, .meaning')].every(e => e.offsetParent !== null),
            // line boxes of the variable's name: 1 when it is not broken mid-word
            env_lines: r.querySelector('.env code') ?
              r.querySelector('.env code').getClientRects().length : 1,
        }))""")
        by_name = {s["name"]: s for s in settings}
        for s in settings:
            assert s["shown"] and s["meaning"], s
            if viewport == DESKTOP:
                assert s["env_lines"] == 1, s
            assert s["env"] == f"LOCALFLOW_{s['name'].upper()}" or "fixed" in s["env"], s
        for name in ("poll", "lease", "grace", "retain_succeeded", "retry_base",
                     "default_timeout", "schedule_interval"):
            assert DURATION.match(by_name[name]["value"]), by_name[name]
        assert re.match(r"^[\d.]+ (B|KiB|MiB) \([\d,]+ bytes\)$",
                        by_name["output_limit"]["value"])
        assert not _no_sideways_scroll(page)
    finally:
        context.close()


# -- a hand-edited address -----------------------------------------------------------------

def test_a_hand_edited_address_gets_a_readable_page(page):
    page.goto("/dashboard/tasks?limit=5000")
    expect(page.locator("p.notice")).to_contain_text("Showing 200 tasks a page: 200 at most.")
    for address, field in (("/dashboard?hours=9", "hours"), ("/dashboard/tasks?limit=lots",
                                                                 "limit")):
        answer = page.goto(address)
        assert answer.status == 400
        assert answer.headers["content-type"].startswith("text/html")
        expect(page.locator("h1")).to_have_text("That address has a value this page cannot use")
        expect(page.locator("p.notice")).to_contain_text(field)
        page.get_by_role("link", name="Open the page with its usual settings").click()
        expect(page.locator("h1")).not_to_have_text(re.compile("cannot use"))


# -- axe at phone width on the pages changed here (the desktop run is test_dashboard_a11y) --

@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_changed_pages_have_no_axe_violations_at_phone_width(browser, live, history, scheme):
    from tests.browser.test_dashboard_a11y import _report, _violations

    context, page = _context_page(browser, live, PHONE, color_scheme=scheme, has_touch=True)
    found = {}
    try:
        for name, url in {
            "overview": "/dashboard?hours=1", "search": "/dashboard/tasks?q=echo&created=24h",
            "schedules": "/dashboard/schedules", "system": "/dashboard/system",
            "bad address": "/dashboard?hours=9",
        }.items():
            page.goto(url)
            expect(page.locator("h1")).to_be_visible()
            found[name] = _violations(page)
        page.goto("/dashboard?hours=1")
        page.locator("svg.chart").tap()
        expect(page.locator("#chart-readout")).to_contain_text("succeeded")
        found["overview, a bar's numbers"] = _violations(page)
    finally:
        context.close()
    assert not any(found.values()), _report(found)
