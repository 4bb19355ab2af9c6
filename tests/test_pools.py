"""Storage pools, managed (issue 11, deliver 1): the service layer against real sshd and borg, ``/backup pools``
through the Slack emulator, the wizard's step 5 with its inline *Add a pool*, and ``backup-bot pool`` as a
subprocess.

Every refused add is checked for what it must leave behind: nothing — no pool row, no server row.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from bot.access import Actor, Forbidden, Refused, StaticDirectory, resolve_actor
from bot.flows.wizard.services import WizardServices
from bot.flows.wizard.steps.base import WizardContext
from bot.flows.wizard.steps.pool import PoolStep
from bot.services import pools
from bot.transport import SSHPool
from storage.models import AuditLog, PoolKind, Repository, Role, RoleGrant, Server, StoragePool
from storage.tenancy import Tenant
from tests.harness.common import find_borg

TEAM = "T0001"
ADMIN, MEMBER = "U0001", "U0MEMBER"  # U0001 is the emulator's Slack admin
DIRECTORY = StaticDirectory(admins=frozenset({ADMIN}))
BORG = find_borg() or "borg"
MiB = 1024 * 1024


def admin() -> Actor:
    return Actor(team_id=TEAM, user_id=ADMIN, is_admin=True)


def member() -> Actor:
    return Actor(team_id=TEAM, user_id=MEMBER)


def tools_for(host: Any, **kwargs: Any) -> pools.PoolTools:
    return pools.PoolTools(ssh=SSHPool([asyncssh.read_private_key(host.client_key_path)]), borg="borg", **kwargs)


async def stored() -> tuple[int, int]:
    return await StoragePool.all().count(), await Server.all().count()


# -- the service layer -------------------------------------------------------------------------------------------


async def test_add_over_ssh_pins_the_host_checks_for_real_and_lists_it(sqlite_db: str, make_sshd: Any) -> None:
    host = make_sshd("vault")
    tools = tools_for(host)
    path = host.workdir / "srv" / "borg"  # does not exist yet: created by the check
    try:
        new = pools.NewPool(name="vault", path=str(path), host=host.host, port=host.port, user=host.user,
                            fingerprint=host.host_key_fingerprint, quota_bytes=pools.parse_size("2T"), tier="archive",
                            alert_at="90")  # fmt: skip
        view = await pools.add_pool(admin(), new, tools)
        assert path.is_dir() and list(path.iterdir()) == []  # the probe file was written and removed
        assert (view.host, view.port, view.user, view.path, view.tier) == (host.host, host.port, "root", str(path),
                                                                           "archive")  # fmt: skip
        assert view.quota_bytes == 2 * 1024**4 and view.alert_threshold_pct == 90
        assert view.free_bytes and view.total_bytes and view.total_bytes >= view.free_bytes > 0
        server = await Server.get(team_id=TEAM, host=host.host, port=host.port)
        assert server.host_key_fingerprint == host.host_key_fingerprint and server.host_key
        row = await StoragePool.get(name="vault")
        assert row.kind == PoolKind.SSH and row.server_id == server.id and row.available_checked_at is not None
        actions = await AuditLog.filter(team_id=TEAM).order_by("id").values_list("action", flat=True)
        assert actions[-1] == "pool.add" and "server.pin_host_key" in actions

        # A second pool on the same, already confirmed host reuses its server row (no fingerprint needed).
        again = await pools.add_pool(admin(), pools.NewPool(name="vault-2", path=str(host.workdir / "b"),
                                                            host=host.host, port=host.port, user="root"), tools)
        assert again.server == server.name and await Server.all().count() == 1
        # … but a fingerprint that is not the pinned one is refused.
        with pytest.raises(Refused, match="not the one pinned"):
            await pools.add_pool(admin(), pools.NewPool(name="vault-3", path="/tmp/x", host=host.host, port=host.port,
                                                        fingerprint="SHA256:" + "A" * 43), tools)  # fmt: skip
        listed = {v.name: v for v in await pools.list_pools(admin())}
        assert set(listed) == {"vault", "vault-2"} and listed["vault"].where == f"root@{host.host}:{host.port}"
        assert [v.name for v in await pools.list_pools(admin(), tier="archive")] == ["vault"]
    finally:
        await tools.ssh.close()  # type: ignore[union-attr]


async def test_refused_ssh_adds_store_nothing(sqlite_db: str, make_sshd: Any) -> None:
    """A wrong fingerprint, a host without borg and an unwritable directory: one sentence each, no row left."""
    host = make_sshd("vault")
    bare = make_sshd("bare", with_borg=False)
    tools, bare_tools = tools_for(host), tools_for(bare)
    try:
        wrong = pools.NewPool(name="p", path=str(host.workdir / "r"), host=host.host, port=host.port,
                              fingerprint="SHA256:" + "x" * 43)  # fmt: skip
        with pytest.raises(Refused, match=r"is not the one .* presents .*nothing was stored"):
            await pools.add_pool(admin(), wrong, tools)
        assert await stored() == (0, 0) and not (host.workdir / "r").exists()
        assert await AuditLog.filter(action="pool.pin_refused").count() == 1  # a mismatch may be an attack

        with pytest.raises(Refused, match="Give the host key fingerprint"):
            await pools.add_pool(admin(), pools.NewPool(name="p", path="/srv/x", host=host.host, port=host.port),
                                 tools)  # fmt: skip

        no_borg = pools.NewPool(name="p", path=str(bare.workdir / "r"), host=bare.host, port=bare.port,
                                fingerprint=bare.host_key_fingerprint)  # fmt: skip
        with pytest.raises(Refused, match=r"borg is not installed on root@.*pip install 'borgbackup>=1.4"):
            await pools.add_pool(admin(), no_borg, bare_tools)
        assert await stored() == (0, 0)

        for path, words in (("/sys", "is not writable by the login root"),
                            ("/sys/backup-bot-pool", "does not exist on .* cannot create it")):  # fmt: skip
            unwritable = pools.NewPool(name="p", path=path, host=host.host, port=host.port,
                                       fingerprint=host.host_key_fingerprint)  # fmt: skip
            with pytest.raises(Refused, match=words):
                await pools.add_pool(admin(), unwritable, tools)
            assert await stored() == (0, 0)
    finally:
        await tools.ssh.close()  # type: ignore[union-attr]
        await bare_tools.ssh.close()  # type: ignore[union-attr]


async def test_local_pool_checks_and_refusals(sqlite_db: str, tmp_path: Path) -> None:
    local = pools.PoolTools(ssh=None, borg=BORG)
    view = await pools.add_pool(admin(), pools.NewPool(name="here", path=str(tmp_path / "pool"), tier="fast"), local)
    assert view.host is None and view.where == "this machine" and view.free_bytes and view.tier == "fast"
    assert (await StoragePool.get(name="here")).kind == PoolKind.LOCAL
    refusals = [
        (pools.NewPool(name="b", path=str(tmp_path / "b")), pools.PoolTools(borg="/nonexistent/bin/borg"),
         "borg is not installed on this machine"),
        (pools.NewPool(name="b", path="/sys"), local, "not writable"),
        (pools.NewPool(name="here", path=str(tmp_path / "c")), local, "already exists"),
        (pools.NewPool(name="b", path="relative"), local, "not a usable pool directory"),
        (pools.NewPool(name="b", path="/srv/x", tier="fastest"), local, "tier is one of"),
        (pools.NewPool(name="b", path="/srv/x", alert_at="120"), local, "whole percentage from 1 to 100"),
    ]
    for new, tools, words in refusals:
        with pytest.raises(Refused, match=words):
            await pools.add_pool(admin(), new, tools)
    assert await stored() == (1, 0)
    with pytest.raises(Forbidden, match="Only admins can add storage pools"):
        await pools.add_pool(member(), pools.NewPool(name="m", path=str(tmp_path / "m")), local)
    assert not (tmp_path / "m").exists()  # refused before anything touched the host


def test_sizes_are_parsed_and_bad_ones_refused() -> None:
    assert pools.parse_size("500G") == 500 * 1024**3 and pools.parse_size("2T") == 2 * 1024**4
    assert pools.parse_size("1.5TiB") == int(1.5 * 1024**4) and pools.parse_size("750GB") == 750 * 10**9
    assert pools.parse_size("123") == 123 and pools.parse_size("") is None and pools.parse_size("none") is None
    for bad in ("12Q", "G", "-5G", "0", "five"):
        with pytest.raises(Refused):
            pools.parse_size(bad)


async def test_edit_remove_and_who_sees_what(sqlite_db: str, tmp_path: Path) -> None:
    local = pools.PoolTools(borg=BORG)
    for name in ("main", "other"):
        await pools.add_pool(admin(), pools.NewPool(name=name, path=str(tmp_path / name)), local)
    main = await StoragePool.get(name="main")
    await Repository.create(team_id=TEAM, pool=main, name="web1-files", path="/x/a", passphrase="p", size_bytes=3 * MiB)
    await Repository.create(team_id=TEAM, pool=main, name="db1-mysql", path="/x/b", passphrase="p")

    changed = await pools.edit_pool(admin(), "main", pools.PoolEdit(name="primary", quota_bytes="1G", tier="fast",
                                                                    alert_at=70))  # fmt: skip
    assert (changed.name, changed.quota_bytes, changed.tier, changed.alert_threshold_pct) == ("primary", 1024**3,
                                                                                              "fast", 70)  # fmt: skip
    assert changed.used_bytes == 3 * MiB and changed.repositories == ("db1-mysql", "web1-files")
    audit = await AuditLog.filter(action="pool.edit").first()
    assert audit and audit.details["before"]["name"] == "main" and audit.details["after"]["quota_bytes"] == 1024**3
    with pytest.raises(Refused, match="already exists"):
        await pools.edit_pool(admin(), "primary", pools.PoolEdit(name="other"))
    with pytest.raises(Forbidden):
        await pools.edit_pool(member(), "primary", pools.PoolEdit(tier="archive"))

    with pytest.raises(Refused, match="still holds the repositories db1-mysql, web1-files"):
        await pools.remove_pool(admin(), "primary")
    assert await StoragePool.filter(name="primary").exists()

    assert await pools.list_pools(member()) == []
    await RoleGrant.create(team_id=TEAM, role=Role.OPERATOR, subject=MEMBER, pool=main, granted_by=ADMIN)
    assert [v.name for v in await pools.list_pools(member())] == ["primary"]
    with pytest.raises(Forbidden):
        await pools.remove_pool(member(), "other")
    await pools.remove_pool(admin(), "other")
    assert [v.name for v in await pools.list_pools(admin())] == ["primary"]
    assert await AuditLog.filter(action="pool.remove").count() == 1


# -- the wizard's step 5 -----------------------------------------------------------------------------------------


def wizard_ctx(services: WizardServices, user: str, **data: Any) -> WizardContext:
    base = {"backup_type": "files", "source": {"paths": ["/etc"]}}
    return WizardContext(team_id=TEAM, user_id=user, session_id=str(uuid.uuid4()), data={**base, **data},
                         services=services)  # fmt: skip


@pytest.fixture
async def wizard_services(bot_key: Any) -> Any:
    pool = SSHPool([asyncssh.read_private_key(bot_key[0])], connect_timeout=5)
    yield WizardServices(pool=pool, borg=BORG, directory=DIRECTORY)
    await pool.close()


async def test_step5_on_a_fresh_install_an_admin_adds_a_pool_inline(
    sqlite_db: str, tmp_path: Path, wizard_services: WizardServices
) -> None:
    from bot.slack.emulator.limits import check_view
    from tests.test_wizard_step_pool_repo import render

    step = PoolStep()
    nobody = await step.view(wizard_ctx(wizard_services, MEMBER))
    assert "only admins add pools and grant them — ask a Slack workspace admin" in nobody.notes[0]
    assert not nobody.fields and not nobody.buttons

    ctx = wizard_ctx(wizard_services, ADMIN)
    view = await step.view(ctx)
    assert check_view(render(view, "pool")) == []  # Slack's own limits, as the emulator knows them
    names = [f.name for f in view.fields]
    assert "pool_id" not in names and {"new_name", "new_path", "new_where", "new_tier", "new_quota"} <= set(names)
    assert [b.action for b in view.buttons] == ["add_pool"] and "no storage pool yet" in " ".join(view.notes)

    ctx.form = {"new_name": "first", "new_where": "local", "new_path": "/sys", "new_tier": "fast"}
    note = await step.act(ctx, "add_pool", "")
    assert note and "not writable" in note and await StoragePool.all().count() == 0
    kept = await step.view(ctx)  # what was typed is still there
    assert next(f for f in kept.fields if f.name == "new_name").initial == "first"

    ctx.form = {**ctx.form, "new_path": str(tmp_path / "first")}
    note = await step.act(ctx, "add_pool", "")
    assert note and "Pool first added on this machine" in note
    pool = await StoragePool.get(name="first")
    view = await step.view(ctx)
    render(view, "pool")
    choice = next(f for f in view.fields if f.name == "pool_id")
    assert choice.initial == str(pool.id) and "fast" in choice.options[0].label
    assert [b.action for b in view.buttons] == ["open_add"]
    assert await step.submit(ctx, {"pool_id": str(pool.id)}) == {} and ctx.data["pool_id"] == pool.id

    # Next with the new pool's fields filled in (and no pool chosen) adds it and goes on.
    other = wizard_ctx(wizard_services, ADMIN)
    assert "Only admins" in (await step.act(wizard_ctx(wizard_services, MEMBER), "open_add", "") or "")
    assert await step.act(other, "open_add", "") and other.data["pool_add_open"]
    errors = await step.submit(other, {"pool_id": None, "new_name": "second", "new_where": "local",
                                       "new_path": str(tmp_path / "second"), "new_quota": "lots"})  # fmt: skip
    assert "not a size" in errors["new_quota"] and not await StoragePool.filter(name="second").exists()
    assert await step.submit(other, {"pool_id": None, "new_name": "second", "new_where": "local",
                                     "new_path": str(tmp_path / "second"), "new_tier": "archive"}) == {}  # fmt: skip
    second = await StoragePool.get(name="second")
    assert other.data["pool_id"] == second.id and second.tier.value == "archive"

    # The tier buttons narrow the list.
    assert await step.act(other, "tier_archive", "archive") is None
    filtered = await step.view(other)
    assert check_view(render(filtered, "pool")) == []
    shown = next(f for f in filtered.fields if f.name == "pool_id")
    assert [o.value for o in shown.options] == [str(second.id)]
    await step.act(other, "tier_all", "all")
    shown = next(f for f in (await step.view(other)).fields if f.name == "pool_id")
    assert len(shown.options) == 2


async def test_step5_refuses_a_pool_over_its_quota_with_the_numbers(
    sqlite_db: str, tmp_path: Path, wizard_services: WizardServices
) -> None:
    view = await pools.add_pool(admin(), pools.NewPool(name="small", path=str(tmp_path / "s"), quota_bytes=MiB),
                                pools.PoolTools(borg=BORG))  # fmt: skip
    pool = await StoragePool.get(id=view.id)
    await Repository.create(team_id=TEAM, pool=pool, name="big", path="/x/big", passphrase="p", size_bytes=2 * MiB)
    step = PoolStep()
    ctx = wizard_ctx(wizard_services, ADMIN)
    errors = await step.submit(ctx, {"pool_id": str(pool.id)})
    assert errors["pool_id"].startswith("Pool small is over its quota: 2.0 MiB used of 1.0 MiB")
    assert "pool_id" not in ctx.data
    assert "over its quota" in " ".join((await step.view(ctx)).notes)


# -- Slack: /backup pools ----------------------------------------------------------------------------------------


async def test_backup_pools_in_slack_admin_member_and_a_forged_button(sqlite_db: str, tmp_path: Path,
                                                                      make_sshd: Any) -> None:  # fmt: skip
    from bot.config import load_settings
    from bot.identity import ensure_identity
    from bot.slack import pools as slack_pools
    from bot.slack.app import build_app, serve_http
    from bot.slack.emulator import DEFAULT_BOT_TOKEN, SlackDriver, SlackEmulator
    from bot.slack.emulator.messages import Ephemeral
    from storage.crypto import generate_key

    host = make_sshd("vault")
    host.authorize((await ensure_identity()).public_key)  # the bot's own key, as `backup-bot init` prints it
    used = await pools.add_pool(admin(), pools.NewPool(name="used", path=str(tmp_path / "used")),
                                pools.PoolTools(borg=BORG))  # fmt: skip
    used_row = await StoragePool.get(id=used.id)
    await Repository.create(team_id=TEAM, pool=used_row, name="web1-files", path="/x", passphrase="p")
    async with SlackEmulator() as slack:
        slack.add_user(MEMBER, name="mia")
        settings = load_settings(tmp_path / "none.env", SLACK_BOT_TOKEN=DEFAULT_BOT_TOKEN, SLACK_SIGNING_SECRET="s",
                                 SLACK_API_URL=slack.api_url, BACKUPBOT_SECRET_KEYS=generate_key())  # fmt: skip
        runner = await serve_http(build_app(settings), "127.0.0.1", 0)
        address, port = runner.addresses[0][:2]
        driver = SlackDriver.over_http(slack, f"http://{address}:{port}/slack/events", "s")
        try:
            listing = json.dumps((await driver.slash_command("/backup", "pools", user=ADMIN)).json["blocks"])
            assert "*used*" in listing and "web1-files" in listing and "this machine" in listing
            assert slack_pools.ADD in listing and slack_pools.REMOVE in listing

            # Add pool: an inline error first, then a real SSH add.
            await driver.click(slack_pools.ADD, user=ADMIN)
            await driver.wait_for_view(ADMIN, callback_id=slack_pools.ADD_VIEW)
            for block, value in (("name", "vault"), ("host", host.host), ("port", str(host.port)),
                                 ("fingerprint", host.host_key_fingerprint), ("path", str(host.workdir / "borg")),
                                 ("quota", "500 apples")):  # fmt: skip
                await driver.set_value("v", value, block_id=block, user=ADMIN)
            await driver.set_value("v", "ssh", block_id="where", user=ADMIN)
            await driver.set_value("v", "archive", block_id="tier", user=ADMIN)
            await driver.submit(ADMIN)
            assert "not a size" in (driver.last_errors or {}).get("quota", "") and await StoragePool.all().count() == 1
            await driver.set_value("v", "2T", block_id="quota", user=ADMIN)
            before = len(slack.calls_to("views.update"))
            await driver.submit(ADMIN)
            await slack.wait_for_call("views.update", count=before + 1, within=30)
            done = json.dumps(driver.current_view(ADMIN))
            assert "added on root@" in done and "archive" in done, done
            vault = await StoragePool.get(name="vault")
            assert vault.quota_bytes == 2 * 1024**4 and (host.workdir / "borg").is_dir()

            # A member sees only their pools and no admin buttons.
            await RoleGrant.create(team_id=TEAM, role=Role.OPERATOR, subject=MEMBER, pool=vault, granted_by=ADMIN)
            mine = json.dumps((await driver.slash_command("/backup", "pools", user=MEMBER)).json["blocks"])
            assert "*vault*" in mine and "*used*" not in mine and slack_pools.REMOVE not in mine
            assert slack_pools.ADD not in mine and slack_pools.EDIT not in mine

            # Remove is refused while a repository uses the pool (naming it) …
            await driver.slash_command("/backup", "pools", user=ADMIN)
            await driver.click(slack_pools.REMOVE, value=str(used.id), user=ADMIN)
            await told(slack, ADMIN, "still holds the repositories web1-files")
            # … and a member pressing a forged Remove button is refused with the sentence; nothing changes.
            shown = slack.world.messages.find_ephemeral_with_action(slack_pools.REMOVE, ADMIN)
            assert shown is not None
            slack.world.messages.ephemerals.append(Ephemeral(shown.channel, MEMBER, shown.message))
            await driver.click(slack_pools.REMOVE, value=str(vault.id), user=MEMBER)
            await told(slack, MEMBER, "Only admins can remove storage pools")
            assert await StoragePool.filter(name="vault").exists()
            assert not await AuditLog.filter(actor=MEMBER).exists()

            # Edit: inline errors, then saved.
            await driver.click(slack_pools.EDIT, value=str(vault.id), user=ADMIN)
            await driver.wait_for_view(ADMIN, callback_id=slack_pools.EDIT_VIEW)
            await driver.set_value("v", "150", block_id="alert_at", user=ADMIN)
            await driver.submit(ADMIN)
            assert "percentage" in (driver.last_errors or {}).get("alert_at", "")
            await driver.set_value("v", "75", block_id="alert_at", user=ADMIN)
            await driver.set_value("v", "", block_id="quota", user=ADMIN)
            await driver.submit(ADMIN)
            vault = await StoragePool.get(name="vault")
            assert vault.alert_threshold_pct == 75 and vault.quota_bytes is None
        finally:
            await driver.aclose()
            await runner.cleanup()


async def told(slack: Any, user: str, words: str) -> None:
    """Wait until ``user`` was shown an ephemeral message (or a replaced one) holding ``words``."""
    def seen() -> bool:
        return any(e.user == user and words in json.dumps(e.message) for e in slack.world.messages.ephemerals)

    await slack.world.changes.wait_for(seen, 10)


# -- the command line --------------------------------------------------------------------------------------------


def cli(env_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "BACKUPBOT_", "DATABASE_"))}
    return subprocess.run([sys.executable, "-m", "bot.cli", "--env-file", str(env_dir / ".env"), *args], cwd=env_dir,
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip


def test_pool_cli_add_list_remove_and_bad_input(tmp_path: Path, make_sshd: Any) -> None:
    assert cli(tmp_path, "init").returncode == 0
    team = ("--team", TEAM)
    added = cli(tmp_path, "pool", "add", *team, "--name", "here", "--local", "--path", str(tmp_path / "repos"),
                "--quota", "500G", "--tier", "fast", "--alert-at", "80", "--borg", BORG)  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "Added pool here on this machine" in added.stdout
    listed = cli(tmp_path, "pool", "list", *team, "--json")
    assert listed.returncode == 0, listed.stderr
    [row] = json.loads(listed.stdout)
    assert {k: row[k] for k in ("name", "host", "path", "quota_bytes", "used_bytes", "tier")} == {
        "name": "here", "host": None, "path": str(tmp_path / "repos"), "quota_bytes": 500 * 1024**3,
        "used_bytes": 0, "tier": "fast"}  # fmt: skip
    assert row["free_bytes"] > 0 and row["total_bytes"] >= row["free_bytes"]
    assert "here" in cli(tmp_path, "pool", "list", *team).stdout

    host = make_sshd("vault")
    bad = [
        ("pool", "add", *team, "--name", "x", "--local", "--path", str(tmp_path / "x"), "--quota", "12Q"),
        ("pool", "add", *team, "--name", "x", "--local", "--path", "/sys", "--borg", BORG),
        ("pool", "add", *team, "--name", "x", "--local", "--path", str(tmp_path / "x"), "--borg", "/no/borg"),
        ("pool", "add", *team, "--name", "x", "--host", host.host, "--port", str(host.port), "--user", "root",
         "--path", "/srv/x"),
        ("pool", "add", *team, "--name", "x", "--host", host.host, "--port", str(host.port), "--user", "root",
         "--fingerprint", "SHA256:" + "x" * 43, "--path", "/srv/x"),
        ("pool", "add", *team, "--name", "here", "--local", "--path", str(tmp_path / "y"), "--borg", BORG),
        ("pool", "remove", *team, "nope"),
        ("pool", "list", "--team", "not-a-team"),
    ]
    for args in bad:
        result = cli(tmp_path, *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr + result.stdout and result.stderr.startswith("error:"), result.stderr
    assert len(json.loads(cli(tmp_path, "pool", "list", *team, "--json").stdout)) == 1
    assert cli(tmp_path, "pool", "remove", *team, "here").returncode == 0
    assert json.loads(cli(tmp_path, "pool", "list", *team, "--json").stdout) == []
    helped = cli(tmp_path, "pool", "add", "--help")
    assert helped.returncode == 0 and all(o in helped.stdout for o in ("--fingerprint", "--quota", "--alert-at",
                                                                       "--tier", "--local", "--host"))  # fmt: skip


async def test_resolved_slack_admins_may_add(sqlite_db: str, tmp_path: Path) -> None:
    """The roles come from the directory: a Slack admin adds, a member is refused before anything happens."""
    slack_admin = await resolve_actor(DIRECTORY, TEAM, ADMIN)
    assert slack_admin.is_admin
    await pools.add_pool(slack_admin, pools.NewPool(name="p", path=str(tmp_path / "p")), pools.PoolTools(borg=BORG))
    with pytest.raises(Forbidden):
        await pools.remove_pool(await resolve_actor(DIRECTORY, TEAM, MEMBER), "p")
    assert await Tenant(TEAM).query(StoragePool).count() == 1
