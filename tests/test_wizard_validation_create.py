"""Wizard steps 9 (validation: a real test backup) and 10 (review & create: one transaction), and the approval
hand-off — driven directly with a WizardContext on SQLite and real sshd hosts (source + pool), no Slack.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest
from tortoise.exceptions import IntegrityError

from bot.access import Actor
from bot.alerts import Alert
from bot.borg import list as borg_list
from bot.borg.repo import Repo
from bot.flows.wizard import create as creating
from bot.flows.wizard import store
from bot.flows.wizard.approved import continue_after_approval
from bot.flows.wizard.controller import WizardController
from bot.flows.wizard.steps.pool import PoolStep
from bot.flows.wizard.steps.repository import RepositoryStep
from bot.flows.wizard.steps.review import ReviewStep
from bot.flows.wizard.steps.validation import ValidationStep, fingerprint
from bot.services import approvals
from bot.slack.wizard_render import modal
from storage.crypto import Secret
from storage.models import (
    Approval,
    AuditLog,
    BackupChain,
    BackupSource,
    BackupTemplate,
    ChainStatus,
    Repository,
    Run,
    RunKind,
    RunStatus,
    WizardSession,
    Workspace,
)
from storage.tenancy import Tenant
from tests.test_wizard_step_pool_repo import TEAM, World, build_world, render

ANSWERS = {
    "snapshot": {"method": "none"},
    "retention": {"preset": "7d4w6m1y", "keep_daily": 7, "keep_weekly": 4, "keep_monthly": 6, "keep_yearly": 1},
    "schedule": {"days": ["mon", "wed", "fri"], "at": "02:00", "window": None, "timezone": "Europe/Berlin",
                 "priority": 5},
}  # fmt: skip


@pytest.fixture
async def world(sqlite_db: str, make_sshd: Any) -> AsyncIterator[World]:
    w = await build_world(make_sshd, "v")
    yield w
    await w.services.pool.close()


def answers(world: World, name: str = "web1-files-www", **extra: Any) -> dict[str, Any]:
    repository = {"mode": "new", "name": name, "encryption": "repokey-blake2", "compression": "lz4"}
    return {**ANSWERS, "pool_id": world.pool.id, "repository": repository, **extra}


async def counts() -> tuple[int, int, int]:
    return await Repository.all().count(), await BackupSource.all().count(), await BackupChain.all().count()


async def test_validation_runs_a_real_test_backup_then_create_writes_everything_at_once(world: World) -> None:
    ctx = world.ctx(**answers(world))
    ctx.data["source"] = {"paths": ["/nonexistent/www"]}
    row = await store.create(Tenant(TEAM), "U1", "C0CHAN", "validation", ctx.data)
    ctx.session_id = str(row.id)
    step = ValidationStep()
    render(await step.view(ctx), "validation")

    # A wrong source path: the repository is set up for real, the test backup names the Source step.
    errors = await step.submit(ctx, {})
    assert "Source step" in errors["validation"] and "/nonexistent/www" in errors["validation"]
    result = ctx.data["validation"]
    failed = [s for s in result["steps"] if not s["ok"]]
    assert not result["ok"] and failed[0]["name"] == "test backup: read files" and failed[0]["step"] == "source"
    view = await step.view(ctx)
    render(view, "validation")
    assert [(b.action, b.value) for b in view.buttons] == [("go_to", "source")]
    assert "Source" in await step.act(ctx, "go_to", "source") and ctx.data["_goto"] == "source"
    setup = ctx.data["setup"]
    assert setup["created"] and (world.pool_host.workdir / "repos" / "web1-files-www" / "config").exists()
    passphrase = Secret(setup["passphrase_token"]).reveal()
    assert passphrase not in json.dumps(ctx.data)  # only sealed tokens in the session
    # The controller saves nothing after a refused submit, but the remote setup (and its secrets) must survive a
    # restart: the step wrote it to the session row itself, without touching the version.
    saved = await WizardSession.get(id=row.id)
    assert saved.data["setup"] == setup and saved.version == row.version

    # Fixed: the same repository is reused and the real test backup passes.
    ctx.data["source"] = {"paths": [str(world.www)]}
    assert await step.submit(ctx, {}) == {}
    result = ctx.data["validation"]
    assert result["ok"] and ctx.data["setup"] == setup
    names = [s["name"] for s in result["steps"]]
    for expected in ("source settings", "repository settings", "retention", "schedule", "server", "storage pool",
                     "repository on the pool", "plan", "test backup: back up files", "test backup: restore files",
                     "test backup: clean up"):  # fmt: skip
        assert expected in names, names
    assert "identical" in next(s["detail"] for s in result["steps"] if s["name"] == "test backup: restore files")
    assert len(result["next_runs"]) == 5  # from bot.backup.schedule.next_runs, the scheduler's own math
    assert {datetime.fromisoformat(r).strftime("%a %H:%M") for r in result["next_runs"]} <= {
        "Mon 02:00", "Wed 02:00", "Fri 02:00"}  # fmt: skip
    render(await step.view(ctx), "validation")
    at_pool = Repo(url=setup["path"], passphrase=passphrase)
    assert await borg_list.archives(world.pool_transport(), at_pool) == []  # the test archives are gone

    # Coming back to the Repository step: the repository validation created is ours, not a name clash.
    repository_step = RepositoryStep()
    answer = dict(ctx.data["repository"])
    assert await repository_step.submit(ctx, {**answer, "compression": "zstd,3"}) == {}
    assert "Answers changed" in (await step.view(ctx)).notes[0]  # validation must run again …
    assert await repository_step.submit(ctx, answer) == {}  # … unless the answers are back to what was validated
    assert ctx.data["validation"]["fingerprint"] == fingerprint(ctx.data) and creating.setup_matches(ctx.data)

    # Create in one transaction: a duplicate chain name half way (after the Repository and BackupSource rows)
    # rolls everything back.
    other = await Repository.create(team_id=TEAM, pool=world.pool, name="other", path="/x/other", passphrase="p")
    await BackupChain.create(team_id=TEAM, name="taken-chain", repository=other)
    before = await counts()
    with pytest.raises(creating.CreateError) as info:
        await creating.create_chain(ctx, name="taken-chain", save_as="tpl-rolled-back", run_now=True)
    assert "already exists" in info.value.message and "kept" in info.value.message
    assert isinstance(info.value.__cause__, IntegrityError) and "backup_chain" in str(info.value.__cause__)
    assert await counts() == before
    assert not await BackupTemplate.filter(name="tpl-rolled-back").exists() and await Run.all().count() == 0
    assert not await AuditLog.filter(action="chain.create").exists()
    assert "chain_id" not in ctx.data

    review = ReviewStep()
    view = await review.view(ctx)
    render(view, "review")
    summary = view.notes[0]
    assert "web1-files-www" in summary and "Validation passed" in summary and "02:00" in summary
    assert "Next runs:" in summary
    errors = await review.submit(ctx, {"name": "taken-chain", "options": []})
    assert "already exists" in errors["name"]
    errors = await review.submit(ctx, {"name": "web1-www", "options": ["save_template"]})
    assert "name" in errors["template_name"].lower()

    values = {"name": "web1-www", "options": ["save_template", "run_now"], "template_name": "standard files"}
    assert await review.submit(ctx, values) == {}
    chain = await BackupChain.get(id=ctx.data["chain_id"]).prefetch_related("sources", "repository")
    assert chain.status == ChainStatus.ACTIVE and chain.schedule["days"] == ["mon", "wed", "fri"]
    assert chain.schedule["check"] == {"days": ["sun"], "at": "05:00", "verify_data": False}  # weekly by default
    assert chain.timezone == "Europe/Berlin" and chain.created_by == "U1" and chain.notify_channel == "C0CHAN"
    repository = chain.repository
    assert repository.path == setup["path"] and repository.passphrase.reveal() == passphrase
    assert repository.key_export.reveal().startswith("BORG_KEY ") and repository.client_key_private is not None
    assert repository.retention == {"keep_daily": 7, "keep_weekly": 4, "keep_monthly": 6, "keep_yearly": 1}
    [source] = chain.sources
    assert source.config == {"paths": [str(world.www)]} and source.server_id == world.server.id
    template = await BackupTemplate.get(name="standard files")
    assert chain.template_id == template.id
    run = await Run.get(chain_id=chain.id)
    assert (run.kind, run.status, run.requested_by) == (RunKind.BACKUP, RunStatus.QUEUED, "U1")
    actions = set(await AuditLog.filter(team_id=TEAM).values_list("action", flat=True))
    assert {"repository.create", "source.create", "chain.create", "template.create", "run.request"} <= actions
    done = ctx.data["_result"]
    assert "web1-www" in done and "queued" in done and "standard files" in done and "Next runs:" in done
    # The repository is real: the pool opens it with the stored passphrase.
    assert await borg_list.archives(world.pool_transport(), Repo(url=repository.path, passphrase=passphrase)) == []
    # A second click on Create does not create twice.
    assert await review.submit(ctx, values) == {} and await BackupChain.filter(name="web1-www").count() == 1


def sessions(*hosts: Any) -> int:
    """Command sessions the hosts' sshd have seen (their logs: LogLevel VERBOSE)."""
    return sum(host.log().count("Starting session") for host in hosts)


