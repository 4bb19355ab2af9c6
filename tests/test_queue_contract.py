"""The run queue contract: what every backend does, checked against each one on real databases.

Backends: the embedded :class:`SqlQueue` on SQLite, PostgreSQL and MariaDB, and :class:`ProcrastinateQueue` on the
machine's PostgreSQL (procrastinate's real schema, real job fetches). A :class:`Backend` hands out queues "as
another process would have them" and can make one die the way a killed process does, so crash recovery is
checked the same way on both: the embedded queue recovers at the next start, procrastinate once the dead
worker's heartbeat is older than ``stalled_after``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from bot.runs.queue import RunOutcome, RunQueue, RunSpec, SqlQueue, insert_rows, is_transient
from storage import db
from storage.crypto import Keyring, generate_key, install_keyring
from storage.models import BackupChain, PoolKind, Repository, Run, RunKind, RunStatus, StoragePool
from tests.harness.databases import throwaway_database

TEAM = "T0001"
BACKENDS = ("sql-sqlite", "sql-postgres", "sql-mariadb", "procrastinate")
STALLED_AFTER = 1.0  # procrastinate: seconds without heartbeat before a worker counts as dead (tests only)


@dataclass
class Backend:
    name: str
    url: str
    opened: list[RunQueue] = field(default_factory=list)

    @property
    def procrastinate(self) -> bool:
        return self.name == "procrastinate"

    async def queue(self, **policy) -> RunQueue:
        """A queue as one more worker process would open it."""
        if self.procrastinate:
            from bot.runs.procrastinate_queue import ProcrastinateQueue

            queue: RunQueue = ProcrastinateQueue(self.url, stalled_after=STALLED_AFTER, heartbeat=0.2, **policy)
        else:
            queue = SqlQueue(**policy)
        await queue.open()
        self.opened.append(queue)
        return queue

    async def kill(self, queue: RunQueue) -> None:
        """The process of ``queue`` dies without a word: no heartbeat any more, nothing unregistered."""
        self.opened.remove(queue)
        if self.procrastinate:
            await queue.close(unregister=False)  # type: ignore[call-arg]

    async def recovered(self, queue: RunQueue, within: float = 20.0) -> list[tuple[Run, Run | None]]:
        """What ``queue`` recovers once the dead process counts as dead (at once for the embedded queue, whose
        start-up recovery may assume it is alone)."""
        if not self.procrastinate:
            return await queue.recover_interrupted()
        deadline = asyncio.get_running_loop().time() + within
        while True:
            found = await queue.recover_stalled()
            if found or asyncio.get_running_loop().time() > deadline:
                return found
            await asyncio.sleep(0.2)

    async def close(self) -> None:
        for queue in reversed(self.opened):
            await queue.close()
        self.opened.clear()


@pytest.fixture(scope="module", params=BACKENDS)
async def backend_db(request: pytest.FixtureRequest,
                     tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Backend]:  # fmt: skip
    """One migrated database per backend for the whole module (creating and migrating one per test would
    dominate the run time); :func:`backend` empties it before each test."""
    install_keyring(Keyring([generate_key()]))
    with contextlib.ExitStack() as stack:
        if request.param == "sql-sqlite":
            url = f"sqlite://{tmp_path_factory.mktemp('queue') / 'bot.sqlite3'}"
        else:
            url = stack.enter_context(throwaway_database("mysql" if request.param == "sql-mariadb" else "postgres")).url
        async with db.database(url):
            if request.param == "procrastinate":
                await apply_procrastinate_schema(url)
            yield Backend(request.param, url)
    install_keyring(None)


@pytest.fixture
async def backend(backend_db: Backend) -> AsyncIterator[Backend]:
    for model in (Run, BackupChain, Repository, StoragePool):
        await model.all().delete()
    if backend_db.procrastinate:
        from tortoise import Tortoise

        conn = Tortoise.get_connection("default")
        await conn.execute_script("DELETE FROM procrastinate_jobs; DELETE FROM procrastinate_workers;")
    try:
        yield backend_db
    finally:
        await backend_db.close()


async def apply_procrastinate_schema(url: str) -> None:
    from bot.runs.procrastinate_queue import ProcrastinateQueue

    queue = ProcrastinateQueue(url)
    await queue.app.open_async()
    try:
        assert await queue.apply_schema() is True
        assert await queue.apply_schema() is False  # idempotent
    finally:
        await queue.app.close_async()


async def repos(n: int) -> list[Repository]:
    pool = await StoragePool.create(team_id=TEAM, name="local", kind=PoolKind.LOCAL, base_path="/srv/repos")
    return [await Repository.create(team_id=TEAM, pool=pool, name=f"r{i}", path=f"/srv/repos/r{i}", passphrase="p")
            for i in range(n)]  # fmt: skip


def past(minutes: int) -> datetime:
    return datetime.now(UTC) - timedelta(minutes=minutes)


async def test_claim_order_priority_then_oldest_due(backend: Backend) -> None:
    queue = await backend.queue()
    assert isinstance(queue, RunQueue)
    r = await repos(4)
    low_old = await queue.enqueue(RunSpec(TEAM, repository_id=r[0].id, priority=3, scheduled_for=past(50)))
    high_new = await queue.enqueue(RunSpec(TEAM, repository_id=r[1].id, priority=8, scheduled_for=past(1)))
    high_old = await queue.enqueue(RunSpec(TEAM, repository_id=r[2].id, priority=8, scheduled_for=past(10)))
    future = await queue.enqueue(RunSpec(TEAM, repository_id=r[3].id, priority=10,
                                         scheduled_for=datetime.now(UTC) + timedelta(hours=1)))  # fmt: skip
    order = [(await queue.claim("w")).id for _ in range(3)]
    assert order == [high_old.id, high_new.id, low_old.id]
    assert await queue.claim("w") is None  # the future run is not due
    claimed = await Run.get(id=high_old.id)
    assert claimed.status == RunStatus.RUNNING and claimed.attempts == 1 and claimed.started_at is not None
    assert claimed.worker_id == "w"
    assert (await Run.get(id=future.id)).status == RunStatus.QUEUED
    # A run queued outside the queue object (the service layer's run now, the wizard's first run: the one row
    # builder, without a slot) is due at once and locked; the future run of the same repository does not hold it.
    [manual] = await insert_rows([RunSpec(TEAM, repository_id=r[3].id, priority=5)])
    assert (await Run.get(id=manual.id)).lock_key == f"repo:{r[3].id}"
    assert (await queue.claim("w")).id == manual.id
    assert await queue.depth() == 1  # the future run


async def test_twenty_concurrent_claims_one_running_run_per_repository(backend: Backend) -> None:
    queues = [await backend.queue() for _ in range(2)]  # two "processes", ten claims each at once
    r = await repos(3)
    for i in range(12):
        await queues[0].enqueue(RunSpec(TEAM, repository_id=r[i % 3].id, scheduled_for=past(30 - i)))
    got = await asyncio.gather(*(queues[i % 2].claim(f"w{i}") for i in range(20)))
    claimed = [run for run in got if run is not None]
    assert len(claimed) == 3 and len({run.id for run in claimed}) == 3
    assert sorted(run.repository_id for run in claimed) == sorted(x.id for x in r)
    running = await Run.filter(status=RunStatus.RUNNING).values_list("lock_key", flat=True)
    assert sorted(running) == sorted(f"repo:{x.id}" for x in r)
    # Finishing one repository's run frees exactly that repository.
    await queues[0].complete(claimed[0], RunOutcome(status="ok"))
    again = await asyncio.gather(*(queues[i % 2].claim(f"x{i}") for i in range(20)))
    [nxt] = [run for run in again if run is not None]
    assert nxt.repository_id == claimed[0].repository_id


async def test_transient_failures_back_off_then_fail_permanent_fail_at_once(backend: Backend) -> None:
    queue = await backend.queue(max_attempts=3, backoff=60)
    [repo] = await repos(1)
    assert is_transient("host_unreachable") and is_transient("lock") and is_transient("killed")
    assert not is_transient("auth_failed") and not is_transient("passphrase") and not is_transient("host_key_changed")
    run = await queue.enqueue(RunSpec(TEAM, repository_id=repo.id, scheduled_for=past(1)))
    delays = []
    for attempt in (1, 2):
        claimed = await queue.claim("w", now=datetime.now(UTC) + timedelta(hours=attempt * 2))
        assert claimed.id == run.id and claimed.attempts == attempt
        before = datetime.now(UTC)
        out = await queue.complete(claimed, RunOutcome(status="failed", kind="host_unreachable", reason="down"))
        stored = await Run.get(id=run.id)
        assert out.status == RunStatus.QUEUED == stored.status and stored.error_kind == "host_unreachable"
        delays.append(round((stored.next_attempt_at - before).total_seconds() / 60))
        assert await queue.claim("w") is None  # backing off
    assert delays == [1, 2]  # exponential
    claimed = await queue.claim("w", now=datetime.now(UTC) + timedelta(hours=9))
    await queue.fail(claimed, "still down", kind="connect_timeout")
    assert (await Run.get(id=run.id)).status == RunStatus.FAILED  # out of attempts

    permanent = await queue.enqueue(RunSpec(TEAM, repository_id=repo.id, scheduled_for=past(1)))
    claimed = await queue.claim("w")
    await queue.complete(claimed, RunOutcome(status="failed", kind="auth_failed", reason="key refused"))
    stored = await Run.get(id=permanent.id)
    assert stored.status == RunStatus.FAILED and stored.attempts == 1 and "key refused" in stored.error
    assert await queue.claim("w", now=datetime.now(UTC) + timedelta(days=1)) is None  # never again


async def test_a_run_backing_off_does_not_hold_its_repository(backend: Backend) -> None:
    queue = await backend.queue()
    [repo] = await repos(1)
    first = await queue.enqueue(RunSpec(TEAM, repository_id=repo.id, priority=9, scheduled_for=past(5)))
    await queue.complete(await queue.claim("w"), RunOutcome(status="failed", kind="lock", reason="busy"))
    assert (await Run.get(id=first.id)).status == RunStatus.QUEUED  # retried later, at a higher priority …
    other = await queue.enqueue(RunSpec(TEAM, repository_id=repo.id, priority=1, scheduled_for=past(1)))
    assert (await queue.claim("w")).id == other.id  # … yet the repository is free for a due run meanwhile


async def test_window_missed_is_skipped_not_run(backend: Backend) -> None:
    queue = await backend.queue()
    r = await repos(2)
    late = await queue.enqueue(RunSpec(TEAM, repository_id=r[0].id, scheduled_for=past(300), window_ends_at=past(60)))
    ok = await queue.enqueue(RunSpec(TEAM, repository_id=r[1].id, scheduled_for=past(5),
                                     window_ends_at=datetime.now(UTC) + timedelta(hours=1)))  # fmt: skip
    assert (await queue.claim("w")).id == ok.id
    assert await queue.claim("w") is None  # never the expired one
    [skipped] = await queue.skip_expired()
    stored = await Run.get(id=late.id)
    assert skipped.id == late.id and stored.status == RunStatus.SKIPPED and stored.error_kind == "window_missed"
    assert "window" in stored.error and stored.started_at is None
    assert await queue.skip_expired() == []  # reported once


async def test_window_ending_after_queueing_is_skipped_not_run(backend: Backend) -> None:
    queue = await backend.queue()
    [repo] = await repos(1)
    soon = datetime.now(UTC) + timedelta(minutes=5)
    run = await queue.enqueue(RunSpec(TEAM, repository_id=repo.id, scheduled_for=past(1), window_ends_at=soon))
    later = soon + timedelta(minutes=1)
    assert await queue.claim("w", now=later) is None  # due, but its window ended before a worker got to it
    [skipped] = await queue.skip_expired(now=later)
    assert skipped.id == run.id and (await Run.get(id=run.id)).status == RunStatus.SKIPPED
    assert await queue.claim("w") is None


async def test_crashed_worker_run_is_interrupted_and_retried_never_succeeded(backend: Backend) -> None:
    dying = await backend.queue()
    [repo] = await repos(1)
    run = await dying.enqueue(RunSpec(TEAM, repository_id=repo.id, scheduled_for=past(3), priority=7,
                                      options={"verify_data": True}))  # fmt: skip
    assert (await dying.claim("w1")).id == run.id
    await backend.kill(dying)
    survivor = await backend.queue()
    assert await survivor.claim("w2") is None  # the repository is still held by the dead worker's run
    [(dead, retry)] = await backend.recovered(survivor)
    stored = await Run.get(id=run.id)
    assert dead.id == run.id and stored.status == RunStatus.INTERRUPTED and stored.error_kind == "interrupted"
    assert retry.status == RunStatus.QUEUED and retry.priority == 7 and retry.scheduled_for == stored.scheduled_for
    assert retry.stats == {"options": {"verify_data": True}, "retry_of": run.id}
    again = await survivor.claim("w2")
    assert again.id == retry.id and again.attempts == 2  # attempts count across retries
    # The dead worker's late result (it was only slow, say) changes nothing: the run stays interrupted.
    await survivor.complete(await Run.get(id=run.id), RunOutcome(status="ok"))
    assert (await Run.get(id=run.id)).status == RunStatus.INTERRUPTED
    await backend.kill(survivor)  # the retry's worker dies too …
    third = await backend.queue()
    [(dead_again, _)] = await backend.recovered(third)
    assert dead_again.id == retry.id
    assert await Run.filter(status=RunStatus.SUCCEEDED).count() == 0  # … and nothing was reported successful


async def test_interrupt_on_graceful_stop_queues_a_retry_another_worker_runs(backend: Backend) -> None:
    first, second = await backend.queue(), await backend.queue()
    [repo] = await repos(1)
    run = await first.enqueue(RunSpec(TEAM, repository_id=repo.id, scheduled_for=past(1)))
    claimed = await first.claim("w1")
    retry = await first.interrupt(claimed, "stopping")
    assert (await Run.get(id=run.id)).status == RunStatus.INTERRUPTED and retry.stats == {"retry_of": run.id}
    assert await first.interrupt(claimed, "again") is None  # only a running run is interrupted
    taken = await second.claim("w2")
    assert taken.id == retry.id
    done = await second.complete(taken, RunOutcome(status="ok"))
    assert done.status == RunStatus.SUCCEEDED == (await Run.get(id=retry.id)).status


async def test_enqueue_is_idempotent_per_chain_and_slot(backend: Backend) -> None:
    [repo] = await repos(1)
    chain = await BackupChain.create(team_id=TEAM, name="c", repository=repo)
    queue = await backend.queue()
    slot = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
    first = await queue.enqueue(RunSpec(TEAM, chain_id=chain.id, scheduled_for=slot))
    assert first is not None and first.repository_id == repo.id and first.lock_key == f"repo:{repo.id}"
    assert await queue.enqueue(RunSpec(TEAM, chain_id=chain.id, scheduled_for=slot)) is None
    other = await backend.queue()  # another process's queue agrees
    assert await other.enqueue(RunSpec(TEAM, chain_id=chain.id, scheduled_for=slot)) is None
    assert await queue.enqueue(RunSpec(TEAM, chain_id=chain.id, kind=RunKind.CHECK, scheduled_for=slot)) is not None
    # A repository's own scheduled prune (no chain) is keyed by repository, kind and slot the same way.
    prune = RunSpec(TEAM, kind=RunKind.PRUNE, repository_id=repo.id, scheduled_for=slot)
    assert await queue.enqueue(prune) is not None
    assert await other.enqueue(prune) is None
    assert await queue.enqueue(RunSpec(TEAM, kind=RunKind.PRUNE, repository_id=repo.id)) is not None  # unslotted


@pytest.mark.parametrize("status", [RunStatus.SUCCEEDED, RunStatus.SKIPPED])
async def test_enqueue_final_status_is_recorded_never_claimed(backend: Backend, status: RunStatus) -> None:
    [repo] = await repos(1)
    queue = await backend.queue()
    run = await queue.enqueue(RunSpec(TEAM, repository_id=repo.id, status=status, error="why"))
    assert run.next_attempt_at is None and run.finished_at is not None and await queue.claim("w") is None


async def test_enqueue_many_inserts_in_bulk_skips_known_slots_and_returns_stored_rows(backend: Backend) -> None:
    r = await repos(2)
    chains = [await BackupChain.create(team_id=TEAM, name=f"c{i}", repository=r[i % 2]) for i in range(30)]
    queue = await backend.queue()
    slot = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
    already = await queue.enqueue(RunSpec(TEAM, chain_id=chains[0].id, scheduled_for=slot))
    specs = [RunSpec(TEAM, chain_id=c.id, scheduled_for=slot, priority=c.id % 10) for c in chains]
    specs.append(RunSpec(TEAM, chain_id=chains[1].id, scheduled_for=slot))  # repeated inside the batch
    created = await queue.enqueue_many(specs)
    assert [run.chain_id for run in created] == [c.id for c in chains[1:]]
    for run in created:  # the returned objects are the stored rows, ids included
        stored = await Run.get(id=run.id)
        assert (stored.chain_id, stored.priority, stored.lock_key) == (run.chain_id, run.priority, run.lock_key)
        assert stored.repository_id == r[chains.index(next(c for c in chains if c.id == run.chain_id)) % 2].id
        assert stored.status == RunStatus.QUEUED and stored.scheduled_for == slot == stored.next_attempt_at
    assert await Run.filter(chain_id=chains[0].id).values_list("id", flat=True) == [already.id]
    assert await queue.enqueue_many(specs) == []
    assert await Run.all().count() == 30
    # Two repositories: two claims, each the highest priority of its repository.
    first, second = await queue.claim("w"), await queue.claim("w")
    assert await queue.claim("w") is None
    for got in (first, second):
        best = max(c.id % 10 for c in chains if c.repository_id == got.repository_id)  # type: ignore[attr-defined]
        assert got.priority == best
