"""API tokens through the real HTTP server: scopes, expiry, revocation, last use, the move of the tokens kept in
workspace settings into indexed rows, the service's role checks and the ``backup-bot api-token`` command."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncssh
import pytest

from bot.access import Actor, Forbidden, NotFound, Refused
from bot.api.tokens import create_token
from bot.inventory import fetch_host_key, pin_host_key
from bot.runtime import Runtime
from bot.services import tokens
from bot.slack.app import serve_http
from bot.transport import SSHPool
from storage.models import ApiToken, AuditLog, Role, RoleGrant, Server, TokenScope, Workspace
from storage.tenancy import Tenant

BIN = Path(sys.executable).parent / "backup-bot"


class Http:
    def __init__(self, base: str, session: aiohttp.ClientSession) -> None:
        self.base, self.session = base, session

    async def call(self, method: str, path: str, token: str, **kwargs) -> tuple[int, str]:
        headers = {"Authorization": f"Bearer {token}"}
        async with self.session.request(method, self.base + path, headers=headers, **kwargs) as response:
            return response.status, await response.text()

    async def error(self, method: str, path: str, token: str, **kwargs) -> tuple[int, str]:
        status, text = await self.call(method, path, token, **kwargs)
        return status, (json.loads(text).get("error") or "") if text.startswith("{") else text


@pytest.fixture
async def http(sqlite_db: str, make_sshd) -> AsyncIterator[tuple[Http, Server, object]]:
    host = make_sshd("tokenhost")
    server = await Tenant("T0001").create(Server, name="db1", host=host.host, port=host.port, username=host.user)
    info = await fetch_host_key(server.host, server.port)
    await pin_host_key(server, info.key_line, info.fingerprint, actor="U0ADMIN")
    await Tenant("T0001").create(RoleGrant, role=Role.ADMIN, subject="U0ADMIN", granted_by="cli")
    runtime = Runtime(settings=None, pool=SSHPool([asyncssh.read_private_key(host.client_key_path)]))
    runner = await serve_http(None, "127.0.0.1", 0, runtime)
    address, port = runner.addresses[0][:2]
    async with aiohttp.ClientSession() as session:
        yield Http(f"http://{address}:{port}", session), server, host
    await runner.cleanup()
    await runtime.close()


CAPS = "/api/backup-wizard/capabilities/{}"


async def test_a_read_token_reads_the_record_and_never_contacts_a_server(http) -> None:
    client, server, host = http
    reader = await create_token("T0001", "U0ADMIN", scope=TokenScope.READ)
    writer = await create_token("T0001", "U0ADMIN", scope=TokenScope.WRITE)
    seen = host.log().count("Connection from")
    status, error = await client.error("GET", CAPS.format(server.id), reader)
    assert status == 403 and "read scope" in error and "no record of it" in error and "--scope write" in error
    status, error = await client.error("GET", CAPS.format(server.id) + "?refresh=1", reader)
    assert status == 403 and "read scope" in error and "--user U0ADMIN --scope write" in error
    login = {"server_id": server.id, "engine": "mysql", "host": "127.0.0.1", "port": 3306, "user": "root"}
    status, error = await client.error("POST", "/api/backup-wizard/test-connection", reader, json=login)
    assert status == 403 and "cannot test database logins" in error
    assert host.log().count("Connection from") == seen  # the read token contacted nothing

    status, _ = await client.call("GET", CAPS.format(server.id) + "?refresh=1", writer)
    assert status == 200 and host.log().count("Connection from") > seen
    seen = host.log().count("Connection from")
    status, text = await client.call("GET", CAPS.format(server.id), reader)
    assert status == 200 and json.loads(text)["capabilities"]["outcomes"]["system"]["value"]["hostname"] == "tokenhost"
    status, error = await client.error("GET", CAPS.format(server.id) + "?max_age=0", reader)
    assert status == 403 and "younger than max_age (0 s)" in error
    assert host.log().count("Connection from") == seen
    status, _ = await client.call("GET", "/metrics", reader)
    assert status == 200


async def test_revoked_and_expired_tokens_get_401_with_a_sentence(http) -> None:
    client, server, _ = http
    admin = Actor.operator("T0001")
    new = await tokens.create(admin, "U0ADMIN", scope=TokenScope.WRITE, lifetime=timedelta(days=1), label="ci")
    assert (await client.call("GET", CAPS.format(server.id), new.secret))[0] == 200
    await tokens.revoke(admin, new.view.id)
    status, error = await client.error("GET", CAPS.format(server.id), new.secret)
    assert status == 401 and error.startswith("This API token was revoked on") and "api-token create" in error
    assert (await client.call("GET", "/metrics", new.secret))[0] == 401
    with pytest.raises(Refused, match="already revoked"):
        await tokens.revoke(admin, new.view.id)

    old = await tokens.create(admin, "U0ADMIN", scope=TokenScope.WRITE, lifetime=timedelta(hours=1))
    await ApiToken.filter(id=old.view.id).update(expires_at=datetime.now(UTC) - timedelta(seconds=1))
    status, error = await client.error("GET", CAPS.format(server.id), old.secret)
    assert status == 401 and error.startswith("This API token expired on") and "--user U0ADMIN" in error
    status, error = await client.error("GET", CAPS.format(server.id), old.secret[:-1] + "x")
    assert status == 401 and "Authorization: Bearer" in error


async def test_last_use_is_recorded_at_most_once_a_minute(http) -> None:
    client, server, _ = http
    token = await create_token("T0001", "U0ADMIN")
    row = await ApiToken.get(token_hash=hashlib.sha256(token.encode()).hexdigest())
    assert row.last_used_at is None
    await client.call("GET", CAPS.format(server.id), token)
    first = (await ApiToken.get(id=row.id)).last_used_at
    assert first is not None
    await client.call("GET", CAPS.format(server.id), token)
    assert (await ApiToken.get(id=row.id)).last_used_at == first
    await ApiToken.filter(id=row.id).update(last_used_at=first - timedelta(seconds=61))
    await client.call("GET", CAPS.format(server.id), token)
    assert (await ApiToken.get(id=row.id)).last_used_at > first


async def test_tokens_kept_in_workspace_settings_move_into_rows_with_their_old_power(http, monkeypatch) -> None:
    client, server, host = http
    with_user, without_user, bare = (tokens.PREFIX + name for name in ("legacy-with-user-0123456789",
                                                                     "legacy-no-user-0123456789", "legacy-bare-01"))
    workspace, _ = await Workspace.get_or_create(team_id="T0001")
    workspace.settings = {**workspace.settings, "approvals": {"mode": "kept"}, tokens.LEGACY_KEY: [
        {"hash": tokens.digest(with_user), "user": "U0ADMIN"}, {"hash": tokens.digest(without_user), "user": None},
        tokens.digest(bare)]}  # fmt: skip
    await workspace.save()
    tokens._migrated.clear()  # a process that has not looked up a token yet

    status, _ = await client.call("GET", CAPS.format(server.id) + "?refresh=1", with_user)
    assert status == 200  # the user's legacy token keeps write power: it may still probe
    for reader in (without_user, bare):
        assert (await client.call("GET", "/metrics", reader))[0] == 200
        status, _ = await client.call("GET", CAPS.format(server.id), reader)
        assert status == 403  # as before: a token without a user touches no server
    rows = await ApiToken.filter(label=tokens.LEGACY_LABEL).order_by("id")
    assert [(r.user_id, r.scope, r.expires_at) for r in rows] == [
        ("U0ADMIN", TokenScope.WRITE, None), (None, TokenScope.READ, None), (None, TokenScope.READ, None)]
    settings = (await Workspace.get(team_id="T0001")).settings
    assert tokens.LEGACY_KEY not in settings and settings["approvals"] == {"mode": "kept"}
    assert await tokens.migrate_legacy() == 0  # idempotent

    async def no_scan(*args, **kwargs):
        raise AssertionError("a token lookup read the workspace rows")

    monkeypatch.setattr(Workspace, "all", no_scan)  # from now on: one indexed lookup per request, nothing else
    seen = host.log().count("Connection from")
    assert (await client.call("GET", CAPS.format(server.id), with_user))[0] == 200
    assert (await client.call("GET", CAPS.format(server.id), tokens.PREFIX + "unknown"))[0] == 401
    assert host.log().count("Connection from") == seen


async def test_who_may_create_list_and_revoke(sqlite_db: str) -> None:
    admin = Actor(team_id="T0001", user_id="U0ADMIN", is_admin=True)
    member = Actor(team_id="T0001", user_id="U0MEMBER")
    other = Actor(team_id="T0002", user_id="U0ADMIN", is_admin=True)
    with pytest.raises(Forbidden, match="Only admins can create API tokens for other users"):
        await tokens.create(member, "U0ADMIN", scope=TokenScope.READ, lifetime=None)
    with pytest.raises(Forbidden):
        await tokens.create(member, None, scope=TokenScope.READ, lifetime=None)
    own = await tokens.create(member, "U0MEMBER", scope=TokenScope.WRITE, lifetime=tokens.parse_expiry("90d"))
    assert own.view.created_by == "U0MEMBER" and own.view.expires_at is not None
    theirs = await tokens.create(admin, "U0OTHER", scope=TokenScope.READ, lifetime=None, label="grafana")
    with pytest.raises(Refused, match="only read /metrics"):
        await tokens.create(admin, None, scope=TokenScope.WRITE, lifetime=None)
    assert [v.id for v in await tokens.list_tokens(member)] == [own.view.id]
    assert [v.id for v in await tokens.list_tokens(admin)] == [theirs.view.id, own.view.id]
    assert await tokens.list_tokens(other) == []
    with pytest.raises(Forbidden, match="Only admins can revoke"):
        await tokens.revoke(member, theirs.view.id)
    with pytest.raises(NotFound):
        await tokens.revoke(other, theirs.view.id)  # another workspace's token looks like a missing one
    assert (await tokens.revoke(member, own.view.id)).state() == "revoked"
    audit = await AuditLog.filter(team_id="T0001", action__startswith="api_token.").values_list("action", "details")
    assert [a for a, _ in audit] == ["api_token.create", "api_token.create", "api_token.revoke"]
    assert not any(own.secret in json.dumps(d) or own.secret[6:20] in json.dumps(d) for _, d in audit)
    assert not any(tokens.digest(own.secret) in json.dumps(d) for _, d in audit)
    for text in ("5x", "0d", "99999y", ""):
        with pytest.raises(Refused, match=r"lifetime|at most"):
            tokens.parse_expiry(text)
    assert tokens.parse_expiry("never") is None and tokens.parse_expiry("12h") == timedelta(hours=12)


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "BACKUPBOT_", "DATABASE_URL"))}
    return subprocess.run([str(BIN), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_the_api_token_command_creates_lists_and_revokes(tmp_path: Path) -> None:
    assert _cli(tmp_path, "init").returncode == 0
    made = _cli(tmp_path, "api-token", "create", "--team", "T0001", "--user", "U0AB", "--scope", "write",
                "--expires", "30d", "--label", "ci deploy")  # fmt: skip
    assert made.returncode == 0, made.stderr
    secret = next(line for line in made.stdout.splitlines() if line.startswith(tokens.PREFIX))
    assert "scope write" in made.stdout and "revoke --team T0001 1" in made.stdout
    old_form = _cli(tmp_path, "api-token", "--team", "T0001", "--user", "U0CD")
    assert old_form.returncode == 0 and "api-token create --team T0001 --user U0CD" in old_form.stderr
    listed = json.loads(_cli(tmp_path, "api-token", "list", "--team", "T0001", "--json").stdout)
    assert [(t["id"], t["scope"], t["user"], t["label"], t["state"]) for t in listed] == [
        (2, "write", "U0CD", "", "active"), (1, "write", "U0AB", "ci deploy", "active")]
    assert listed[0]["expires_at"] is None and listed[1]["expires_at"] is not None
    assert secret not in json.dumps(listed) and tokens.digest(secret) not in json.dumps(listed)
    gone = _cli(tmp_path, "api-token", "revoke", "--team", "T0001", "1")
    assert gone.returncode == 0 and "Revoked API token 1" in gone.stdout
    again = _cli(tmp_path, "api-token", "revoke", "--team", "T0001", "1")
    assert again.returncode == 2 and "already revoked" in again.stderr and "Traceback" not in again.stderr
    listed = json.loads(_cli(tmp_path, "api-token", "list", "--team", "T0001", "--json").stdout)
    assert [t["state"] for t in listed] == ["active", "revoked"]
    bad = _cli(tmp_path, "api-token", "create", "--team", "T0001", "--expires", "soon")
    assert bad.returncode == 2 and "not a token lifetime" in bad.stderr
