"""The scheduler (SQLite) and the worker running real chains over real sshd: a backup recorded and reported, a
``borg check`` run, a permanent failure, a graceful stop that interrupts a slow backup for resume, and a repository
pruned by its own scheduled runs (reported through the Slack emulator) rather than after each backup."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.alerts import AlertBus
from bot.backup.jobs import ArchiveJob, archive_name
from bot.backup.runner import prune_repository
from bot.borg import check as borg_check
from bot.borg import create as borg_create
from bot.borg import list as borg_list
from bot.borg.create import CreateOptions
from bot.borg.repo import Repo
from bot.flows.wizard import create as creating
from bot.runs.execute import Executor
from bot.runs.notify import human_bytes, pruned_archives
from bot.runs.queue import RunSpec, SqlQueue
from bot.runs.scheduler import Scheduler
from bot.runs.worker import Worker
from storage.models import BackupChain, ChainStatus, PoolKind, Repository, Run, RunKind, RunStatus, StoragePool
from tests.test_reports import REPORTS, Env, start_env, text_of
from tests.test_wizard_step_pool_repo import TEAM, World, build_world
from tests.test_wizard_validation_create import ANSWERS

# ------------------------------------------------------------------------------------------------- scheduler


async def plain_chain(name: str, schedule: dict, *, status: ChainStatus = ChainStatus.ACTIVE, **extra) -> BackupChain:
    pool = await StoragePool.get_or_none(name="local") or await StoragePool.create(
        team_id=TEAM, name="local", kind=PoolKind.LOCAL, base_path="/srv"
    )
    repo = await Repository.create(team_id=TEAM, pool=pool, name=name, path=f"/srv/{name}", passphrase="p")
    return await BackupChain.create(team_id=TEAM, name=name, repository=repo, schedule=schedule, status=status,
                                    **extra)  # fmt: skip


DAILY = {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "at": "02:00", "timezone": "UTC"}


def later(days: int, hour: int = 5) -> datetime:
    base = datetime.now(UTC) + timedelta(days=days)
    return base.replace(hour=hour, minute=0, second=0, microsecond=0)


async def test_scheduler_one_run_per_slot_paused_not_scheduled_windows_skipped(sqlite_db) -> None:
    alerts, seen = AlertBus(), []
    alerts.subscribe(seen.append)
    queue = SqlQueue()
    scheduler = Scheduler(queue, alerts=alerts)
    daily = await plain_chain("daily", DAILY, priority=8)
    await plain_chain("paused", DAILY, status=ChainStatus.PAUSED)
    await plain_chain("pending", DAILY, status=ChainStatus.PENDING_APPROVAL)
    windowed = await plain_chain("windowed", {**DAILY, "at": None, "window": ["01:00", "03:00"],
                                              "check": {**DAILY, "at": "04:00", "verify_data": True}})  # fmt: skip
    now = later(2)
    created = await scheduler.tick(now)
    assert sorted((r.chain_id, r.kind.value) for r in created) == sorted(
        [(daily.id, "backup"), (windowed.id, "backup"), (windowed.id, "check")]
    )
    assert await scheduler.tick(now) == [] and await scheduler.tick(now + timedelta(minutes=1)) == []  # idempotent
    run = await Run.get(chain_id=daily.id)
    assert run.scheduled_for == now.replace(hour=2) and run.priority == 8 and run.window_ends_at is None
    check = await Run.get(chain_id=windowed.id, kind=RunKind.CHECK)
    assert check.stats == {"options": {"verify_data": True}}
    # The windowed slot ended at 03:00; at 05:00 it is skipped and reported, never claimed.
    backup = await Run.get(chain_id=windowed.id, kind=RunKind.BACKUP)
    assert backup.window_ends_at == now.replace(hour=3)
    worker = Worker(queue, lambda run: asyncio.sleep(0), alerts=alerts)
    [skipped] = await queue.skip_expired(now=now)
    assert skipped.id == backup.id
    from bot.runs.execute import announce

    await announce(worker.alerts, skipped)
    assert seen[-1].kind == "run_skipped" and "window" in seen[-1].details["reason"]
    assert seen[-1].details["chain_name"] == "windowed" and seen[-1].team_id == TEAM
    # The next day brings the next slot: exactly one more run per chain.
    assert len(await scheduler.tick(now + timedelta(days=1))) == 3


async def test_dependent_chain_waits_for_its_dependency_and_is_skipped_when_it_fails(sqlite_db) -> None:
    alerts, seen = AlertBus(), []
    alerts.subscribe(seen.append)
    scheduler = Scheduler(SqlQueue(), alerts=alerts)
    first = await plain_chain("db-dump", DAILY)
    second = await plain_chain("offsite", DAILY, depends_on=first)
    now = later(2)
    created = await scheduler.tick(now)
    assert [r.chain_id for r in created] == [first.id]  # the dependent waits
    parent = created[0]
    await Run.filter(id=parent.id).update(status=RunStatus.RUNNING)
    assert await scheduler.tick(now) == []
    await Run.filter(id=parent.id).update(status=RunStatus.SUCCEEDED)
    [child] = await scheduler.tick(now)
    assert child.chain_id == second.id and child.status == RunStatus.QUEUED
    assert child.scheduled_for == parent.scheduled_for

    tomorrow = now + timedelta(days=1)
    [parent2] = await scheduler.tick(tomorrow)
    await Run.filter(id=parent2.id).update(status=RunStatus.FAILED, error="auth failed")
    [child2] = await scheduler.tick(tomorrow)
    assert child2.status == RunStatus.SKIPPED and child2.error_kind == "dependency"
    assert "db-dump" in child2.error and "auth failed" in child2.error
    assert seen[-1].kind == "run_skipped" and seen[-1].details["run_id"] == child2.id
    assert await scheduler.tick(tomorrow) == []


# ---------------------------------------------------------------------------------------------- real chains


@pytest.fixture
async def world(sqlite_db: str, make_sshd: Any) -> AsyncIterator[World]:
    w = await build_world(make_sshd, "r")
    yield w
    await w.services.pool.close()


async def make_chain(world: World, name: str = "web1-www") -> BackupChain:
    repository = {"mode": "new", "name": name, "encryption": "repokey-blake2", "compression": "lz4"}
    ctx = world.ctx(**ANSWERS, pool_id=world.pool.id, repository=repository)
    await creating.create_chain(ctx, name=name)
    return await BackupChain.get(id=ctx.data["chain_id"])


async def wait_for(predicate, within: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def alerted(seen: list, run_id: int) -> bool:
    return any(a.details["run_id"] == run_id for a in seen)


async def final(run_id: int) -> bool:
    return (await Run.get(id=run_id)).status not in (RunStatus.QUEUED, RunStatus.RUNNING)


async def test_worker_runs_a_real_chain_records_and_reports_it_then_checks_the_repository(world: World) -> None:
    chain = await make_chain(world)
    alerts, seen = AlertBus(), []
    alerts.subscribe(seen.append)
    queue = SqlQueue()
    worker = Worker(queue, Executor(queue, world.services, alerts=alerts), alerts=alerts, poll=0.2)
    await worker.start()
    try:
        run = await queue.enqueue(RunSpec(TEAM, chain_id=chain.id, priority=chain.priority, requested_by="U1"))
        worker.wake()
        await wait_for(lambda: final(run.id))
        stored = await Run.get(id=run.id)
        assert stored.status == RunStatus.SUCCEEDED, stored.error
        assert stored.archive_name.startswith("web1-www-files-") and stored.stats["nfiles"] == 2
        assert stored.attempts == 1 and stored.finished_at >= stored.started_at
        await wait_for(lambda: alerted(seen, run.id))  # published after the final state is stored
        [alert] = [a for a in seen if a.details["run_id"] == run.id]
        assert alert.kind == "run_succeeded" and alert.team_id == TEAM and alert.details["chain_id"] == chain.id
        assert alert.details["chain_name"] == "web1-www" and alert.details["archive"] == stored.archive_name

        repository = await Repository.get(id=chain.repository_id)
        at_pool = Repo(url=repository.path, passphrase=repository.passphrase.reveal())
        assert [a.name for a in await borg_list.archives(world.pool_transport(), at_pool)] == [stored.archive_name]

        check = await queue.enqueue(RunSpec(TEAM, kind=RunKind.CHECK, chain_id=chain.id, options={"verify_data": True}))
        worker.wake()
        await wait_for(lambda: final(check.id))
        checked = await Run.get(id=check.id)
        assert checked.status == RunStatus.SUCCEEDED and checked.stats["check"]["ok"]
        assert checked.stats["check"]["verify_data"] is True and "no problems" in checked.log_excerpt

        # A permanent failure (the stored passphrase is wrong): failed once, not retried, reported with its hint.
        repository.passphrase = "not-the-passphrase"
        await repository.save()
        bad = await queue.enqueue(RunSpec(TEAM, chain_id=chain.id))
        worker.wake()
        await wait_for(lambda: final(bad.id))
        failed = await Run.get(id=bad.id)
        assert failed.status == RunStatus.FAILED and failed.error_kind == "passphrase" and failed.attempts == 1
        await wait_for(lambda: alerted(seen, bad.id))
        alert = next(a for a in seen if a.details["run_id"] == bad.id)
        assert alert.kind == "run_failed" and "passphrase" in alert.details["hint"]
        assert "will_retry" not in alert.details
    finally:
        await worker.stop(grace=5)


async def test_stop_lets_nothing_new_start_and_interrupts_a_slow_backup_for_resume(world: World) -> None:
    chain = await make_chain(world)
    alerts, seen = AlertBus(), []
    alerts.subscribe(seen.append)
    queue = SqlQueue()

    def slow(plan, run):
        job = ArchiveJob(suffix="slow", kind="command", command=("sh", "-c", "echo x; sleep 30"), stdin_name="x.txt")
        return replace(plan, jobs=[job])

    worker = Worker(queue, Executor(queue, world.services, alerts=alerts, plan_hook=slow), alerts=alerts, poll=0.2)
    await worker.start()
    run = await queue.enqueue(RunSpec(TEAM, chain_id=chain.id))
    worker.wake()
    await wait_for(lambda: Run.filter(id=run.id, status=RunStatus.RUNNING).exists())
    await asyncio.sleep(2)  # borg create is under way
    await worker.stop(grace=1)
    stored = await Run.get(id=run.id)
    assert stored.status == RunStatus.INTERRUPTED and stored.error_kind == "interrupted"
    retry = await Run.get(status=RunStatus.QUEUED, chain_id=chain.id)
    assert retry.stats == {"retry_of": run.id}
    kinds = [a.kind for a in seen if a.details["run_id"] == run.id]
    assert kinds == ["run_interrupted"] and not any(a.kind == "run_succeeded" for a in seen)
    repository = await Repository.get(id=chain.repository_id)
    at_pool = Repo(url=repository.path, passphrase=repository.passphrase.reveal())
    await wait_for(lambda: _check_ok(world, at_pool), within=40)


async def _check_ok(world: World, repo: Repo) -> bool:
    try:
        return (await borg_check.run(world.pool_transport(), repo, lock_wait=1)).ok
    except Exception:  # still locked by the dying borg serve: try again
        return False


async def _at_least(items: list[str], count: int) -> bool:
    return len(items) >= count


async def test_backups_ping_the_chains_healthcheck_url(world: World) -> None:
    """start, then success; a failing run pings /fail (a local HTTP server stands in for healthchecks.io)."""
    from aiohttp import web

    from bot.monitoring import set_ping_url

    seen: list[str] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.Response(text="OK")

    server = web.Application()
    server.router.add_get("/{tail:.*}", record)
    runner = web.AppRunner(server)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    chain = await make_chain(world, name="pinged")
    await set_ping_url(TEAM, chain.id, f"http://127.0.0.1:{port}/ping/abc")
    # Loopback is refused for outbound URLs unless an admin allow-lists it (tests/test_outbound.py).
    from bot.monitoring import OUTBOUND_ALLOW_KEY
    from storage.models import Workspace

    row, _ = await Workspace.get_or_create(team_id=TEAM)
    await Workspace.filter(id=row.id).update(settings={**(row.settings or {}), OUTBOUND_ALLOW_KEY: ["127.0.0.0/8"]})
    queue = SqlQueue()
    worker = Worker(queue, Executor(queue, world.services), poll=0.2)
    await worker.start()
    try:
        run = await queue.enqueue(RunSpec(TEAM, chain_id=chain.id))
        worker.wake()
        await wait_for(lambda: final(run.id))
        await wait_for(lambda: _at_least(seen, 2))  # the closing ping follows the run's final state
        assert seen == ["/ping/abc/start", "/ping/abc"]
        repository = await Repository.get(id=chain.repository_id)
        repository.passphrase = "wrong"
        await repository.save()
        bad = await queue.enqueue(RunSpec(TEAM, chain_id=chain.id))
        worker.wake()
        await wait_for(lambda: final(bad.id))
        await wait_for(lambda: _at_least(seen, 4))
        assert seen[2:] == ["/ping/abc/start", "/ping/abc/fail"]
    finally:
        await worker.stop(grace=5)
        await runner.cleanup()


# ----------------------------------------------------------------------------------- scheduled prunes, real borg


@pytest.fixture
async def slack(world: World, tmp_path: Path) -> AsyncIterator[Env]:
    """The world's database, plus the Slack emulator, the outbox and the notifier (tests/test_reports.py's set-up)."""
    async for env in start_env(tmp_path):
        yield env


async def old_archive(world: World, repo: Repo, name: str, moment: datetime) -> None:
    """An archive of the chain's naming made at the pool with an old timestamp (incompressible, so compact frees)."""
    options = CreateOptions(timestamp=moment.isoformat(timespec="seconds"))
    noise = ("head", "-c", "300000", "/dev/urandom")
    argv = borg_create.command_argv(repo, name, "noise.bin", noise, options)
    await borg_create.run(world.pool_transport(), repo, argv)