async def through_to_review(controller: WizardController, world: World, name: str) -> str:
    tenant = Tenant(TEAM)
    prefill = {k: v for k, v in world.ctx(**ANSWERS, size_estimate={"total_bytes": 4096}).data.items()}
    screen = await controller.start(tenant, "U1", "C0CHAN", prefill=prefill)
    sid = screen.session_id
    assert screen.step == "pool" and screen.slow
    modal(screen)
    screen = await controller.submit(tenant, "U1", sid, {"pool_id": str(world.pool.id)})
    assert screen.step == "repository" and not screen.errors, screen.errors
    values = {"mode": "new", "name": name, "encryption": "repokey-blake2", "compression": "auto,zstd,6"}
    screen = await controller.submit(tenant, "U1", sid, values)
    assert screen.step == "validation" and not screen.errors
    modal(screen)
    return sid


async def test_with_approval_required_nothing_touches_a_server_before_the_approval(world: World) -> None:
    """Steps 5, 6, 9 and 10 through the wizard controller; the workspace requires approval for this person, so
    validation checks only what needs no server, Create asks an approver, and only the approval sets up the
    repository, runs the test backup and creates the chain (active) — for exactly the approved answers."""
    await Workspace.create(team_id=TEAM, settings={"approvals": {"required": True, "exempt": ["U0BOSS"]}})
    seen: list[Alert] = []
    world.services.alerts.subscribe(seen.append)
    controller = WizardController(lambda: [PoolStep(), RepositoryStep(), ValidationStep(), ReviewStep()],
                                  world.services)  # fmt: skip
    tenant = Tenant(TEAM)
    sid = await through_to_review(controller, world, "needs-ok")
    before = sessions(world.src, world.pool_host)
    screen = await controller.submit(tenant, "U1", sid, {})
    assert screen.step == "review" and not screen.errors, screen.errors
    modal(screen)
    assert any("requires approval" in note for note in screen.view.notes)
    assert "before approval" in screen.view.notes[0]
    screen = await controller.submit(tenant, "U1", sid, {"name": "needs-ok", "options": ["run_now"]})
    assert screen.step == "done", screen.errors
    modal(screen)
    assert "waiting for approval" in screen.view.heading and "Nothing was set up" in screen.view.heading
    assert sessions(world.src, world.pool_host) == before  # no command on the source or the pool
    assert not (world.pool_host.workdir / "repos" / "needs-ok").exists()
    assert await counts() == (0, 0, 0) and await Run.all().count() == 0
    approval = await Approval.get(session_id=sid)
    assert (approval.status, approval.requested_by, approval.channel_id, approval.chain_id) == (
        "pending", "U1", "C0CHAN", None)  # fmt: skip
    assert "needs-ok" in approval.summary and "web1" in approval.summary
    assert [a.kind for a in seen] == ["approval_requested"] and seen[0].details["approval_id"] == approval.id
    assert await AuditLog.filter(action="approval.request", object_type="wizard", object_id=sid).exists()

    boss = Actor(TEAM, "U0BOSS", is_admin=True)  # no approvers configured: admins decide
    decided = await approvals.decide(boss, approval.id, approve=True)
    assert decided.chain is None and sessions(world.src, world.pool_host) == before  # deciding runs nothing
    outcome = await continue_after_approval(controller, tenant, sid)
    assert outcome.created and "approved, validated and created" in outcome.sentence, outcome.sentence
    assert sessions(world.src, world.pool_host) > before  # now the repository and the test backup were made
    chain = await BackupChain.get(name="needs-ok").prefetch_related("repository")
    assert chain.status == ChainStatus.ACTIVE and chain.repository.compression == "auto,zstd,6"
    assert (world.pool_host.workdir / "repos" / "needs-ok" / "config").is_file()
    assert (await Approval.get(id=approval.id)).chain_id == chain.id
    assert (await Run.get(chain_id=chain.id)).requested_by == "U1"  # "Run a backup now" was kept for after
    row = await WizardSession.get(id=sid)
    assert row.state == "done" and row.data["chain_id"] == chain.id
    assert (await continue_after_approval(controller, tenant, sid)).sentence == "*needs-ok* was already created."


