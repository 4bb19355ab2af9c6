"""Restore drills end to end over real sshd, real borg and the machine's PostgreSQL: `/backup drill`'s service sets
the schedule (audited, refused to those who may not operate the chain), the scheduler queues the DRILL run at its
slot (monthly: only in a month's first week), the executor restores the newest archive into a scratch place on the
pool's host (files: the same tree as the source; PostgreSQL: a throwaway database with the source's rows per
table), and everything is gone afterwards — after success, failure and cancellation — while the source's live
data is untouched."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.access import Actor, Forbidden, Refused
from bot.alerts import Alert
from bot.backup import drill as scratch
from bot.backup import restore_db
from bot.monitoring import render_metrics
from bot.probes import postgresql as pg_probe
from bot.probes.base import ProbeContext
from bot.probes.dbcheck import DbCredential
from bot.runs import scheduler as scheduling
from bot.runs.execute import Executor
from bot.runs.notify import drill_reports, human_bytes, human_duration
from bot.runs.queue import SqlQueue
from bot.services import drills
from bot.slack.drill import drill_answer, split
from storage.models import AuditLog, BackupChain, BackupSource, BackupType, Run, RunKind, RunStatus
from tests.harness.databases import _psql
from tests.harness.ssh import target_of
from tests.test_restore import actor, backed_up, tree
from tests.test_run_worker import make_chain
from tests.test_wizard_step_pool_repo import TEAM, World, build_world


@pytest.fixture
async def world(sqlite_db: str, make_sshd: Any) -> AsyncIterator[World]:
    w = await build_world(make_sshd, "dr")
    yield w
    await w.services.pool.close()


def drill_databases() -> set[str]:
    out = _psql(f"SELECT datname FROM pg_database WHERE datname LIKE '{scratch.DB_PREFIX}%'").stdout
    return {line.strip() for line in out.splitlines() if line.strip()}


async def scheduled_drill(world: World, chain: BackupChain) -> Run:
    """The DRILL run the scheduler queues for the chain (within forty days: a monthly drill has a slot), claimed."""
    queue = SqlQueue()
    later = datetime.now(UTC) + timedelta(days=40)
    scheduler = scheduling.Scheduler(queue, lead=0.0, lookback=timedelta(days=40))
    created = await scheduler.tick(now=later)
    drills_made = [run for run in created if run.kind == RunKind.DRILL]
    assert drills_made and all(run.chain_id == chain.id for run in drills_made)
    claimed = await queue.claim("t", now=later + timedelta(days=1))
    while claimed is not None and claimed.kind != RunKind.DRILL:
        await queue.complete(claimed, _skipped())
        claimed = await queue.claim("t", now=later + timedelta(days=1))
    assert claimed is not None
    return claimed


def _skipped() -> Any:
    from bot.runs.queue import RunOutcome

    return RunOutcome(status="ok")


def watch_cleanup(monkeypatch: pytest.MonkeyPatch, seen: dict[str, Any]) -> None:
    """Record what the scratch place held just before its cleanup (the restore really happened there)."""
    original = scratch.Scratch.clean

    async def clean(self: scratch.Scratch) -> scratch.Cleanup:
        place = Path(self.directory)
        seen["tree"] = {p: tree(p) for p in place.iterdir()} if place.exists() else {}
        seen["databases"] = [d.name for d in self.databases]
        seen["present"] = drill_databases()
        return await original(self)

    monkeypatch.setattr(scratch.Scratch, "clean", clean)


async def test_files_drill_scheduled_restored_on_the_pool_host_checked_and_removed(
        world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    chain, archive = await backed_up(world)
    before = tree(world.www)
    with pytest.raises(Forbidden):
        await drills.set_drill(Actor(team_id=TEAM, user_id="U9", is_admin=False, via="test"), chain.name, "weekly")
    with pytest.raises(Refused, match="cannot read the repository"):
        await _foreign_server(world, chain)
    done = await drills.set_drill(actor(), chain.name, "weekly", days=tuple(scheduling.sched.DAYS))
    assert done.drill == {"every": "weekly", "days": list(scheduling.sched.DAYS), "at": "06:00", "server_id": None}
    audit = await AuditLog.filter(action="chain.drill_schedule").order_by("-id").first()
    assert audit.details["after"]["drill"] == done.drill and audit.details["before"]["drill"] is None
    assert "weekly" in await drills.summary(await BackupChain.get(id=chain.id))

    run = await scheduled_drill(world, chain)
    seen: dict[str, Any] = {}
    watch_cleanup(monkeypatch, seen)
    root = tmp_path / "drills"
    finished = await Executor(SqlQueue(), world.services, drill_root=str(root))(run)
    assert finished.status == RunStatus.SUCCEEDED, finished.error
    drill = finished.stats["drill"]
    assert drill["archives"] == [archive] and drill["server"] == "vault"
    [restored] = drill["restored"]
    assert restored["files"]["ok"] and restored["files"]["files"] == restored["files"]["expected_files"]
    assert drill["bytes"] == restored["files"]["bytes"] > 300_000 and drill["seconds"] > 0
    # What was restored on the pool's host is the source's tree, below the run's own place; then it was removed.
    [(group_dir, restored_tree)] = seen["tree"].items()
    assert group_dir == root / str(run.id) / "files"
    assert {k.split(str(world.www).lstrip("/") + "/", 1)[-1]: v for k, v in restored_tree.items()
            if k.startswith(str(world.www).lstrip("/") + "/")} == before  # fmt: skip
    assert drill["cleanup"] == {"ok": True, "removed": [str(root / str(run.id))], "left": []}
    assert not (root / str(run.id)).exists() and list(root.iterdir()) == []
    assert tree(world.www) == before  # the source's live data untouched
    assert (await Run.get(id=run.id)).spec["drill"]["seconds"] == drill["seconds"]

    # The chain's thread gets the result with the measured time and size; /metrics exports the last drill.
    stored = await Run.get(id=run.id)
    alert = Alert(team_id=TEAM, kind="run_succeeded", message="", details={"run_id": run.id})
    [report] = drill_reports(alert, stored, {"team_id": TEAM, "chain_id": chain.id, "chain_name": chain.name,
                                             "run_id": run.id})  # fmt: skip
    facts = dict(report.facts)
    assert report.title == f"✅ Restore drill of {chain.name} passed" and facts["Drill server"] == "vault"
    assert facts["Restore time"] == human_duration(drill["seconds"]) and facts["Restored size"] == human_bytes(
        drill["bytes"]) and facts["Cleanup"] == "everything removed"  # fmt: skip
    metrics = await render_metrics(TEAM)
    labels = f'{{team="{TEAM}",chain="{chain.name}"}}'
    assert f"backupbot_chain_last_drill_success{labels} 1" in metrics
    assert f"backupbot_chain_last_drill_duration_seconds{labels} {drill['seconds']!r}" in metrics
    assert f"backupbot_chain_last_drill_timestamp_seconds{labels} " in metrics
    shown = await drill_answer(actor(), chain.name)
    assert "weekly" in shown.text and "Last drill" in shown.text and "checked and cleaned up" in shown.text
    off = await drill_answer(actor(), f"{chain.name} off")
    assert "no restore drill" in off.text and "drill" not in (await BackupChain.get(id=chain.id)).schedule
    refused = await drill_answer(Actor(team_id=TEAM, user_id="U9", is_admin=False, via="test"), f"{chain.name} weekly")
    assert refused.text.startswith(":no_entry:")


async def _foreign_server(world: World, chain: BackupChain) -> None:
    """A server of the workspace that is neither the pool's host nor a source of the chain."""
    from storage.models import Server

    await Server.create(team_id=TEAM, name="elsewhere", host="127.0.0.9", port=22, username="x")
    await drills.set_drill(actor(), chain.name, "weekly", "elsewhere")


