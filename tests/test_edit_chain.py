"""Changing a chain (`/backup edit`): the wizard prefilled from the chain at its review step, driven through the
controller with real sshd hosts (source + pool), real borg and SQLite — as the Slack listeners drive it."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.access import Forbidden, NoDirectory, Refused, resolve_actor
from bot.borg import list as borg_list
from bot.borg.repo import Repo
from bot.flows.wizard import create as creating
from bot.flows.wizard.approved import continue_after_approval
from bot.flows.wizard.controller import Screen, WizardController
from bot.flows.wizard.editing import open_edit
from bot.flows.wizard.registry import build_steps
from bot.flows.wizard.steps.validation import ValidationStep
from bot.runs import nudge
from bot.runs.queue import SqlQueue
from bot.runs.scheduler import Scheduler
from bot.services import approvals, editing
from bot.slack.wizard_render import modal
from storage.models import (
    Approval,
    ApprovalStatus,
    AuditLog,
    BackupChain,
    BackupSource,
    Repository,
    Run,
    RunKind,
    RunStatus,
    VerifiedArchive,
    WizardSession,
    Workspace,
)
from storage.tenancy import Tenant
from tests.test_wizard_step_pool_repo import DIRECTORY, TEAM, World, build_world
from tests.test_wizard_validation_create import answers

ALL_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
TENANT = Tenant(TEAM)


@pytest.fixture
async def world(sqlite_db: str, make_sshd: Any) -> AsyncIterator[World]:
    w = await build_world(make_sshd, "e")
    yield w
    await w.services.pool.close()


async def made_chain(world: World, name: str = "web1-files-www") -> BackupChain:
    """A chain as the wizard creates it: validation's real test backup passes, then the rows are written."""
    ctx = world.ctx(**answers(world, name))
    assert await ValidationStep().submit(ctx, {}) == {}, ctx.data["validation"]
    await creating.create_chain(ctx, name=name)
    return await BackupChain.get(id=ctx.data["chain_id"])


def defaults(screen: Screen) -> dict[str, Any]:
    """What the screen's form holds untouched (the values Slack would send for Next)."""
    return {f.name: f.initial for f in screen.view.fields}


async def forward_to(controller: WizardController, screen: Screen, step: str, user: str = "U1") -> Screen:
    """Next through the steps (their forms as prefilled) until ``step``."""
    for _ in range(12):
        if screen.step == step:
            return screen
        modal(screen)  # every screen renders within Slack's limits
        screen = await controller.submit(TENANT, user, screen.session_id, defaults(screen))
        assert not screen.errors, (screen.step, screen.errors)
    raise AssertionError(f"never reached {step}: at {screen.step}")


async def change_retention_and_schedule(controller: WizardController, screen: Screen) -> Screen:
    """From the review: Change retention (keep 3 daily, 2 weekly), then a daily 03:30 UTC schedule; back at review."""
    screen = await controller.act(TENANT, "U1", screen.session_id, "change:retention", "retention")
    assert screen.step == "retention" and "Back at" in (screen.note or "")
    values = {**defaults(screen), "preset": "custom", "keep_daily": "3", "keep_weekly": "2", "keep_monthly": "0",
              "keep_yearly": "0"}  # fmt: skip
    screen = await controller.submit(TENANT, "U1", screen.session_id, values)
    assert screen.step == "schedule", screen.errors
    values = {**defaults(screen), "timing": "at", "days": ALL_DAYS, "at": "03:30", "timezone": "UTC"}
    screen = await controller.submit(TENANT, "U1", screen.session_id, values)
    assert screen.step == "validation", screen.errors
    screen = await controller.submit(TENANT, "U1", screen.session_id, {})
    assert screen.step == "review", screen.errors
    return screen


