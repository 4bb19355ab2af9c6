"""Roles enforced before anything touches a server (issue 10), against real sshd.

Each sshd's log (LogLevel VERBOSE) records every TCP connection ("Connection from") and every command session
("Starting session"), so "nothing happened on the server" is read from the server itself, not from the bot.
"""

from __future__ import annotations

import pytest

from bot.access import Actor, Forbidden, StaticDirectory, authz, resolve_actor
from bot.flows.wizard.services import WizardServices
from bot.flows.wizard.steps.base import WizardContext
from bot.flows.wizard.steps.server import ServerStep
from bot.flows.wizard.steps.snapshot import SnapshotStep
from bot.flows.wizard.steps.source import SourceStep
from bot.flows.wizard.steps.validation import validate
from bot.inventory import fetch_host_key, pin_host_key, refresh_capabilities
from bot.services import runs, servers
from storage.models import (
    AuditLog,
    BackupChain,
    BackupSource,
    PoolKind,
    Repository,
    Role,
    RoleGrant,
    Run,
    Server,
    StoragePool,
)
from storage.tenancy import Tenant

TEAM = "T0001"
ADMIN, MEMBER, OPERATOR = "U0ADMIN", "U0MEMBER", "U0OPER"
DIRECTORY = StaticDirectory(admins=frozenset({ADMIN}), groups={"S0OPS": frozenset({OPERATOR})})


def traffic(host) -> tuple[int, int]:
    """(TCP connections, command sessions) the sshd has seen so far."""
    log = host.log()
    return log.count("Connection from"), log.count("Starting session")


def context(services: WizardServices, user: str, data: dict | None = None) -> WizardContext:
    return WizardContext(team_id=TEAM, user_id=user, session_id="S1", data=data or {}, services=services)


async def added(host, services: WizardServices) -> Server:
    """A server an admin added earlier: key pinned, capabilities probed."""
    server = await Tenant(TEAM).create(Server, name=host.name, host=host.host, port=host.port, username=host.user)
    info = await fetch_host_key(host.host, host.port)
    await pin_host_key(server, info.key_line, info.fingerprint, actor=ADMIN)
    await refresh_capabilities(server, services.pool, services.specs)
    return await Server.get(id=server.id)


async def grant(subject: str, *, server: Server | None = None, pool: StoragePool | None = None,
                paths: list[str] | None = None, role: Role = Role.OPERATOR) -> None:  # fmt: skip
    await Tenant(TEAM).create(RoleGrant, role=role, subject=subject, server=server, pool=pool, paths=paths or [],
                              granted_by=ADMIN)  # fmt: skip


# -- who is who ----------------------------------------------------------------------------------------------


async def test_admins_come_from_slack_or_from_grants_to_users_and_groups(sqlite_db) -> None:
    assert (await resolve_actor(DIRECTORY, TEAM, ADMIN)).is_admin  # a Slack admin
    assert not (await resolve_actor(DIRECTORY, TEAM, MEMBER)).is_admin
    await grant("S0OPS", role=Role.ADMIN)
    operator = await resolve_actor(DIRECTORY, TEAM, OPERATOR)
    assert operator.is_admin and operator.groups == frozenset({"S0OPS"})  # admin through the group
    assert not (await resolve_actor(DIRECTORY, "T0002", OPERATOR)).is_admin  # not in another workspace
    sentence = await authz.who_can_allow(TEAM)
    assert sentence == "ask <!subteam^S0OPS> or a Slack workspace admin"


def test_path_prefixes_match_whole_components_after_normalising() -> None:
    assert authz.within("/srv/app", ["/srv/app"]) and authz.within("/srv/app/x/y", ["/srv/app/"])
    assert not authz.within("/srv/application", ["/srv/app"])
    assert not authz.within("/srv/app/../../etc", ["/srv/app"])  # normalised to /etc first
    assert not authz.within("srv/app", ["/srv/app"])  # not absolute
    assert authz.within("/anything", ["/"])


async def test_operator_scopes_add_up_and_an_unlimited_grant_lifts_limits(sqlite_db) -> None:
    server = await Tenant(TEAM).create(Server, name="s", host="s.example.com")
    assert await authz.server_scope(await resolve_actor(DIRECTORY, TEAM, OPERATOR), server.id) is None
    await grant(OPERATOR, server=server, paths=["/srv/a"])
    await grant("S0OPS", server=server, paths=["/srv/b"])
    actor = await resolve_actor(DIRECTORY, TEAM, OPERATOR)  # resolved per request: now in a group that matters
    scope = await authz.server_scope(actor, server.id)
    assert scope is not None and set(scope.paths or ()) == {"/srv/a", "/srv/b"} and scope.databases is None
    await grant("everyone", server=server)
    assert (await authz.server_scope(actor, server.id)).paths is None


