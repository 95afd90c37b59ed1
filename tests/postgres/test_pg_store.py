"""What only PostgreSQL has to prove: concurrency over several pooled connections and
processes' worth of stores, LISTEN/NOTIFY wake-ups, a listener that loses its connection,
and a server that goes away and comes back. The behaviour both stores share is in the
contract suite (tests/contract/)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from shared.errors import IdempotencyConflict, StorageError, StorageUnavailable
from shared.ids import new_id
from shared.settings import Settings
from shared.store.base import NewTask
from shared.store.postgres import PostgresStore
from tests import pg


def _new(key: str | None = None, request_hash: str | None = None, priority: int = 0,
         now: float = 1000.0) -> NewTask:
    return NewTask(
        id=new_id(now), type="shell", payload={"command": "true", "args": []},
        priority=priority, max_attempts=3, timeout=30.0, run_at=now,
        idempotency_key=key, request_hash=request_hash,
    )


async def _open(url: str, workers: int = 8) -> PostgresStore:
    return await PostgresStore.open(Settings(db=url, workers=workers))


@pytest.fixture
async def store(pg_url: str) -> AsyncIterator[PostgresStore]:
    s = await _open(pg_url)
    yield s
    await s.close()


async def _until(condition, deadline: float = 30.0) -> None:
    """Wait on a condition with a generous deadline (never a fixed sleep)."""
    end = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < end, "condition not met before the deadline"
        await asyncio.sleep(0.01)


async def test_fifty_concurrent_idempotent_submissions_make_one_task(
    pg_url: str, store: PostgresStore
) -> None:
    """50 submitters with one key, spread over two stores' pools (many connections, as
    several API processes would be): exactly one task; every caller gets that task."""
    other = await _open(pg_url)
    try:
        stores = [store, other]
        results = await asyncio.gather(*[
            stores[i % 2].insert_tasks([_new("same-key", "hash-1")], 1000.0)
            for i in range(50)
        ])
    finally:
        await other.close()
    created = [task for [(task, was_created)] in results if was_created]
    ids = {task.id for [(task, _)] in results}
    assert len(created) == 1
    assert ids == {created[0].id}
    assert (await store.counts())["queued"] == 1
    # The same key for a different request is refused, and changes nothing.
    with pytest.raises(IdempotencyConflict):
        await store.insert_tasks([_new("same-key", "hash-2")], 1000.0)
    assert (await store.counts())["queued"] == 1


async def test_concurrent_claimers_never_share_a_task(pg_url: str, store: PostgresStore) -> None:
    """Eight claimers on two stores race for 300 tasks: SKIP LOCKED hands each task to
    exactly one of them, and all are claimed."""
    await store.insert_tasks([_new(priority=i % 5) for i in range(300)], 1000.0)
    other = await _open(pg_url)
    claimed: list[str] = []

    async def claimer(s: PostgresStore, name: str) -> None:
        while batch := await s.claim(name, 7, 2000.0, 1000.0):
            claimed.extend(c.id for c in batch)

    try:
        await asyncio.gather(*[claimer([store, other][i % 2], f"w{i}") for i in range(8)])
    finally:
        await other.close()
    assert len(claimed) == 300
    assert len(set(claimed)) == 300
    assert (await store.counts())["running"] == 300


async def test_claims_wait_for_no_one_holding_rows(store: PostgresStore, pg_url: str) -> None:
    """A transaction that holds some queued rows locked (a slow claimer) does not block a
    claim: it takes the other rows at once (SKIP LOCKED), instead of queueing behind it."""
    tasks = [_new(priority=10 - i) for i in range(4)]
    await store.insert_tasks(tasks, 1000.0)
    async with await psycopg.AsyncConnection.connect(pg_url) as holder, holder.transaction():
        await holder.execute("SELECT id FROM tasks WHERE id = %s FOR UPDATE",
                             (tasks[0].id,))
        got = await asyncio.wait_for(store.claim("w", 10, 2000.0, 1000.0), 30)
    assert [c.id for c in got] == [t.id for t in tasks[1:]]


async def test_listener_wakes_within_milliseconds_of_anothers_commit(
    pg_url: str, store: PostgresStore
) -> None:
    listener = store.listener()
    woken = asyncio.Event()
    woken_at: list[float] = []
    unsubscribe = listener.subscribe(lambda: (woken_at.append(time.monotonic()), woken.set()))
    try:
        await asyncio.wait_for(listener.connected.wait(), 30)
        other = await _open(pg_url)
        try:
            started = time.monotonic()
            await other.insert_tasks([_new()], 1000.0)
            committed = time.monotonic()
            await asyncio.wait_for(woken.wait(), 30)
        finally:
            await other.close()
    finally:
        unsubscribe()
    # Reported, not asserted (timings are bench/'s business): on a quiet machine the wake
    # lands before or within a millisecond of the committing call's return.
    print(f"insert+commit {1000 * (committed - started):.1f} ms; wake-up "
          f"{1000 * (woken_at[0] - committed):+.1f} ms after the commit returned")
    assert listener.received >= 1


async def test_only_committed_work_wakes_listeners(pg_url: str, store: PostgresStore) -> None:
    """An insert that rolls back (a key conflict inside a batch) notifies nobody: the first
    notification a listener sees is the later, committed insert's."""
    listener = store.listener()
    await store.insert_tasks([_new("k", "h1")], 1000.0)
    assert await listener.wait(0) is False  # starts listening
    await asyncio.wait_for(listener.connected.wait(), 30)
    before = listener.received
    with pytest.raises(IdempotencyConflict):
        # The first of these would be created, but the second conflicts: all roll back.
        await store.insert_tasks([_new(), _new("k", "h2")], 1000.0)
    waiter = asyncio.ensure_future(listener.wait(30))
    await asyncio.sleep(0)
    await store.insert_tasks([_new()], 1000.0)
    assert await waiter is True
    assert listener.received == before + 1
    assert (await store.counts())["queued"] == 2