async def test_a_rejected_request_sets_up_nothing_and_changed_answers_need_a_new_approval(world: World) -> None:
    await Workspace.create(team_id=TEAM, settings={"approvals": {"required": True}})
    controller = WizardController(lambda: [PoolStep(), RepositoryStep(), ValidationStep(), ReviewStep()],
                                  world.services)  # fmt: skip
    tenant = Tenant(TEAM)
    sid = await through_to_review(controller, world, "not-ok")
    await controller.submit(tenant, "U1", sid, {})
    await controller.submit(tenant, "U1", sid, {"name": "not-ok", "options": []})
    approval = await Approval.get(session_id=sid)
    await approvals.decide(Actor(TEAM, "U0BOSS", is_admin=True), approval.id, approve=False, reason="too big")
    assert await approvals.approved_for(TEAM, sid, approval.fingerprint) is None
    assert not (world.pool_host.workdir / "repos" / "not-ok").exists() and await counts() == (0, 0, 0)
    # An approval holds for the answers it was given only: other answers are not approved by it.
    await Approval.filter(id=approval.id).update(status="approved")
    assert await approvals.approved_for(TEAM, sid, "another-fingerprint") is None


async def test_approving_in_slack_validates_creates_and_tells_the_requester_and_the_thread(world: World,
                                                                                         tmp_path) -> None:  # fmt: skip
    """The same through Slack: the request message shows the answers, the approver's click runs the validation and
    creates the chain, and the outcome reaches the requester (DM) and the request's thread."""
    from tests.test_reports import APPROVALS, start_env

    controller = WizardController(lambda: [PoolStep(), RepositoryStep(), ValidationStep(), ReviewStep()],
                                  world.services)  # fmt: skip
    rules = {"required": True, "approvers": ["U0LEAD"], "channel": APPROVALS}
    envs = start_env(tmp_path, rules, wizard=controller, bus=world.services.alerts)
    env = await anext(envs)
    try:
        await _approve_in_slack(env, controller, world)
    finally:
        await envs.aclose()