async def test_edit_changes_schedule_and_retention_with_the_scheduler_refreshed_and_the_audit_diff_stored(
    world: World,
) -> None:
    chain = await made_chain(world)
    drill = {"every": "weekly", "day": "sun", "at": "06:00"}  # set elsewhere (`/backup drill`): an edit keeps it
    chain.schedule = {**chain.schedule, "drill": drill}
    await chain.save(update_fields=["schedule"])
    check_before = chain.schedule["check"]
    scheduler = Scheduler(SqlQueue(), lead=0)
    await scheduler.resync()
    unregister = nudge.on_schedule_change(scheduler.refresh)
    try:
        controller = WizardController(build_steps, world.services)
        actor = await resolve_actor(DIRECTORY, TEAM, "U1")
        screen = await open_edit(controller, actor, chain.name, "C0CHAN")
        assert screen.step == "review" and screen.view.submit_label == "Apply changes"
        assert "No changes yet" in screen.view.notes[0]
        modal(screen)
        labels = {b.value for b in screen.view.buttons if b.action == f"change:{b.value}"}
        assert labels == {"server", "type", "source", "snapshot", "pool", "repository", "retention", "schedule"}
        row = await WizardSession.get(id=screen.session_id)
        secret = (await Repository.get(id=chain.repository_id)).passphrase.reveal()
        assert secret not in str(row.data)  # the passphrase only as a sealed token

        screen = await change_retention_and_schedule(controller, screen)
        validation = (await WizardSession.get(id=screen.session_id)).data["validation"]
        names = [s["name"] for s in validation["steps"]]
        assert validation["ok"] and not any(n.startswith("test backup") for n in names), names  # nothing on servers
        changes = screen.view.notes[0]
        assert "*Retention:*" in changes and "*Schedule:*" in changes and "*Source:*" not in changes
        assert (await BackupChain.get(id=chain.id)).schedule == chain.schedule  # nothing written before Apply

        done = await controller.submit(TENANT, "U1", screen.session_id,
                                       {"name": chain.name, "notify_channel": "<#C0REPORTS|backups>", "notices": []})
        assert done.step == "done", done.errors
        assert "was changed" in done.view.heading

        edited = await BackupChain.get(id=chain.id)
        assert edited.schedule["days"] == ALL_DAYS and edited.schedule["at"] == "03:30"
        assert edited.schedule["timezone"] == "UTC" and edited.timezone == "UTC"
        assert edited.schedule["check"] == check_before  # the check schedule is kept
        assert edited.schedule["drill"] == drill  # and so is the drill
        assert edited.notify_channel == "C0REPORTS" and edited.notify_success is False
        repository = await Repository.get(id=chain.repository_id)
        assert repository.retention == {"keep_daily": 3, "keep_weekly": 2}
        [audit] = await AuditLog.filter(action="chain.edit", object_id=str(chain.id))
        assert audit.details["outcome"] == "done" and audit.actor == "U1"
        assert set(audit.details["after"]) == {"retention", "schedule", "notify_channel", "notify_success"}
        assert audit.details["before"]["schedule"]["days"] == ["mon", "wed", "fri"]
        assert audit.details["after"]["schedule"]["at"] == "03:30"
        assert audit.details["before"]["retention"]["keep_daily"] == 7
        assert audit.details["after"]["retention"] == {"keep_daily": 3, "keep_weekly": 2}
        assert not await Run.filter(kind=RunKind.TEST).exists()

        # The scheduler was refreshed at once (no resync): its next slot of the chain is the new 03:30 UTC.
        now = datetime.now(UTC)
        slot = now.replace(hour=3, minute=30, second=0, microsecond=0)
        slot = slot if slot > now else slot + timedelta(days=1)
        runs = [r for r in await scheduler.tick(now=slot + timedelta(minutes=1)) if r.chain_id == chain.id]
        assert runs and all(r.scheduled_for.astimezone(UTC).strftime("%H:%M") == "03:30" for r in runs), runs
    finally:
        unregister()