async def test_a_repository_with_a_prune_schedule_is_pruned_by_its_own_runs_not_by_backups(
    world: World, slack: Env
) -> None:
    chain = await make_chain(world, name="web1-www")
    await BackupChain.filter(id=chain.id).update(name="nightly-web", notify_channel=REPORTS)
    repository = await Repository.get(id=chain.repository_id)
    at_pool = Repo(url=repository.path, passphrase=repository.passphrase.reveal())
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    olds = [archive_name("web1-www", "files", (now - timedelta(days=d)).replace(hour=12, minute=0)) for d in (3, 2, 1)]
    for name in olds:
        await old_archive(world, at_pool, name, datetime.strptime(name[-15:], "%Y%m%dT%H%M%S").replace(tzinfo=UTC))
    # As if the bot had verified them (archives made behind its back stop maintenance: tests/test_integrity.py).
    from bot.runs.integrity import remember

    await remember(TEAM, repository.id, await borg_list.archives(world.pool_transport(), at_pool, utc=True), None)
    repository.retention = {"keep_daily": 2}
    repository.prune_schedule = {"days": DAILY["days"], "at": (now - timedelta(hours=1)).strftime("%H:%M"),
                                 "timezone": "UTC"}  # fmt: skip
    await repository.save()
    await Repository.filter(id=repository.id).update(created_at=now - timedelta(days=2))

    queue = SqlQueue()
    worker = Worker(queue, Executor(queue, world.services, alerts=slack.bus), alerts=slack.bus, poll=0.2)
    await worker.start()
    try:
        # A backup of a chain whose repository prunes on its own schedule keeps every archive.
        backup = await queue.enqueue(RunSpec(TEAM, chain_id=chain.id))
        worker.wake()
        await wait_for(lambda: final(backup.id))
        backed = await Run.get(id=backup.id)
        assert backed.status == RunStatus.SUCCEEDED, backed.error
        assert backed.stats["jobs"][0]["pruned"] == [] and backed.stats["freed_bytes"] is None
        listed = [a.name for a in await borg_list.archives(world.pool_transport(), at_pool)]
        assert sorted(listed) == sorted([*olds, backed.archive_name])

        # The scheduler queues the repository's prune run (once), the worker runs it: keep_daily 2 keeps today's
        # backup and yesterday's archive.
        scheduler = Scheduler(queue, alerts=slack.bus, on_enqueued=worker.wake)
        [prune] = await scheduler.tick()
        assert (prune.kind, prune.chain_id, prune.repository_id) == (RunKind.PRUNE, None, repository.id)
        assert prune.lock_key == f"repo:{repository.id}" and await scheduler.tick() == []
        await wait_for(lambda: final(prune.id))
        pruned = await Run.get(id=prune.id)
        assert pruned.status == RunStatus.SUCCEEDED, pruned.error
        assert sorted(pruned_archives(pruned.stats)) == sorted(olds[:2])
        assert pruned.stats["archives_pruned"] == 2 and pruned.stats["freed_bytes"] > 0
        newest_first = [olds[1], olds[0]]  # as borg reports them
        assert pruned.stats["jobs"] == [{"job": "files", "status": "ok", "pruned": newest_first, "kept": 2}]
        listed = [a.name for a in await borg_list.archives(world.pool_transport(), at_pool)]
        assert sorted(listed) == sorted([olds[2], backed.archive_name])
    finally:
        await worker.stop(grace=5)

    await slack.outbox.wait_delivered()
    reports = [text_of(m) for m in slack.slack.messages(REPORTS)]
    assert len(reports) == 2 and "✅ Backup of nightly-web succeeded" in reports[0]  # and no prune report of it
    assert "🧹 Prune of web1-www" in reports[1] and "*Repository*\\nweb1-www" in reports[1]
    assert "*Archives pruned*\\n2" in reports[1] and all(name in reports[1] for name in olds[:2])
    assert f"*Space freed*\\n{human_bytes(pruned.stats['freed_bytes'])}" in reports[1]
    assert slack.slack.messages(REPORTS)[1]["thread_ts"] == slack.slack.messages(REPORTS)[0]["ts"]


