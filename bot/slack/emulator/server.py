"""The Slack emulator: an aiohttp server on 127.0.0.1 speaking the Web API, upload URLs, response URLs and
Socket Mode, over the shared :class:`~bot.slack.emulator.world.World`.

Point ``AsyncWebClient(base_url=emulator.api_url)`` at it and the app talks to it exactly as to Slack: same
request encodings (form, JSON, query), same token rules, same ``{"ok": false, "error": ...}`` answers.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from . import api_chat, api_files, api_misc, api_views
from .clock import Clock
from .errors import ApiError
from .records import Call, Fault, FaultPlan
from .registry import AppToken, BotToken, Channel, Team, User, UserGroup
from .response_urls import apply_response
from .socket_mode import SocketModeHub
from .views import ViewRecord
from .world import Ctx, World

METHODS: dict[str, Callable[[Ctx], dict[str, Any]]] = {
    **api_chat.METHODS,
    **api_views.METHODS,
    **api_misc.METHODS,
    **api_files.METHODS,
}

# Parameters that carry JSON; form-encoded requests send them as JSON strings, decoded here for recording.
JSON_FIELDS = ("blocks", "attachments", "view", "files", "metadata")

DEFAULT_TEAM = "T0001"
DEFAULT_USER = "U0001"
DEFAULT_CHANNEL = "C0001"
DEFAULT_BOT_TOKEN = "xoxb-test"  # noqa: S105 - a fixture value, not a secret
DEFAULT_APP_TOKEN = "xapp-test"  # noqa: S105 - a fixture value, not a secret
DEFAULT_APP_ID = "A0001"
DEFAULT_BOT_USER = "U0BOT"
DEFAULT_BOT_ID = "B0001"


async def parse_request(request: web.Request) -> tuple[dict[str, Any], str | None, str | None]:
    """Parameters from query + body (form, multipart or JSON), the token, and a parse error code if any.

    Like Slack, a token is read from ``Authorization: Bearer`` or a ``token`` form/query field, never from a
    JSON body.
    """
    params: dict[str, Any] = dict(request.query)
    header = request.headers.get("Authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else None
    error = None
    if request.method == "POST" and request.body_exists:
        if request.content_type == "application/json":
            try:
                body = json.loads(await request.text())
            except json.JSONDecodeError:
                body, error = {}, "invalid_json"
            if isinstance(body, dict):
                params.update(body)
            else:
                error = "invalid_json"
        elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.post()
            params.update({k: v for k, v in form.items() if isinstance(v, str)})
        else:
            error = "invalid_post_type"
    form_token = params.pop("token", None) if request.content_type != "application/json" else None
    for name in JSON_FIELDS:
        if isinstance(params.get(name), str):
            try:
                params[name] = json.loads(params[name])
            except json.JSONDecodeError:
                pass  # left as is: the method refuses it with its own error code
    return params, token or (str(form_token) if form_token else None), error


class SlackEmulator:
    """A Slack workspace on a local port; seeded with team T0001, user U0001, channel C0001, ``xoxb-test``."""

    def __init__(
        self, *, seed: bool = True, clock: Clock = time.monotonic, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.world = World(clock)
        self.socket = SocketModeHub(self.world)
        self.calls: list[Call] = []
        self.faults = FaultPlan()
        self._host, self._port = host, port
        self._runner: web.AppRunner | None = None
        if seed:
            self._seed()

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def start(self) -> SlackEmulator:
        """Listen on ``host:port`` (port 0 = a free one)."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_post("/upload/v1/{token}", self._handle_upload)
        app.router.add_post("/response/{token}", self._handle_response_url)
        app.router.add_get("/link/", self.socket.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.world.base_url = f"http://{host}:{port}"
        return self

    async def stop(self) -> None:
        """Close WebSockets and the server."""
        await self.socket.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SlackEmulator:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return self.world.base_url

    @property
    def api_url(self) -> str:
        """``http://127.0.0.1:PORT/api/``: the ``base_url`` for slack_sdk's clients."""
        return f"{self.world.base_url}/api/"

    @property
    def clock(self) -> Clock:
        """The time source for trigger_id expiry and call timestamps (replace it to move time)."""
        return self.world.clock

    @clock.setter
    def clock(self, value: Clock) -> None:
        self.world.clock = value

    # -- registry ----------------------------------------------------------------------------------------

    def _seed(self) -> None:
        self.add_team(DEFAULT_TEAM, "acme", "Acme")
        self.add_user(DEFAULT_USER, name="alice", real_name="Alice Admin", is_admin=True)
        self.add_bot_token(DEFAULT_BOT_TOKEN)
        self.add_channel(DEFAULT_CHANNEL, "general", members=[DEFAULT_USER, DEFAULT_BOT_USER])
        self.add_app_token(DEFAULT_APP_TOKEN)

    def add_team(self, team_id: str, domain: str, name: str = "") -> Team:
        """Register a workspace."""
        team = Team(team_id, domain, name or domain)
        self.world.registry.teams[team_id] = team
        return team

    def add_user(
        self,
        user_id: str,
        team_id: str = DEFAULT_TEAM,
        *,
        name: str | None = None,
        real_name: str = "",
        tz: str = "Europe/Berlin",
        tz_offset: int | None = None,
        is_admin: bool = False,
        is_bot: bool = False,
    ) -> User:
        """Register a user of ``team_id``."""
        user = User(user_id, team_id, name or user_id.lower(), real_name, tz, tz_offset, is_admin, is_bot)
        self.world.registry.users[user_id] = user
        return user

    def add_channel(
        self,
        channel_id: str,
        name: str,
        team_id: str = DEFAULT_TEAM,
        *,
        members: list[str] | tuple[str, ...] = (),
        is_private: bool = False,
    ) -> Channel:
        """Register a channel with its members (include the bot user for the app to post)."""
        channel = Channel(channel_id, team_id, name, list(members), is_private=is_private)
        self.world.registry.channels[channel_id] = channel
        return channel

    def add_usergroup(
        self, group_id: str, handle: str, team_id: str = DEFAULT_TEAM, *, users: list[str] | tuple[str, ...] = ()
    ) -> UserGroup:
        """Register a user group (``S…``) with its members."""
        group = UserGroup(group_id, team_id, handle, list(users))
        self.world.registry.usergroups[group_id] = group
        return group

    def add_bot_token(
        self,
        token: str,
        team_id: str = DEFAULT_TEAM,
        bot_user_id: str = DEFAULT_BOT_USER,
        bot_id: str = DEFAULT_BOT_ID,
        app_id: str = DEFAULT_APP_ID,
        *,
        scopes: str | None = None,
    ) -> BotToken:
        """Register an installation's bot token (and its bot user if unknown)."""
        bot = BotToken(token, team_id, bot_user_id, bot_id, app_id)
        if scopes is not None:
            bot.scopes = scopes
        self.world.registry.bot_tokens[token] = bot
        if bot_user_id not in self.world.registry.users:
            self.add_user(bot_user_id, team_id, name="backup-wizard", is_bot=True)
        return bot

    def add_app_token(self, token: str, app_id: str = DEFAULT_APP_ID) -> AppToken:
        """Register an app-level ``xapp-`` token for Socket Mode."""
        app = AppToken(token, app_id)
        self.world.registry.app_tokens[token] = app
        return app

    def issue_trigger_id(self, user_id: str = DEFAULT_USER, team_id: str = DEFAULT_TEAM) -> str:
        """A fresh trigger_id (valid 3 s by ``clock``, usable once)."""
        return self.world.issue_trigger_id(user_id, team_id)

    # -- observation -------------------------------------------------------------------------------------

    def calls_to(self, method: str) -> list[Call]:
        """Recorded calls of one method, oldest first."""
        return [c for c in self.calls if c.method == method]

    async def wait_for_call(self, method: str, count: int = 1, within: float = 3.0) -> Call:
        """Wait until ``method`` was called ``count`` times in total; returns the ``count``-th call."""
        calls = await self.world.changes.wait_for(lambda: self.calls_to(method)[count - 1 :], within)
        return calls[0]

    def messages(self, channel: str = DEFAULT_CHANNEL) -> list[dict[str, Any]]:
        """What the channel shows now: posts with updates applied, deleted ones gone."""
        return self.world.messages.in_channel(channel)

    def ephemerals(self, channel: str | None = None, user: str | None = None) -> list[dict[str, Any]]:
        """Ephemeral messages, optionally for one channel and/or user."""
        return [
            copy.deepcopy(e.message)
            for e in self.world.messages.ephemerals
            if channel in (None, e.channel) and user in (None, e.user)
        ]

    def file_content(self, file_id: str) -> bytes | None:
        """Bytes received at a file's upload URL."""
        stored = self.world.messages.files.get(file_id)
        return stored.content if stored else None

    def view(self, view_id: str) -> dict[str, Any]:
        """A view's current JSON (as the app would receive it)."""
        return self.world.views.views[view_id].to_json()

    def view_stack(self, user: str = DEFAULT_USER, team: str = DEFAULT_TEAM) -> list[dict[str, Any]]:
        """The user's open modal views, bottom first."""
        return [v.to_json() for v in self.world.views.stack(team, user)]

    def current_view(self, user: str = DEFAULT_USER, team: str = DEFAULT_TEAM) -> dict[str, Any] | None:
        """The modal view on top of the user's stack."""
        record = self.world.views.top(team, user)
        return record.to_json() if record else None

    def home_view(self, user: str = DEFAULT_USER, team: str = DEFAULT_TEAM) -> dict[str, Any] | None:
        """The user's published home tab."""
        record = self.world.views.home(team, user)
        return record.to_json() if record else None

    def top_record(self, user: str, team: str) -> ViewRecord | None:
        """The live record of the top view (the driver mutates state through it)."""
        return self.world.views.top(team, user)

    # -- faults and socket mode --------------------------------------------------------------------------

    def inject(
        self, method: str, status: int = 429, retry_after: int | None = 1, times: int = 1, error: str | None = None
    ) -> Fault:
        """Answer the next ``times`` calls of ``method`` (``*`` = any) with ``status`` instead of running them."""
        return self.faults.add(Fault(method, status, retry_after, times, error))

    async def socket_disconnect(self, reason: str = "refresh_requested") -> None:
        """Send ``disconnect`` to the app's Socket Mode connections (it must reconnect)."""
        await self.socket.disconnect(reason)

    # -- HTTP handlers -----------------------------------------------------------------------------------

    async def _handle_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params, token, parse_error = await parse_request(request)
        fault = self.faults.take(method)
        if fault is not None:
            status, body, headers = fault.status, fault.body(), fault.headers()
        else:
            status, body, headers = self._run(method, params, token, parse_error)
        self.calls.append(Call(method, params, body, status, self.world.clock(), token))
        self.world.changes.poke()
        return web.json_response(body, status=status, headers=headers)

    def _run(
        self, method: str, params: dict[str, Any], token: str | None, parse_error: str | None
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        handler = METHODS.get(method)
        try:
            if handler is None:
                raise ApiError("unknown_method", extra={"req_method": method})
            ctx = self._authenticate(method, token, params)
            if parse_error:
                raise ApiError(parse_error)
            body = {"ok": True, **handler(ctx)}
        except ApiError as exc:
            return exc.status, exc.body(), {}
        return 200, body, ({"X-OAuth-Scopes": ctx.bot.scopes} if ctx.bot else {})

    def _authenticate(self, method: str, token: str | None, params: dict[str, Any]) -> Ctx:
        registry = self.world.registry
        if not token:
            raise ApiError("not_authed")
        if method in api_misc.APP_TOKEN_METHODS:
            app = registry.app_tokens.get(token)
            if app is None:
                raise ApiError("not_allowed_token_type" if token in registry.bot_tokens else "invalid_auth")
            return Ctx(self.world, params, app=app)
        bot = registry.bot_tokens.get(token)
        if bot is None:
            raise ApiError("not_allowed_token_type" if token in registry.app_tokens else "invalid_auth")
        return Ctx(self.world, params, bot=bot)

    async def _handle_upload(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        stored = next((f for f in self.world.messages.files.values() if f.upload_token == token), None)
        if stored is None:
            return web.Response(status=404, text="not_found")
        if request.content_type == "multipart/form-data":
            form = await request.post()
            part = next((v for v in form.values() if isinstance(v, web.FileField)), None)
            data = part.file.read() if part is not None else b""
        else:
            data = await request.read()
        stored.content = data
        self.world.changes.poke()
        return web.Response(text=f"OK - {len(data)}", content_type="text/plain")

    async def _handle_response_url(self, request: web.Request) -> web.Response:
        target = self.world.response_targets.get(request.match_info["token"])
        if target is None:
            return web.Response(status=404, text="no_such_response_url")
        try:
            body = json.loads(await request.text())
        except json.JSONDecodeError:
            return web.Response(status=400, text="invalid_payload")
        status, text = apply_response(self.world, target, body)
        self.world.changes.poke()
        return web.Response(status=status, text=text)