# -- nothing reaches a server without a role ----------------------------------------------------------------


async def test_a_member_without_a_grant_causes_nothing_on_any_server(sqlite_db, make_sshd, bot_key,
                                                                    services) -> None:  # fmt: skip
    known = make_sshd("known", client_key=bot_key[0])
    server = await added(known, services)
    pool_host = make_sshd("poolhost", client_key=bot_key[0])
    pool_server = await added(pool_host, services)
    pool = await Tenant(TEAM).create(StoragePool, name="main", kind=PoolKind.SSH, server=pool_server,
                                     base_path=str(pool_host.workdir / "repos"))  # fmt: skip
    stranger = make_sshd("stranger", client_key=bot_key[0])
    before = traffic(known), traffic(pool_host), traffic(stranger)
    step, ctx = ServerStep(), context(services, MEMBER)

    assert await step.options(ctx, "server_id", "") == []
    view = await step.view(ctx)
    assert [f.name for f in view.fields] == ["server_id"] and "No server is granted to you" in view.heading
    refused = await step.submit(ctx, {"host": stranger.host, "port": str(stranger.port)})
    assert refused["host"] == "Only admins can add servers — ask a Slack workspace admin."
    forged = await step.submit(ctx, {"server_id": str(server.id)})  # an id from someone else's screen
    assert forged["server_id"].startswith("You have no access to the server known")

    data = {"server_id": server.id, "backup_type": "files", "source": {"paths": ["/etc"]}, "pool_id": pool.id,
            "snapshot": {"method": "none"}}  # a forged session: answers for steps the member never passed
    source = await SourceStep().submit(context(services, MEMBER, dict(data)), {"paths": "/etc"})
    assert source["paths"].startswith("You have no access to the server known")
    checked = await validate(context(services, MEMBER, dict(data)))
    assert not checked["ok"] and checked["steps"][-1]["name"] == "permissions"
    assert (traffic(known), traffic(pool_host), traffic(stranger)) == before  # not one connection, not one command
    assert not (pool_host.workdir / "repos").exists() or not any((pool_host.workdir / "repos").iterdir())
    assert await Server.filter(team_id=TEAM).count() == 2  # the stranger was not added


async def test_an_operator_is_held_to_the_grants_path_prefixes(sqlite_db, make_sshd, bot_key, services) -> None:
    host = make_sshd("limited", client_key=bot_key[0])
    server = await added(host, services)
    allowed = host.workdir / "app"
    (allowed / "data").mkdir(parents=True)
    (allowed / "data" / "f.txt").write_text("x" * 100)
    await grant("S0OPS", server=server, paths=[str(allowed)])
    step = SourceStep()
    assert [o.value for o in await ServerStep().options(context(services, OPERATOR), "server_id", "")] == [
        str(server.id)]  # fmt: skip
    before = traffic(host)
    for path in ("/etc", f"{allowed}x", f"{allowed}/../../../etc"):
        ctx = context(services, OPERATOR, {"server_id": server.id, "backup_type": "files"})
        errors = await step.submit(ctx, {"paths": path})
        if ".." in path:  # refused as input already: the grant is never the only guard against traversal
            assert "may not contain '..'" in errors["paths"]
            continue
        assert "is outside what you may back up on limited" in errors["paths"] and str(allowed) in errors["paths"]
    assert traffic(host)[1] == before[1]  # no du ran for any of them
    system = await step.submit(context(services, OPERATOR, {"server_id": server.id, "backup_type": "system"}), {})
    assert "reaches every file" in system["extra_filesystems"]
    ctx = context(services, OPERATOR, {"server_id": server.id, "backup_type": "files"})
    assert await step.submit(ctx, {"paths": f"{allowed}/data"}) == {}
    assert traffic(host)[1] > before[1] and ctx.data["source"]["paths"] == [f"{allowed}/data"]
    snap = await SnapshotStep().submit(ctx, {"method": "btrfs"})
    assert snap["method"].startswith("Only admins can take snapshots")


