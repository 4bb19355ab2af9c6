"""History the bot can vouch for, against real parts: borg over a real sshd pool, the source's real append-only push
key, the run worker, the Slack emulator.

The attack of issue 13: root on a source, using only ``borg create`` through its append-only push key, adds
archives named like the chain's, each dated just after a real one plus one older than all. borg's own prune with
the chain's policy would then delete every real archive (shown by a dry run), and the bot's compact would make it
permanent. With the record of verified archives, the bot's next maintenance refuses (nothing pruned or compacted),
posts the alert with the difference and marks the repository as needing review; every real archive is still
listed and restorable and the repository passes ``borg check``. The ``borg delete`` variant hides a real archive:
maintenance refuses the same way, and since nothing was compacted, borg's documented roll-back of the push key's
transaction brings the archive back, restorable.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.backup import integrity
from bot.backup import plan as planning
from bot.backup.integrity import Recorded, compare, foreign_transactions, parse_transactions
from bot.backup.jobs import archive_name
from bot.backup.runner import choose_removals
from bot.borg import check as borg_check
from bot.borg import create as borg_create
from bot.borg import delete as borg_delete
from bot.borg import list as borg_list
from bot.borg import prune as borg_prune
from bot.borg.create import CreateOptions
from bot.borg.list import ArchiveEntry
from bot.borg.repo import Repo
from bot.borg.runner import run_borg
from bot.flows.wizard import create as creating
from bot.runs.integrity import remember
from bot.runs.queue import RunSpec
from bot.slack import listing
from bot.slack.reports import ACCEPT_CHANGE, QUARANTINE
from storage.models import AuditLog, BackupChain, Integrity, Repository, Role, RoleGrant, RunKind, RunStatus
from storage.tenancy import Tenant
from tests.test_accounting import Runner
from tests.test_reports import REPORTS, Env, start_env, text_of
from tests.test_wizard_step_pool_repo import TEAM, World, build_world
from tests.test_wizard_validation_create import ANSWERS

NAME = "web1-www"
POLICY = {"keep_daily": 7}


@pytest.fixture
async def world(sqlite_db: str, make_sshd: Any) -> AsyncIterator[World]:
    w = await build_world(make_sshd, "integ")
    yield w
    await w.services.pool.close()


@pytest.fixture
async def slack(world: World, tmp_path: Path) -> AsyncIterator[Env]:
    async for env in start_env(tmp_path):
        yield env


@pytest.fixture
async def runner(world: World, slack: Env) -> AsyncIterator[Runner]:
    r = Runner(world, slack.bus)
    await r.worker.start()
    yield r
    await r.worker.stop(grace=5)


async def make_chain(world: World) -> BackupChain:
    repository = {"mode": "new", "name": NAME, "encryption": "repokey-blake2", "compression": "lz4"}
    ctx = world.ctx(**ANSWERS, pool_id=world.pool.id, repository=repository)
    await creating.create_chain(ctx, name=NAME)
    await BackupChain.filter(id=ctx.data["chain_id"]).update(notify_channel=REPORTS)
    chain = await BackupChain.get(id=ctx.data["chain_id"])
    await Repository.filter(id=chain.repository_id).update(retention=POLICY)
    return chain


async def push_side(world: World, chain: BackupChain) -> tuple[Any, Repo, str]:
    """What root on the source has: the source login, and the repository through the source's push key."""
    [inputs] = await planning.inputs_from_chain(chain)
    built = await planning.build_plan(inputs, world.services, run_id="attacker")
    return built.plan.source, built.plan.repo_at_source, built.plan.borg


def pool_repo(repository: Repository, base_dir: str | None = None) -> Repo:
    return Repo(url=repository.path, passphrase=repository.passphrase.reveal(), base_dir=base_dir)