async def _approve_in_slack(env: Any, controller: WizardController, world: World) -> None:
    from tests.test_reports import APPROVALS, text_of, wait_for

    env.slack.add_user("U1")
    sid = await through_to_review(controller, world, "via-slack")
    tenant = Tenant(TEAM)
    assert (await controller.submit(tenant, "U1", sid, {})).step == "review"
    assert (await controller.submit(tenant, "U1", sid, {"name": "via-slack", "options": []})).step == "done"
    await wait_for(lambda: env.slack.messages(APPROVALS))
    (request,) = env.slack.messages(APPROVALS)
    assert "a new backup chain" in text_of(request) and "via-slack" in text_of(request)
    assert not (world.pool_host.workdir / "repos" / "via-slack").exists()
    await env.driver.click("approval_approve", user="U0LEAD", channel=APPROVALS, ts=request["ts"])
    await wait_for(lambda: BackupChain.filter(name="via-slack", status=ChainStatus.ACTIVE).exists(), 60)

    def replies() -> list[dict[str, Any]]:
        return [m for m in env.slack.messages(APPROVALS) if m.get("thread_ts") == request["ts"]]

    await wait_for(replies, 10)
    (reply,) = replies()
    assert "approved, validated and created" in reply["text"]
    opened = [c for c in env.slack.calls_to("conversations.open") if c.params.get("users") == "U1" and c.ok]
    dms = [m["text"] for m in env.slack.messages(opened[-1].response["channel"]["id"])]
    assert any("approved, validated and created" in t for t in dms), dms
    assert (world.pool_host.workdir / "repos" / "via-slack" / "config").is_file()


async def test_a_validation_failing_after_approval_reopens_the_wizard_and_the_approval_still_holds(
    world: World,
) -> None:
    await Workspace.create(team_id=TEAM, settings={"approvals": {"required": True}})
    controller = WizardController(lambda: [PoolStep(), RepositoryStep(), ValidationStep(), ReviewStep()],
                                  world.services)  # fmt: skip
    tenant = Tenant(TEAM)
    sid = await through_to_review(controller, world, "fix-after")
    await controller.submit(tenant, "U1", sid, {})
    await controller.submit(tenant, "U1", sid, {"name": "fix-after", "options": []})
    approval = await Approval.get(session_id=sid)
    await approvals.decide(Actor(TEAM, "U0BOSS", is_admin=True), approval.id, approve=True)
    hidden = world.www.with_name("www-hidden")
    world.www.rename(hidden)  # the source's files are gone when the approved validation runs
    outcome = await continue_after_approval(controller, tenant, sid)
    assert not outcome.created and "validation failed" in outcome.sentence and "/backup resume" in outcome.sentence
    assert await BackupChain.filter(name="fix-after").count() == 0
    screen = await controller.resume(tenant, "U1")
    assert screen is not None and screen.step == "validation" and screen.session_id == sid
    hidden.rename(world.www)  # fixed: the same answers, still approved, validate for real and create at once
    screen = await controller.submit(tenant, "U1", sid, {})
    assert screen.step == "review" and not screen.errors, screen.errors
    assert not ctx_validation(await WizardSession.get(id=sid)).get("deferred")
    screen = await controller.submit(tenant, "U1", sid, {"name": "fix-after", "options": []})
    assert screen.step == "done", screen.errors
    assert (await BackupChain.get(name="fix-after")).status == ChainStatus.ACTIVE
    assert await Approval.filter(session_id=sid).count() == 1  # no second approval was needed