async def test_running_a_chain_needs_its_creator_an_operator_of_its_server_or_an_admin(sqlite_db) -> None:
    tenant = Tenant(TEAM)
    pool = await tenant.create(StoragePool, name="p", kind=PoolKind.LOCAL, base_path="/srv/borg")
    repo = await tenant.create(Repository, pool=pool, name="r", path="/srv/borg/r", passphrase="pw")
    chain = await tenant.create(BackupChain, name="c", repository=repo, status="active", created_by="U0CAROL")
    server = await tenant.create(Server, name="s", host="s.example.com")
    await chain.sources.add(await tenant.create(BackupSource, server=server, name="c", type="files"))
    member = await resolve_actor(DIRECTORY, TEAM, MEMBER)
    with pytest.raises(Forbidden, match="only its creator, the operators of its server and admins"):
        await runs.run_now(member, chain.id)
    assert await Run.all().count() == 0
    assert await AuditLog.filter(actor=MEMBER, action="chain.run_now").values_list("details", flat=True) == [
        {"via": "slack", "outcome": "denied"}]  # fmt: skip
    await grant(MEMBER, server=server)
    queued = await runs.run_now(await resolve_actor(DIRECTORY, TEAM, MEMBER), chain.id)
    assert queued.created and (await Run.get(id=queued.run_id)).requested_by == MEMBER
    other = Actor("T0002", ADMIN, is_admin=True)  # an admin of another workspace
    with pytest.raises(Forbidden.__mro__[1], match="no longer exists"):
        await runs.run_now(other, chain.id)


# -- host keys are an admin's, with a fingerprint from elsewhere -----------------------------------------------


async def test_repinning_a_changed_key_needs_an_admin_and_the_right_fingerprint(sqlite_db, make_sshd, bot_key,
                                                                              services) -> None:  # fmt: skip
    host = make_sshd("rekey", client_key=bot_key[0])
    server = await added(host, services)
    old = server.host_key_fingerprint
    host.restart(new_host_key=True)
    notices = []
    services.alerts.subscribe(notices.append)
    await grant(MEMBER, server=server)
    member_ctx = context(services, MEMBER)
    refused = await ServerStep().submit(member_ctx, {"server_id": str(server.id)})
    assert "has changed" in refused["server_id"] and "Only admins can re-pin" in refused["server_id"]
    assert "pending_server" not in member_ctx.data
    info = await fetch_host_key(host.host, host.port)
    member_ctx.data["pending_server"] = {"host": host.host, "port": host.port, "username": host.user,
                                        "name": server.name, "key_line": info.key_line,
                                        "fingerprint": info.fingerprint}  # a forged confirmation  # fmt: skip
    member_ctx.form = {"fingerprint": info.fingerprint}
    note = await ServerStep().act(member_ctx, "confirm_fingerprint", info.fingerprint)
    assert "Only admins can confirm or re-pin host keys" in note
    assert (await Server.get(id=server.id)).host_key_fingerprint == old

    admin = await resolve_actor(DIRECTORY, TEAM, ADMIN)
    with pytest.raises(servers.Refused, match="is not the one"):
        await servers.confirm_key(admin, server, info.key_line, old, alerts=services.alerts)
    assert (await Server.get(id=server.id)).host_key_fingerprint == old and notices[-1].kind == "host_key_changed"
    await servers.confirm_key(admin, server, info.key_line, info.fingerprint.removeprefix("SHA256:"),
                              alerts=services.alerts)  # fmt: skip
    assert (await Server.get(id=server.id)).host_key_fingerprint == info.fingerprint
    notice = notices[-1]
    assert notice.kind == servers.ADMIN_NOTICE and info.fingerprint in notice.message and old in notice.message
    assert f"<@{ADMIN}> re-pinned" in notice.message
    audit = await AuditLog.filter(object_id=str(server.id)).order_by("id").values_list("action", flat=True)
    assert audit[-2:] == ["server.pin_refused", "server.pin_host_key"]


def test_typed_fingerprints_are_read_from_what_admins_paste() -> None:
    fp = "SHA256:" + "Ab1+/" * 8 + "xyz"
    assert servers.typed_fingerprint(fp) == fp
    assert servers.typed_fingerprint(fp.removeprefix("SHA256:")) == fp
    assert servers.typed_fingerprint(f"256 {fp} root@host (ED25519)") == fp
    assert servers.typed_fingerprint("yes") is None and servers.typed_fingerprint("") is None


