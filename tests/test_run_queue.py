"""The embedded run queue on SQLite, PostgreSQL and MariaDB: ordering, per-repository exclusivity under concurrent
claims, retries with backoff, permanent failures, windows, crash recovery, and the scheduler's idempotency."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from bot.runs.queue import RunOutcome, RunQueue, RunSpec, SqlQueue, is_transient
from storage.models import PoolKind, Repository, Run, RunKind, RunStatus, StoragePool

TEAM = "T0001"


async def repos(n: int) -> list[Repository]:
    pool = await StoragePool.create(team_id=TEAM, name="local", kind=PoolKind.LOCAL, base_path="/srv/repos")
    return [await Repository.create(team_id=TEAM, pool=pool, name=f"r{i}", path=f"/srv/repos/r{i}", passphrase="p")
            for i in range(n)]  # fmt: skip


def past(minutes: int) -> datetime:
    return datetime.now(UTC) - timedelta(minutes=minutes)


async def test_claim_order_priority_then_oldest_due(database) -> None:
    queue = SqlQueue()
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
    assert (await Run.get(id=future.id)).status == RunStatus.QUEUED
    # A row queued by other code without lock key or due time (the wizard's "run now") is claimable and locked.
    legacy = await Run.create(team_id=TEAM, kind=RunKind.BACKUP, repository=r[3], priority=5)
    assert (await queue.claim("w")).id == legacy.id
    assert (await Run.get(id=legacy.id)).lock_key == f"repo:{r[3].id}"


async def test_twenty_concurrent_claims_one_running_run_per_repository(database) -> None:
    queue = SqlQueue()
    r = await repos(3)
    for i in range(12):
        await queue.enqueue(RunSpec(TEAM, repository_id=r[i % 3].id, scheduled_for=past(30 - i)))
    got = await asyncio.gather(*(queue.claim(f"w{i}") for i in range(20)))
    claimed = [run for run in got if run is not None]
    assert len(claimed) == 3 and len({run.id for run in claimed}) == 3
    assert sorted(run.repository_id for run in claimed) == sorted(x.id for x in r)
    running = await Run.filter(status=RunStatus.RUNNING).values_list("lock_key", flat=True)
    assert sorted(running) == sorted(f"repo:{x.id}" for x in r)
    # Finishing one repository's run frees exactly that repository.
    await queue.complete(claimed[0], RunOutcome(status="ok"))
    again = await asyncio.gather(*(queue.claim(f"x{i}") for i in range(20)))
    [nxt] = [run for run in again if run is not None]
    assert nxt.repository_id == claimed[0].repository_id


async def test_transient_failures_back_off_then_fail_permanent_fail_at_once(database) -> None:
    queue = SqlQueue(max_attempts=3, backoff=60)
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


async def test_window_missed_is_skipped_not_run(database) -> None:
    queue = SqlQueue()
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


async def test_recover_interrupted_marks_and_retries(database) -> None:
    queue = SqlQueue()
    [repo] = await repos(1)
    run = await queue.enqueue(RunSpec(TEAM, repository_id=repo.id, scheduled_for=past(3), priority=7))
    await queue.claim("w")
    [(dead, retry)] = await queue.recover_interrupted()
    stored = await Run.get(id=run.id)
    assert dead.id == run.id and stored.status == RunStatus.INTERRUPTED and stored.error_kind == "interrupted"
    assert retry.status == RunStatus.QUEUED and retry.priority == 7 and retry.scheduled_for == stored.scheduled_for
    assert retry.stats == {"retry_of": run.id}
    assert (await queue.claim("w")).id == retry.id
    assert await queue.recover_interrupted() != []  # the retry was running: interrupted again …
    assert await Run.filter(status=RunStatus.SUCCEEDED).count() == 0  # … and never reported successful


async def test_enqueue_is_idempotent_per_chain_and_slot(database) -> None:
    from storage.models import BackupChain

    [repo] = await repos(1)
    chain = await BackupChain.create(team_id=TEAM, name="c", repository=repo)
    queue = SqlQueue()
    slot = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
    first = await queue.enqueue(RunSpec(TEAM, chain_id=chain.id, scheduled_for=slot))
    assert first is not None and first.repository_id == repo.id and first.lock_key == f"repo:{repo.id}"
    assert await queue.enqueue(RunSpec(TEAM, chain_id=chain.id, scheduled_for=slot)) is None
    assert await queue.enqueue(RunSpec(TEAM, chain_id=chain.id, kind=RunKind.CHECK, scheduled_for=slot)) is not None


@pytest.mark.parametrize("status", [RunStatus.SUCCEEDED, RunStatus.SKIPPED])
async def test_enqueue_final_status(sqlite_db, status) -> None:
    [repo] = await repos(1)
    run = await SqlQueue().enqueue(RunSpec(TEAM, repository_id=repo.id, status=status, error="why"))
    assert run.next_attempt_at is None and run.finished_at is not None and await SqlQueue().claim("w") is None


async def test_enqueue_many_inserts_in_bulk_skips_known_slots_and_returns_stored_rows(database) -> None:
    from storage.models import BackupChain

    r = await repos(2)
    chains = [await BackupChain.create(team_id=TEAM, name=f"c{i}", repository=r[i % 2]) for i in range(30)]
    queue = SqlQueue()
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
