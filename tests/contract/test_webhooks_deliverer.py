"""The deliverer (worker/webhooks.py) on every backend (a real SQLite file, a real PostgreSQL
database) with a real receiver on 127.0.0.1 and a clock the test moves: it takes over a
delivery whose deliverer died once the lease has run out, refuses to send unsigned when its
worker has no secret (recording why), and re-checks the host policy when it sends (a policy
tightened after submit gives up at once, with the reason)."""

from __future__ import annotations

import msgspec
import pytest

from shared.clock import FakeClock
from shared.queue import Queue
from shared.schemas import TaskCreate
from shared.settings import Settings
from shared.store.base import Store
from shared.webhooks import LEASE_MARGIN
from tests.webhook_receiver import SECRET, Receiver
from worker.handlers.http import close_client
from worker.webhooks import Deliverer


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
async def hooks(store: Store, clock: FakeClock, settings: Settings):
    with_secret = msgspec.structs.replace(settings, webhook_secret=SECRET, webhook_timeout=5.0)
    yield Queue(store, clock, settings=with_secret)
    await close_client()


async def finished_task(hooks: Queue, url: str) -> str:
    task, _ = await hooks.enqueue(TaskCreate(type="shell", payload={"command": "true"},
                                             callback_url=url))
    [claimed] = await hooks.claim("w", 1, lease=30)
    assert await hooks.complete(claimed, None)
    return task.id


async def test_a_dead_deliverers_delivery_is_taken_over_after_its_lease(
    hooks: Queue, store: Store, clock: FakeClock, receiver: Receiver
):
    task_id = await finished_task(hooks, f"{receiver.url}/ok/takeover")
    # A deliverer claims it and dies before sending: its lease holds the delivery ...
    now = clock.now()
    [held] = await store.claim_deliveries(1, now + hooks.settings.webhook_timeout + LEASE_MARGIN,
                                          now)
    deliverer = Deliverer(store, hooks.settings, clock)
    assert await deliverer.step() == 0
    clock.advance(hooks.settings.webhook_timeout + LEASE_MARGIN - 1)
    assert await deliverer.step() == 0
    # ... until it runs out; then another deliverer sends it.
    clock.advance(2)
    assert await deliverer.step() == 1
    await deliverer.drain()
    got = receiver.next("/ok/takeover", timeout=30)
    assert got.signed_ok and got.headers["X-LocalFlow-Delivery"] == held.id
    assert int(got.headers["X-LocalFlow-Timestamp"]) == int(clock.now())
    [delivery] = await hooks.deliveries(task_id)
    assert delivery.state == "delivered" and delivery.tries == 1


async def test_a_worker_without_the_secret_sends_nothing_and_says_why(
    hooks: Queue, store: Store, clock: FakeClock, receiver: Receiver
):
    task_id = await finished_task(hooks, f"{receiver.url}/ok/unsigned")
    no_secret = msgspec.structs.replace(hooks.settings, webhook_secret=None)
    deliverer = Deliverer(store, no_secret, clock)
    assert await deliverer.step() == 1
    await deliverer.drain()
    [delivery] = await hooks.deliveries(task_id)
    assert delivery.state == "pending" and delivery.tries == 1  # tried again later
    [attempt] = delivery.history
    assert attempt.status_code is None
    assert attempt.error is not None and "LOCALFLOW_WEBHOOK_SECRET" in attempt.error
    assert receiver.events.empty()

    # Once the secret is there (the worker restarted with it), the retry is sent, signed.
    assert delivery.next_try_at is not None
    clock.set(delivery.next_try_at.timestamp() + 0.001)  # the API shows microseconds
    deliverer = Deliverer(store, hooks.settings, clock)
    assert await deliverer.step() == 1
    await deliverer.drain()
    assert receiver.next("/ok/unsigned", timeout=30).signed_ok
    [delivery] = await hooks.deliveries(task_id)
    assert delivery.state == "delivered" and delivery.tries == 2


async def test_the_host_policy_is_checked_again_when_sending(
    hooks: Queue, store: Store, clock: FakeClock, receiver: Receiver
):
    task_id = await finished_task(hooks, f"{receiver.url}/ok/denied")
    # The operator denied loopback after the task was submitted.
    tightened = msgspec.structs.replace(hooks.settings, http_deny_hosts=("127.0.0.0/8",))
    deliverer = Deliverer(store, tightened, clock)
    assert await deliverer.step() == 1
    await deliverer.drain()
    [delivery] = await hooks.deliveries(task_id)
    assert delivery.state == "failed" and delivery.tries == 1  # retrying cannot help
    assert delivery.history[0].error.startswith("refused by policy")
    assert "LOCALFLOW_HTTP_DENY_HOSTS" in delivery.history[0].error
    assert receiver.events.empty()