async def push(source: Any, repo: Repo, borg: str, moment: datetime, content: str = "noise") -> str:
    """``borg create`` through the push key: one small archive of the chain's naming, dated ``moment``."""
    name = archive_name(NAME, "files", moment)
    options = CreateOptions(timestamp=moment.isoformat(timespec="seconds"))
    argv = borg_create.command_argv(repo, name, "noise.bin", ("printf", "%s", content), options)
    await borg_create.run(source, repo, argv, borg=borg)
    return name


async def real_history(world: World, chain: BackupChain, runner: Runner) -> tuple[list[str], Repository]:
    """Two archives of earlier days (pushed as the bot's runs do, and recorded as verified), then a real backup
    run of the bot today, which records its own archive and keeps all three (keep_daily 7)."""
    source, repo, borg = await push_side(world, chain)
    noon = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    olds = [await push(source, repo, borg, noon - timedelta(days=d), f"day-{d}") for d in (2, 1)]
    repository = await Repository.get(id=chain.repository_id)
    listed = await borg_list.archives(world.pool_transport(), pool_repo(repository), utc=True)
    await remember(TEAM, repository.id, [a for a in listed if a.name in olds], None)
    backup = await runner.run(RunSpec(TEAM, chain_id=chain.id))
    assert backup.status == RunStatus.SUCCEEDED, backup.error
    assert backup.stats["jobs"][0]["pruned"] == [] and backup.stats.get("maintenance_refused") is None
    repository = await Repository.get(id=chain.repository_id)
    assert repository.integrity == Integrity.OK and repository.integrity_detail["baseline_at"]
    return [*olds, backup.archive_name], repository


async def restorable(world: World, repository: Repository, name: str, base_dir: str | None = None) -> bytes:
    """One file of the archive, extracted through the bot's pool access (the archive's data is all there)."""
    items = await borg_list.items(world.pool_transport(), pool_repo(repository, base_dir), name)
    path = next(i["path"] for i in items if i["type"] == "-")
    result = await run_borg(world.pool_transport(), ["extract", "--stdout", pool_repo(repository).archive(name), path],
                            pool_repo(repository, base_dir))  # fmt: skip
    return result.stdout