# -- admin-only operations of the service layer ----------------------------------------------------------------


async def test_pools_servers_logins_and_roles_are_changed_by_admins_only(sqlite_db) -> None:
    from bot.services import credentials, pools, roles

    tenant = Tenant(TEAM)
    server = await tenant.create(Server, name="db1", host="db1.example.com", host_key="ssh-ed25519 AAAA",
                                 host_key_fingerprint="SHA256:x")  # fmt: skip
    member, admin = await resolve_actor(DIRECTORY, TEAM, MEMBER), await resolve_actor(DIRECTORY, TEAM, ADMIN)
    refusals = [
        pools.add_pool(member, pools.NewPool(name="main", path="/srv/borg"), pools.PoolTools()),
        pools.remove_pool(member, "main"),
        servers.remove(member, "db1"),
        credentials.store_login(member, server, "mysql", host="localhost", port=3306, user="u", password="pw"),
        roles.grant_admin(member, MEMBER),
        roles.grant_operator(member, MEMBER, server="db1"),
        roles.set_admin_channel(member, "C0ADMINS"),
    ]
    for attempt in refusals:
        with pytest.raises(Forbidden, match=r"^Only admins can .* — ask a Slack workspace admin\.$"):
            await attempt
    assert await StoragePool.all().count() == 0 and await RoleGrant.all().count() == 0
    assert await AuditLog.all().count() == 0

    # Real adds (borg, directory, free space checked on the host) are tested in tests/test_pools.py; db1 is fake.
    await tenant.create(StoragePool, name="main", server=server, base_path="/srv/borg", quota_bytes=10**12)
    with pytest.raises(servers.Refused, match="not a usable pool directory"):
        await pools.add_pool(admin, pools.NewPool(name="bad", path="relative/dir"), pools.PoolTools())
    login = await credentials.store_login(admin, server, "mysql", host="localhost", port=3306, user="u",
                                          password="Secret-Pw-1")  # fmt: skip
    assert login.password.reveal() == "Secret-Pw-1"
    grant = await roles.grant_operator(admin, "<@U0MEMBER|mia>", server="db1", paths=["/srv/app/", "/srv/app"],
                                       databases=["shop"])  # fmt: skip
    assert (grant.subject, grant.target, grant.paths, grant.databases) == (MEMBER, "server db1", ("/srv/app",),
                                                                           ("shop",))  # fmt: skip
    with pytest.raises(servers.Refused, match="not an absolute path"):
        await roles.grant_operator(admin, MEMBER, server="db1", paths=["srv"])
    mine = await roles.show(await resolve_actor(DIRECTORY, TEAM, MEMBER))
    assert not mine.everything and [g.id for g in mine.grants] == [grant.id]
    with pytest.raises(servers.Refused, match="holds a storage pool"):
        await servers.remove(admin, "db1")
    await pools.remove_pool(admin, "main")
    await roles.revoke(admin, grant.id)
    actions = await AuditLog.filter(team_id=TEAM).order_by("id").values_list("action", flat=True)
    assert actions == ["credential.store", "role.grant", "pool.remove", "role.revoke"]
    assert "Secret-Pw-1" not in str(await AuditLog.all().values_list("details", flat=True))


async def test_roles_through_slack(sqlite_db, tmp_path) -> None:
    """`/backup roles` through the emulator: an admin grants, a member sees their own roles and cannot grant."""
    import json

    from bot.config import load_settings
    from bot.slack.app import build_app, serve_http
    from bot.slack.emulator import DEFAULT_BOT_TOKEN, DEFAULT_USER, SlackDriver, SlackEmulator
    from storage.crypto import generate_key

    await Tenant(TEAM).create(Server, name="web 1", host="web1.example.com")
    async with SlackEmulator() as slack:
        slack.add_user(MEMBER, name="mia")
        settings = load_settings(tmp_path / "none.env", SLACK_BOT_TOKEN=DEFAULT_BOT_TOKEN, SLACK_SIGNING_SECRET="s",
                                 SLACK_API_URL=slack.api_url, BACKUPBOT_SECRET_KEYS=generate_key())  # fmt: skip
        runner = await serve_http(build_app(settings), "127.0.0.1", 0)
        host, port = runner.addresses[0][:2]
        driver = SlackDriver.over_http(slack, f"http://{host}:{port}/slack/events", "s")
        try:
            async def say(text: str, user: str) -> str:
                answered = await driver.slash_command("/backup", f"roles {text}".strip(), user=user)
                return json.dumps(answered.json["blocks"])

            refused = await say(f"grant <@{MEMBER}|mia> server web 1", MEMBER)
            assert "Only admins can grant roles" in refused and await RoleGrant.all().count() == 0
            granted = await say(f"grant <@{MEMBER}|mia> server web 1 paths /srv/www", DEFAULT_USER)  # a Slack admin
            assert "operator of server web 1" in granted and "/srv/www" in granted
            own = await say("", MEMBER)
            assert "Your roles here" in own and "server web 1" in own and "ask" in own
            everything = await say("", DEFAULT_USER)
            assert "Roles in this workspace" in everything
            grant = await RoleGrant.get(subject=MEMBER)
            assert "Revoked" in await say(f"revoke {grant.id}", DEFAULT_USER) and await RoleGrant.all().count() == 0
        finally:
            await driver.aclose()
            await runner.cleanup()


