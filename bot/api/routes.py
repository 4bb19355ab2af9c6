"""``GET /api/backup-wizard/capabilities/{server_id}`` and ``POST /api/backup-wizard/test-connection``.

Every answer is JSON. Errors are ``{"ok": false, "error": "<a sentence>"}`` with a fitting status code (403: the
token's user may not, 404: not in this workspace, 409: not possible yet); secrets (database passwords) are accepted
in a request body but never returned or logged. The token decides the workspace and the acting user; the service
layer (:mod:`bot.services.servers`) decides what that user may do — this module only parses and renders.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

from aiohttp import web
from pydantic import BaseModel, Field, SecretStr, ValidationError

from bot.access import Actor, Forbidden, NotFound, Refused, resolve_actor
from bot.api.tokens import identity_of
from bot.probes.dbcheck import DbCredential
from bot.runtime import Runtime
from bot.services import servers

PREFIX = "/api/backup-wizard"
RUNTIME = web.AppKey("runtime", Runtime)
ACTOR = web.RequestKey("actor", Actor)
NO_USER = "api"  # the acting "user" of a token created without --user: it has no roles
NO_USER_HINT = (" This token names no user: create one with `backup-bot api-token --team <team id> --user <U…>`; "
                "it acts with that user's roles.")


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"ok": False, "error": message}, status=status)


@web.middleware
async def authenticate(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    if not request.path.startswith(PREFIX):
        return await handler(request)
    header = request.headers.get("Authorization", "")
    found = await identity_of(header.removeprefix("Bearer ").strip()) if header.startswith("Bearer ") else None
    if found is None:
        return _error(
            401,
            "Send a workspace API token as `Authorization: Bearer …` (create one with "
            "`backup-bot api-token --team <team id> --user <U…>`).",
        )
    runtime: Runtime = request.app[RUNTIME]
    request[ACTOR] = await resolve_actor(runtime.directory, found.team_id, found.user_id or NO_USER, via="api")
    return await handler(request)


def _refused(request: web.Request, exc: Refused) -> web.Response:
    status = 403 if isinstance(exc, Forbidden) else 404 if isinstance(exc, NotFound) else 409
    hint = NO_USER_HINT if status == 403 and request[ACTOR].user_id == NO_USER else ""
    return _error(status, exc.sentence + hint)


async def capabilities(request: web.Request) -> web.Response:
    if not request.match_info["server_id"].isdigit():
        return _error(400, "server_id must be a number.")
    refresh = request.query.get("refresh", "").lower() in ("1", "true", "yes")
    try:
        max_age = timedelta(seconds=int(request.query.get("max_age", "3600")))
    except ValueError:
        return _error(400, "max_age must be a number of seconds.")
    runtime: Runtime = request.app[RUNTIME]
    try:
        server, caps = await servers.capabilities(request[ACTOR], request.match_info["server_id"], refresh=refresh,
                                                  max_age=max_age, pool=runtime.pool, alerts=runtime.alerts)
    except Refused as exc:
        return _refused(request, exc)
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
    typed = None
    if body.credential_id is None and body.engine in ("mysql", "postgresql", "mongodb"):
        typed = DbCredential(engine=body.engine, host=body.host, port=body.port, user=body.user,
                             password=body.password, database=body.database)  # fmt: skip
    elif body.credential_id is None:
        return _error(400, "Give credential_id, or engine (mysql, postgresql or mongodb) with host/port/user.")
    runtime: Runtime = request.app[RUNTIME]
    try:
        result = await servers.test_login(request[ACTOR], body.server_id, credential_id=body.credential_id,
                                          typed=typed, pool=runtime.pool)  # fmt: skip
    except Refused as exc:
        return _refused(request, exc)
    return web.json_response({"ok": True, "result": result.model_dump(mode="json")})


def add_routes(app: web.Application, runtime: Runtime) -> None:
    app[RUNTIME] = runtime
    app.middlewares.append(authenticate)
    app.router.add_get(f"{PREFIX}/capabilities/{{server_id}}", capabilities)
    app.router.add_post(f"{PREFIX}/test-connection", test_connection)