async def test_listener_reconnects_after_its_connection_is_killed(
    pg_url: str, store: PostgresStore
) -> None:
    listener = store.listener()
    wakes = []
    unsubscribe = listener.subscribe(lambda: wakes.append(1))
    try:
        await asyncio.wait_for(listener.connected.wait(), 30)
        pid = listener.backend_pid()
        assert pid is not None
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as admin:
            await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        await _until(lambda: listener.reconnects >= 1 and listener.connected.is_set())
        assert listener.backend_pid() not in (None, pid)
        woken_after_reconnect = len(wakes)  # one wake on reconnect: look for missed work
        assert woken_after_reconnect >= 1
        waiter = asyncio.ensure_future(listener.wait(30))
        await asyncio.sleep(0)
        await store.insert_tasks([_new()], 1000.0)
        assert await waiter is True
        assert len(wakes) > woken_after_reconnect
    finally:
        unsubscribe()


@pytest.mark.e2e  # starts and stops a PostgreSQL server of its own
async def test_server_restart_is_storage_unavailable_then_recovers() -> None:
    """A server of this test's own goes down under an open store: calls raise
    StorageUnavailable (one line, no password) instead of a driver error; once it is back
    the pool reconnects and the same store works again, data intact."""
    try:
        cluster = pg.start_cluster()
    except pg.Unavailable as exc:
        pytest.skip(str(exc))
    try:
        from shared.store.postgres import schema

        schema.migrate(cluster.url)
        s = await _open(cluster.url)
        try:
            [(task, _)] = await s.insert_tasks([_new()], 1000.0)
            cluster.kill_server()
            with pytest.raises(StorageUnavailable) as info:
                await s.get(task.id)
            message = str(info.value)
            password = cluster.url.split(":")[2].split("@")[0]
            assert password not in message and "\n" not in message
            cluster.start_server()
            got = await s.get(task.id)
            assert got is not None and got.id == task.id
            assert len(await s.claim("w", 1, 2000.0, 1000.0)) == 1
        finally:
            await s.close()
    finally:
        cluster.stop()


async def test_rescuers_on_several_hosts_rescue_each_task_once(
    pg_url: str, store: PostgresStore
) -> None:
    """Six rescuers over two stores at once, on 60 expired leases: every task comes back
    exactly once, and each lost attempt is recorded once."""
    await store.insert_tasks([_new() for _ in range(60)], 1000.0)
    claimed = await store.claim("dead-worker", 60, 1010.0, 1000.0)
    assert len(claimed) == 60
    other = await _open(pg_url)
    try:
        results = await asyncio.gather(*[
            [store, other][i % 2].rescue_expired(1011.0) for i in range(6)
        ])
    finally:
        await other.close()
    rescued = [task_id for batch in results for task_id in batch]
    assert sorted(rescued) == sorted(c.id for c in claimed)
    assert (await store.counts())["queued"] == 60
    for c in claimed[:5]:
        assert [a.outcome for a in await store.attempts(c.id)] == ["lost"]