async def test_disruptive_options_and_whole_server_backups_need_an_admin(sqlite_db) -> None:
    """The wizard's gate on a source (no server is contacted to decide): table locks, stopping or pausing
    containers and snapshots are an admin's; an operator's database limits hold; an operator limited to paths may
    not back up the whole system or Docker."""
    from bot.services import gate

    tenant = Tenant(TEAM)
    server = await tenant.create(Server, name="db1", host="db1.example.com", host_key="ssh-ed25519 AAAA")
    await grant(OPERATOR, server=server)
    await tenant.create(RoleGrant, role=Role.OPERATOR, subject="S0OPS", server=server, paths=["/srv"],
                        databases=["shop"], granted_by=ADMIN)  # fmt: skip
    operator = await resolve_actor(DIRECTORY, TEAM, OPERATOR)  # unlimited through their own grant
    await gate.check_source(operator, server, "mysql", {"databases": [], "lock_non_transactional": False})
    for source, kind, words in (
        ({"databases": ["shop"], "lock_non_transactional": True}, "mysql", "Only admins can lock tables"),
        ({"volumes": ["v"], "policies": {"db": "stop"}}, "docker", "Only admins can stop containers"),
    ):
        with pytest.raises(Forbidden, match=words):
            await gate.check_source(operator, server, kind, source)
    with pytest.raises(Forbidden, match="Only admins can take snapshots"):
        await gate.check_snapshot(operator, "lvm")
    await RoleGrant.filter(subject=OPERATOR).delete()
    limited = await resolve_actor(DIRECTORY, TEAM, OPERATOR)  # now only the group's limited grant
    with pytest.raises(Forbidden, match="The database crm is outside"):
        await gate.check_source(limited, server, "postgresql", {"databases": ["shop", "crm"]})
    with pytest.raises(Forbidden, match="choose them by name instead of all databases"):
        await gate.check_source(limited, server, "postgresql", {"databases": []})
    with pytest.raises(Forbidden, match="A full-system backup reaches every file on db1"):
        await gate.check_source(limited, server, "system", {})
    await gate.check_source(limited, server, "files", {"paths": ["/srv/app"]})
    admin = await resolve_actor(DIRECTORY, TEAM, ADMIN)
    await gate.check_source(admin, server, "docker", {"volumes": ["v"], "policies": {"db": "stop"}})


async def test_a_member_sees_and_stores_into_granted_pools_only(sqlite_db, tmp_path, services) -> None:
    from bot.flows.wizard.steps.pool import PoolStep

    tenant = Tenant(TEAM)
    mine = await tenant.create(StoragePool, name="mine", kind=PoolKind.LOCAL, base_path=str(tmp_path / "mine"))
    theirs = await tenant.create(StoragePool, name="theirs", kind=PoolKind.LOCAL, base_path=str(tmp_path / "t"))
    await grant(MEMBER, pool=mine)
    step = PoolStep()
    ctx = context(services, MEMBER, {"backup_type": "files", "source": {"paths": ["/etc"]}})
    view = await step.view(ctx)
    [field] = view.fields
    assert [o.value for o in field.options] == [str(mine.id)]
    refused = await step.submit(ctx, {"pool_id": str(theirs.id)})
    assert refused["pool_id"].startswith("You have no access to the storage pool theirs")
    nothing = await step.view(context(services, "U0NOBODY"))
    assert "No storage pool is granted to you yet" in nothing.notes[0]