async def test_a_source_change_runs_a_real_test_backup_into_the_chains_repository(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.borg import compact as borg_compact

    compacted: list[str] = []
    real_compact = borg_compact.run

    async def spy(transport: Any, repo: Any, *args: Any, **kwargs: Any) -> Any:
        compacted.append(repo.url)
        return await real_compact(transport, repo, *args, **kwargs)

    monkeypatch.setattr(borg_compact, "run", spy)
    chain = await made_chain(world)
    compacted.clear()  # what making the chain did
    docs = world.src.workdir / "docs"
    docs.mkdir()
    (docs / "readme.txt").write_text("docs\n")
    controller = WizardController(build_steps, world.services)
    screen = await open_edit(controller, await resolve_actor(DIRECTORY, TEAM, "U1"), chain.name, "C0CHAN")
    screen = await controller.act(TENANT, "U1", screen.session_id, "change:source", "source")
    assert screen.step == "source"
    values = {**defaults(screen), "paths": f"{world.www}\n{docs}"}
    screen = await controller.submit(TENANT, "U1", screen.session_id, values)
    assert not screen.errors, screen.errors
    screen = await forward_to(controller, screen, "validation")
    screen = await controller.submit(TENANT, "U1", screen.session_id, {})
    assert screen.step == "review", screen.errors
    validation = (await WizardSession.get(id=screen.session_id)).data["validation"]
    names = [s["name"] for s in validation["steps"]]
    assert "test backup: back up files" in names and "test backup: restore files" in names, names
    # The test pushed into the chain's live repository: recorded as the chain's TEST run (its push is the bot's own
    # for the integrity check), and its archives are gone again.
    [test_run] = await Run.filter(kind=RunKind.TEST, chain_id=chain.id)
    assert test_run.status == RunStatus.SUCCEEDED and test_run.started_at and test_run.finished_at
    repository = await Repository.get(id=chain.repository_id)
    listed = await borg_list.archives(world.pool_transport(), Repo(url=repository.path,
                                                                   passphrase=repository.passphrase.reveal()))
    assert listed == []
    # … deleted but not compacted: compaction of a live repository is the integrity-checked maintenance's alone
    assert repository.path not in compacted, compacted
    assert "*Source:*" in screen.view.notes[0]

    done = await controller.submit(TENANT, "U1", screen.session_id, defaults(screen))
    assert done.step == "done", done.errors
    source = await BackupSource.get(chains__id=chain.id)
    assert source.config["paths"] == [str(world.www), str(docs)]
    [audit] = await AuditLog.filter(action="chain.edit", object_id=str(chain.id))
    assert set(audit.details["after"]) == {"source"}
    assert (await Repository.get(id=chain.repository_id)).path == repository.path  # same repository


async def test_a_member_who_may_not_operate_the_chain_is_refused_before_anything(world: World) -> None:
    chain = await made_chain(world)
    controller = WizardController(build_steps, world.services)
    stranger = await resolve_actor(DIRECTORY, TEAM, "U2")  # no role on the chain's server, not an admin
    with pytest.raises(Forbidden) as info:
        await open_edit(controller, stranger, chain.name, "C0CHAN")
    assert "not allowed to change" in info.value.sentence
    assert not await WizardSession.filter(user_id="U2").exists()
    [denied] = await AuditLog.filter(action="chain.edit", actor="U2")
    assert denied.details["outcome"] == "denied"

    # Answers made by someone who may (an admin's session) applied by the stranger: refused the same way.
    admin = await resolve_actor(DIRECTORY, TEAM, "U1")
    prefilled = await editing.prefill(admin, chain.id)
    prefilled["schedule"] = {**prefilled["schedule"], "days": ALL_DAYS}
    with pytest.raises(Forbidden):
        await editing.apply(stranger, chain.id, prefilled)
    assert (await BackupChain.get(id=chain.id)).schedule == chain.schedule


async def test_approval_required_the_chain_keeps_its_settings_until_approved(world: World) -> None:
    chain = await made_chain(world)
    await Workspace.create(team_id=TEAM, settings={"approvals": {"required": True, "approvers": ["U3"]}})
    controller = WizardController(build_steps, world.services)
    screen = await open_edit(controller, await resolve_actor(DIRECTORY, TEAM, "U1"), chain.name, "C0CHAN")
    screen = await change_retention_and_schedule(controller, screen)
    done = await controller.submit(TENANT, "U1", screen.session_id, defaults(screen))
    assert done.step == "done" and "waits for an approver" in done.view.heading, done
    [approval] = await Approval.filter(session_id=screen.session_id)
    assert approval.status == ApprovalStatus.PENDING and "Change of" in (approval.summary or "")
    unchanged = await BackupChain.get(id=chain.id)
    assert unchanged.schedule == chain.schedule
    assert (await Repository.get(id=chain.repository_id)).retention["keep_daily"] == 7
    [asked] = await AuditLog.filter(action="chain.edit", object_id=str(chain.id))
    assert asked.details["outcome"] == "approval_requested"

    approver = await resolve_actor(DIRECTORY, TEAM, "U3")
    decided = await approvals.decide(approver, approval.id, approve=True)
    assert decided.chain is None  # the Slack listener hands it to continue_after_approval
    outcome = await continue_after_approval(controller, TENANT, str(approval.session_id))
    assert outcome.created, outcome.sentence
    edited = await BackupChain.get(id=chain.id)
    assert edited.schedule["days"] == ALL_DAYS and edited.schedule["at"] == "03:30"
    assert (await Repository.get(id=chain.repository_id)).retention["keep_daily"] == 3
    applied = await AuditLog.filter(action="chain.edit", object_id=str(chain.id)).order_by("id")
    assert applied[-1].details["outcome"] == "done" and applied[-1].details["approval_id"] == approval.id


async def test_where_the_archives_live_changes_only_without_archives_and_to_a_new_repository(world: World) -> None:
    chain = await made_chain(world)
    admin = await resolve_actor(DIRECTORY, TEAM, "U1")
    prefilled = await editing.prefill(admin, chain.id)
    same_name = {**prefilled, "repository": {**prefilled["repository"], "encryption": "repokey"}}
    with pytest.raises(Refused) as info:
        await editing.check_relocation(admin, same_name)
    assert "another name" in info.value.sentence
    await VerifiedArchive.create(team_id=TEAM, repository_id=chain.repository_id, name="web1-files-www-x",
                                 archive_id="ab" * 32)  # fmt: skip
    moved = {**prefilled, "repository": {"mode": "new", "name": "web1-files-www-2", "encryption": "repokey-blake2",
                                         "compression": "lz4"}}  # fmt: skip
    with pytest.raises(Refused) as info:
        await editing.check_relocation(admin, moved)
    assert "has archives" in info.value.sentence and "/backup new" in info.value.sentence
    with pytest.raises(Refused):
        await editing.apply(admin, chain.id, moved)
    assert (await Repository.get(id=chain.repository_id)).name == "web1-files-www"


async def test_backup_edit_from_the_slack_command_to_the_changed_chain(world: World, tmp_path: Any) -> None:
    """`/backup edit <chain>` through the emulator (signed requests): the modal opens at the review; the report
    channel and success notices are changed there and applied; someone who may not operate the chain is told why."""
    from bot.config import load_settings
    from bot.slack.app import build_app, serve_http
    from bot.slack.emulator import DEFAULT_BOT_TOKEN, DEFAULT_BOT_USER, SlackDriver, SlackEmulator
    from storage.crypto import generate_key
    from tests.test_reports import free_port

    chain = await made_chain(world)
    await BackupChain.filter(id=chain.id).update(notify_channel="C0001")
    await Workspace.create(team_id=TEAM, settings={})
    slack = SlackEmulator(port=free_port())
    await slack.start()
    slack.add_user("U0001", is_admin=True)
    slack.add_user("U0STRANGER")
    slack.add_channel("C0001", "general", members=[DEFAULT_BOT_USER, "U0001", "U0STRANGER"])
    slack.add_channel("C0REPORTS", "backups", members=[DEFAULT_BOT_USER, "U0001"])
    settings = load_settings(tmp_path / "none.env", SLACK_BOT_TOKEN=DEFAULT_BOT_TOKEN, SLACK_SIGNING_SECRET="s3cret",
                             SLACK_API_URL=slack.api_url, BACKUPBOT_SECRET_KEYS=generate_key())  # fmt: skip
    services = dataclasses.replace(world.services, directory=NoDirectory())  # the app asks Slack who is an admin
    app = build_app(settings, wizard=WizardController(build_steps, services))
    runner = await serve_http(app, "127.0.0.1", 0)
    host, port = runner.addresses[0][:2]
    driver = SlackDriver.over_http(slack, f"http://{host}:{port}/slack/events", "s3cret")
    try:
        await driver.slash_command("/backup", f"edit {chain.name}", user="U0STRANGER")
        for _ in range(50):
            if slack.ephemerals(user="U0STRANGER"):
                break
            await asyncio.sleep(0.1)
        assert "not allowed to change" in str(slack.ephemerals(user="U0STRANGER"))
        assert slack.current_view("U0STRANGER") is None

        await driver.slash_command("/backup", f"edit {chain.name}", user="U0001")
        try:
            view = await driver.wait_for_view("U0001", callback_id="wizard")
        except TimeoutError:
            raise AssertionError([(c.method, c.error, getattr(c, "response", None)) for c in slack.calls]) from None
        assert view["submit"]["text"] == "Apply changes" and "wizard_step:review" in str(view["blocks"][0])
        await driver.set_value("v", "C0REPORTS", block_id="notify_channel", user="U0001")  # a channel picker
        await driver.set_value("v", [], block_id="notices", user="U0001")
        await driver.submit(user="U0001")  # the review is slow: "working…", then the done screen
        for _ in range(100):
            if "was changed (" in str(driver.current_view("U0001")):
                break
            await asyncio.sleep(0.1)
        assert "was changed" in str(driver.current_view("U0001"))
        edited = await BackupChain.get(id=chain.id)
        assert edited.notify_channel == "C0REPORTS" and edited.notify_success is False, (
            [b["text"]["text"] for b in driver.current_view("U0001")["blocks"] if "warning" in str(b)])
        [audit] = await AuditLog.filter(action="chain.edit", actor="U0001")
        assert audit.details["before"] == {"notify_channel": "C0001", "notify_success": True}
        assert audit.details["after"] == {"notify_channel": "C0REPORTS", "notify_success": False}
    finally:
        await driver.aclose()
        await runner.cleanup()
        await slack.stop()
