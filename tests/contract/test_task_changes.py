"""Contract of task-change wake-ups and status reads (Store.task_listener, Store.statuses), and
of TaskWatch (shared/task_watch.py) built on them, on every backend. "Another process" is
another store opened on the same database, as a worker in another container would have.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from shared.clock import FakeClock
from shared.queue import Queue
from shared.schemas import TaskCreate
from shared.settings import Settings
from shared.store.base import Store
from shared.task_watch import TaskWatch

DEADLINE = 20.0  # generous: a busy 2-core machine; a wake-up normally takes milliseconds


def shell(*args: str, **fields) -> TaskCreate:
    return TaskCreate(type="shell", payload={"command": "echo", "args": list(args)}, **fields)


class Wakes:
    """Counts a listener's wake-ups; `next()` waits for the next one."""

    def __init__(self) -> None:
        self.count = 0
        self._event = asyncio.Event()

    def __call__(self) -> None:
        self.count += 1
        self._event.set()

    async def next(self) -> None:
        async with asyncio.timeout(DEADLINE):
            await self._event.wait()
        self._event.clear()


@pytest.fixture
async def other(
    another_store: Callable[[], Awaitable[Store]], clock: FakeClock, settings: Settings
) -> Queue:
    """A Queue on a second store: what a worker in another process would hold."""
    return Queue(await another_store(), clock, settings)


async def _listening(store: Store) -> tuple[Wakes, Callable[[], None]]:
    wakes = Wakes()
    unsubscribe = store.task_listener().subscribe(wakes)
    await wakes.next()  # the first wake-up says it is listening (LISTEN in force, socket bound)
    return wakes, unsubscribe


async def test_statuses_reads_many_ids_at_once_and_leaves_out_unknown_ones(queue: Queue):
    tasks = [t for t, _ in await queue.enqueue_many([shell(str(i)) for i in range(1500)])]
    (c,) = await queue.claim("w", 1, lease=30)
    statuses = await queue.store.statuses([t.id for t in tasks] + ["01NOSUCHTASK000000000000000"])
    assert len(statuses) == 1500
    assert statuses[c.id] == "running"
    assert {s for i, s in statuses.items() if i != c.id} == {"queued"}
    assert await queue.store.statuses([]) == {}


async def test_listener_wakes_on_every_finish_committed_by_another_process(
    queue: Queue, other: Queue
):
    wakes, unsubscribe = await _listening(queue.store)
    try:
        await other.enqueue(shell("a", max_attempts=1))
        await wakes.next()  # submitted
        (c,) = await other.claim("w", 1, lease=30)
        await wakes.next()  # claimed
        assert await other.complete(c, {"exit_code": 0})
        await wakes.next()  # succeeded

        await other.enqueue(shell("b", max_attempts=1))
        await wakes.next()
        (c,) = await other.claim("w", 1, lease=30)
        await wakes.next()
        assert await other.fail(c, "boom") == "failed"
        await wakes.next()

        queued, _ = await other.enqueue(shell("c"))
        await wakes.next()
        await other.cancel(queued.id)
        await wakes.next()  # queued -> cancelled
        await other.delete(queued.id)
        await wakes.next()  # gone: whoever waited for it must look
    finally:
        unsubscribe()


async def test_listener_wakes_when_another_process_rescues_an_expired_lease(
    queue: Queue, other: Queue, clock: FakeClock
):
    task, _ = await other.enqueue(shell("a", max_attempts=1))
    await other.claim("w", 1, lease=5)
    wakes, unsubscribe = await _listening(queue.store)
    try:
        clock.advance(6)
        assert await other.rescue_expired() == [task.id]
        await wakes.next()
        assert await queue.store.statuses([task.id]) == {task.id: "failed"}
    finally:
        unsubscribe()


async def test_watch_answers_when_another_process_finishes_the_task_not_by_polling(
    queue: Queue, other: Queue
):
    # A fallback poll of an hour: only the commit's wake-up can end this wait in time.
    watch = TaskWatch(queue.store, fallback=3600)
    try:
        task, _ = await queue.enqueue(shell("a"))
        waiting = asyncio.create_task(watch.wait_final(task.id, 50))
        async with asyncio.timeout(DEADLINE):
            while watch.waiting == 0:
                await asyncio.sleep(0.01)
        (c,) = await other.claim("w", 1, lease=30)
        assert not waiting.done()  # running is not final
        await other.complete(c, {"exit_code": 0})
        async with asyncio.timeout(DEADLINE):
            assert await waiting is True
        assert (await queue.get(task.id)).status == "succeeded"
    finally:
        await watch.close()


async def test_watch_times_out_with_the_task_unfinished_and_answers_at_once_if_final(
    queue: Queue, other: Queue
):
    watch = TaskWatch(queue.store, fallback=3600)
    try:
        task, _ = await queue.enqueue(shell("idle"))
        assert await watch.wait_final(task.id, 0.05) is False
        await other.cancel(task.id)
        async with asyncio.timeout(DEADLINE):
            assert await watch.wait_final(task.id, 50) is True
        assert watch.waiting == 0
    finally:
        await watch.close()


async def test_many_waiters_one_reread_per_wakeup_and_only_the_finished_one_answers(
    queue: Queue, other: Queue
):
    watch = TaskWatch(queue.store, fallback=3600)
    try:
        tasks = [t for t, _ in await queue.enqueue_many([shell(str(i)) for i in range(300)])]
        waits = {t.id: asyncio.create_task(watch.wait_final(t.id, 50)) for t in tasks}
        async with asyncio.timeout(DEADLINE):
            while watch.waiting < len(tasks):
                await asyncio.sleep(0.01)
        before = watch.refreshes
        target = tasks[123].id
        await other.cancel(target)
        async with asyncio.timeout(DEADLINE):
            assert await waits[target] is True
        # The wake-up after the commit cost a few batched re-reads, not one per waiter.
        assert watch.refreshes - before <= 3
        assert not any(w.done() for i, w in waits.items() if i != target)
        assert watch.waiting == len(tasks) - 1
    finally:
        watch.release()
        await asyncio.gather(*waits.values())
        await watch.close()


async def test_watch_falls_back_to_polling_when_no_wakeup_comes(
    queue: Queue, clock: FakeClock, settings: Settings
):
    """A lost wake-up delays, never hangs. Fault injection: the watch's listener is silenced
    (the store and its data are real), so only the fallback re-read can end the wait."""

    class Deaf:
        def subscribe(self, on_wake: Callable[[], None]) -> Callable[[], None]:
            return lambda: None

    store = queue.store
    watch = TaskWatch(store, fallback=0.1)
    watch.store = _WithListener(store, Deaf())  # type: ignore[assignment]
    try:
        task, _ = await queue.enqueue(shell("a"))
        waiting = asyncio.create_task(watch.wait_final(task.id, 50))
        async with asyncio.timeout(DEADLINE):
            while watch.waiting == 0:
                await asyncio.sleep(0.01)
        await queue.cancel(task.id)
        async with asyncio.timeout(DEADLINE):
            assert await waiting is True
    finally:
        await watch.close()


class _WithListener:
    """The real store, but with a task listener that never wakes anyone."""

    def __init__(self, store: Store, listener: object) -> None:
        self._store = store
        self._listener = listener

    def task_listener(self) -> object:
        return self._listener

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)