async def test_postgresql_drill_restores_into_a_throwaway_database_with_the_sources_rows_then_drops_it(
        world: World, postgres_db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    _psql("CREATE TABLE orders (id int); INSERT INTO orders SELECT generate_series(1, 42);"
          "CREATE TABLE notes (x text); INSERT INTO notes VALUES ('a'), ('b');", database=postgres_db.name)
    chain = await make_chain(world, "web1-pg")
    await BackupSource.filter(chains__id=chain.id).update(type=BackupType.POSTGRESQL,
                                                          config={"databases": [postgres_db.name]})  # fmt: skip
    queue = SqlQueue()
    from bot.runs.queue import RunSpec

    backup = await queue.enqueue(RunSpec(TEAM, chain_id=chain.id))
    claimed = await queue.claim("t")
    assert claimed is not None and claimed.id == backup.id
    assert (await Executor(queue, world.services)(claimed)).status == RunStatus.SUCCEEDED
    await drills.set_drill(actor(), chain.id, "monthly", days=tuple(scheduling.sched.DAYS))
    run = await scheduled_drill(world, chain)
    seen: dict[str, Any] = {}
    watch_cleanup(monkeypatch, seen)
    before = drill_databases()
    finished = await Executor(SqlQueue(), world.services, drill_root=str(tmp_path / "drills"))(run)
    assert finished.status == RunStatus.SUCCEEDED, finished.error
    drill = finished.stats["drill"]
    databases = [r["database"] for r in drill["restored"] if "database" in r]
    assert [d["source_database"] for d in databases] == [postgres_db.name]
    source = await restore_db.pg_counts(ProbeContext(world.pool_transport(), privileged=True),
                                        pg_probe.credential_from(DbCredential(engine="postgresql",
                                                                              auth_method="socket")),
                                        postgres_db.name)  # fmt: skip
    assert databases[0]["tables"] == source == {"public.orders": 42, "public.notes": 2}
    [name] = seen["databases"]
    assert name.startswith(scratch.DB_PREFIX) and name != postgres_db.name and name in seen["present"]
    assert drill_databases() == before and name not in drill_databases()  # dropped again
    assert f"database {name}" in drill["cleanup"]["removed"] and drill["cleanup"]["ok"]
    assert _psql("SELECT count(*) FROM orders", database=postgres_db.name).stdout.strip() == "42"


async def test_a_failed_drill_is_an_alert_with_cause_and_hint_and_cancellation_still_cleans_up(
        world: World, tmp_path: Path) -> None:  # fmt: skip
    from bot.alerts import AlertBus
    from bot.runs.queue import RunSpec

    chain = await make_chain(world, "web1-empty")  # no backup yet: nothing to restore
    queue = SqlQueue()
    await queue.enqueue(RunSpec(TEAM, kind=RunKind.DRILL, chain_id=chain.id, repository_id=chain.repository_id))
    claimed = await queue.claim("t")
    alerts, heard = AlertBus(), []
    alerts.subscribe(heard.append)
    finished = await Executor(queue, world.services, alerts=alerts, drill_root=str(tmp_path / "d"))(claimed)
    assert finished.status == RunStatus.FAILED and finished.error_kind == "drill_empty"
    [alert] = [a for a in heard if a.details["run_id"] == finished.id]
    assert alert.kind == "run_failed" and "no archive" in alert.details["reason"]
    assert "/backup run" in alert.details["hint"]

    transport = world.pool_transport()
    space = scratch.Scratch(transport, str(tmp_path / "d"), 77)
    entered = asyncio.Event()

    async def busy() -> None:
        async with space:
            Path(space.files_place("x")).mkdir(parents=True)
            (Path(space.files_place("x")) / "f").write_text("partial")
            entered.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(busy())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not (tmp_path / "d" / "77").exists() and space.cleanup is not None and space.cleanup.ok
    with pytest.raises(scratch.DrillProblem):
        scratch.place_for("/var/../etc", 1)
    (tmp_path / "link").symlink_to(tmp_path)
    with pytest.raises(scratch.DrillProblem, match="symbolic link"):
        async with scratch.Scratch(transport, str(tmp_path / "link"), 5):
            pass


def test_the_command_text_is_split_into_chain_word_and_server() -> None:
    assert split("web shop weekly on vault") == ("web shop", "weekly", "vault")
    assert split("web shop monthly") == ("web shop", "monthly", None)
    assert split("`web` off") == ("web", "off", None)
    assert split("shop on vault") == ("shop on vault", None, None)
    assert split("shop") == ("shop", None, None)


def test_monthly_drills_fall_in_the_first_week_only() -> None:
    row = {"id": 1, "team_id": TEAM, "repository_id": 2, "timezone": "Europe/Berlin", "priority": 5,
           "depends_on_id": None, "created_at": datetime(2026, 1, 1, tzinfo=UTC),
           "schedule": {"days": ["mon"], "at": "02:00",
                        "drill": {"every": "monthly", "days": ["sun"], "at": "06:00", "server_id": 7}}}  # fmt: skip
    plans = {plan.kind: plan for plan in scheduling.chain_plans(row)}
    drill = plans[RunKind.DRILL]
    assert drill.monthly and drill.options == {"server_id": 7}
    moment, found = datetime(2026, 1, 1, tzinfo=UTC), []
    for _ in range(4):
        slot = scheduling._first_after(drill, moment)
        found.append(slot.start.date().isoformat())
        moment = slot.start
    assert found == ["2026-01-04", "2026-02-01", "2026-03-01", "2026-04-05"]
    weekly = scheduling.chain_plans({**row, "schedule": {**row["schedule"], "drill": {
        "every": "weekly", "days": ["sun"], "at": "06:00", "server_id": None}}})[-1]  # fmt: skip
    assert not weekly.monthly and weekly.options is None
    assert scheduling._first_after(weekly, datetime(2026, 1, 4, 12, tzinfo=UTC)).start.day == 11


__all__ = ["target_of"]
