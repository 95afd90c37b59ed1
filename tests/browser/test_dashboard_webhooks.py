"""A task's webhook deliveries on its dashboard page (docs/webhooks.md): a real `localflow
serve` with a webhook secret and short retry waits, a real receiver on 127.0.0.1 that fails
twice before answering, and Chromium. The page lists the delivery and its three tries; a
task cancelled from the dashboard is delivered as cancelled; axe-core finds no violation in
the webhook section in either colour scheme."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from tests import procs
from tests.browser.conftest import DESKTOP, env_with
from tests.browser.test_dashboard_a11y import _report, _violations
from tests.webhook_receiver import SECRET, Receiver

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api").expect


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def hooked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[procs.Proc]:
    db = tmp_path_factory.mktemp("hooks") / "hooks.db"
    proc = procs.start("serve", db, env=env_with(
        LOCALFLOW_WEBHOOK_SECRET=SECRET, LOCALFLOW_WEBHOOK_RETRY_BASE="0.2s",
        LOCALFLOW_WEBHOOK_TIMEOUT="2s"))
    yield proc
    proc.stop()


def _settled(api: httpx.Client, task_id: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        deliveries = api.get(f"/api/tasks/{task_id}/deliveries").json()
        if deliveries and deliveries[0]["state"] != "pending":
            return deliveries[0]
        time.sleep(0.05)
    raise AssertionError(f"task {task_id}'s delivery never settled")


def test_the_task_page_shows_every_try_and_a_dashboard_cancel_is_delivered(
    browser, hooked: procs.Proc, receiver: Receiver
):
    with httpx.Client(base_url=hooked.url, timeout=30) as api:
        r = api.post("/api/tasks", json={"type": "shell", "payload": {"command": "true"},
                                         "callback_url": f"{receiver.url}/flaky/dash"})
        assert r.status_code == 201, r.text
        task_id = r.json()["id"]
        delivery = _settled(api, task_id)
        assert delivery["state"] == "delivered" and delivery["tries"] == 3
        later = api.post("/api/tasks", json={
            "type": "shell", "payload": {"command": "true"}, "delay": 3600,
            "callback_url": f"{receiver.url}/ok/dash-cancel"}).json()

    found = {}
    for scheme in ("light", "dark"):
        context = browser.new_context(viewport=DESKTOP, base_url=hooked.url,
                                      color_scheme=scheme)
        page = context.new_page()
        page.goto(f"/dashboard/tasks/{task_id}")
        section = page.locator("[data-deliveries]")
        expect(section.get_by_role("heading", name="Webhook")).to_be_visible()
        expect(section.locator(f"[data-delivery='{delivery['id']}']")).to_have_attribute(
            "data-state", "delivered")
        rows = section.locator("table.tries tbody tr")
        expect(rows).to_have_count(3)
        expect(rows.nth(0)).to_contain_text("500")
        expect(rows.nth(0)).to_contain_text("answered 500 Internal Server Error")
        expect(rows.nth(2)).to_contain_text("200")
        found[f"task page ({scheme})"] = _violations(page)
        context.close()
    assert not any(found.values()), _report(found)

    # Cancelled from the dashboard: delivered as cancelled, and shown on the page.
    context = browser.new_context(viewport=DESKTOP, base_url=hooked.url)
    page = context.new_page()
    page.goto(f"/dashboard/tasks/{later['id']}")
    expect(page.locator("[data-deliveries]")).to_contain_text("Nothing sent yet")
    page.get_by_role("button", name="Cancel").click()
    got = receiver.next("/ok/dash-cancel")
    assert got.signed_ok and got.headers["X-LocalFlow-Event"] == "task.cancelled"
    assert json.loads(got.body)["id"] == later["id"]
    expect(page.locator("[data-deliveries] [data-state='delivered']")).to_have_count(1)
    context.close()
