"""The App Home tab through the Slack emulator: chains, buttons per status, Run now / Pause / Resume, permissions."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.config import load_settings
from bot.slack.app import build_app, serve_http
from bot.slack.emulator import DEFAULT_BOT_TOKEN, SlackDriver, SlackEmulator
from bot.slack.emulator.limits import check_view
from bot.slack.home_blocks import PAGE_SIZE
from bot.slack.listing import _when, next_runs_of
from storage.crypto import generate_key
from storage.models import (
    AuditLog,
    BackupChain,
    BackupSource,
    ChainStatus,
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

SECRET = "test-signing-secret"
TEAM, OTHER = "T0001", "T0002"
ADMIN, CREATOR, NOBODY, APPROVER, OPERATOR = "U0001", "U0002", "U0003", "U0004", "U0005"
SCHEDULE = {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "at": "02:00", "timezone": "UTC"}


@pytest.fixture
async def slack() -> AsyncIterator[SlackEmulator]:
    async with SlackEmulator() as emulator:
        emulator.add_user(CREATOR, name="carol")
        emulator.add_user(NOBODY, name="nina")
        emulator.add_user(APPROVER, name="abe")
        emulator.add_user(OPERATOR, name="otto")
        yield emulator


@pytest.fixture
async def driver(slack: SlackEmulator, sqlite_db: str, tmp_path: Path) -> AsyncIterator[SlackDriver]:
    settings = load_settings(
        tmp_path / "none.env",
        SLACK_BOT_TOKEN=DEFAULT_BOT_TOKEN,
        SLACK_SIGNING_SECRET=SECRET,
        SLACK_API_URL=slack.api_url,
        BACKUPBOT_SECRET_KEYS=generate_key(),
    )
    runner = await serve_http(build_app(settings), "127.0.0.1", 0)
    host, port = runner.addresses[0][:2]
    drv = SlackDriver.over_http(slack, f"http://{host}:{port}/slack/events", SECRET)
    try:
        yield drv
    finally:
        await drv.aclose()
        await runner.cleanup()


async def _repo(team: str, name: str, size: int | None) -> Repository:
    tenant = Tenant(team)
    pool = await tenant.create(StoragePool, name=f"pool-{name}", kind="local", base_path="/srv/borg")
    return await tenant.create(
        Repository, pool=pool, name=name, path=f"/srv/borg/{name}", passphrase="pw", size_bytes=size
    )


async def _chain(team: str, name: str, status: ChainStatus, size: int | None = None, **extra: Any) -> BackupChain:
    """A chain backing up files of its own server ``srv-<name>`` (whose operators may operate the chain)."""
    tenant = Tenant(team)
    repo = await _repo(team, name, size)
    chain = await tenant.create(
        BackupChain, name=name, repository=repo, schedule=SCHEDULE, status=status, created_by=CREATOR, **extra
    )
    server = await tenant.create(Server, name=f"srv-{name}", host=f"{name}.example.com")
    source = await tenant.create(BackupSource, server=server, name=name, type="files", config={"paths": ["/srv"]})
    await chain.sources.add(source)
    return chain


async def _grant_operator(chain: BackupChain, subject: str) -> None:
    """Make ``subject`` an operator of the server ``chain`` backs up (as an admin would with /backup roles)."""
    server = await Server.get(team_id=chain.team_id, name=f"srv-{chain.name}")
    await Tenant(chain.team_id).create(RoleGrant, role=Role.OPERATOR, subject=subject, server=server, granted_by=ADMIN)


@pytest.fixture
async def chains(driver: SlackDriver) -> dict[str, BackupChain]:
    await Workspace.create(team_id=TEAM, settings={"approvals": {"approvers": [APPROVER]}})
    out = {
        "web": await _chain(TEAM, "web", ChainStatus.ACTIVE, size=3 * 1024**3),
        "db": await _chain(TEAM, "db", ChainStatus.PAUSED, size=512 * 1024**2),
        "new": await _chain(TEAM, "new", ChainStatus.PENDING_APPROVAL),
        "theirs": await _chain(OTHER, "theirs-secret", ChainStatus.ACTIVE, size=1024),
    }
    done = datetime(2026, 3, 2, 2, 5, tzinfo=UTC)
    await Tenant(TEAM).create(
        Run,
        chain=out["web"],
        repository_id=out["web"].repository_id,
        kind=RunKind.BACKUP,
        status=RunStatus.SUCCEEDED,
        started_at=done - timedelta(minutes=5),
        finished_at=done,
    )
    await Tenant(TEAM).create(
        Run,
        chain=out["web"],
        repository_id=out["web"].repository_id,
        kind=RunKind.BACKUP,
        status=RunStatus.FAILED,
        started_at=done + timedelta(days=1),
        finished_at=done + timedelta(days=1, minutes=1),
        error="Host unreachable",
    )
    return out


def _blocks(view: dict[str, Any] | None) -> list[dict[str, Any]]:
    assert view is not None
    return view["blocks"]


def _section(view: dict[str, Any] | None, chain: BackupChain) -> str:
    return next(b["text"]["text"] for b in _blocks(view) if b.get("block_id") == f"home_chain_{chain.id}")


def _buttons(view: dict[str, Any] | None, chain: BackupChain) -> list[str]:
    for block in _blocks(view):
        if block.get("block_id") == f"home_chain_actions_{chain.id}":
            return [e["action_id"] for e in block["elements"]]
    return []


def _notice(view: dict[str, Any] | None) -> str:
    return next((b["text"]["text"] for b in _blocks(view) if b.get("block_id") == "home_notice"), "")


async def _open(slack: SlackEmulator, driver: SlackDriver, user: str = ADMIN, team: str = TEAM) -> dict[str, Any]:
    before = len(slack.calls_to("views.publish"))
    await driver.open_home(user)
    await slack.wait_for_call("views.publish", count=before + 1)
    view = slack.home_view(user, team)
    assert view is not None and check_view(view) == []
    return view


async def _click(slack: SlackEmulator, driver: SlackDriver, action: str, chain: BackupChain, user: str) -> dict:
    before = len(slack.calls_to("views.publish"))
    await driver.click(action, block_id=f"home_chain_actions_{chain.id}", user=user)
    await slack.wait_for_call("views.publish", count=before + 1)
    view = slack.home_view(user, TEAM)
    assert view is not None
    return view


async def test_home_lists_this_workspaces_chains_with_status_sizes_and_buttons(
    slack: SlackEmulator, driver: SlackDriver, chains: dict[str, BackupChain]
) -> None:
    view = await _open(slack, driver)
    text = json.dumps(view["blocks"], ensure_ascii=False)
    assert "theirs-secret" not in text  # tenant-scoped
    assert "*3* backup chain(s)" in text
    web = _section(view, chains["web"])
    assert ":x: failed" in web and "Host unreachable" in web  # last status: icon + text + cause
    assert "Last success: Mon 2 Mar 2026, 02:05 UTC" in web
    assert "Repository size: 3.0 GiB" in web
    upcoming, _ = next_runs_of(chains["web"], 1, datetime.now(UTC))
    assert f"Next run: {_when(upcoming[0], UTC)}" in web  # type: ignore[arg-type]
    db = _section(view, chains["db"])
    assert "paused" in db and "Repository size: 512.0 MiB" in db and "never ran" in db
    assert "Next run: — (not scheduled while the chain is paused)" in db
    assert "Repository size: unknown" in _section(view, chains["new"])
    assert _buttons(view, chains["web"]) == ["home_run_now", "home_pause", "chain_edit", "restore_open"]
    assert _buttons(view, chains["db"]) == ["home_run_now", "home_resume", "chain_edit", "restore_open"]
    assert _buttons(view, chains["new"]) == ["chain_edit", "restore_open"]  # an admin may


async def test_run_now_queues_a_high_priority_backup_once(
    slack: SlackEmulator, driver: SlackDriver, chains: dict[str, BackupChain]
) -> None:
    from bot.runs import nudge

    woken: list[str] = []
    unregister = nudge.register(lambda: woken.append("wake"))
    await _open(slack, driver, user=CREATOR)
    web = chains["web"]
    try:
        view = await _click(slack, driver, "home_run_now", web, CREATOR)
    finally:
        unregister()
    assert "is queued" in _notice(view)
    assert woken == ["wake"]  # the worker is told at once, not at its next poll
    run = await Run.get(chain_id=web.id, status=RunStatus.QUEUED)
    assert (run.team_id, run.kind, run.priority, run.requested_by) == (TEAM, RunKind.BACKUP, 10, CREATOR)
    assert run.lock_key == f"repo:{web.repository_id}" and run.repository_id == web.repository_id
    view = await _click(slack, driver, "home_run_now", web, CREATOR)  # a second click adds nothing
    assert "already has a backup queued" in _notice(view)
    assert await Run.filter(chain_id=web.id, status=RunStatus.QUEUED).count() == 1
    audit = await AuditLog.filter(team_id=TEAM, action="chain.run_now").order_by("id")
    assert [(a.actor, a.object_id, a.details["outcome"]) for a in audit] == [
        (CREATOR, str(web.id), "queued"),
        (CREATOR, str(web.id), "already_pending"),
    ]
    assert audit[0].details["run_id"] == run.id


async def test_pause_and_resume_change_status_and_buttons(
    slack: SlackEmulator, driver: SlackDriver, chains: dict[str, BackupChain]
) -> None:
    web = chains["web"]
    await _grant_operator(web, OPERATOR)
    await _open(slack, driver, user=OPERATOR)  # an operator of its server, neither creator nor admin
    view = await _click(slack, driver, "home_pause", web, OPERATOR)
    assert "is paused" in _notice(view)
    assert (await BackupChain.get(id=web.id)).status == ChainStatus.PAUSED
    assert _buttons(view, web) == ["home_run_now", "home_resume", "chain_edit", "restore_open"]
    view = await _click(slack, driver, "home_resume", web, OPERATOR)
    assert "active again" in _notice(view)
    assert (await BackupChain.get(id=web.id)).status == ChainStatus.ACTIVE
    assert _buttons(view, web) == ["home_run_now", "home_pause", "chain_edit", "restore_open"]
    rows = await AuditLog.filter(team_id=TEAM, object_id=str(web.id)).order_by("id")
    assert [(r.actor, r.action, r.details["outcome"]) for r in rows] == [
        (OPERATOR, "chain.pause", "done"),
        (OPERATOR, "chain.resume", "done"),
    ]


async def test_slack_admin_may_act_on_someone_elses_chain(
    slack: SlackEmulator, driver: SlackDriver, chains: dict[str, BackupChain]
) -> None:
    await _open(slack, driver, user=ADMIN)  # U0001 is a Slack admin in the emulator
    await _click(slack, driver, "home_resume", chains["db"], ADMIN)
    assert (await BackupChain.get(id=chains["db"].id)).status == ChainStatus.ACTIVE
    assert slack.calls_to("users.info")  # the admin flag came from Slack


async def test_an_operator_group_may_act_but_an_approver_without_a_grant_may_not(
    slack: SlackEmulator, driver: SlackDriver, chains: dict[str, BackupChain]
) -> None:
    """The App Home applies the service layer's rule (bot.access.authz.may_operate): operators of the chain's server
    count, also through a user group; approving chains is not operating them; another server's grant is not."""
    slack.add_user("U0OPS", name="olga")
    slack.add_usergroup("S0OPS", "ops", users=["U0OPS"])
    await _grant_operator(chains["web"], "S0OPS")
    await _grant_operator(chains["db"], APPROVER)  # operator of another server only
    await _open(slack, driver, user="U0OPS")
    view = await _click(slack, driver, "home_pause", chains["web"], "U0OPS")
    assert "is paused" in _notice(view)
    assert (await BackupChain.get(id=chains["web"].id)).status == ChainStatus.PAUSED
    await _open(slack, driver, user=APPROVER)  # an approver (chains fixture), and operator of db's server only
    view = await _click(slack, driver, "home_resume", chains["web"], APPROVER)
    assert "not allowed" in _notice(view)
    assert (await BackupChain.get(id=chains["web"].id)).status == ChainStatus.PAUSED


