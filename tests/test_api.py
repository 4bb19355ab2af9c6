"""The seed's HTTP API: capabilities and test-connection, per-workspace tokens, against real sshd and MariaDB."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import aiohttp
import asyncssh
import pytest

from bot.api.tokens import create_token
from bot.inventory import fetch_host_key, pin_host_key
from bot.runtime import Runtime
from bot.slack.app import serve_http
from bot.transport import SSHPool
from storage.models import DatabaseCredential, Role, RoleGrant, Server, TestStatus
from storage.tenancy import Tenant

PASSWORD = "Very-Recognisable-Pw-42"


class Api:
    def __init__(self, base: str, session: aiohttp.ClientSession, token: str) -> None:
        self.base, self.session, self.token = base, session, token

    async def call(self, method: str, path: str, *, token: str | None = None, **kwargs) -> tuple[int, dict, str]:
        headers = {"Authorization": f"Bearer {token if token is not None else self.token}"}
        async with self.session.request(method, self.base + path, headers=headers, **kwargs) as response:
            text = await response.text()
            return response.status, await response.json(), text


@pytest.fixture
async def api(sqlite_db: str, make_sshd) -> AsyncIterator[tuple[Api, Server, object]]:
    host = make_sshd("apihost")
    server = await Tenant("T0001").create(Server, name="db1", host=host.host, port=host.port, username=host.user)
    runtime = Runtime(settings=None, pool=SSHPool([asyncssh.read_private_key(host.client_key_path)]))
    runner = await serve_http(None, "127.0.0.1", 0, runtime)
    address, port = runner.addresses[0][:2]
    await Tenant("T0001").create(RoleGrant, role=Role.ADMIN, subject="U0ADMIN", granted_by="cli")
    token = await create_token("T0001", "U0ADMIN")
    async with aiohttp.ClientSession() as session:
        yield Api(f"http://{address}:{port}/api/backup-wizard", session, token), server, host
    await runner.cleanup()
    await runtime.close()


async def test_tokens_are_required_and_scope_the_workspace(api) -> None:
    client, server, _ = api
    for token in ("", "bwapi_wrong", "xoxb-not-ours"):
        status, body, _ = await client.call("GET", f"/capabilities/{server.id}", token=token)
        assert status == 401 and "Authorization: Bearer" in body["error"]
    other = await create_token("T0002", "U0ADMIN")
    status, body, _ = await client.call("GET", f"/capabilities/{server.id}", token=other)
    assert status == 404 and "no server" in body["error"]


async def test_a_token_acts_with_its_users_roles_and_a_member_touches_no_server(api) -> None:
    client, server, host = api
    info = await fetch_host_key(server.host, server.port)
    await pin_host_key(server, info.key_line, info.fingerprint, actor="U0ADMIN")
    seen = host.log().count("Connection from")
    member, userless = await create_token("T0001", "U0MEMBER"), await create_token("T0001")
    login = {"server_id": server.id, "engine": "mysql", "host": "127.0.0.1", "port": 3306, "user": "root"}
    for token in (member, userless):
        status, body, _ = await client.call("GET", f"/capabilities/{server.id}?refresh=1", token=token)
        assert status == 403 and body["error"].startswith("You have no access to the server db1")
        status, body, _ = await client.call("POST", "/test-connection", json=login, token=token)
        assert status == 403 and "an admin has to grant it to you" in body["error"]
    assert "names no user" in body["error"]  # the userless token is told how to get one that acts as someone
    assert host.log().count("Connection from") == seen  # not one connection to the server
    await Tenant("T0001").create(RoleGrant, role=Role.OPERATOR, subject="U0MEMBER", server=server, granted_by="cli")
    status, body, _ = await client.call("GET", f"/capabilities/{server.id}", token=member)
    assert status == 200 and body["status"] == "ok"


async def test_capabilities_need_a_confirmed_key_then_are_cached(api) -> None:
    client, server, _host = api
    status, body, _ = await client.call("GET", f"/capabilities/{server.id}")
    assert status == 409 and "confirm its fingerprint" in body["error"]
    info = await fetch_host_key(server.host, server.port)
    await pin_host_key(server, info.key_line, info.fingerprint, actor="U1")
    status, first, _ = await client.call("GET", f"/capabilities/{server.id}")
    assert status == 200 and first["status"] == "ok"
    outcomes = first["capabilities"]["outcomes"]
    assert outcomes["system"]["value"]["hostname"] == "apihost"
    assert outcomes["mysql"]["ok"] and "mongodb" in first["problems"]
    _, cached, _ = await client.call("GET", f"/capabilities/{server.id}")
    assert cached["capabilities"]["collected_at"] == first["capabilities"]["collected_at"]
    _, fresh, _ = await client.call("GET", f"/capabilities/{server.id}?refresh=1")
    assert fresh["capabilities"]["collected_at"] != first["capabilities"]["collected_at"]


async def test_connection_test_with_given_and_stored_credentials(api, mariadb_user) -> None:
    client, server, _ = api
    info = await fetch_host_key(server.host, server.port)
    await pin_host_key(server, info.key_line, info.fingerprint, actor="U1")
    login = mariadb_user(password=PASSWORD)
    ok = {
        "server_id": server.id,
        "engine": "mysql",
        "host": "127.0.0.1",
        "port": login.port,
        "user": login.user,
        "password": PASSWORD,
    }
    status, body, text = await client.call("POST", "/test-connection", json=ok)
    assert status == 200 and body["result"]["ok"], body
    assert PASSWORD not in text
    status, body, text = await client.call("POST", "/test-connection", json={**ok, "password": PASSWORD + "x"})
    assert body["result"]["failure"] == "auth_failed" and body["result"]["fix"]
    assert PASSWORD not in text
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    _, body, _ = await client.call("POST", "/test-connection", json={**ok, "port": closed})
    assert body["result"]["failure"] == "refused"

    stored = await Tenant("T0001").create(
        DatabaseCredential,
        server=server,
        db_type="mysql",
        host="127.0.0.1",
        port=login.port,
        username=login.user,
        password=PASSWORD,
    )
    status, body, text = await client.call(
        "POST", "/test-connection", json={"server_id": server.id, "credential_id": stored.id}
    )
    assert status == 200 and body["result"]["ok"] and PASSWORD not in text
    assert (await DatabaseCredential.get(id=stored.id)).test_status == TestStatus.SUCCESS


async def test_bad_requests_say_what_is_wrong(api) -> None:
    client, _server, _ = api
    status, body, _ = await client.call("POST", "/test-connection", data=b"not json")
    assert status == 400 and "valid JSON" in body["error"]
    status, body, _ = await client.call("POST", "/test-connection", json={"server_id": "x"})
    assert status == 400 and "server_id" in body["error"]
    status, body, _ = await client.call("GET", "/capabilities/abc")
    assert status == 400
