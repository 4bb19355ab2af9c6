"""``GET /api/backup-wizard/capabilities/{server_id}`` and ``POST /api/backup-wizard/test-connection``.

Every answer is JSON. Errors are ``{"ok": false, "error": "<a sentence>"}`` with a fitting status code (401: no
usable token — unknown, revoked or expired, 403: the token's user or its read scope may not, 404: not in this
workspace, 409: not possible yet); secrets (database passwords) are accepted
in a request body but never returned or logged. The token decides the workspace and the acting user; the service
layer (:mod:`bot.services.servers`) decides what that user may do — this module only parses and renders.

A ``read`` token changes nothing and contacts no server: it gets capabilities from the bot's record only (403 for
``refresh`` or when the record is missing or older than ``max_age``) and no connection test.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

from aiohttp import web
from pydantic import BaseModel, Field, SecretStr, ValidationError

from bot.access import Actor, Forbidden, NotFound, Refused, resolve_actor
from bot.api.tokens import bearer
from bot.inventory import cached_capabilities
from bot.probes.capabilities import Capabilities
from bot.probes.dbcheck import DbCredential
from bot.runtime import Runtime
from bot.services import servers, tokens
from bot.services.tokens import TokenIdentity, TokenRejected
from storage.models import Server

PREFIX = "/api/backup-wizard"
RUNTIME = web.AppKey("runtime", Runtime)
ACTOR = web.RequestKey("actor", Actor)
TOKEN = web.RequestKey("token", TokenIdentity)
NO_USER = "api"  # the acting "user" of a token created without --user: it has no roles
NO_USER_HINT = (" This token names no user: create one with `backup-bot api-token create --team <team id> "
                "--user <U…>`; it acts with that user's roles.")


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"ok": False, "error": message}, status=status)


@web.middleware
async def authenticate(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    if not request.path.startswith(PREFIX):
        return await handler(request)
    try:
        found = await tokens.authenticate(bearer(request))
    except TokenRejected as exc:
        return _error(401, exc.sentence)
    if found is None:
        return _error(
            401,
            "Send a workspace API token as `Authorization: Bearer …` (create one with "
            "`backup-bot api-token create --team <team id> --user <U…>`).",
        )
    request[TOKEN] = found
    runtime: Runtime = request.app[RUNTIME]
    request[ACTOR] = await resolve_actor(runtime.directory, found.team_id, found.user_id or NO_USER, via="api")
    return await handler(request)


def _read_scope(found: TokenIdentity, doing: str) -> web.Response:
    """The 403 of a read token asked to ``doing``, naming the command that creates a write token."""
    who = f" --user {found.user_id}" if found.user_id else " --user <U…>"
    return _error(403, f"This token has read scope: it cannot {doing}. Create a write token with "
                       f"`backup-bot api-token create --team {found.team_id}{who} --scope write`.")  # fmt: skip


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
    if not request[TOKEN].writes:
        return await _recorded_capabilities(request, refresh=refresh, max_age=max_age)
    runtime: Runtime = request.app[RUNTIME]
    try:
        server, caps = await servers.capabilities(request[ACTOR], request.match_info["server_id"], refresh=refresh,
                                                  max_age=max_age, pool=runtime.pool, alerts=runtime.alerts)
    except Refused as exc:
        return _refused(request, exc)
    return _capabilities_answer(server, caps)


def _capabilities_answer(server: Server, caps: Capabilities) -> web.Response:
    return web.json_response(
        {
            "ok": True,
            "server_id": server.id,
            "status": server.status.value,
            "problems": caps.problems(),
            "capabilities": caps.model_dump(mode="json"),
        }
    )


async def _recorded_capabilities(request: web.Request, *, refresh: bool, max_age: timedelta) -> web.Response:
    """A read token's capabilities: the bot's record of the server, never a probe (roles are checked first)."""
    try:
        server = await servers.usable(request[ACTOR], request.match_info["server_id"])
    except Refused as exc:
        return _refused(request, exc)
    if refresh:
        return _read_scope(request[TOKEN], f"probe {server.name} (refresh)")
    caps = cached_capabilities(server, max_age=max_age)
    if caps is None:
        return _read_scope(request[TOKEN], f"probe {server.name}, and the bot has no record of it younger than "
                                           f"max_age ({int(max_age.total_seconds())} s)")  # fmt: skip
    return _capabilities_answer(server, caps)


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
        if not request[TOKEN].writes:
            server = await servers.usable(request[ACTOR], body.server_id)  # roles first: the more useful refusal
            return _read_scope(request[TOKEN], f"test database logins (that contacts {server.name})")
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