async def test_the_repository_step_asks_the_pool_nothing_once_the_pool_grant_is_gone(sqlite_db, services) -> None:
    """A session whose pool was granted when it was chosen, and no longer is: the Repository step refuses before it
    looks on the pool (the pool's address does not even resolve: any attempt would be a different error)."""
    from bot.flows.wizard.steps.repository import RepositoryStep

    tenant = Tenant(TEAM)
    source = await tenant.create(Server, name="src", host="src.invalid", host_key="ssh-ed25519 AAAA")
    pool_host = await tenant.create(Server, name="poolhost", host="pool.invalid", host_key="ssh-ed25519 AAAA")
    pool = await tenant.create(StoragePool, name="main", kind=PoolKind.SSH, server=pool_host, base_path="/srv/borg")
    await grant(MEMBER, server=source)
    ctx = context(services, MEMBER, {"server_id": source.id, "backup_type": "files", "pool_id": pool.id})
    errors = await RepositoryStep().submit(ctx, {"mode": "new", "name": "src-files", "encryption": "repokey-blake2"})
    assert errors == {"name": "You have no access to the storage pool main: an admin has to grant it to you — ask a "
                              "Slack workspace admin."}  # fmt: skip
    assert "repository" not in ctx.data


async def test_host_key_pins_are_told_to_the_admins_in_slack(sqlite_db, tmp_path) -> None:
    """The notice of a pin reaches Slack through the outbox: a DM to each admin named in the roles and to the admin
    who pinned, or the admins' channel once one is set."""
    from bot.alerts import Alert
    from tests.test_reports import APPROVALS, start_env, wait_for

    envs = start_env(tmp_path)
    env = await anext(envs)
    try:
        env.slack.add_user(ADMIN)
        await grant("U0LEAD", role=Role.ADMIN)
        notice = Alert(team_id=TEAM, kind=servers.ADMIN_NOTICE, message=":key: <@U0ADMIN> re-pinned the host key",
                       details={"actor": ADMIN})  # fmt: skip
        await env.bus.publish(notice)

        def dms_to(user: str) -> list[str]:
            opened = [c for c in env.slack.calls_to("conversations.open") if c.params.get("users") == user and c.ok]
            return [m["text"] for c in opened for m in env.slack.messages(c.response["channel"]["id"])]

        await wait_for(lambda: dms_to("U0LEAD") and dms_to(ADMIN))
        assert dms_to("U0LEAD") == [notice.message] and dms_to(ADMIN) == [notice.message]
        admin = Actor(TEAM, ADMIN, is_admin=True)
        from bot.services import roles

        assert await roles.set_admin_channel(admin, f"<#{APPROVALS}|approvals>") == APPROVALS
        await env.bus.publish(notice)
        await wait_for(lambda: env.slack.messages(APPROVALS))
        assert [m["text"] for m in env.slack.messages(APPROVALS)] == [notice.message]
        assert len(dms_to("U0LEAD")) == 1  # the channel instead of DMs
    finally:
        await envs.aclose()


async def test_the_slack_directory_asks_once_and_never_makes_an_admin_of_a_failure() -> None:
    """Through the emulator: concurrent questions about one user share one users.info; answers are remembered; an
    admin of another workspace is not one here; Slack refusing the call (an unknown user) is a "no"."""
    import asyncio

    from slack_sdk.web.async_client import AsyncWebClient

    from bot.slack.actors import SlackDirectory
    from bot.slack.emulator import DEFAULT_BOT_TOKEN, DEFAULT_USER, SlackEmulator

    async with SlackEmulator() as slack:
        directory = SlackDirectory(AsyncWebClient(token=DEFAULT_BOT_TOKEN, base_url=slack.api_url))
        answers = await asyncio.gather(*(directory.is_workspace_admin(TEAM, DEFAULT_USER) for _ in range(5)))
        assert answers == [True] * 5 and len(slack.calls_to("users.info")) == 1
        assert await directory.user(DEFAULT_USER) and len(slack.calls_to("users.info")) == 1  # remembered
        assert not await directory.is_workspace_admin("T0OTHER", DEFAULT_USER)  # their admin, not ours
        assert not await directory.is_workspace_admin(TEAM, "U0NOSUCH")  # users.info refused: no
        assert not await directory.is_workspace_admin(TEAM, "U0NOSUCH") and len(slack.calls_to("users.info")) == 3
