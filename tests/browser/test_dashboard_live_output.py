"""A running task's output so far, live on its dashboard page (issue 12's "should", issue 14
item 5), in a real Chromium against a real `localflow serve`: it appears while the task runs,
follows new lines like a terminal, leaves a selection alone, passes axe in both colour schemes,
and gives way to the final output when the task ends. The task blocks on FIFOs the test opens:
no sleeps."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest

from tests import procs
from tests.browser.conftest import DESKTOP
from tests.browser.test_dashboard_a11y import _report, _violations
from tests.browser.test_dashboard_triage import NEXT_REFRESH

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api").expect

AT_END = "(pre) => pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4"


def _until_stored(api: httpx.Client, task_id: str, text: str) -> None:
    deadline = time.monotonic() + 60
    while text not in api.get(f"/api/tasks/{task_id}/output").json()["stdout"]:
        assert time.monotonic() < deadline, f"{text!r} never stored"
        time.sleep(0.05)


def test_a_running_tasks_output_is_live_on_its_page(browser, live, page, api, tmp_path: Path):
    first, second = tmp_path / "first", tmp_path / "second"
    os.mkfifo(first)
    os.mkfifo(second)
    script = ('echo "first line from the task"; echo "a warning" >&2; cat "$1" >/dev/null; '
              'i=0; while [ $i -lt 300 ]; do echo "line $i"; i=$((i+1)); done; cat "$2"')
    r = api.post("/api/tasks", json={"type": "shell", "max_attempts": 1, "payload": {
        "command": "sh", "args": ["-c", script, "sh", str(first), str(second)]}})
    assert r.status_code == 201, r.text
    task_id = r.json()["id"]
    try:
        page.goto(f"/dashboard/tasks/{task_id}")
        stdout = page.locator("#live-stdout")
        expect(stdout).to_have_text("first line from the task\n")  # arrives by the refresh
        expect(page.locator("#live-stderr")).to_have_text("a warning\n")
        expect(page.locator(".big-status")).to_contain_text("running")

        found = {"running task (light)": _violations(page)}
        dark = browser.new_context(viewport=DESKTOP, base_url=live.url, color_scheme="dark")
        dark_page = dark.new_page()
        dark_page.goto(f"/dashboard/tasks/{task_id}")
        expect(dark_page.locator("#live-stdout")).to_be_visible()
        found["running task (dark)"] = _violations(dark_page)
        dark.close()
        assert not any(found.values()), _report(found)

        # A selection in the output (someone copying a line) outlives the refreshes...
        page.evaluate("""() => {
          const range = document.createRange();
          range.selectNodeContents(document.getElementById("live-stdout"));
          getSelection().removeAllRanges();
          getSelection().addRange(range);
        }""")
        first.write_text("go\n")  # 300 more lines
        _until_stored(api, task_id, "line 299")
        page.evaluate(NEXT_REFRESH, "task-live")  # a refresh that brought them
        assert page.evaluate("getSelection().toString()").strip() == "first line from the task"
        expect(stdout).to_have_text("first line from the task\n")  # held while selected
        # ...and once it is let go, the output catches up, shown at its end like a terminal.
        page.evaluate("getSelection().removeAllRanges()")
        expect(stdout).to_contain_text("line 299")
        assert stdout.evaluate(AT_END)
        # Scrolled up by the user: a refresh leaves it there.
        stdout.evaluate("(pre) => { pre.scrollTop = 0; }")
        page.evaluate(NEXT_REFRESH, "task-live")
        assert stdout.evaluate("(pre) => pre.scrollTop") == 0
    finally:
        for fifo in (first, second):
            fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # never blocks, even with no reader
            os.write(fd, b"go\n")
            os.close(fd)
    procs.wait_for_status(api, task_id, {"succeeded"})
    expect(page.locator(".big-status")).to_contain_text("succeeded")
    expect(page.locator(".live-output")).to_have_count(0)  # the final output is the attempt's
    final = httpx.get(f"{live.url}/api/tasks/{task_id}/output").json()
    assert final["live"] is False and "line 299" in final["stdout"]