async def test_not_permitted_user_changes_nothing_and_sees_a_notice(
    slack: SlackEmulator, driver: SlackDriver, chains: dict[str, BackupChain]
) -> None:
    web, db = chains["web"], chains["db"]
    await _open(slack, driver, user=NOBODY)
    for action, chain in (("home_run_now", web), ("home_pause", web), ("home_resume", db)):
        view = await _click(slack, driver, action, chain, NOBODY)
        assert "not allowed" in _notice(view) and "Nothing was changed" in _notice(view)
    assert await Run.filter(status=RunStatus.QUEUED).count() == 0
    assert (await BackupChain.get(id=web.id)).status == ChainStatus.ACTIVE
    assert (await BackupChain.get(id=db.id)).status == ChainStatus.PAUSED
    denied = await AuditLog.filter(team_id=TEAM, actor=NOBODY).order_by("id")
    assert [(d.action, d.details["outcome"]) for d in denied] == [
        ("chain.run_now", "denied"),
        ("chain.pause", "denied"),
        ("chain.resume", "denied"),
    ]


async def test_another_workspaces_chain_id_is_not_found(
    slack: SlackEmulator, driver: SlackDriver, chains: dict[str, BackupChain]
) -> None:
    """A forged button value naming another workspace's chain reaches nothing."""
    theirs = chains["theirs"]
    await _open(slack, driver, user=ADMIN)
    record = slack.world.views.home(TEAM, ADMIN)
    assert record is not None
    for block in record.blocks:
        if block.get("block_id") == f"home_chain_actions_{chains['web'].id}":
            block["elements"][1]["value"] = str(theirs.id)  # the Pause button now names their chain
    before = len(slack.calls_to("views.publish"))
    await driver.click("home_pause", block_id=f"home_chain_actions_{chains['web'].id}", user=ADMIN)
    await slack.wait_for_call("views.publish", count=before + 1)
    assert "no longer exists" in _notice(slack.home_view(ADMIN, TEAM))
    assert (await BackupChain.get(id=theirs.id)).status == ChainStatus.ACTIVE
    assert await AuditLog.filter(team_id=OTHER).count() == 0