def ctx_validation(row: WizardSession) -> dict[str, Any]:
    return row.data.get("validation") or {}


async def test_creating_checks_the_actors_roles_first_whoever_calls(world: World) -> None:
    """create_chain itself refuses answers outside the actor's roles: nothing is set up on the pool, no row."""
    ctx = world.ctx(**answers(world, name="not-mine"))
    ctx.user_id = "U0MEMBER"  # no grant on the world's server or pool
    before = sessions(world.src, world.pool_host)
    with pytest.raises(creating.CreateError, match=r"You have no access to the server .* Nothing was created"):
        await creating.create_chain(ctx, name="not-mine")
    assert sessions(world.src, world.pool_host) == before and await counts() == (0, 0, 0)
    assert not (world.pool_host.workdir / "repos" / "not-mine").exists()


async def test_changed_answers_undo_the_earlier_setup(world: World) -> None:
    ctx = world.ctx(**answers(world, name="first-name"))
    first = await creating.ensure_remote_repository(ctx)
    keys = world.pool_host.home / ".ssh" / "authorized_keys"
    assert f"backup-bot:{first['path']}" in keys.read_text() and (world.src.home / first["key_file"]).exists()
    assert await creating.ensure_remote_repository(ctx) == first  # same answers: nothing new
    ctx.data["repository"] = {**ctx.data["repository"], "name": "second-name"}
    second = await creating.ensure_remote_repository(ctx)
    assert second["path"].endswith("/second-name") and (world.pool_host.workdir / "repos" / "second-name").is_dir()
    assert not (world.pool_host.workdir / "repos" / "first-name").exists()  # created by this wizard: removed
    assert f"backup-bot:{first['path']}" not in keys.read_text() and not (world.src.home / first["key_file"]).exists()


async def test_approval_rules(sqlite_db: str) -> None:
    assert not await approvals.requires_approval(TEAM, "U1")  # no Workspace row, no settings: no approval
    workspace = await Workspace.create(team_id=TEAM, settings={})
    assert not await approvals.requires_approval(workspace, "U1")
    workspace.settings = {"approvals": {"required": True, "exempt": ["U0BOSS"]}}
    await workspace.save()
    assert await approvals.requires_approval(TEAM, "U1") and not await approvals.requires_approval(TEAM, "U0BOSS")
    workspace.settings = {"approvals": {"required_for": ["U0NEW"]}}
    await workspace.save()
    assert await approvals.requires_approval(workspace, "U0NEW") and not await approvals.requires_approval(TEAM, "U1")
    assert not await approvals.requires_approval("T0002", "U0NEW")  # another workspace's rules never apply


async def test_cancel_after_validation_removes_what_it_created(world: World) -> None:
    controller = WizardController(lambda: [PoolStep(), RepositoryStep(), ValidationStep(), ReviewStep()],
                                  world.services)  # fmt: skip
    tenant = Tenant(TEAM)
    prefill = dict(world.ctx(**ANSWERS, size_estimate={"total_bytes": 4096}).data)
    sid = (await controller.start(tenant, "U1", "C0CHAN", prefill=prefill)).session_id
    await controller.submit(tenant, "U1", sid, {"pool_id": str(world.pool.id)})
    values = {"mode": "new", "name": "to-be-cancelled", "encryption": "repokey-blake2", "compression": "lz4"}
    await controller.submit(tenant, "U1", sid, values)
    screen = await controller.submit(tenant, "U1", sid, {})
    assert screen.step == "review", screen.errors
    repo_dir = world.pool_host.workdir / "repos" / "to-be-cancelled"
    assert (repo_dir / "config").is_file()
    screen = await controller.cancel(tenant, "U1", sid)
    assert screen.step == "cancelled" and screen.note is None
    assert not repo_dir.exists()
    assert "backup-bot:" not in (world.pool_host.home / ".ssh" / "authorized_keys").read_text()