async def test_a_scheduled_prune_never_removes_every_archive_of_a_group_whose_backups_stopped(world: World) -> None:
    """keep_within alone would delete all of a group older than the interval; such a group is left as it is."""
    chain = await make_chain(world, name="stopped")
    repository = await Repository.get(id=chain.repository_id)
    at_pool = Repo(url=repository.path, passphrase=repository.passphrase.reveal())
    now = datetime.now(UTC).replace(microsecond=0)
    names = [archive_name("stopped", "files", now - timedelta(days=d)) for d in (3, 2)]
    for name, days in zip(names, (3, 2), strict=True):
        await old_archive(world, at_pool, name, now - timedelta(days=days))
    result = await prune_repository(world.pool_transport(), at_pool, "stopped", {"keep_within": "1d"})
    assert result.status == "ok" and result.pruned == {"files": []} and result.kept == {"files": 2}
    assert result.freed_bytes is None
    listed = [a.name for a in await borg_list.archives(world.pool_transport(), at_pool)]
    assert sorted(listed) == sorted(names)


async def test_a_result_arriving_after_another_worker_interrupted_the_run_is_not_reported_again(sqlite_db) -> None:
    """A worker taken for dead (it was only slow) finishes late: its result is not stored (the queue's
    compare-and-set) and the Executor publishes nothing, so the interruption is reported once, by its finder."""
    pool = await StoragePool.create(team_id=TEAM, name="p", kind=PoolKind.LOCAL, base_path="/srv/x")
    repository = await Repository.create(team_id=TEAM, pool=pool, name="r", path="/srv/x/r", passphrase="p")
    queue = SqlQueue()
    seen: list[str] = []
    bus = AlertBus()
    bus.subscribe(lambda alert: seen.append(alert.kind))
    await queue.enqueue(RunSpec(TEAM, kind=RunKind.RESTORE, repository_id=repository.id))
    claimed = await queue.claim("slow-worker")
    assert await queue.interrupt(await Run.get(id=claimed.id), "its worker stopped sending heartbeats") is not None
    stored = await Executor(queue, services=None, alerts=bus)(claimed)  # the slow worker's late result
    assert stored.status == RunStatus.INTERRUPTED and seen == []
    assert (await Run.get(id=claimed.id)).status == RunStatus.INTERRUPTED
