"""Storage accounting against real parts: borg over a real sshd pool, the run worker, the Slack emulator.

A repository's size (borg's deduplicated ``unique_csize``) is written after a backup, after a scheduled prune and
after the compact that follows it, and equals what ``borg info --json`` says; the pool's free space is written after
runs and by the hourly refresh (an unreachable or silent pool only gets ``measure_error``); a pool over its quota
refuses a backup before borg runs (the archive count is unchanged) with the numbers; crossing the threshold posts
exactly one alert per crossing; the App Home, ``/backup status`` and ``/metrics`` show the real numbers.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import asyncssh
import pytest
from aiohttp import web

from bot.alerts import AlertBus
from bot.backup import capacity
from bot.backup.jobs import archive_name
from bot.backup.plan import human, pool_borg
from bot.borg import create as borg_create
from bot.borg import info as borg_info
from bot.borg import list as borg_list
from bot.borg.create import CreateOptions
from bot.borg.repo import Repo
from bot.flows.wizard import create as creating
from bot.flows.wizard.services import WizardServices
from bot.monitoring import render_metrics
from bot.runs.accounting import POOL_ALERT, QUOTA_HINT, Accounting, alert_for
from bot.runs.execute import Executor
from bot.runs.notify import human_bytes
from bot.runs.queue import RunSpec, SqlQueue
from bot.runs.worker import Worker, start_runs
from bot.services.roles import ADMIN_CHANNEL
from bot.slack import listing
from bot.slack.app import http_app
from bot.slack.home import chain_rows
from bot.slack.home_blocks import home_chains_view
from bot.transport import LocalTransport, SSHPool
from storage.models import (
    BackupChain,
    OutboxMessage,
    PoolKind,
    Repository,
    Role,
    RoleGrant,
    Run,
    RunKind,
    RunStatus,
    Server,
    StoragePool,
    Workspace,
)
from storage.tenancy import Tenant
from tests.test_monitoring import parse, scrape
from tests.test_reports import APPROVALS, REPORTS, Env, start_env, text_of
from tests.test_reports import make_chain as plain_chain
from tests.test_wizard_step_pool_repo import DIRECTORY, TEAM, World, build_world, server_row
from tests.test_wizard_validation_create import ANSWERS


@pytest.fixture
async def world(sqlite_db: str, make_sshd: Any) -> AsyncIterator[World]:
    w = await build_world(make_sshd, "acct")
    yield w
    await w.services.pool.close()


@pytest.fixture
async def slack(world: World, tmp_path: Path) -> AsyncIterator[Env]:
    async for env in start_env(tmp_path):
        yield env


@pytest.fixture
async def metrics(world: World) -> AsyncIterator[str]:
    """The bot's HTTP app serving /metrics (the world's database)."""
    site = web.AppRunner(http_app(None))
    await site.setup()
    await web.TCPSite(site, "127.0.0.1", 0).start()
    host, port = site.addresses[0][:2]
    try:
        yield f"http://{host}:{port}/metrics"
    finally:
        await site.cleanup()


async def make_chain(world: World, name: str) -> BackupChain:
    repository = {"mode": "new", "name": name, "encryption": "repokey-blake2", "compression": "lz4"}
    ctx = world.ctx(**ANSWERS, pool_id=world.pool.id, repository=repository)
    await creating.create_chain(ctx, name=name)
    await BackupChain.filter(id=ctx.data["chain_id"]).update(notify_channel=REPORTS)
    return await BackupChain.get(id=ctx.data["chain_id"])


async def wait_for(predicate, within: float = 90.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.1)


class Runner:
    """A worker over the embedded queue, with the executor's default accounting; runs one run to its end."""

    def __init__(self, world: World, bus: AlertBus) -> None:
        self.queue = SqlQueue()
        self.worker = Worker(self.queue, Executor(self.queue, world.services, alerts=bus), alerts=bus, poll=0.2)

    async def run(self, spec: RunSpec) -> Run:
        run = await self.queue.enqueue(spec)
        assert run is not None
        self.worker.wake()

        async def final() -> bool:
            return (await Run.get(id=run.id)).status not in (RunStatus.QUEUED, RunStatus.RUNNING)

        await wait_for(final)
        return await Run.get(id=run.id)


