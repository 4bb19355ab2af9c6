"""``GET /api/backup-wizard/capabilities/{server_id}`` and ``POST /api/backup-wizard/test-connection``.

Every answer is JSON. Errors are ``{"ok": false, "error": "<a sentence>"}`` with a fitting status code;
secrets (database passwords) are accepted in a request body but never returned or logged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field, SecretStr, ValidationError

from bot.api.tokens import team_for_token
from bot.inventory import cached_capabilities, refresh_capabilities, ssh_target
from bot.probes.base import ProbeContext
from bot.probes.dbcheck import DbCredential, check
from bot.probes.registry import default_specs
from bot.runtime import Runtime
from storage.models import AuthMethod, DatabaseCredential, Server, TestStatus
from storage.tenancy import Tenant

PREFIX = "/api/backup-wizard"
RUNTIME = web.AppKey("runtime", Runtime)
TENANT = web.RequestKey("tenant", Tenant)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"ok": False, "error": message}, status=status)


@web.middleware
async def authenticate(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    if not request.path.startswith(PREFIX):
        return await handler(request)
    header = request.headers.get("Authorization", "")
    team_id = await team_for_token(header.removeprefix("Bearer ").strip()) if header.startswith("Bearer ") else None
    if team_id is None:
        return _error(
            401,
            "Send a workspace API token as `Authorization: Bearer …` (create one with "
            "`backup-bot api-token --team <team id>`).",
        )
    request[TENANT] = Tenant(team_id)
    return await handler(request)


async def _server(request: web.Request, server_id: Any) -> Server | web.Response:
    try:
        number = int(server_id)
    except (TypeError, ValueError):
        return _error(400, "server_id must be a number.")
    server = await request[TENANT].get_or_none(Server, id=number)
    if server is None:
        return _error(404, f"There is no server {number} in this workspace.")
    if not server.host_key:
        return _error(409, f"Server {server.name} has no confirmed host key yet: confirm its fingerprint first.")
    return server


async def capabilities(request: web.Request) -> web.Response:
    server = await _server(request, request.match_info["server_id"])
    if isinstance(server, web.Response):
        return server
    refresh = request.query.get("refresh", "").lower() in ("1", "true", "yes")
    try:
        max_age = timedelta(seconds=int(request.query.get("max_age", "3600")))
    except ValueError:
        return _error(400, "max_age must be a number of seconds.")
    runtime: Runtime = request.app[RUNTIME]
    caps = None if refresh else cached_capabilities(server, max_age=max_age)
    if caps is None:
        caps = await refresh_capabilities(server, runtime.pool, default_specs(), alerts=runtime.alerts)
    return web.json_response(
        {
            "ok": True,
            "server_id": server.id,
            "status": server.status.value,
            "problems": caps.problems(),
            "capabilities": caps.model_dump(mode="json"),
        }
    )


class ConnectionTestRequest(BaseModel):
    server_id: int
    credential_id: int | None = None
    engine: str | None = None
    host: str = "localhost"
    port: int | None = Field(default=None, ge=1, le=65535)
    user: str | None = None
    password: SecretStr | None = None
    database: str | None = None


async def test_connection(request: web.Request) -> web.Response:
    try:
        body = ConnectionTestRequest.model_validate(await request.json())
    except (ValueError, ValidationError) as exc:
        fields = ", ".join(str(e["loc"][0]) for e in exc.errors()) if isinstance(exc, ValidationError) else "body"
        return _error(400, f"The request is not valid JSON of the expected shape (check: {fields}).")
    server = await _server(request, body.server_id)
    if isinstance(server, web.Response):
        return server
    stored = None
    if body.credential_id is not None:
        stored = await request[TENANT].get_or_none(DatabaseCredential, id=body.credential_id, server_id=server.id)
        if stored is None:
            return _error(404, f"There is no credential {body.credential_id} on server {server.name}.")
        socket_auth = stored.auth_method == AuthMethod.SOCKET
        credential = DbCredential(
            engine=stored.db_type.value,
            host=stored.host,
            port=stored.port,
            user=stored.username,
            password=None if socket_auth else SecretStr(stored.password.reveal()),
            auth_method="socket" if socket_auth else "password",
        )
    elif body.engine in ("mysql", "postgresql", "mongodb"):
        credential = DbCredential(
            engine=body.engine,
            host=body.host,
            port=body.port,
            user=body.user,
            password=body.password,
            database=body.database,
        )
    else:
        return _error(400, "Give credential_id, or engine (mysql, postgresql or mongodb) with host/port/user.")
    runtime: Runtime = request.app[RUNTIME]
    result = await check(ProbeContext(runtime.pool.transport(ssh_target(server))), credential)
    if stored is not None:
        stored.test_status = TestStatus.SUCCESS if result.ok else TestStatus.FAILED
        stored.last_test_at = datetime.now(UTC)
        await stored.save(update_fields=["test_status", "last_test_at"])
    return web.json_response({"ok": True, "result": result.model_dump(mode="json")})


def add_routes(app: web.Application, runtime: Runtime) -> None:
    app[RUNTIME] = runtime
    app.middlewares.append(authenticate)
    app.router.add_get(f"{PREFIX}/capabilities/{{server_id}}", capabilities)
    app.router.add_post(f"{PREFIX}/test-connection", test_connection)
