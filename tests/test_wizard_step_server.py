"""Wizard step 1 (server) against real sshd hosts: add → fingerprint → confirm → pinned → probed, the refusals
with the transport's sentences, a changed key on a listed server, fresh capabilities re-used, and the session
keeping the pending fingerprint across a refused submit (through the real controller).

One bot key (``bot_key``) is shared by every host of a test, as the bot's single identity would be.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from bot.access import StaticDirectory
from bot.flows.wizard.controller import Screen, WizardController
from bot.flows.wizard.services import WizardServices
from bot.flows.wizard.steps.backup_type import BackupTypeStep
from bot.flows.wizard.steps.base import WizardContext
from bot.flows.wizard.steps.server import ServerStep
from bot.inventory import fetch_host_key, pin_host_key, refresh_capabilities
from bot.slack.wizard_render import modal
from storage.models import AuditLog, Server, ServerStatus
from storage.tenancy import Tenant
from tests.harness.common import free_port

DIRECTORY = StaticDirectory(admins=frozenset({"U1"}))  # the tests' user is a Slack admin (fixture services)

TEAM = "T0001"


def context(services: WizardServices, data: dict | None = None, team: str = TEAM) -> WizardContext:
    return WizardContext(team_id=team, user_id="U1", session_id="S1", data={} if data is None else data,
                         services=services)  # fmt: skip


def rendered(view, *, errors=None, note=None) -> dict:
    """The modal Slack would get (slack_sdk checks its limits in to_dict)."""
    return modal(Screen("s", "server", "Server", 1, 10, view, errors or {}, note, first=True, slow=True))


async def confirm(step: ServerStep, ctx: WizardContext, typed: str) -> str | None:
    """Press Confirm fingerprint under the key waiting now, with ``typed`` pasted in the fingerprint field."""
    ctx.form = {"fingerprint": typed}
    return await step.act(ctx, "confirm_fingerprint", ctx.data["pending_server"]["fingerprint"])


def new_server(host, name: str | None = None) -> dict:
    return {"host": host.host, "port": str(host.port), "username": host.user, "name": name or host.name}


async def test_add_confirm_pin_and_probe(sqlite_db, make_sshd, bot_key, services) -> None:
    host = make_sshd("alpha", client_key=bot_key[0])
    step, ctx = ServerStep(), context(services)
    first = await step.view(ctx)
    assert [f.name for f in first.fields] == ["server_id", "host", "port", "username", "name"]
    assert first.fields[0].kind == "external_select" and first.fields[2].initial == "22"
    rendered(first)

    errors = await step.submit(ctx, new_server(host))
    assert host.host_key_fingerprint in errors["host"] and "Confirm fingerprint" in errors["host"]
    pending = ctx.data["pending_server"]
    assert pending["fingerprint"] == host.host_key_fingerprint and pending["key_line"] == host.host_public_key
    assert (pending["host"], pending["port"], pending["username"], pending["name"]) == (
        host.host, host.port, "root", "alpha")  # fmt: skip
    row = await Server.get(team_id=TEAM, name="alpha")
    assert row.status == ServerStatus.UNCONFIRMED and row.host_key is None and "server_id" not in ctx.data

    shown = await step.view(ctx)
    assert any(host.host_key_fingerprint in n for n in shown.notes)
    assert [(b.action, b.value) for b in shown.buttons] == [("confirm_fingerprint", host.host_key_fingerprint)]
    assert any(bot_key[1] in n and "authorized_keys" in n for n in shown.notes)  # key + one-line install command
    by_name = {f.name: f for f in shown.fields}
    assert by_name["host"].initial == host.host and {"password", "fingerprint"} <= set(by_name)
    rendered(shown, errors=errors)

    # Refused until the key is confirmed: pressing Next again, or with nothing typed.
    again = await step.submit(ctx, new_server(host))
    assert "Confirm fingerprint" in again["host"]
    assert "Confirm the host key fingerprint" in (await step.submit(ctx, {}))["host"]
    stale = await step.act(ctx, "confirm_fingerprint", "SHA256:notTheOneShown")
    assert "nothing was pinned" in stale and (await Server.get(id=row.id)).host_key is None
    # The button alone pins nothing: the admin must paste the fingerprint they got from the server itself.
    assert "Paste the fingerprint" in await confirm(step, ctx, "")
    wrong = await confirm(step, ctx, "SHA256:" + "A" * 43)
    assert "is not the one" in wrong and "nothing was pinned" in wrong
    assert (await Server.get(id=row.id)).host_key is None
    assert await AuditLog.filter(action="server.pin_refused", object_id=str(row.id)).count() == 1

    note = await confirm(step, ctx, f"256 {host.host_key_fingerprint} root@alpha (ED25519)")  # ssh-keygen -lf line
    assert "pinned" in note and "answered" in note
    row = await Server.get(id=row.id)
    assert row.host_key == host.host_public_key and row.host_key_fingerprint == host.host_key_fingerprint
    assert row.status == ServerStatus.OK and row.capabilities_detected_at is not None
    assert ctx.data["server_id"] == row.id and "pending_server" not in ctx.data

    probed = await step.view(ctx)
    text = "\n".join(probed.notes)
    assert "*alpha*" in text and "borg" in text and "Databases" in text and "Docker" in text
    assert "Snapshots" in text and probed.buttons == ()
    assert probed.fields[0].initial == str(row.id) and probed.fields[0].options[0].value == str(row.id)
    rendered(probed, note=note)

    assert await step.submit(ctx, {"server_id": str(row.id)}) == {}
    assert ctx.data["server_id"] == row.id


async def test_bad_input_and_an_unreachable_port_give_their_sentences(sqlite_db, services) -> None:
    step, ctx = ServerStep(), context(services)
    errors = await step.submit(ctx, {"host": "bad host!", "port": "70000", "username": "9x"})
    assert "DNS name" in errors["host"] and "1 to 65535" in errors["port"] and "user name" in errors["username"]
    closed = free_port("127.0.0.1")
    errors = await step.submit(ctx, {"host": "127.0.0.1", "port": str(closed)})
    assert errors == {"port": f"Connection to 127.0.0.1:{closed} was refused: no SSH server listens there. Check "
                              "the port (sshd's Port setting) and that sshd is running."}  # fmt: skip
    errors = await step.submit(ctx, {"host": "no-such-host.invalid"})
    assert "cannot be resolved" in errors["host"]
    assert await Server.filter(team_id=TEAM).count() == 0 and "pending_server" not in ctx.data
    assert "Choose one of this workspace's servers" in (await step.submit(ctx, {}))["server_id"]


async def test_refused_key_shows_the_install_command_until_it_is_installed(
    sqlite_db, make_sshd, bot_key, services
) -> None:
    host = make_sshd("nokey", client_key=bot_key[0], authorize_client=False)
    step, ctx = ServerStep(), context(services)
    await step.submit(ctx, new_server(host))
    note = await confirm(step, ctx, host.host_key_fingerprint)
    assert "pinned" in note and "refused the bot's SSH key" in note
    server_id = ctx.data["server_id"]
    view = await step.view(ctx)
    assert any("sh -c" in n and bot_key[1] in n for n in view.notes) and "password" in [f.name for f in view.fields]
    errors = await step.submit(ctx, {"server_id": str(server_id)})
    assert "refused the bot's SSH key" in errors["server_id"] and "authorized_keys" in errors["server_id"]
    host.add_authorized_key(bot_key[1])  # what the person's paste of the command does
    assert await step.submit(ctx, {"server_id": str(server_id)}) == {}


async def test_one_time_password_installs_the_key_and_is_not_kept(sqlite_db, make_sshd, bot_key, services) -> None:
    host = make_sshd("pwonly", nonroot=True, password_auth=True, client_key=bot_key[0], authorize_client=False)
    step, ctx = ServerStep(), context(services)
    await step.submit(ctx, new_server(host))
    await confirm(step, ctx, host.host_key_fingerprint)
    server_id = str(ctx.data["server_id"])
    wrong = await step.submit(ctx, {"server_id": server_id, "password": "not-" + host.password})
    assert "refused the password" in wrong["password"]
    assert await step.submit(ctx, {"server_id": server_id, "password": host.password}) == {}
    assert bot_key[1] in (host.home / ".ssh" / "authorized_keys").read_text()
    row = await Server.get(id=int(server_id))
    assert host.password not in json.dumps(ctx.data) and host.password not in json.dumps(row.capabilities)


async def pinned(host, name: str, services: WizardServices, team: str = TEAM) -> Server:
    server = await Tenant(team).create(Server, name=name, host=host.host, port=host.port, username=host.user)
    info = await fetch_host_key(host.host, host.port)
    await pin_host_key(server, info.key_line, info.fingerprint, actor="U1")
    await refresh_capabilities(server, services.pool, services.specs)
    return server


async def test_changed_host_key_on_a_listed_server_is_refused(sqlite_db, make_sshd, bot_key, services) -> None:
    host = make_sshd("rekeyed", client_key=bot_key[0])
    server = await pinned(host, "rekeyed", services)
    old = host.host_key_fingerprint
    host.restart(new_host_key=True)
    seen = []
    services.alerts.subscribe(seen.append)
    step, ctx = ServerStep(), context(services)
    errors = await step.submit(ctx, {"server_id": str(server.id)})
    expected = (f"The SSH host key of {host.host}:{host.port} has changed: pinned {old}, presented "
                f"{host.host_key_fingerprint}. The connection was refused.")  # fmt: skip
    assert errors["server_id"].startswith(expected)
    assert "re-pin" in errors["server_id"] and ctx.data["pending_server"]["fingerprint"] == host.host_key_fingerprint
    row = await Server.get(id=server.id)
    assert row.status == ServerStatus.HOST_KEY_CHANGED and row.host_key_fingerprint == old
    assert [a.kind for a in seen] == ["host_key_changed"]
    # Only the person's confirmation of the new fingerprint re-pins it.
    assert "pinned" in await confirm(step, ctx, host.host_key_fingerprint)
    assert (await Server.get(id=server.id)).host_key_fingerprint == host.host_key_fingerprint
    assert await step.submit(ctx, {"server_id": str(server.id)}) == {}


async def test_listed_servers_are_searched_per_workspace_and_fresh_capabilities_reused(
    sqlite_db, make_sshd, bot_key, services
) -> None:
    host = make_sshd("listed", client_key=bot_key[0])
    server = await pinned(host, "web-1", services)
    await Tenant("T0002").create(Server, name="web-other", host="10.0.0.9", port=22, username="root")
    step, ctx = ServerStep(), context(services)
    assert [o.value for o in await step.options(ctx, "server_id", "web")] == [str(server.id)]
    assert [o.value for o in await step.options(ctx, "server_id", host.host)] == [str(server.id)]
    assert [o.value for o in await step.options(ctx, "server_id", "")] == [str(server.id)]
    assert await step.options(ctx, "server_id", "nothing-like-this") == []
    assert "web-1" in (await step.options(ctx, "server_id", ""))[0].label
    foreign = await Server.get(name="web-other")
    assert "not in this workspace" in (await step.submit(ctx, {"server_id": str(foreign.id)}))["server_id"]

    probed_at = (await Server.get(id=server.id)).capabilities_detected_at
    assert await step.submit(ctx, {"server_id": str(server.id)}) == {}
    assert (await Server.get(id=server.id)).capabilities_detected_at == probed_at  # fresh: re-used
    await Server.filter(id=server.id).update(capabilities_detected_at=datetime.now(UTC) - timedelta(hours=2))
    assert await step.submit(ctx, {"server_id": str(server.id)}) == {}
    assert (await Server.get(id=server.id)).capabilities_detected_at > probed_at  # stale: probed again
    # Typing the host of a known server picks that server instead of adding a duplicate.
    assert await step.submit(ctx, new_server(host, "another-name")) == {}
    assert await Server.filter(team_id=TEAM).count() == 1
    # A name already used by another server is refused inline.
    other = make_sshd("other", client_key=bot_key[0])
    errors = await step.submit(ctx, new_server(other, "web-1"))
    assert "already exists" in errors["name"]


async def test_the_session_keeps_the_pending_fingerprint_through_the_controller(
    sqlite_db, make_sshd, bot_key, services
) -> None:
    host = make_sshd("ctl", client_key=bot_key[0])
    controller = WizardController(lambda: [ServerStep(), BackupTypeStep()], services)
    tenant = Tenant(TEAM)
    screen = await controller.start(tenant, "U1", "C1")
    refused = await controller.submit(tenant, "U1", screen.session_id, new_server(host))
    assert refused.step == "server" and host.host_key_fingerprint in refused.errors["host"]
    modal(refused)
    confirmed = await controller.act(tenant, "U1", screen.session_id, "confirm_fingerprint",
                                     host.host_key_fingerprint,
                                     form={"fingerprint": host.host_key_fingerprint})  # fmt: skip
    assert "pinned" in confirmed.note
    modal(confirmed)
    done = await controller.submit(tenant, "U1", screen.session_id, {"server_id": confirmed.view.fields[0].initial})
    assert done.step == "type" and not done.errors
