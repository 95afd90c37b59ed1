"""The deliverer: sends webhook deliveries (docs/webhooks.md) from the worker process.

A delivery is already durable when it gets here: the transaction that finished the task wrote
it (shared/store/base.py WebhookStore). The deliverer claims due ones under a lease (so with
many workers each delivery is tried by one at a time, and a crashed deliverer's delivery is
taken over once its lease runs out), POSTs the task's JSON, signed, and records the try:
delivered on a 2xx; otherwise tried again after an exponential, jittered wait until
webhook_max_tries. At least once: a receiver may see a delivery twice (a deliverer that died
after the POST and before recording it), so it dedupes on X-LocalFlow-Delivery.

Woken by task changes (any process's commit that finished a task), so the first try goes out
at once; otherwise it sleeps until the next retry is due, never longer than a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

import msgspec
import structlog

from shared.clock import Clock, SystemClock
from shared.errors import StorageError
from shared.policy import HttpPolicy, Policy, PolicyError
from shared.settings import Settings
from shared.store.base import DueDelivery, Store
from shared.webhooks import (
    LEASE_MARGIN,
    MAX_RESPONSE_READ,
    headers,
    retry_delay,
    webhook_policy,
)

if TYPE_CHECKING:
    import httpx

log = structlog.get_logger("localflow.webhooks")

# The longest the deliverer sleeps without a look at the database: a wake-up that was lost,
# or a delivery a dead deliverer held whose lease has just run out.
IDLE_CHECK = 1.0
# The least time between two looks, however many task changes wake it: under load a worker
# sees a wake-up per finished task; one read per 50 ms answers them all.
MIN_CHECK = 0.05


class Deliverer:
    def __init__(self, store: Store, settings: Settings, clock: Clock | None = None) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock or SystemClock()
        self.policy: HttpPolicy = webhook_policy(Policy.from_settings(settings).http)
        self._woken = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._last_check = 0.0  # time.monotonic() of the last look

    async def run(self, stop: asyncio.Event) -> None:
        unsubscribe = self.store.task_listener().subscribe(self._woken.set)
        log.info("webhook deliverer started", slots=self.settings.webhook_workers,
                 signing=bool(self.settings.webhook_secret))
        try:
            while not stop.is_set():
                # Cleared before looking, so a wake-up that comes while we look (or during
                # the MIN_CHECK pause) is not lost: the wait below returns at once for it.
                self._woken.clear()
                try:
                    await self.step()
                except StorageError as exc:
                    log.warning("webhook check failed; retrying", error=str(exc))
                except Exception:
                    log.exception("webhook check failed; retrying")
                await self._sleep(stop)
        finally:
            unsubscribe()
            # A try in progress finishes (each is bounded by webhook_timeout) and is recorded;
            # one not yet recorded would only be sent again after its lease.
            await self.drain()
            log.info("webhook deliverer stopped")

    async def drain(self) -> None:
        """Wait for the tries in flight to finish and be recorded."""
        while self._in_flight:
            await asyncio.gather(*list(self._in_flight), return_exceptions=True)

    async def step(self) -> int:
        """Claim what is due (as many as there are free slots) and start sending it."""
        self._last_check = time.monotonic()
        free = self.settings.webhook_workers - len(self._in_flight)
        if free <= 0:
            return 0
        now = self.clock.now()
        due_at = await self.store.next_delivery_at()  # a read: no write while nothing is due
        if due_at is None or due_at > now:
            return 0
        lease_until = now + self.settings.webhook_timeout + LEASE_MARGIN
        claimed = await self.store.claim_deliveries(free, lease_until, now)
        for delivery in claimed:
            task = asyncio.create_task(self.deliver(delivery))
            self._in_flight.add(task)
            task.add_done_callback(self._done)
        return len(claimed)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._woken.set()  # a slot is free, and a retry may now be due sooner
        if not task.cancelled() and task.exception() is not None:
            log.error("webhook delivery crashed", error=repr(task.exception()))

    async def _sleep(self, stop: asyncio.Event) -> None:
        timeout = IDLE_CHECK
        with contextlib.suppress(StorageError):
            due_at = await self.store.next_delivery_at()
            if due_at is not None and due_at > self.clock.now():
                timeout = min(timeout, due_at - self.clock.now())
        pause = self._last_check + MIN_CHECK - time.monotonic()
        if pause > 0:
            await asyncio.sleep(pause)
        if stop.is_set():
            return
        stopped = asyncio.ensure_future(stop.wait())
        woken = asyncio.ensure_future(self._woken.wait())
        try:
            await asyncio.wait([stopped, woken], timeout=max(timeout, 0.0),
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            woken.cancel()

    async def deliver(self, delivery: DueDelivery) -> None:
        """One try of one delivery, recorded (fenced by the lease's token)."""
        started = self.clock.now()
        outcome = await self._post(delivery)
        status_code, error, permanent, duration = outcome
        delivered = status_code is not None and 200 <= status_code < 300
        tries = delivery.tries + 1
        next_try_at = None
        if not delivered and not permanent and tries < self.settings.webhook_max_tries:
            next_try_at = self.clock.now() + retry_delay(tries, self.settings)
        attempt = {"at": started, "duration": round(duration, 4), "status_code": status_code,
                   "error": error}
        bound = log.bind(delivery_id=delivery.id, task_id=delivery.task_id, try_number=tries)
        try:
            recorded = await self.store.record_delivery_try(
                delivery.id, delivery.token, attempt, next_try_at=next_try_at,
                delivered=delivered, now=self.clock.now(),
            )
        except StorageError as exc:
            bound.warning("could not record a webhook try; it is tried again after its lease",
                          error=str(exc))
            return
        if not recorded:
            bound.warning("webhook lease lost before the try was recorded (it took longer "
                          "than the lease); another deliverer has it")
        elif delivered:
            bound.info("webhook delivered", status_code=status_code)
        elif next_try_at is None:
            bound.warning("webhook given up", error=error)
        else:
            bound.info("webhook try failed; will retry", error=error,
                       retry_in=round(next_try_at - self.clock.now(), 3))

    async def _post(self, delivery: DueDelivery) -> tuple[int | None, str | None, bool, float]:
        """(status code, error, permanent, seconds taken) of one POST."""
        secret = self.settings.webhook_secret
        if not secret:
            return None, ("not sent: LOCALFLOW_WEBHOOK_SECRET is not set on this worker, and "
                          "deliveries are never sent unsigned"), False, 0.0
        task = await self.store.get(delivery.task_id)
        if task is None:  # deleted meanwhile (its deliveries go with it): nothing to send
            return None, "the task no longer exists", True, 0.0
        body = msgspec.json.encode(task)
        timestamp = int(self.clock.now())
        sent = headers(secret, timestamp, body, delivery.id, delivery.task_status)
        timeout = self.settings.webhook_timeout
        # httpx (and the http handler's clients) load with the first delivery sent, not
        # with the worker: a worker that never sends one never pays for them
        # (tests/test_process_imports.py).
        import httpx

        from worker.handlers.http import client

        began = time.monotonic()
        http = client(self.policy)
        try:
            # One deadline for the whole exchange: connect, send, answer, the bounded read.
            async with asyncio.timeout(timeout):
                self.policy.check_url(delivery.url, field="callback_url")
                request = http.build_request("POST", delivery.url, content=body,
                                             headers=sent, timeout=timeout)
                response = await http.send(request, stream=True)
                try:
                    await _drain(response)
                finally:
                    await response.aclose()
        except PolicyError as exc:
            return None, f"refused by policy: {exc}", True, time.monotonic() - began
        except (TimeoutError, httpx.TimeoutException):
            return None, f"timed out after {timeout:g}s", False, time.monotonic() - began
        except httpx.HTTPError as exc:
            return None, _describe(exc), False, time.monotonic() - began
        taken = time.monotonic() - began
        if response.is_success:
            return response.status_code, None, False, taken
        return (response.status_code,
                f"answered {response.status_code} {response.reason_phrase}".strip(), False, taken)


async def _drain(response: httpx.Response) -> None:
    """Read (and drop) at most MAX_RESPONSE_READ bytes: the status code is the answer."""
    read = 0
    async for chunk in response.aiter_raw():
        read += len(chunk)
        if read >= MAX_RESPONSE_READ:
            break


def _describe(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:500]

