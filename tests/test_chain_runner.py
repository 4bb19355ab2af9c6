"""The chain runner end to end: a source sshd pushes to a pool sshd through a real repository setup.

Every fault of issue 4 ends as a failed result with a precise kind, reason and hint, and the repository
still passes ``borg check`` afterwards.
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.backup.jobs import ArchiveJob
from bot.backup.record import record
from bot.backup.repository import PoolAccess, RepoSpec, set_up
from bot.backup.runner import ChainPlan, run_chain
from bot.borg import check
from bot.borg import list as borg_list
from bot.borg.repo import Repo
from bot.borg.runner import run_borg
from bot.transport import LocalTransport
from storage.models import Run, RunKind, RunStatus
from storage.tenancy import Tenant
from tests.harness.ssh import target_of

MOMENT = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
BORG = str(Path(sys.executable).parent / "borg")  # the bot's own borg, for pool-side actions run locally


@pytest.fixture
async def chain(make_sshd, pool_for):
    """A source host with some data, a pool host, a repository set up between them, and a base plan."""

    async def build(*, with_borg: bool = True):
        source = make_sshd("csrc", with_borg=with_borg)
        pool_host = make_sshd("cpool")
        pool = PoolAccess(pool_for(pool_host).transport(target_of(pool_host)), pool_host.host, pool_host.port,
                          pool_host.user, pool_host.host_public_key)  # fmt: skip
        spec = RepoSpec(name="csrc-files", base_path=str(pool_host.workdir / "repos"))
        src_transport = pool_for(source).transport(target_of(source))
        setup = await set_up(src_transport, pool, spec)
        data = source.workdir / "www"
        data.mkdir()
        (data / "index.html").write_text("<h1>hello</h1>")
        plan = ChainPlan(
            prefix="csrc-files",
            jobs=[ArchiveJob(suffix="files", kind="paths", paths=(str(data),))],
            source=src_transport,
            repo_at_source=setup.source_repo(pool, str(source.home), base_dir=str(source.workdir / "bb")),
            pool=pool.transport,
            repo_at_pool=Repo(url=spec.path, passphrase=setup.passphrase),
            retention={"keep_daily": 2},
            lock_wait=2,
        )
        return plan, source, pool_host

    return build


async def _assert_repo_healthy(plan: ChainPlan) -> None:
    assert (await check.run(plan.pool, plan.repo_at_pool)).ok


async def test_files_and_dumps_are_backed_up_proven_and_pruned(chain, sqlite_db) -> None:
    plan, _, _ = await chain()
    plan = replace(plan, jobs=[
        *plan.jobs,
        ArchiveJob(suffix="db-shop", kind="command", command=("sh", "-c", 'printf "dump of %s" "$DB_PW"'),
                   stdin_name="shop.sql", secret_env={"DB_PW": "s3cr3t"}),
    ])  # fmt: skip
    events: list[dict] = []
    for day in range(1, 5):
        result = await run_chain(plan, now=MOMENT.replace(day=day), on_progress=events.append)
        assert result.status == "ok", result.reason
    assert [o.stats.nfiles for o in result.jobs] == [1, 1]
    names = sorted(a.name for a in await borg_list.archives(plan.pool, plan.repo_at_pool))
    assert names == ["csrc-files-db-shop-20260303T020000", "csrc-files-db-shop-20260304T020000",
                     "csrc-files-files-20260303T020000", "csrc-files-files-20260304T020000"]  # fmt: skip
    assert result.jobs[0].pruned == ["csrc-files-files-20260302T020000"]
    assert result.freed_bytes is not None
    assert {e["job"] for e in events} == {"files", "db-shop"}
    assert "s3cr3t" not in repr(plan) and "s3cr3t" not in repr(result)
    run = await Tenant("T0001").create(Run, kind=RunKind.BACKUP)
    await record(run, result)
    stored = await Run.get(id=run.id)
    assert stored.status == RunStatus.SUCCEEDED and stored.stats["nfiles"] == 2
    assert "csrc-files-files-20260304T020000" in stored.archive_name
    await _assert_repo_healthy(plan)


async def test_a_failing_dump_fails_only_its_job_and_is_not_pruned_for(chain, sqlite_db) -> None:
    plan, _, _ = await chain()
    killed = ArchiveJob(suffix="db-bad", kind="command", command=("sh", "-c", "echo partial; kill -9 $$"))
    result = await run_chain(replace(plan, jobs=[*plan.jobs, killed]), now=MOMENT)
    assert result.status == "failed" and result.kind == "source"
    assert [o.status for o in result.jobs] == ["ok", "failed"]
    assert "csrc-files-db-bad" not in " ".join(a.name for a in await borg_list.archives(plan.pool, plan.repo_at_pool))
    run = await Tenant("T0001").create(Run, kind=RunKind.BACKUP)
    await record(run, result)
    stored = await Run.get(id=run.id)
    assert stored.status == RunStatus.FAILED and stored.error_kind == "source" and "borg could not read" in stored.error
    await _assert_repo_healthy(plan)


async def test_wrong_passphrase(chain) -> None:
    plan, _, _ = await chain()
    wrong = replace(plan, repo_at_source=replace(plan.repo_at_source, passphrase="not the passphrase"))
    result = await run_chain(wrong, now=MOMENT)
    assert (result.status, result.kind) == ("failed", "passphrase") and "passphrase" in result.hint
    await _assert_repo_healthy(plan)


async def test_borg_missing_on_the_source(chain) -> None:
    plan, _, _ = await chain(with_borg=False)
    result = await run_chain(plan, now=MOMENT)
    assert (result.status, result.kind) == ("failed", "borg_missing") and "Install borg" in result.hint


async def test_repository_locked_by_another_borg(chain) -> None:
    plan, _, _ = await chain()
    local, pool_repo = LocalTransport(), plan.repo_at_pool
    holder = asyncio.create_task(
        run_borg(local, ["with-lock", pool_repo.url, "sleep", "8"], pool_repo, borg=BORG, check=False)
    )
    try:
        for _ in range(100):
            if list(Path(pool_repo.url).glob("lock.*")):
                break
            await asyncio.sleep(0.1)
        assert not holder.done(), holder.result()
        result = await run_chain(plan, now=MOMENT)
    finally:
        await holder  # the other borg finishes by itself and releases its lock
    assert (result.status, result.kind) == ("failed", "lock") and "lock" in result.hint.lower()
    await _assert_repo_healthy(plan)


async def test_pool_disk_full(chain) -> None:
    plan, source, _ = await chain()
    await run_borg(LocalTransport(), ["config", plan.repo_at_pool.url, "storage_quota", "10M"], plan.repo_at_pool,
                   borg=BORG)  # fmt: skip
    (source.workdir / "www" / "big.bin").write_bytes(os.urandom(25_000_000))
    result = await run_chain(plan, now=MOMENT)
    assert (result.status, result.kind) == ("failed", "disk_full") and "space" in result.hint
    assert await borg_list.archives(plan.pool, plan.repo_at_pool) == []
    await _assert_repo_healthy(plan)


async def test_ssh_drop_mid_backup(chain) -> None:
    plan, source, _ = await chain()
    slow = ArchiveJob(suffix="db-slow", kind="command", command=("sh", "-c", "echo begin; sleep 60; echo end"))
    task = asyncio.create_task(run_chain(replace(plan, jobs=[slow]), now=MOMENT))
    await asyncio.sleep(2)
    source.stop()  # sshd and every session it started (the borg client on the source) go away
    result = await asyncio.wait_for(task, 60)
    assert result.status == "failed" and result.kind in ("host_unreachable", "unreachable")
    assert result.hint
    assert await borg_list.archives(plan.pool, plan.repo_at_pool) == []
    await _assert_repo_healthy(plan)


async def test_test_backup_proves_the_path_and_leaves_no_trace(chain) -> None:
    from bot.backup.testbackup import run_test_backup

    plan, _, _ = await chain()
    plan = replace(plan, jobs=[*plan.jobs, ArchiveJob(suffix="db-shop", kind="command",
                                                     command=("sh", "-c", "echo 'CREATE TABLE t();'"),
                                                     stdin_name="shop.sql")])  # fmt: skip
    seen = []
    report = await run_test_backup(plan, on_step=seen.append)
    assert report.ok, [(s.name, s.detail) for s in report.steps if not s.ok]
    names = [s.name for s in report.steps]
    assert names == ["connect to the source", "open the repository on the pool", "read files", "back up files",
                     "restore files", "back up db-shop", "restore db-shop", "clean up"]  # fmt: skip
    assert "identical" in report.steps[4].detail and seen == report.steps
    assert await borg_list.archives(plan.pool, plan.repo_at_pool) == []  # no trace in the real archive list


async def test_test_backup_names_what_to_fix(chain) -> None:
    from bot.backup.testbackup import run_test_backup

    plan, _, _ = await chain()
    wrong = replace(plan, repo_at_source=replace(plan.repo_at_source, passphrase="nope"))
    report = await run_test_backup(wrong)
    failed = report.failed_step()
    assert not report.ok and failed.name == "back up files" and "passphrase" in failed.detail
    missing = replace(plan, jobs=[ArchiveJob(suffix="files", kind="paths", paths=("/nonexistent/dir",))])
    report = await run_test_backup(missing)
    assert report.failed_step().name == "read files" and "/nonexistent/dir" in report.failed_step().detail
    slow = replace(plan, jobs=[ArchiveJob(suffix="db-big", kind="command", command=("sh", "-c", "echo x; sleep 30"))])
    report = await run_test_backup(slow, time_limit=3)
    assert report.ok and "ran for 3 s" in report.steps[2].detail
    assert await borg_list.archives(plan.pool, plan.repo_at_pool) == []  # checkpoints of the killed dump removed too


async def test_restore_files_below_a_new_directory_never_over_live_data(chain) -> None:
    from bot.backup.restore import RestoreRefused, archives, restore_paths

    plan, source, _ = await chain()
    assert (await run_chain(plan, now=MOMENT)).status == "ok"
    listed = await archives(plan.pool, plan.repo_at_pool, prefix="csrc-files")
    assert [a.name for a in listed] == ["csrc-files-files-20260301T020000"]
    live = source.workdir / "www" / "index.html"
    target = source.workdir / "restore 1"
    result = await restore_paths(plan.source, plan.repo_at_source, listed[0].name, str(target), [str(live)])
    assert result.files == 1
    assert (target / str(live).lstrip("/")).read_text() == live.read_text()
    for bad in ("/", "relative", str(source.workdir / "www")):  # the last one exists and is not empty
        with pytest.raises(RestoreRefused):
            await restore_paths(plan.source, plan.repo_at_source, listed[0].name, bad)
    assert live.read_text() == "<h1>hello</h1>"


async def test_btrfs_snapshot_and_hooks_through_the_runner(chain, btrfs_mount, ctx_for) -> None:
    """Real Btrfs snapshot on the source: archive paths equal the originals, content is the snapshot's,
    excludes still apply, the snapshot and a crashed run's leftover are gone afterwards."""
    import subprocess

    from bot.backup.hooks import backup_hooks, parse_commands
    from bot.backup.snapshots import BtrfsDriver, factory

    plan, source, _ = await chain()
    subvol = btrfs_mount.unique("chainsub")
    subprocess.run(["btrfs", "subvolume", "create", str(subvol)], check=True, capture_output=True)
    (subvol / "keep.txt").write_text("before")
    (subvol / "skip.tmp").write_text("excluded")
    ctx = ctx_for(source)
    driver = BtrfsDriver()
    stale = btrfs_mount / ".backup-bot-crashed1" / "1"  # what a crashed run leaves: <mount>/.backup-bot-<run>/<n>
    marker = source.workdir / "pre-ran"
    job = ArchiveJob(suffix="files", kind="paths", paths=(str(subvol),), excludes=("sh:**/*.tmp",))

    async def leftovers() -> list[str]:
        return await driver.cleanup_leftovers(ctx, active_run_ids=["run42"])

    pre = parse_commands([["sh", "-c", f'touch "{marker}"']])
    post = parse_commands([["sh", "-c", f'echo after > "{subvol}/keep.txt"']])  # changes the live file
    plan = replace(plan, jobs=[job], snapshot=factory(driver, ctx, "run42"), before_run=leftovers,
                   hooks=lambda: backup_hooks(ctx, pre, post))  # fmt: skip
    stale.parent.mkdir()
    subprocess.run(["btrfs", "subvolume", "snapshot", "-r", str(subvol), str(stale)], check=True, capture_output=True)
    result = await run_chain(plan, now=MOMENT)
    assert result.status == "ok", (result.reason, result.notes)
    assert marker.exists() and (subvol / "keep.txt").read_text() == "after\n"
    assert any("crashed1" in note for note in result.notes) and not stale.parent.exists()
    items = await borg_list.items(plan.pool, plan.repo_at_pool, result.jobs[0].archive)
    paths = {i["path"] for i in items}
    assert str(subvol / "keep.txt").lstrip("/") in paths
    assert not any(p.endswith("skip.tmp") or ".backup-bot-" in p for p in paths)
    listing = subprocess.run(["btrfs", "subvolume", "list", str(btrfs_mount)], capture_output=True, text=True).stdout
    assert "backup-bot-run42" not in listing


async def test_failing_pre_command_stops_the_run(chain, ctx_for) -> None:
    from bot.backup.hooks import backup_hooks, parse_commands

    plan, source, _ = await chain()
    ctx = ctx_for(source)
    pre = parse_commands([["sh", "-c", "echo 'database still in maintenance' >&2; exit 4"]])
    post = parse_commands([["touch", str(source.workdir / "post-ran")]])
    result = await run_chain(replace(plan, hooks=lambda: backup_hooks(ctx, pre, post)), now=MOMENT)
    assert (result.status, result.kind) == ("failed", "hook_failed")
    assert "database still in maintenance" in result.reason and (source.workdir / "post-ran").exists()
    assert await borg_list.archives(plan.pool, plan.repo_at_pool) == []