@pytest.fixture
async def runner(world: World, slack: Env) -> AsyncIterator[Runner]:
    r = Runner(world, slack.bus)
    await r.worker.start()
    yield r
    await r.worker.stop(grace=5)


async def truth(world: World, repository: Repository) -> borg_info.RepoInfo:
    """What borg itself says of the repository now (through the pool, as the bot's own access)."""
    repo = Repo(url=repository.path, passphrase=repository.passphrase.reveal())
    return await borg_info.measure(world.pool_transport(), repo)


async def adopt_all(world: World, repository: Repository) -> None:
    """Record every archive now in the repository as verified by the bot (archives made here behind its back
    would otherwise stop maintenance: tests/test_integrity.py)."""
    from bot.runs.integrity import remember

    repo = Repo(url=repository.path, passphrase=repository.passphrase.reveal())
    await remember(repository.team_id, repository.id, await borg_list.archives(world.pool_transport(), repo, utc=True),
                   None)  # fmt: skip


def disk_of(world: World) -> os.statvfs_result:
    return os.statvfs(world.pool_host.workdir)


async def old_archive(world: World, repository: Repository, day: int) -> str:
    """An archive of the chain's naming, ``day`` days old, of incompressible data (so prune + compact free it)."""
    moment = (datetime.now(UTC) - timedelta(days=day)).replace(hour=12, minute=0, second=0, microsecond=0)
    name = archive_name(repository.name, "files", moment)
    repo = Repo(url=repository.path, passphrase=repository.passphrase.reveal())
    noise = ("head", "-c", "400000", "/dev/urandom")
    options = CreateOptions(timestamp=moment.isoformat(timespec="seconds"))
    argv = borg_create.command_argv(repo, name, "noise.bin", noise, options)
    await borg_create.run(world.pool_transport(), repo, argv)
    return name


# --------------------------------------------------------------------------------------------- sizes after runs


async def test_size_and_free_space_are_written_after_backup_prune_and_compact(
    world: World, runner: Runner, slack: Env
) -> None:
    chain = await make_chain(world, "sized")
    repository = await Repository.get(id=chain.repository_id)
    assert repository.size_bytes is None

    backup = await runner.run(RunSpec(TEAM, chain_id=chain.id))
    assert backup.status == RunStatus.SUCCEEDED, backup.error
    repository = await Repository.get(id=chain.repository_id)
    after_backup = await truth(world, repository)
    assert after_backup.archives == 1 and after_backup.unique_csize > 0
    assert repository.size_bytes == after_backup.unique_csize and repository.size_checked_at is not None

    pool = await StoragePool.get(id=world.pool.id)
    disk = disk_of(world)
    assert pool.capacity_bytes == disk.f_blocks * disk.f_frsize  # df's total of the pool's file system
    assert pool.available_bytes is not None and 0 < pool.available_bytes <= pool.capacity_bytes
    assert pool.available_checked_at is not None and pool.measure_error is None
    await slack.outbox.wait_delivered()  # the success report shows the size measured after this very backup
    assert f"*Repository size*\\n{human_bytes(after_backup.unique_csize)}" in text_of(slack.slack.messages(REPORTS)[0])

    # Three old archives of noise, made behind the bot's back: the stored size is stale until the next run.
    olds = [await old_archive(world, repository, day) for day in (3, 2, 1)]
    await adopt_all(world, repository)  # as if the bot had verified them (else maintenance refuses: see integrity)
    grown = await truth(world, repository)
    assert grown.archives == 4 and grown.unique_csize > after_backup.unique_csize + 3 * 400_000
    assert (await Repository.get(id=repository.id)).size_bytes == after_backup.unique_csize

    # A scheduled prune (keep_daily 2: today's backup and yesterday's archive stay), then compact.
    await Repository.filter(id=repository.id).update(retention={"keep_daily": 2})
    prune = await runner.run(RunSpec(TEAM, kind=RunKind.PRUNE, repository_id=repository.id))
    assert prune.status == RunStatus.SUCCEEDED, prune.error
    assert sorted(name for job in prune.stats["jobs"] for name in job["pruned"]) == sorted(olds[:2])
    assert prune.stats["freed_bytes"] > 0
    after_prune = await truth(world, repository)
    stored = await Repository.get(id=repository.id)
    assert after_prune.archives == 2 and stored.size_bytes == after_prune.unique_csize
    assert prune.stats["repository_bytes"] == after_prune.unique_csize
    assert after_prune.unique_csize < grown.unique_csize - 2 * 400_000  # compact really freed the noise
    assert stored.size_checked_at > repository.size_checked_at

    # A backup that prunes and compacts itself (keep_daily 1 drops yesterday's archive) writes the size after both.
    await Repository.filter(id=repository.id).update(retention={"keep_daily": 1})
    again = await runner.run(RunSpec(TEAM, chain_id=chain.id))
    assert again.status == RunStatus.SUCCEEDED, again.error
    assert olds[2] in [name for job in again.stats["jobs"] for name in job["pruned"]]
    after_compact = await truth(world, repository)
    assert after_compact.archives == 1
    assert (await Repository.get(id=repository.id)).size_bytes == after_compact.unique_csize
    assert after_compact.unique_csize < after_prune.unique_csize


