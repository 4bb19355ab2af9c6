"""``/backup delete``: retiring a chain (repository kept) and deleting its repository too, against real parts — a
source and a pool on real sshd hosts, the chain's real repository and append-only push key made by the wizard's
set-up, borg, and the Slack emulator with signed requests.

Retire keeps the repository directory and the push key line and stops the chain (queued runs cancelled, Run now
refused, its name free); deleting the repository (an admin, after typing the chain's name) removes the push key's
line from the pool's authorized_keys, the key from the source, the directory on the pool, then the rows.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.access import Actor, Forbidden, Refused
from bot.backup.repository import KEY_DIR
from bot.config import load_settings
from bot.services import archives as archives_service
from bot.services import creation
from bot.services import retire as service
from bot.services import runs as run_service
from bot.slack import archives as slack_archives
from bot.slack import retire as slack_retire
from bot.slack.app import build_app, serve_http
from bot.slack.emulator import DEFAULT_BOT_TOKEN, SlackDriver, SlackEmulator
from bot.slack.emulator.messages import Ephemeral
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
)
from storage.tenancy import Tenant
from tests.test_integrity import make_chain, push, push_side
from tests.test_pools import told
from tests.test_wizard_step_pool_repo import TEAM, World, build_world

ADMIN, OPS, MEMBER = "U0001", "U0OPS", "U0MEMBER"  # U0001 is the emulator's Slack admin
NAME = "web1-www"


@pytest.fixture
async def world(sqlite_db: str, make_sshd: Any) -> AsyncIterator[World]:
    w = await build_world(make_sshd, "ret")
    yield w
    await w.services.pool.close()


def admin() -> Actor:
    return Actor(team_id=TEAM, user_id=ADMIN, is_admin=True)


def ops() -> Actor:
    return Actor(team_id=TEAM, user_id=OPS)


def marker(repository: Repository) -> str:
    return f"backup-bot:{repository.path}"


def pool_keys(world: World) -> str:
    return (world.pool_host.home / ".ssh" / "authorized_keys").read_text()


def source_key_dir(world: World, repository: Repository) -> Path:
    return world.src.home / KEY_DIR / repository.name


async def chain_with_archive(world: World) -> tuple[BackupChain, Repository]:
    """The wizard's chain (repository on the pool, push key on both sides) with one archive pushed through the
    source's append-only key, and the operator grant of OPS on its server."""
    chain = await make_chain(world)
    source, repo, borg = await push_side(world, chain)
    await push(source, repo, borg, datetime.now(UTC).replace(microsecond=0), "first")
    await RoleGrant.create(team_id=TEAM, role=Role.OPERATOR, subject=OPS, server=world.server, granted_by=ADMIN)
    repository = await Repository.get(id=chain.repository_id)
    assert marker(repository) in pool_keys(world) and source_key_dir(world, repository).is_dir()
    assert Path(repository.path).is_dir()
    return chain, repository


async def slack_env(tmp_path: Path, world: World) -> AsyncIterator[tuple[SlackEmulator, SlackDriver]]:
    async with SlackEmulator() as slack:
        for user in (OPS, MEMBER):
            slack.add_user(user)
        settings = load_settings(tmp_path / "none.env", SLACK_BOT_TOKEN=DEFAULT_BOT_TOKEN, SLACK_SIGNING_SECRET="s",
                                 SLACK_API_URL=slack.api_url, BACKUPBOT_SECRET_KEYS=generate_key())  # fmt: skip
        app = build_app(settings)
        slack_retire.register(app, world.services)  # the lead wires these into build_app
        slack_archives.register(app, world.services)
        runner = await serve_http(app, "127.0.0.1", 0)
        address, port = runner.addresses[0][:2]
        driver = SlackDriver.over_http(slack, f"http://{address}:{port}/slack/events", "s")
        try:
            yield slack, driver
        finally:
            await driver.aclose()
            await runner.cleanup()


@pytest.fixture
async def slack(tmp_path: Path, world: World) -> AsyncIterator[tuple[SlackEmulator, SlackDriver]]:
    async for env in slack_env(tmp_path, world):
        yield env


async def audited(action: str, outcome: str) -> AuditLog:
    [row] = [a for a in await AuditLog.filter(action=action) if a.details.get("outcome") == outcome]
    return row


async def command(driver: SlackDriver, text: str, user: str) -> str:
    return json.dumps((await driver.slash_command("/backup", text, user=user)).json, ensure_ascii=False)


def actions_of(answer: str) -> list[str]:
    return [e["action_id"] for b in json.loads(answer)["blocks"] if b["type"] == "actions" for e in b["elements"]]