async def test_outcomes_arriving_together_share_one_statement(store: PostgresStore) -> None:
    """Group commit: twenty completions made in the same event-loop turn (a worker's slots
    finishing together) are one write transaction, not twenty; each still gets its own
    answer and its own attempt row."""
    await store.insert_tasks([_new() for _ in range(20)], 1000.0)
    claimed = await store.claim("w", 20, 2000.0, 1000.0)
    before = store.write_transactions
    done = await asyncio.gather(*[store.complete(c, {"i": i}, 1001.0)
                                  for i, c in enumerate(claimed)])
    assert done == [True] * 20
    assert store.write_transactions - before == 1
    for i, c in enumerate(claimed):
        [attempt] = await store.attempts(c.id)
        assert (attempt.outcome, attempt.output) == ("succeeded", {"i": i})
        assert (await store.get(c.id)).result == {"i": i}


async def test_a_value_the_server_refuses_fails_only_its_own_outcome(
    store: PostgresStore,
) -> None:
    """PostgreSQL text cannot hold a NUL character. An outcome carrying one fails (the
    caller retries or the lease expires), but the outcomes batched with it still commit."""
    await store.insert_tasks([_new() for _ in range(5)], 1000.0)
    claimed = await store.claim("w", 5, 2000.0, 1000.0)
    results = await asyncio.gather(
        *[store.fail(c, error="bad \x00 byte" if i == 2 else f"error {i}", result=None,
                     outcome="failed", retry_at=None, now=1001.0)
          for i, c in enumerate(claimed)],
        return_exceptions=True,
    )
    assert isinstance(results[2], StorageError)
    assert [r for i, r in enumerate(results) if i != 2] == ["failed"] * 4
    assert (await store.get(claimed[2].id)).status == "running"
    assert (await store.get(claimed[3].id)).last_error == "error 3"


async def test_close_waits_for_outcomes_already_handed_in(pg_url: str) -> None:
    """Store.close() finishes the outcomes its callers are waiting for before it closes the
    pool: each caller gets its answer and each completion is committed."""
    s = await _open(pg_url)
    await s.insert_tasks([_new() for _ in range(10)], 1000.0)
    claimed = await s.claim("w", 10, 2000.0, 1000.0)
    completions = [asyncio.ensure_future(s.complete(c, None, 1001.0)) for c in claimed]
    await asyncio.sleep(0)  # the completions are handed in; the close comes next
    await s.close()
    assert await asyncio.gather(*completions) == [True] * 10
    s = await _open(pg_url)
    try:
        assert (await s.counts())["succeeded"] == 10
    finally:
        await s.close()


async def test_a_connection_in_steady_use_is_handed_out_without_a_check(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """psycopg_pool's checkout check is an empty query: a round trip per checkout. A
    connection used a moment ago without an error skips it. (Counted on the real
    connections: every empty query they are sent.)"""
    empty_queries = []
    real_execute = psycopg.AsyncConnection.execute

    async def counted(self: psycopg.AsyncConnection, query: Any, *args: Any, **kw: Any) -> Any:
        if query == "":
            empty_queries.append(self)
        return await real_execute(self, query, *args, **kw)

    monkeypatch.setattr(psycopg.AsyncConnection, "execute", counted)
    await store.counts()  # the pool's first connection may be checked: its first use by us
    empty_queries.clear()
    for _ in range(20):
        await store.counts()
    assert empty_queries == []


async def test_pooled_connections_the_server_closed_are_replaced_before_use(
    pg_url: str, store: PostgresStore
) -> None:
    """Every pooled connection terminated by the server while idle: the next calls get fresh
    connections (the goodbye on the socket triggers the check) instead of an error."""
    [(task, _)] = await store.insert_tasks([_new()], 1000.0)
    await asyncio.gather(*[store.get(task.id) for _ in range(4)])  # a few connections
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as admin:
        mine = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() " \
               "AND application_name = '' AND pid != pg_backend_pid()"
        pids = [r[0] for r in await (await admin.execute(mine)).fetchall()]
        assert pids
        for pid in pids:
            await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        end = time.monotonic() + 30
        while await (await admin.execute(
                "SELECT 1 FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,))).fetchall():
            assert time.monotonic() < end, "terminated backends still there after 30 s"
            await asyncio.sleep(0.01)
    for _ in range(8):
        got = await store.get(task.id)
        assert got is not None and got.id == task.id


async def test_submissions_arriving_together_share_one_statement(store: PostgresStore) -> None:
    """Group commit of submissions: thirty single inserts made in the same event-loop turn
    (an API answering many clients) are one write transaction, each task its own row."""
    before = store.write_transactions
    results = await asyncio.gather(*[store.insert_tasks([_new()], 1000.0) for _ in range(30)])
    assert store.write_transactions - before == 1
    assert all(created for [(_, created)] in results)
    assert (await store.counts())["queued"] == 30