async def test_many_chains_are_paginated_within_100_blocks(slack: SlackEmulator, driver: SlackDriver) -> None:
    tenant = Tenant(TEAM)
    repo = await _repo(TEAM, "shared", 10)
    for i in range(PAGE_SIZE + 5):
        await tenant.create(
            BackupChain, name=f"c{i:03d}", repository=repo, schedule=SCHEDULE, status=ChainStatus.ACTIVE
        )
    view = await _open(slack, driver)
    assert len(view["blocks"]) <= 100
    text = json.dumps(view["blocks"])
    assert "c000" in text and f"c{PAGE_SIZE:03d}" not in text and "page 1/2" in text
    before = len(slack.calls_to("views.publish"))
    await driver.click("home_page", user=ADMIN)
    await slack.wait_for_call("views.publish", count=before + 1)
    second = slack.home_view(ADMIN, TEAM)
    assert f"c{PAGE_SIZE:03d}" in json.dumps(_blocks(second)) and "page 2/2" in json.dumps(_blocks(second))
    assert check_view(second) == []


async def test_edit_and_restore_buttons_only_for_who_may_and_retired_chains_are_not_listed(
    slack: SlackEmulator, driver: SlackDriver, chains: dict[str, BackupChain]
) -> None:
    """Edit: whoever may operate the chain (its creator, its server's operators, admins), never on a retired chain;
    Restore…: admins and its server's operators only (a restore writes on a server). A retired chain is not on the
    Home (it does not run) and is counted instead. Pressing Restore… opens the restore flow at the archive step."""
    web = chains["web"]
    gone = await _chain(TEAM, "gone", ChainStatus.RETIRED, retired_at=datetime(2026, 4, 1, tzinfo=UTC))
    view = await _open(slack, driver, user=NOBODY)
    assert _buttons(view, web) == ["home_run_now", "home_pause"]  # no Edit, no Restore… for a stranger
    assert _buttons(view, chains["new"]) == []
    view = await _open(slack, driver, user=CREATOR)  # created them, no role on the server
    assert _buttons(view, web) == ["home_run_now", "home_pause", "chain_edit"]
    await _grant_operator(web, OPERATOR)
    view = await _open(slack, driver, user=OPERATOR)
    assert _buttons(view, web) == ["home_run_now", "home_pause", "chain_edit", "restore_open"]
    assert _buttons(view, chains["db"]) == ["home_run_now", "home_resume"]  # another server's chain
    view = await _open(slack, driver, user=ADMIN)
    text = json.dumps(view["blocks"], ensure_ascii=False)
    assert f"home_chain_{gone.id}" not in text and "*3* backup chain(s)" in text
    assert "1 retired chain(s) not listed" in text
    opened = len(slack.calls_to("views.open"))
    await driver.click("restore_open", block_id=f"home_chain_actions_{web.id}", user=OPERATOR)
    await slack.wait_for_call("views.open", count=opened + 1)
    call = slack.calls_to("views.open")[-1]
    assert call.ok, call.response
    modal = json.dumps(call.params, ensure_ascii=False)
    assert "restore_step" in modal and "Restore from *web*" in modal and "restore_archive" in modal