async def test_retire_keeps_the_repository_then_an_admin_deletes_it_from_slack(
    world: World, slack: tuple[SlackEmulator, SlackDriver]
) -> None:
    emulator, driver = slack
    chain, repository = await chain_with_archive(world)
    queued = await Run.create(team_id=TEAM, chain=chain, repository_id=repository.id, kind=RunKind.BACKUP,
                              status=RunStatus.QUEUED, requested_by=OPS)  # fmt: skip

    # A member who may not operate the chain is refused, naming who can allow it; nothing changes.
    refused = await command(driver, f"delete {NAME}", MEMBER)
    assert "not allowed to delete web1-www" in refused and "Nothing was changed" in refused
    assert (await BackupChain.get(id=chain.id)).status == ChainStatus.ACTIVE
    assert [a.details["outcome"] for a in await AuditLog.filter(actor=MEMBER, action="chain.retire")] == ["denied"]

    # The operator of its server may retire it (no repository deletion offered: admins only).
    offered = await command(driver, f"delete {NAME}", OPS)
    assert actions_of(offered) == [slack_retire.RETIRE] and "Retire" in offered
    await driver.click(slack_retire.RETIRE, value=str(chain.id), user=OPS)
    await told(emulator, OPS, "is retired: no more runs")
    retired = await BackupChain.get(id=chain.id)
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    assert retired.status == ChainStatus.RETIRED and retired.retired_at is not None
    assert retired.name == f"{NAME} (retired {day})"
    assert (await Run.get(id=queued.id)).status == RunStatus.CANCELLED
    # The repository is kept: its directory, its rows, the push key line; the archive is still listed.
    assert Path(repository.path).is_dir() and marker(repository) in pool_keys(world)
    assert await Repository.filter(id=repository.id).exists()
    page = await archives_service.page_of(ops(), retired.name, services=world.services)
    assert page.retired and page.total == 1 and page.rows[0].original_size
    audit = await audited("chain.retire", "done")
    assert audit.details["after"]["status"] == "retired" and audit.details["repository"]["kept"] is True

    # Retired: no Run now, and its old name is free for a new chain.
    with pytest.raises(Refused, match="retired; it cannot run now"):
        await run_service.run_now(ops(), chain.id)
    assert await creation.check_chain_name(Tenant(TEAM), NAME) == NAME

    # Deleting the repository is the admins': the service refuses the operator, and so does the admin's button
    # forged into the operator's view.
    with pytest.raises(Forbidden, match="Only admins"):
        await service.delete_repository(ops(), chain.id, NAME, services=world.services)
    offered = await command(driver, f"delete {retired.name}", ADMIN)
    assert actions_of(offered) == [slack_retire.DELETE_REPO]
    shown = emulator.world.messages.find_ephemeral_with_action(slack_retire.DELETE_REPO, ADMIN)
    assert shown is not None
    emulator.world.messages.ephemerals.append(Ephemeral(shown.channel, OPS, shown.message))
    await driver.click(slack_retire.DELETE_REPO, value=str(chain.id), user=OPS)
    await told(emulator, OPS, "Only admins can delete a chain")
    assert driver.current_view(OPS) is None

    # The admin: the modal; a wrong name is an inline error (nothing removed), the right one deletes.
    await driver.click(slack_retire.DELETE_REPO, value=str(chain.id), user=ADMIN)
    await driver.wait_for_view(ADMIN, callback_id=slack_retire.DELETE_VIEW)
    await driver.set_value("v", "web1", block_id=slack_retire.TYPED, user=ADMIN)
    await driver.submit(ADMIN)
    assert "not the chain's" in (driver.last_errors or {}).get(slack_retire.TYPED, "")
    assert Path(repository.path).is_dir() and marker(repository) in pool_keys(world)
    await driver.set_value("v", NAME, block_id=slack_retire.TYPED, user=ADMIN)
    before = len(emulator.calls_to("views.update"))
    await driver.submit(ADMIN)
    await emulator.wait_for_call("views.update", count=before + 1, within=60)
    done = json.dumps(driver.current_view(ADMIN))
    assert "is gone with its repository" in done, done

    # Gone on the servers: the pool's authorized_keys line, the source's key, the repository directory.
    assert marker(repository) not in pool_keys(world)
    assert not source_key_dir(world, repository).exists()
    assert not Path(repository.path).exists() and Path(world.pool.base_path).is_dir()
    # … and the rows, with an audit row saying what was removed.
    assert not await BackupChain.filter(id=chain.id).exists()
    assert not await Repository.filter(id=repository.id).exists()
    assert not await BackupSource.filter(team_id=TEAM).exists()
    deleted = await audited("repository.delete", "done")
    removed = " ".join(deleted.details["removed"])
    assert "authorized_keys" in removed and repository.path in removed and "push key on web1" in removed


