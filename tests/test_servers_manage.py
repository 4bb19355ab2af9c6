"""Servers, managed (issue 11, deliver 2): listing, refresh, add with a fingerprint, remove — in the service layer,
on the command line (a real process) and in Slack (through the emulator), against real sshd.

"Nothing happened on the server" is read from the sshd's own log (LogLevel VERBOSE: "Connection from" for every TCP
connection, "Starting session" for every command), as in tests/test_access.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from dotenv import dotenv_values

from bot.access import Forbidden, NotFound, Refused, StaticDirectory, resolve_actor
from bot.inventory import fetch_host_key, pin_host_key
from bot.services import servers
from storage import db
from storage.crypto import Keyring, install_keyring
from storage.models import (
    AuditLog,
    BackupChain,
    BackupSource,
    DatabaseCredential,
    PoolKind,
    Repository,
    Role,
    RoleGrant,
    Server,
    ServerStatus,
    StoragePool,
)
from storage.tenancy import Tenant
from tests.test_access import traffic
from tests.test_cli import cli

TEAM = "T0001"
ADMIN, MEMBER, OPERATOR = "U0ADMIN", "U0MEMBER", "U0OPER"
DIRECTORY = StaticDirectory(admins=frozenset({ADMIN}))
BORG_VERSION = subprocess.run([str(Path(sys.executable).parent / "borg"), "--version"], capture_output=True,
                              text=True).stdout.split()[-1]  # fmt: skip


async def pinned(host, name: str | None = None) -> Server:
    """A server whose key an admin confirmed earlier, never probed since."""
    server = await Tenant(TEAM).create(Server, name=name or host.name, host=host.host, port=host.port,
                                       username=host.user)  # fmt: skip
    info = await fetch_host_key(host.host, host.port)
    await pin_host_key(server, info.key_line, info.fingerprint, actor=ADMIN)
    return await Server.get(id=server.id)


async def chain_on(server: Server, name: str, pool: StoragePool) -> BackupChain:
    """A chain backing up ``server`` into ``pool`` (rows only: listing and removal read them)."""
    tenant = Tenant(TEAM)
    repo = await tenant.create(Repository, pool=pool, name=f"{name}-repo", path=f"/srv/borg/{name}", passphrase="pw")
    source = await tenant.create(BackupSource, server=server, name=f"{name}-files", type="files",
                                 config={"paths": ["/etc"]})  # fmt: skip
    chain = await tenant.create(BackupChain, name=name, repository=repo, created_by=ADMIN)
    await chain.sources.add(source)
    return chain


async def grant(subject: str, server: Server) -> None:
    await Tenant(TEAM).create(RoleGrant, role=Role.OPERATOR, subject=subject, server=server, granted_by=ADMIN)


# -- the service layer ----------------------------------------------------------------------------------------


async def test_admins_see_every_server_and_members_only_theirs(sqlite_db, make_sshd, bot_key, services) -> None:
    web, store = make_sshd("web", client_key=bot_key[0]), make_sshd("store", client_key=bot_key[0])
    web_row, store_row = await pinned(web), await pinned(store)
    unconfirmed = await Tenant(TEAM).create(Server, name="later", host="later.invalid", status="unconfirmed")
    pool = await Tenant(TEAM).create(StoragePool, name="main", kind=PoolKind.SSH, server=store_row,
                                     base_path="/srv/borg")  # fmt: skip
    await chain_on(web_row, "nightly", pool)
    await grant(MEMBER, web_row)
    admin, member = await resolve_actor(DIRECTORY, TEAM, ADMIN), await resolve_actor(DIRECTORY, TEAM, MEMBER)
    await servers.refresh(admin, "web", pool=services.pool, alerts=services.alerts)

    views = {v.name: v for v in await servers.list_servers(admin)}
    assert list(views) == ["later", "store", "web"]
    seen = views["web"]
    assert seen.address == f"root@{web.host}:{web.port}" and seen.fingerprint == web.host_key_fingerprint
    assert (seen.reachable, seen.borg_version, seen.chains, seen.pools) == (True, BORG_VERSION, ("nightly",), ())
    assert seen.probed_at is not None and seen.may_refresh and not seen.may_remove  # a chain uses it
    assert views["store"].pools == ("main",) and views["store"].reachable is None and not views["store"].may_remove
    assert views["later"].key == "key not confirmed" and not views["later"].may_refresh and views["later"].may_remove
    assert views["later"].id == unconfirmed.id

    mine = await servers.list_servers(member)
    assert [v.name for v in mine] == ["web"] and mine[0].may_refresh and not mine[0].may_remove
    assert await servers.list_servers(await resolve_actor(DIRECTORY, TEAM, "U0NOBODY")) == []
    assert mine[0].to_json()["chains"] == ["nightly"] and mine[0].to_json()["borg_version"] == BORG_VERSION


async def test_refresh_records_borg_and_the_probe_time_and_reports_a_changed_key(sqlite_db, make_sshd, bot_key,
                                                                                 services) -> None:  # fmt: skip
    host = make_sshd("probed", client_key=bot_key[0])
    server = await pinned(host)
    await grant(OPERATOR, server)
    operator, member = await resolve_actor(DIRECTORY, TEAM, OPERATOR), await resolve_actor(DIRECTORY, TEAM, MEMBER)
    before = traffic(host)
    with pytest.raises(Forbidden, match="You have no access to the server probed"):
        await servers.refresh(member, "probed", pool=services.pool, alerts=services.alerts)
    assert traffic(host) == before  # refused before any connection

    done = await servers.refresh(operator, server.id, pool=services.pool, alerts=services.alerts)
    row = await Server.get(id=server.id)
    assert row.capabilities_detected_at is not None and row.status == ServerStatus.OK
    assert done.view.borg_version == BORG_VERSION and f"borg {BORG_VERSION}" in done.sentence
    assert not done.key_changed and traffic(host)[1] > before[1]
    assert await AuditLog.filter(action="server.refresh", actor=OPERATOR).count() == 1

    alerts = []
    services.alerts.subscribe(alerts.append)
    host.restart(new_host_key=True)
    await services.pool.close()  # a new connection, as after the bot's restart
    changed = await servers.refresh(operator, "probed", pool=services.pool, alerts=services.alerts)
    row = await Server.get(id=server.id)
    assert changed.key_changed and row.status == ServerStatus.HOST_KEY_CHANGED
    assert row.host_key_fingerprint == server.host_key_fingerprint != host.host_key_fingerprint  # not re-pinned
    assert "nothing was re-pinned" in changed.sentence and [a.kind for a in alerts] == ["host_key_changed"]
    assert changed.view.reachable is False

    admin = await resolve_actor(DIRECTORY, TEAM, ADMIN)  # an expected change: re-pinned only with the new fingerprint
    again = servers.NewServer(name="probed", host=host.host, port=host.port, username=host.user)
    with pytest.raises(Refused, match="nothing was stored"):
        await servers.add(admin, again, server.host_key_fingerprint, alerts=services.alerts)
    await servers.add(admin, again, host.host_key_fingerprint, alerts=services.alerts)
    row = await Server.get(id=server.id)
    assert row.host_key_fingerprint == host.host_key_fingerprint and row.status == ServerStatus.OK
    assert "re-pinned the host key of *probed*" in alerts[-1].message


async def test_remove_is_refused_while_chains_or_pools_use_the_server_naming_them(sqlite_db) -> None:
    tenant = Tenant(TEAM)
    source = await tenant.create(Server, name="src", host="src.invalid", host_key="ssh-ed25519 AAAA")
    holder = await tenant.create(Server, name="holder", host="holder.invalid", host_key="ssh-ed25519 AAAA")
    spare = await tenant.create(Server, name="spare", host="spare.invalid", host_key="ssh-ed25519 AAAA",
                                host_key_fingerprint="SHA256:x")  # fmt: skip
    pool = await tenant.create(StoragePool, name="main", kind=PoolKind.SSH, server=holder, base_path="/srv/borg")
    await chain_on(source, "nightly", pool)
    await chain_on(source, "weekly", pool)
    await tenant.create(DatabaseCredential, server=spare, db_type="mysql", port=3306, username="u", password="Pw-1")
    await grant(MEMBER, spare)
    leftover = await tenant.create(BackupSource, server=spare, name="left", type="files", config={})  # no chain
    admin, member = await resolve_actor(DIRECTORY, TEAM, ADMIN), await resolve_actor(DIRECTORY, TEAM, MEMBER)

    with pytest.raises(Forbidden, match=r"^Only admins can remove servers — ask"):
        await servers.remove(member, "spare")
    with pytest.raises(Refused, match=r"^src backs up the chains nightly, weekly: .* Nothing was removed\.$"):
        await servers.remove(admin, "src")
    with pytest.raises(Refused, match=r"^holder holds a storage pool \(main\): remove the pool first"):
        await servers.remove(admin, holder.id)
    with pytest.raises(NotFound, match="There is no server named 'nope'"):
        await servers.remove(admin, "nope")
    assert await Server.filter(team_id=TEAM).count() == 3 and await AuditLog.all().count() == 0

    gone = await servers.remove(admin, "spare")
    assert gone.name == "spare" and not await Server.exists(id=spare.id)
    assert await DatabaseCredential.all().count() == 0 and await RoleGrant.all().count() == 0
    assert not await BackupSource.exists(id=leftover.id) and await BackupSource.all().count() == 2
    [entry] = await AuditLog.filter(action="server.remove")
    assert entry.actor == ADMIN and entry.details["logins_removed"] == 1 and entry.details["before"]["name"] == "spare"
    assert "Pw-1" not in json.dumps(entry.details)


async def test_add_pins_only_the_fingerprint_given_and_without_one_stores_nothing(sqlite_db, make_sshd) -> None:
    host = make_sshd("fresh")
    admin, member = await resolve_actor(DIRECTORY, TEAM, ADMIN), await resolve_actor(DIRECTORY, TEAM, MEMBER)
    new = servers.NewServer(name="fresh", host=host.host, port=host.port, username="root")
    notices = []
    from bot.alerts import AlertBus

    bus = AlertBus()
    bus.subscribe(notices.append)
    before = traffic(host)
    with pytest.raises(Forbidden, match="Only admins can add servers"):
        await servers.add(member, new, host.host_key_fingerprint, alerts=bus)
    with pytest.raises(Refused, match="is not a host key fingerprint"):
        await servers.add(admin, new, "yes", alerts=bus)
    with pytest.raises(Refused, match="A port must be a whole number"):
        await servers.add(admin, servers.NewServer("x", host.host, 0, "root"), None, alerts=bus)
    assert traffic(host) == before  # nothing typed wrong reached the address

    shown = await servers.add(admin, new, None, alerts=bus)
    assert not shown.added and shown.presented.fingerprint == host.host_key_fingerprint
    wrong = "SHA256:" + "A" * 43
    with pytest.raises(Refused, match=r"^The fingerprint you gave \(SHA256:AAAA.*nothing was stored"):
        await servers.add(admin, new, wrong, alerts=bus)
    assert await Server.all().count() == 0 and notices == []
    assert await AuditLog.filter(action="server.pin_refused").count() == 1

    done = await servers.add(admin, new, f"256 {host.host_key_fingerprint} root@fresh (ED25519)", alerts=bus)
    row = await Server.get(name="fresh")
    assert done.added and row.host_key_fingerprint == host.host_key_fingerprint and row.status == ServerStatus.OK
    assert [n.kind for n in notices] == [servers.ADMIN_NOTICE] and host.host_key_fingerprint in notices[0].message
    actions = await AuditLog.filter(team_id=TEAM).order_by("id").values_list("action", flat=True)
    assert actions == ["server.pin_refused", "server.add", "server.pin_host_key"]
    with pytest.raises(Refused, match="already in this workspace with the pinned host key"):
        await servers.add(admin, new, host.host_key_fingerprint, alerts=bus)
    with pytest.raises(Refused, match="is already in this workspace as 'fresh'"):
        await servers.add(admin, servers.NewServer("again", host.host, host.port, "root"), None, alerts=bus)


# -- the command line ----------------------------------------------------------------------------------------


def test_cli_add_list_remove(tmp_path: Path, make_sshd) -> None:
    """`backup-bot server …` as an operator scripts it: exit 0 added, 1 shown but not added, 2 refused."""
    import asyncio

    host = make_sshd("cliserver")
    assert cli(tmp_path, "init").returncode == 0
    base = ["server", "add", "--team", TEAM, "--name", "web", "--host", host.host, "--port", str(host.port)]

    def listed() -> list[dict]:
        shown = cli(tmp_path, "server", "list", "--team", TEAM, "--json")
        assert shown.returncode == 0, shown.stderr
        return json.loads(shown.stdout)

    def clean(result: subprocess.CompletedProcess, code: int) -> str:
        assert result.returncode == code, result.stdout + result.stderr
        assert "Traceback" not in result.stdout + result.stderr
        return " ".join((result.stdout + result.stderr).split())

    shown = clean(cli(tmp_path, *base), 1)
    assert host.host_key_fingerprint in shown and "Nothing was added" in shown and "ssh-keygen -lf" in shown
    as_json = cli(tmp_path, *base, "--json")
    assert as_json.returncode == 1 and json.loads(as_json.stdout) == {
        "added": False, "name": "web", "fingerprint": host.host_key_fingerprint, "key_type": "ssh-ed25519"}
    wrong = clean(cli(tmp_path, *base, "--fingerprint", "SHA256:" + "B" * 43), 2)
    assert "is not the one" in wrong and "nothing was stored" in wrong and listed() == []
    assert "A port must be a whole number" in clean(cli(tmp_path, *base[:-1], "99999"), 2)
    assert "There is no server named 'web'" in clean(cli(tmp_path, "server", "remove", "--team", TEAM, "web"), 2)
    assert "not a Slack team id" in clean(cli(tmp_path, "server", "list", "--team", "nope"), 2)

    added = clean(cli(tmp_path, *base, "--fingerprint", host.host_key_fingerprint), 0)
    assert "Added web" in added and host.host_key_fingerprint in added
    [row] = listed()
    assert {k: row[k] for k in ("name", "address", "fingerprint", "reachable", "chains", "pools")} == {
        "name": "web", "address": f"root@{host.host}:{host.port}", "fingerprint": host.host_key_fingerprint,
        "reachable": None, "chains": [], "pools": []}
    text = clean(cli(tmp_path, "server", "list", "--team", TEAM), 0)
    assert f"web root@{host.host}:{host.port}" in text and "key " + host.host_key_fingerprint in text

    url = f"sqlite://{tmp_path / 'data' / 'backup-bot.sqlite3'}"
    install_keyring(Keyring(dotenv_values(tmp_path / ".env")["BACKUPBOT_SECRET_KEYS"]))

    async def pool_on_web(remove: bool) -> None:
        async with db.database(url):
            if remove:
                await StoragePool.filter(name="main").delete()
                return
            web = await Server.get(name="web")
            await StoragePool.create(team_id=TEAM, name="main", kind=PoolKind.SSH, server=web, base_path="/srv/b")

    try:
        asyncio.run(pool_on_web(False))
        refused = clean(cli(tmp_path, "server", "remove", "--team", TEAM, "web"), 2)
        assert "holds a storage pool (main)" in refused and "Nothing was removed" in refused
        asyncio.run(pool_on_web(True))
    finally:
        install_keyring(None)
    assert "Removed web" in clean(cli(tmp_path, "server", "remove", "--team", TEAM, "web"), 0)
    assert listed() == []


@pytest.mark.parametrize("action", ["list", "add", "remove"])
def test_cli_help_describes_every_option(tmp_path: Path, action: str) -> None:
    shown = cli(tmp_path, "server", action, "--help")
    assert shown.returncode == 0
    flat = " ".join(shown.stdout.split())
    for option in {"list": ["--team", "--json"], "add": ["--name", "--host", "--port", "--user", "--fingerprint"],
                   "remove": ["NAME"]}[action]:  # fmt: skip
        assert option in flat
    assert "Traceback" not in shown.stderr


# -- Slack ---------------------------------------------------------------------------------------------------------


def _shown(messages: list[dict]) -> str:
    return "\n".join(json.dumps(m.get("blocks") or []) + m.get("text", "") for m in messages)


def _buttons(message: dict) -> list[tuple[str, str, str]]:
    from tests.test_reports import buttons

    return buttons(message)


async def test_servers_in_slack_refresh_remove_and_forged_buttons(sqlite_db, tmp_path, make_sshd) -> None:
    """`/backup servers` through the emulator: an admin sees every server with Refresh and (when unused) Remove, and
    a refresh over SSH answers after the ack; a member sees only their server, and their forged Remove or Refresh
    of a server not theirs is refused with the sentence, changing nothing and opening no SSH session."""
    from bot.identity import ensure_identity
    from bot.slack import servers as slack_servers
    from bot.slack.emulator import DEFAULT_USER
    from bot.slack.emulator.messages import Ephemeral
    from tests.test_reports import REPORTS, start_env, wait_for

    identity = await ensure_identity()
    web, other = make_sshd("web"), make_sshd("other")
    for host in (web, other):
        host.authorize(identity.public_key)
    web_row, other_row = await pinned(web), await pinned(other)
    pool = await Tenant(TEAM).create(StoragePool, name="main", kind=PoolKind.LOCAL, base_path="/srv/borg")
    await chain_on(web_row, "nightly", pool)
    bob = "U0BOB"  # a member of the emulated workspace (not a Slack admin)
    await grant(bob, web_row)
    envs = start_env(tmp_path)
    env = await anext(envs)
    try:
        driver, slack = env.driver, env.slack

        async def ask(user: str) -> dict:
            answered = await driver.slash_command("/backup", "servers", user=user, channel=REPORTS)
            assert answered.status == 200
            return answered.json

        admin_view = await ask(DEFAULT_USER)
        text = _shown([admin_view])
        assert "web" in text and "other" in text and "nightly" in text and "borg: unknown" in text
        labels = [(label, value) for label, _, value in _buttons(admin_view)]
        assert labels == [("Refresh", str(other_row.id)), ("Remove", str(other_row.id)), ("Refresh", str(web_row.id))]

        before = traffic(web)
        await driver.click(slack_servers.REFRESH, value=str(web_row.id), user=DEFAULT_USER)
        await wait_for(lambda: f"borg {BORG_VERSION}" in _shown(slack.ephemerals(user=DEFAULT_USER)), within=60)
        shown = _shown(slack.ephemerals(user=DEFAULT_USER))
        assert "Probing web" in shown and "answered" in shown
        row = await Server.get(id=web_row.id)
        assert row.capabilities_detected_at is not None and traffic(web)[1] > before[1]

        member_view = await ask(bob)
        assert "other" not in _shown([member_view]) and "nightly" in _shown([member_view])
        assert [(label, value) for label, _, value in _buttons(member_view)] == [("Refresh", str(web_row.id))]

        # forged: the admin's listing replayed to the member, whose clicks name servers not theirs
        slack.world.messages.ephemerals.append(Ephemeral(REPORTS, bob, admin_view | {"ts": "1.000001"}))
        before = traffic(web), traffic(other)
        await driver.click(slack_servers.REMOVE, value=str(other_row.id), user=bob)
        await wait_for(lambda: "Only admins can remove servers" in _shown(slack.ephemerals(user=bob)))
        await driver.click(slack_servers.REFRESH, value=str(other_row.id), user=bob)
        await wait_for(lambda: "You have no access to the server other" in _shown(slack.ephemerals(user=bob)))
        assert (traffic(web), traffic(other)) == before  # no connection, no session
        assert await Server.exists(id=other_row.id) and await AuditLog.filter(actor=bob).count() == 0

        await ask(DEFAULT_USER)
        await driver.click(slack_servers.REMOVE, value=str(other_row.id), user=DEFAULT_USER)
        await wait_for(lambda: "Removed other" in _shown(slack.ephemerals(user=DEFAULT_USER)))
        assert not await Server.exists(id=other_row.id)
        assert await AuditLog.filter(action="server.remove", actor=DEFAULT_USER).count() == 1
    finally:
        await envs.aclose()