async def wait_for(predicate: Any, within: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def status_text() -> str:
    """``/backup status`` of the chain, as its blocks' text."""
    return json.dumps((await listing.status_answer(Tenant(TEAM), NAME)).to_dicts())


def alert_of(slack: Env) -> dict[str, Any] | None:
    return next((m for m in slack.slack.messages(REPORTS) if "differs from the bot's record" in text_of(m)), None)


async def test_forged_archives_through_the_push_key_cannot_steer_the_bots_prune(
    world: World, slack: Env, runner: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The attack follows the bot's run within seconds; the pool is this machine (no clock difference to allow).
    monkeypatch.setattr(integrity, "SLACK", timedelta(0))
    chain = await make_chain(world)
    real, repository = await real_history(world, chain, runner)
    pool, at_pool = world.pool_transport(), pool_repo(repository)
    times = {a.name: a.time for a in await borg_list.archives(pool, at_pool, utc=True)}

    # The attack: only `borg create` through the source's append-only key.
    source, repo, borg = await push_side(world, chain)
    forged = [await push(source, repo, borg, times[name] + timedelta(minutes=1)) for name in real]
    forged.append(await push(source, repo, borg, min(times.values()) - timedelta(days=10)))
    # borg's own prune with the chain's policy would delete every real archive:
    trial = await borg_prune.run(pool, at_pool, POLICY, glob=f"{NAME}-*", dry_run=True)
    assert sorted(line.name for line in trial if not line.keep) == sorted(real)

    # The bot's next maintenance: a scheduled prune of the repository.
    pruned = await runner.run(RunSpec(TEAM, kind=RunKind.PRUNE, repository_id=repository.id))
    assert pruned.status == RunStatus.WARNING and pruned.error_kind == "integrity_review"
    assert pruned.stats["archives_pruned"] == 0
    assert "differs from the bot's record" in pruned.stats["maintenance_refused"]
    listed = [a.name for a in await borg_list.archives(pool, at_pool)]
    assert sorted(listed) == sorted(real + forged)  # nothing pruned: every real archive (and the forged) still there
    for name in real[:2]:
        assert (await restorable(world, repository, name)).startswith(b"day-")
    assert await restorable(world, repository, real[2]) in (b"<h1>hello</h1>\n", b"<svg/>\n")
    assert (await borg_check.run(pool, at_pool)).ok

    stored = await Repository.get(id=repository.id)
    assert stored.integrity == Integrity.NEEDS_REVIEW
    difference = stored.integrity_detail["difference"]
    assert sorted(a["name"] for a in difference["unknown"]) == sorted(forged)
    assert difference["counts"]["foreign_transactions"] >= len(forged) and not difference["missing"]
    assert await AuditLog.filter(action="integrity.needs_review", object_id=str(repository.id)).exists()

    # The alert, with the difference and the admin's two buttons.
    await slack.outbox.wait_delivered()
    alert = alert_of(slack)
    assert alert is not None and all(name in text_of(alert) for name in forged[:3])
    actions = [e["action_id"] for b in alert["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert actions == [ACCEPT_CHANGE, QUARANTINE]
    assert "differs from the bot's record" in await status_text()

    # Backups keep running (append-only) and prune nothing while the repository is under review.
    again = await runner.run(RunSpec(TEAM, chain_id=chain.id))
    assert again.status == RunStatus.SUCCEEDED and again.stats["jobs"][0]["pruned"] == []
    assert "waits for an admin's decision" in again.stats["maintenance_refused"]

    # Only an admin decides: a member's click is refused, an admin quarantines.
    await slack.driver.click(QUARANTINE, user="U0BOB", channel=REPORTS, ts=alert["ts"])
    await wait_for(lambda: slack.slack.ephemerals(user="U0BOB"))
    assert "Only admins" in slack.slack.ephemerals(user="U0BOB")[0]["text"]
    assert (await Repository.get(id=repository.id)).integrity == Integrity.NEEDS_REVIEW
    await Tenant(TEAM).create(RoleGrant, role=Role.ADMIN, subject="U0LEAD", granted_by="U0001")
    await slack.driver.click(QUARANTINE, user="U0LEAD", channel=REPORTS, ts=alert["ts"])
    await wait_for(lambda: "quarantined by <@U0LEAD>" in text_of(alert_of(slack) or {}))
    assert (await Repository.get(id=repository.id)).integrity == Integrity.QUARANTINED
    assert await AuditLog.filter(action="integrity.quarantine", actor="U0LEAD").exists()
    held = await runner.run(RunSpec(TEAM, kind=RunKind.PRUNE, repository_id=repository.id))
    assert held.status == RunStatus.WARNING and "quarantined" in held.stats["maintenance_refused"]
    assert sorted(a.name for a in await borg_list.archives(pool, at_pool)) == sorted(
        real + forged + [again.archive_name])
    assert "quarantined" in await status_text()


async def test_a_borg_delete_through_the_push_key_is_never_made_permanent(
    world: World, slack: Env, runner: Runner
) -> None:
    chain = await make_chain(world)
    real, repository = await real_history(world, chain, runner)
    pool, at_pool = world.pool_transport(), pool_repo(repository)
    source, repo, borg = await push_side(world, chain)
    await borg_delete.archives(source, repo, [real[1]], borg=borg)  # "succeeds" through the append-only key
    assert real[1] not in [a.name for a in await borg_list.archives(pool, at_pool)]

    pruned = await runner.run(RunSpec(TEAM, kind=RunKind.PRUNE, repository_id=repository.id))
    assert pruned.status == RunStatus.WARNING and pruned.error_kind == "integrity_review"
    stored = await Repository.get(id=repository.id)
    assert stored.integrity == Integrity.NEEDS_REVIEW
    assert [a["name"] for a in stored.integrity_detail["difference"]["missing"]] == [real[1]]
    await slack.outbox.wait_delivered()
    alert = alert_of(slack)
    assert alert is not None and real[1] in text_of(alert) and "no longer listed" in text_of(alert)
    assert (await borg_check.run(pool, at_pool)).ok

    # Nothing was compacted, so borg's documented roll-back of the push key's last transaction (an operator's
    # step on the pool) brings the hidden archive back, with its data.
    path = Path(repository.path)
    transactions = parse_transactions((path / "transactions").read_text())
    keep = transactions[-2].id  # the delete was the last push transaction
    for segment in (path / "data").glob("*/*"):
        if segment.name.isdigit() and int(segment.name) > keep:
            segment.unlink()
    for stale in [*path.glob("index.*"), *path.glob("hints.*"), *path.glob("integrity.*")]:
        stale.unlink()
    fresh = str(world.pool_host.workdir / "fresh-client")  # the bot's client state remembers the newer manifest
    listed = [a.name for a in await borg_list.archives(pool, pool_repo(repository, fresh))]
    assert sorted(listed) == sorted(real)
    assert await restorable(world, repository, real[1], fresh) == b"day-1"
    assert (await borg_check.run(pool, pool_repo(repository, fresh))).ok


def test_compare_names_unknown_missing_and_replaced_archives() -> None:
    moment = datetime(2026, 3, 1, 12, tzinfo=UTC)
    recorded = [Recorded("a-1", "id1", moment), Recorded("a-2", "id2", moment), Recorded("a-3", "id3", moment)]
    listed = [ArchiveEntry("a-1", "id1", moment), ArchiveEntry("a-3", "idX", moment), ArchiveEntry("z", "id9", moment)]
    difference = compare(listed, recorded)
    assert [a.name for a in difference.unknown] == ["z"]
    assert [r.name for r in difference.missing] == ["a-2"]
    assert [(r.name, a.id) for r, a in difference.changed] == [("a-3", "idX")]
    assert not difference.clean and len(difference.sentences()) == 3
    assert compare(listed[:1], recorded[:1]).clean


def test_transactions_outside_the_bots_runs_are_foreign() -> None:
    text = "transaction 5, UTC time 2026-03-01T02:00:10.5\ntransaction 9, UTC time 2026-03-01T09:30:00\n"
    [first, second] = parse_transactions("garbage\n" + text)
    window = (datetime(2026, 3, 1, 2, 0, tzinfo=UTC), datetime(2026, 3, 1, 2, 1, tzinfo=UTC))
    assert foreign_transactions([first, second], [window]) == [second]


def test_retention_decides_over_recorded_archives_only() -> None:
    noon = datetime(2026, 3, 10, 12, tzinfo=UTC)
    records = [Recorded(f"r-{d}", f"id{d}", noon - timedelta(days=d)) for d in range(10)]
    gone, kept = choose_removals(records, {"keep_daily": 7}, now=noon)
    assert sorted(gone) == ["r-7", "r-8", "r-9"] and kept == 7
    # keep_within alone never empties a group whose backups stopped
    assert choose_removals(records[5:], {"keep_within": "1d"}, now=noon) == ([], 5)



def test_push_keys_get_a_storage_quota_from_the_pool() -> None:
    from bot.backup.repository import MIN_QUOTA, forced_command, push_quota

    assert push_quota(50 * 2**30, 200 * 2**30) == 50 * 2**30  # the pool's quota
    assert push_quota(None, 100 * 2**30) == int(100 * 2**30 * 0.9)  # else 90 % of its disk
    assert push_quota(None, 1000) == MIN_QUOTA and push_quota(None, None) is None
    assert forced_command("/srv/borg/r 1", 20 * 2**20) == (
        "borg serve --restrict-to-path '/srv/borg/r 1' --append-only --storage-quota 20971520")
    assert forced_command("/srv/borg/r", None) == "borg serve --restrict-to-path /srv/borg/r --append-only"