async def test_refusals_and_a_pool_down_midway(world: World) -> None:
    chain, repository = await chain_with_archive(world)
    run = await Run.create(team_id=TEAM, chain=chain, repository_id=repository.id, kind=RunKind.BACKUP,
                           status=RunStatus.RUNNING)  # fmt: skip

    # A running run: neither retiring nor deleting; nothing changed.
    with pytest.raises(Refused, match=r"has a backup run \(#\d+\) running now"):
        await service.retire(ops(), NAME)
    with pytest.raises(Refused, match="running now"):
        await service.delete_repository(admin(), NAME, NAME, services=world.services)
    assert (await BackupChain.get(id=chain.id)).status == ChainStatus.ACTIVE
    await Run.filter(id=run.id).update(status=RunStatus.SUCCEEDED)

    # Wrong typed names are refused before anything happens; a name that is not a chain is NotFound.
    for typed in ("", "web1-ww", "web1-www (retired)", "WEB1-WWW"):
        with pytest.raises(Refused, match="not the chain's"):
            await service.delete_repository(admin(), NAME, typed, services=world.services)
    with pytest.raises(Refused, match="no backup chain named"):
        await service.retire(admin(), "nope")
    # A repository path outside the pool's base path is never removed.
    await Repository.filter(id=repository.id).update(path=str(Path(world.pool.base_path).parent / "elsewhere"))
    with pytest.raises(Refused, match="not a directory directly below the pool's base path"):
        await service.delete_repository(admin(), NAME, NAME, services=world.services)
    await Repository.filter(id=repository.id).update(path=repository.path)
    assert (await BackupChain.get(id=chain.id)).status == ChainStatus.ACTIVE and Path(repository.path).is_dir()

    # The pool is down: the chain is retired, the repository kept with its rows, the answer says what is left.
    world.pool_host.stop()
    try:
        partial = await service.delete_repository(admin(), NAME, NAME, services=world.services)
    finally:
        world.pool_host.start()
    assert not partial.complete and "could not be removed completely" in partial.sentence
    retired = await BackupChain.get(id=chain.id)
    assert retired.status == ChainStatus.RETIRED and await Repository.filter(id=repository.id).exists()
    assert Path(repository.path).is_dir() and marker(repository) in pool_keys(world)
    # Once the pool is back, the same request (by the old name, on the retired chain) finishes the job.
    done = await service.delete_repository(admin(), chain.id, NAME, services=world.services)
    assert done.complete, done.sentence
    assert not Path(repository.path).exists() and marker(repository) not in pool_keys(world)
    assert not await Repository.filter(id=repository.id).exists()


async def test_what_a_chain_uses_is_named_until_it_is_deleted(world: World) -> None:
    from bot.services import credentials, pools, servers, templates
    from storage.models import BackupTemplate, BackupType, DatabaseCredential, DbType

    chain = await make_chain(world)
    template = await BackupTemplate.create(team_id=TEAM, name="web", backup_type=BackupType.FILES, created_by=OPS)
    login = await DatabaseCredential.create(team_id=TEAM, server=world.server, db_type=DbType.POSTGRESQL, port=5432,
                                            username="backup", password="pw")  # fmt: skip
    await BackupChain.filter(id=chain.id).update(template_id=template.id)
    await BackupSource.filter(team_id=TEAM).update(credential_id=login.id)

    # In use: each refusal names the chain (or its repository), and nothing is removed.
    with pytest.raises(Refused, match="still used by the chain web1-www: delete it"):
        await templates.remove_template(admin(), "web")
    with pytest.raises(Refused, match=r"backup@localhost:5432 is still used by the chain web1-www"):
        await credentials.remove_login(admin(), login.id)
    with pytest.raises(Refused, match="web1 backs up the chain web1-www: delete those chains first"):
        await servers.remove(admin(), "web1")
    with pytest.raises(Refused, match=f"still holds the repositories {NAME}: delete them first"):
        await pools.remove_pool(admin(), world.pool.name)
    with pytest.raises(Forbidden, match="Only admins and the person who saved web"):
        await templates.remove_template(Actor(team_id=TEAM, user_id=MEMBER), "web")

    # Retired (repository kept): the template and the login are free; the server and the pool still hold it.
    retired = await service.retire(admin(), NAME)
    await templates.remove_template(ops(), "web")  # its creator
    await credentials.remove_login(admin(), login.id)
    assert not await BackupTemplate.filter(id=template.id).exists()
    assert not await DatabaseCredential.filter(id=login.id).exists()
    with pytest.raises(Refused, match=r"backs up the chain web1-www \(retired .*an admin deletes the repository too"):
        await servers.remove(admin(), "web1")
    with pytest.raises(Refused, match="still holds the repositories"):
        await pools.remove_pool(admin(), world.pool.name)

    # Its repository deleted: the server and the pool can go.
    assert (await service.delete_repository(admin(), retired.chain_id, NAME, services=world.services)).complete
    await servers.remove(admin(), "web1")
    await pools.remove_pool(admin(), world.pool.name)
    assert [a.action for a in await AuditLog.filter(action__in=("template.remove", "credential.remove",
                                                                "server.remove", "pool.remove"))] == [
        "template.remove", "credential.remove", "server.remove", "pool.remove"]  # fmt: skip
