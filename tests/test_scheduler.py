"""The in-memory scheduler on SQLite: it notices chains that appear, pause or change (announced with ``refresh`` or
found by ``resync``), queues slots ahead of time but lets nobody claim them before they are due, withdraws them when
a chain is paused, wakes the worker at the due instant, runs its hourly maintenance (stale alerts through the Slack
emulator) and reports a repository-level prune that cannot run."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.runs import nudge
from bot.runs.execute import Executor
from bot.runs.queue import SqlQueue
from bot.runs.scheduler import Scheduler
from storage.models import BackupChain, ChainStatus, Repository, Run, RunKind, RunStatus
from tests.test_reports import REPORTS, Env, start_env, text_of
from tests.test_reports import make_chain as reported_chain
from tests.test_run_worker import DAILY, later, plain_chain

EVERY_DAY = DAILY["days"]


async def runs_of(chain: BackupChain) -> list[Run]:
    return await Run.filter(chain_id=chain.id).order_by("scheduled_for")


async def test_refresh_and_resync_pick_up_created_paused_and_edited_chains(sqlite_db) -> None:
    scheduler = Scheduler(SqlQueue())
    first = await plain_chain("first", DAILY)
    now = later(2)  # 05:00 UTC, two days ahead
    [run] = await scheduler.tick(now)
    assert run.chain_id == first.id and run.scheduled_for == now.replace(hour=2)

    # Announced: a chain created after the scheduler loaded is followed from the refresh on.
    second = await plain_chain("second", {**DAILY, "at": "06:00"})
    assert await scheduler.tick(now + timedelta(minutes=1)) == []
    await scheduler.refresh(second.id, now=now + timedelta(minutes=1))
    assert await scheduler.tick(now + timedelta(minutes=30)) == []  # not before it is due
    [run] = await scheduler.tick(now + timedelta(hours=1, minutes=1))
    assert run.chain_id == second.id and run.scheduled_for == now.replace(hour=6)

    # Not announced: the periodic resync finds it, with the slot it would have missed since the last look.
    third = await plain_chain("third", {**DAILY, "at": "07:00"})
    at = now + timedelta(hours=2, minutes=5)
    assert await scheduler.tick(at) == []
    await scheduler.resync(at)
    [run] = await scheduler.tick(at)
    assert run.chain_id == third.id and run.scheduled_for == now.replace(hour=7)

    # Paused (announced) and edited (found by the resync): the second runs at its new time, the first no more.
    await BackupChain.filter(id=first.id).update(status=ChainStatus.PAUSED)
    await scheduler.refresh(first.id, now=at)
    await BackupChain.filter(id=second.id).update(schedule={**DAILY, "at": "09:00"})
    await scheduler.resync(at)
    [run] = await scheduler.tick(now + timedelta(hours=5))
    assert run.chain_id == second.id and run.scheduled_for == now.replace(hour=9)
    assert await scheduler.tick(now + timedelta(hours=22)) == []  # 03:00 the next day: the first is paused
    assert len(await runs_of(first)) == 1


async def test_slots_are_queued_ahead_claimable_when_due_and_withdrawn_when_the_chain_pauses(sqlite_db) -> None:
    queue = SqlQueue()
    woken: list[datetime] = []
    scheduler = Scheduler(queue, lead=60, lookback=timedelta(hours=1),
                          on_enqueued=lambda: woken.append(datetime.now(UTC)))  # fmt: skip
    chain = await plain_chain("daily", DAILY)
    due = later(2, hour=2)
    [run] = await scheduler.tick(due - timedelta(seconds=30))
    assert run.status == RunStatus.QUEUED and run.scheduled_for == due and run.next_attempt_at == due
    assert woken == []  # queued, but nothing is due yet
    assert await queue.claim("w1", now=due - timedelta(seconds=1)) is None
    assert await scheduler.tick(due) == [] and len(woken) == 1  # the due instant wakes the worker
    claimed = await queue.claim("w1", now=due)
    assert claimed is not None and claimed.id == run.id

    # The next day's slot is queued ahead too; pausing the chain before it is due withdraws it.
    tomorrow = due + timedelta(days=1)
    [ahead] = await scheduler.tick(tomorrow - timedelta(seconds=30))
    await BackupChain.filter(id=chain.id).update(status=ChainStatus.PAUSED)
    await scheduler.refresh(chain.id, now=tomorrow - timedelta(seconds=20))
    assert not await Run.filter(id=ahead.id).exists()
    assert await scheduler.tick(tomorrow + timedelta(minutes=1)) == []
    assert [r.id for r in await runs_of(chain)] == [run.id]


async def test_a_dependent_of_a_paused_chain_is_skipped_with_the_reason(sqlite_db) -> None:
    parent = await plain_chain("db-dump", DAILY, status=ChainStatus.PAUSED)
    child = await plain_chain("offsite", DAILY, depends_on=parent)
    [skipped] = await Scheduler(SqlQueue()).tick(later(2))
    assert skipped.chain_id == child.id and skipped.status == RunStatus.SKIPPED
    assert skipped.error_kind == "dependency" and "db-dump, which is paused" in skipped.error


async def test_run_forever_queues_missed_slots_at_start_and_a_refreshed_chain_at_once(sqlite_db) -> None:
    woken = asyncio.Event()
    scheduler = Scheduler(SqlQueue(), lead=120, on_enqueued=woken.set)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    missed = now - timedelta(hours=1)
    chain = await plain_chain("missed", {**DAILY, "at": missed.strftime("%H:%M")})
    await BackupChain.filter(id=chain.id).update(created_at=now - timedelta(days=2))
    stop = asyncio.Event()
    task = asyncio.create_task(scheduler.run_forever(stop))
    try:
        await asyncio.wait_for(woken.wait(), 30)  # the slot missed while the bot was down is due: worker woken
        [run] = await runs_of(chain)
        assert run.scheduled_for == missed and run.status == RunStatus.QUEUED

        soon = now + timedelta(minutes=2)  # inside the lead: queued ahead as soon as the chain is announced
        fresh = await plain_chain("fresh", {**DAILY, "at": soon.strftime("%H:%M")})
        await nudge.schedule_changed(fresh.id)  # what the wizard, approvals and pause/resume call after commit
        for _ in range(300):
            if await Run.filter(chain_id=fresh.id).exists():
                break
            await asyncio.sleep(0.1)
        [ahead] = await runs_of(fresh)
        assert ahead.scheduled_for == soon and ahead.next_attempt_at == soon
        await BackupChain.filter(id=fresh.id).update(status=ChainStatus.PAUSED)
        await nudge.schedule_changed(fresh.id)  # paused before its slot: the run queued ahead is withdrawn
        assert await runs_of(fresh) == []
    finally:
        stop.set()
        await task
    assert nudge._schedulers == []  # a stopped scheduler is not called any more


# ------------------------------------------------------------------------------------- through the emulator


@pytest.fixture
async def env(sqlite_db: str, tmp_path: Path) -> AsyncIterator[Env]:
    async for e in start_env(tmp_path):
        yield e


async def until(predicate, within: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_hourly_maintenance_posts_a_stale_alert_once(env: Env) -> None:
    chain = await reported_chain("stale")
    await Run.create(team_id=chain.team_id, chain=chain, kind=RunKind.BACKUP, status=RunStatus.SUCCEEDED,
                     finished_at=datetime.now(UTC) - timedelta(days=10))  # fmt: skip
    calls: list[list[int]] = []

    async def stale() -> None:
        calls.append(await env.reporting.notifier.post_stale())

    scheduler = Scheduler(SqlQueue(), hourly=[stale], hour=0.2)
    stop = asyncio.Event()
    task = asyncio.create_task(scheduler.run_forever(stop))
    try:
        await until(lambda: _at_least(calls, 3))
    finally:
        stop.set()
        await task
    assert calls[0] == [chain.id] and not any(calls[1:])  # posted once per stale episode
    await env.outbox.wait_delivered()
    (message,) = env.slack.messages(REPORTS)
    assert "stale has not backed up successfully" in text_of(message)


async def _at_least(items: list, count: int) -> bool:
    return len(items) >= count


async def test_a_scheduled_prune_without_retention_fails_and_is_reported_with_the_repository(env: Env) -> None:
    chain = await reported_chain("nightly")
    repository = await Repository.get(id=chain.repository_id)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    repository.retention = {}
    repository.prune_schedule = {"days": EVERY_DAY, "at": (now - timedelta(hours=1)).strftime("%H:%M")}
    await repository.save()
    await Repository.filter(id=repository.id).update(created_at=now - timedelta(days=2))
    queue = SqlQueue()
    [prune] = await Scheduler(queue, alerts=env.bus).tick()
    assert (prune.kind, prune.chain_id, prune.repository_id) == (RunKind.PRUNE, None, repository.id)
    assert prune.lock_key == f"repo:{repository.id}"
    claimed = await queue.claim("w1")
    assert claimed is not None and claimed.id == prune.id
    stored = await Executor(queue, services=None, alerts=env.bus)(claimed)
    assert stored.status == RunStatus.FAILED and stored.error_kind == "plan"
    await env.outbox.wait_delivered()
    (message,) = env.slack.messages(REPORTS)
    body = text_of(message)
    assert "🚨 Prune of nightly-repo failed" in body and "no retention policy" in body
    assert "*Repository*\\nnightly-repo" in body and "Retry now" not in body