async def test_a_size_that_cannot_be_measured_never_fails_the_run_and_keeps_the_old_size(world: World) -> None:
    chain = await make_chain(world, "unmeasured")
    await Repository.filter(id=chain.repository_id).update(size_bytes=12345)
    accounting = Accounting(world.services)
    repository = await Repository.get(id=chain.repository_id)
    wrong = Repo(url=repository.path, passphrase="not-the-passphrase")
    measured = await accounting.after_run(repository.id, world.pool_transport(), wrong)
    assert measured.size_bytes is None
    assert (await Repository.get(id=repository.id)).size_bytes == 12345  # kept
    assert measured.usage is not None and measured.usage.free_bytes is not None  # the pool was still measured


async def test_this_machine_as_the_pool_is_measured_after_a_backup(
    sqlite_db: str, make_sshd: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``local`` pool (the bot's own host), this machine over loopback sshd as the source: the size comes from the
    bot's own borg, the free space from df on this machine."""
    home = tmp_path / "bot-home"  # the bot's borg state for a local pool, not the machine's /root
    home.mkdir(mode=0o700)
    monkeypatch.setenv("HOME", str(home))
    host = make_sshd("acctlocal")
    server = await server_row(host, "thismachine")
    pool = await StoragePool.create(team_id=TEAM, name="this-machine", kind=PoolKind.LOCAL,
                                    base_path=str(tmp_path / "pool"))  # fmt: skip
    www = host.workdir / "www"
    www.mkdir()
    (www / "index.html").write_text("<h1>one machine</h1>\n")
    services = WizardServices(pool=SSHPool([asyncssh.read_private_key(host.client_key_path)]), directory=DIRECTORY)
    world = World(host, None, services, server, server, pool, www)
    bus = AlertBus()
    runner = Runner(world, bus)
    await runner.worker.start()
    try:
        chain = await make_chain(world, "local-sized")
        backup = await runner.run(RunSpec(TEAM, chain_id=chain.id))
        assert backup.status == RunStatus.SUCCEEDED, backup.error
    finally:
        await runner.worker.stop(grace=5)
        await services.pool.close()
    repository = await Repository.get(id=chain.repository_id)
    repo = Repo(url=repository.path, passphrase=repository.passphrase.reveal())
    told = await borg_info.measure(LocalTransport(), repo, borg=pool_borg(pool, services))
    assert told.archives == 1 and repository.size_bytes == told.unique_csize
    measured = await StoragePool.get(id=pool.id)
    disk = os.statvfs(tmp_path)
    assert measured.capacity_bytes == disk.f_blocks * disk.f_frsize and measured.measure_error is None


# --------------------------------------------------------------------------------------------- free space hourly


async def test_hourly_refresh_measures_every_pool_and_bounds_the_silent_one(world: World, tmp_path: Path) -> None:
    silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)  # accepts, never says a word
    port = silent.sockets[0].getsockname()[1]
    try:
        mute = await Server.create(team_id=TEAM, name="mute", host="127.0.0.1", port=port, username="root",
                                   host_key=world.pool_server.host_key, status="ok")  # fmt: skip
        quiet = await StoragePool.create(team_id=TEAM, name="quiet", server=mute, base_path="/srv/quiet")
        local = await StoragePool.create(team_id=TEAM, name="here", kind=PoolKind.LOCAL,
                                         base_path=str(tmp_path / "not-yet" / "repos"))  # fmt: skip
        accounting = Accounting(world.services, pool_timeout=3.0)
        measured = await accounting.refresh_all()
        assert measured == 2  # vault-main and here; quiet did not answer
        vault, here, mute_pool = [await StoragePool.get(id=p.id) for p in (world.pool, local, quiet)]
        disk = os.statvfs(tmp_path)
        assert here.capacity_bytes == disk.f_blocks * disk.f_frsize and here.available_bytes > 0
        assert vault.capacity_bytes == disk_of(world).f_blocks * disk_of(world).f_frsize
        assert vault.available_checked_at is not None and vault.measure_error is None
        assert mute_pool.available_bytes is None and mute_pool.available_checked_at is None
        assert "quiet did not answer within 3 s" in mute_pool.measure_error

        # A pool that answers again clears its error at the next refresh.
        await StoragePool.filter(id=quiet.id).update(server_id=world.pool_server.id, base_path=vault.base_path)
        assert await accounting.refresh_all() == 3
        assert (await StoragePool.get(id=quiet.id)).measure_error is None
    finally:
        silent.close()


async def test_the_runs_scheduler_refreshes_pools_at_start_and_hourly(world: World) -> None:
    runtime = SimpleNamespace(settings=SimpleNamespace(run_concurrency=0), alerts=AlertBus())
    stop = await start_runs(runtime, world.services, concurrency=0, queue=SqlQueue())
    try:

        async def measured() -> bool:
            return (await StoragePool.get(id=world.pool.id)).available_checked_at is not None

        await wait_for(measured, within=60)
    finally:
        await stop()
    assert (await StoragePool.get(id=world.pool.id)).capacity_bytes == disk_of(world).f_blocks * disk_of(world).f_frsize


# --------------------------------------------------------------------------------------------- quota and threshold


async def test_a_pool_over_its_quota_refuses_the_backup_before_borg_runs(
    world: World, runner: Runner, slack: Env
) -> None:
    chain = await make_chain(world, "quota")
    first = await runner.run(RunSpec(TEAM, chain_id=chain.id))
    assert first.status == RunStatus.SUCCEEDED, first.error
    repository = await Repository.get(id=chain.repository_id)
    size = repository.size_bytes
    assert size is not None and size == (await truth(world, repository)).unique_csize
    quota = size - 1
    await StoragePool.filter(id=world.pool.id).update(quota_bytes=quota)

    refused = await runner.run(RunSpec(TEAM, chain_id=chain.id))
    assert refused.status == RunStatus.FAILED and refused.error_kind == "quota" and refused.attempts == 1
    assert f"Pool vault-main is over its quota: {human(size)} used of {human(quota)}." in refused.error
    assert refused.archive_name is None
    assert (await truth(world, repository)).archives == 1  # no borg create happened
    await slack.outbox.wait_delivered()
    failure = text_of(slack.slack.messages(REPORTS)[-1])
    assert "over its quota" in failure and human(quota) in failure and "raise the pool" in failure
    assert QUOTA_HINT.split(":")[0] in failure

    # Raised quota: the next backup runs.
    await StoragePool.filter(id=world.pool.id).update(quota_bytes=size * 100)
    assert (await runner.run(RunSpec(TEAM, chain_id=chain.id))).status == RunStatus.SUCCEEDED
    assert (await truth(world, repository)).archives == 2


async def test_the_threshold_alert_is_posted_once_per_crossing(world: World, runner: Runner, slack: Env) -> None:
    chain = await make_chain(world, "fill")
    seen = []
    slack.bus.subscribe(lambda alert: seen.append(alert) if alert.kind == POOL_ALERT else None)
    await StoragePool.filter(id=world.pool.id).update(alert_threshold_pct=99)
    assert (await runner.run(RunSpec(TEAM, chain_id=chain.id))).status == RunStatus.SUCCEEDED
    accounting = Accounting(world.services, slack.bus)
    size = (await Repository.get(id=chain.repository_id)).size_bytes
    disk = (await capacity.usage(await StoragePool.get(id=world.pool.id))).disk_pct
    assert disk is not None and disk < 97, "the test machine's disk must be below 97% full"

    async def refresh(quota: int | None) -> tuple[capacity.Usage, bool]:
        await StoragePool.filter(id=world.pool.id).update(quota_bytes=quota)
        return await accounting.refresh_pool(await StoragePool.filter(id=world.pool.id).select_related("server").get())

    used, alerted = await refresh(None)  # the disk alone is below 99 %
    assert not alerted and not used.above_threshold
    just_full = math.ceil(size / 0.995)  # 99.5 % of the quota in use: crossed
    used, alerted = await refresh(just_full)
    assert alerted and used.quota_pct is not None and 99 <= used.quota_pct < 100
    assert (await StoragePool.get(id=world.pool.id)).alert_active
    assert not (await refresh(just_full))[1]  # still above: no second alert
    # A backup while it stays above (under the quota still) measures again and says nothing more.
    assert (await runner.run(RunSpec(TEAM, chain_id=chain.id))).status == RunStatus.SUCCEEDED
    grown = (await Repository.get(id=chain.repository_id)).size_bytes
    assert grown >= size and len(seen) == 1 and (await StoragePool.get(id=world.pool.id)).alert_active
    size, just_full = grown, math.ceil(grown / 0.995)
    assert not (await refresh(just_full))[1]

    used, alerted = await refresh(size * 10)  # dropped to 10 %: cleared, nothing posted
    assert not alerted and not (await StoragePool.get(id=world.pool.id)).alert_active
    used, alerted = await refresh(just_full)  # crossed again: alerted again
    assert alerted and len(seen) == 2

    await slack.outbox.wait_delivered()
    posted = [text_of(m) for m in slack.slack.messages(REPORTS) if "Storage pool vault-main" in text_of(m)]
    assert len(posted) == 2
    assert "99% full (quota)" in posted[1] and "alert threshold of 99%" in posted[1]
    assert f"quota {human(size)} of {human(just_full)} used" in posted[1]
    assert seen[1].details["used_bytes"] == size and seen[1].details["quota_bytes"] == just_full


@pytest.fixture
async def bare(sqlite_db: str, tmp_path: Path) -> AsyncIterator[Env]:
    async for env in start_env(tmp_path):
        yield env


async def test_pool_alerts_go_to_the_admins_channel_else_the_chains_channels_else_admin_dms(bare: Env) -> None:
    chain = await plain_chain("nightly")
    pool = await StoragePool.get(repositories__id=chain.repository_id)
    used = capacity.Usage(used_bytes=9 * 1024**3, repositories=1, unmeasured=0, quota_bytes=10 * 1024**3,
                          free_bytes=None, total_bytes=None, threshold_pct=85)  # fmt: skip
    alert = alert_for(pool, used)
    assert alert.message.startswith("Storage pool pool1 is 90% full (quota), at or above its alert threshold of 85%")
    assert "quota 9.0 GiB of 10.0 GiB used (90%)" in alert.message

    await bare.bus.publish(alert)  # no admins' channel: the channel of the chain using the pool
    await bare.outbox.wait_delivered()
    assert [text_of(m).count("Storage pool pool1") for m in bare.slack.messages(REPORTS)] == [2]  # text + block

    await Workspace.filter(team_id=TEAM).update(settings={ADMIN_CHANNEL: APPROVALS})
    await bare.bus.publish(alert)  # the admins' channel only
    await bare.outbox.wait_delivered()
    assert len(bare.slack.messages(APPROVALS)) == 1 and len(bare.slack.messages(REPORTS)) == 1

    await Workspace.filter(team_id=TEAM).update(settings={})
    await BackupChain.filter(id=chain.id).update(notify_channel=None)
    await RoleGrant.create(team_id=TEAM, role=Role.ADMIN, subject="U0LEAD")
    await bare.bus.publish(alert)  # nobody's channel: each admin by DM
    await bare.outbox.wait_delivered()
    [dm] = await OutboxMessage.filter(method="dm")
    assert dm.channel == "U0LEAD" and dm.sent_ts and "Storage pool pool1" in dm.payload["text"]


# --------------------------------------------------------------------------------------------- surfaces


async def test_home_status_and_metrics_show_the_real_numbers(world: World, runner: Runner, metrics: str) -> None:
    chain = await make_chain(world, "shown")
    assert (await runner.run(RunSpec(TEAM, chain_id=chain.id))).status == RunStatus.SUCCEEDED
    await StoragePool.filter(id=world.pool.id).update(quota_bytes=10 * 1024**3)
    repository = await Repository.get(id=chain.repository_id)
    pool = await StoragePool.get(id=world.pool.id)
    size = (await truth(world, repository)).unique_csize
    assert repository.size_bytes == size

    tenant = Tenant(TEAM)
    [row] = await chain_rows(tenant, [chain], datetime.now(UTC))
    assert row.size == listing._size(size)
    assert f"vault-main · {human(pool.available_bytes)} free of {human(pool.capacity_bytes)}" in row.pool
    assert f"quota {human(size)} of 10.0 GiB used (0%)" in row.pool
    view = home_chains_view([row], total=1, page=0, servers=2, pools=1).to_dict()
    assert f"Pool: {row.pool}" in str(view)

    status = "\n".join(str(b) for b in (await listing.status_answer(tenant, "shown")).to_dicts())
    assert f"{listing._size(size)} (measured " in status
    space = f"{human(pool.available_bytes)} free of {human(pool.capacity_bytes)}"
    assert f"*Pool:* vault-main (standard) · {space}" in status

    await StoragePool.filter(id=pool.id).update(name='vault "main"\\')  # label values are escaped
    code, text = await scrape(metrics, TEAM)  # GET /metrics with the workspace's API token
    assert code == 200
    samples, types = parse(text)
    labels = frozenset({("team", TEAM), ("pool", 'vault "main"\\')})
    assert samples[("backupbot_pool_free_bytes", labels)] == pool.available_bytes
    assert samples[("backupbot_pool_total_bytes", labels)] == pool.capacity_bytes
    assert samples[("backupbot_pool_used_bytes", labels)] == size
    assert samples[("backupbot_pool_quota_bytes", labels)] == 10 * 1024**3
    assert samples[("backupbot_pool_measured_timestamp_seconds", labels)] == pool.available_checked_at.timestamp()
    assert samples[("backupbot_repository_size_bytes", labels | {("repository", "shown")})] == size
    assert types["backupbot_pool_free_bytes"] == "gauge"
    assert (await render_metrics("T0THER")).count("backupbot_pool_") == 10  # HELP and TYPE lines only


# --------------------------------------------------------------------------------------------- pure parts


def test_borg_info_json_is_parsed_strictly() -> None:
    text = ('{"cache": {"stats": {"total_chunks": 6, "total_csize": 200086, "total_size": 200000, '
            '"total_unique_chunks": 4, "unique_csize": 101296, "unique_size": 101241}}, '
            '"encryption": {"mode": "repokey-blake2"}}')  # fmt: skip
    parsed = borg_info.parse(text.encode(), archives=2)
    assert (parsed.unique_csize, parsed.total_size, parsed.unique_chunks, parsed.archives) == (101296, 200000, 4, 2)
    for bad in ("", "Traceback", '{"cache": {}}', text.replace("101296", '"101296"'), text.replace("101296", "-1"),
                " " * (borg_info.MAX_JSON + 1)):  # fmt: skip
        with pytest.raises(borg_info.InfoError):
            borg_info.parse(bad)
    assert borg_info.argv(Repo(url="/srv/r")) == ("info", "--json", "/srv/r")


async def test_borg_info_measure_counts_archives(world: World) -> None:
    chain = await make_chain(world, "counted")
    repository = await Repository.get(id=chain.repository_id)
    repo = Repo(url=repository.path, passphrase=repository.passphrase.reveal())
    names = [a.name for a in await borg_list.archives(world.pool_transport(), repo)]
    assert (await borg_info.measure(world.pool_transport(), repo)).archives == len(names)
