"""The page's HTTP side: the static page, a server-sent event stream of what the person sees, and the person's acts.

Every act goes through the emulator's :class:`~bot.slack.emulator.SlackDriver`, so the bot receives exactly what
Slack would deliver (signed requests, Slack's payloads, fresh trigger_ids, the 3-second ack rule); nothing here
calls the bot's code directly. Acts are JSON POSTs carrying an ``X-Playground`` header, which a page on another
site cannot send without a CORS preflight that this server never answers: a drive-by page cannot type commands.
With a password (required off loopback) everything sits behind HTTP basic auth.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from bot.playground import state
from bot.playground.workspace import PEOPLE
from bot.slack.emulator import AckTimeoutError, DriverError, SlackClientRefusal, SlackDriver, SlackEmulator

log = logging.getLogger(__name__)
ASSETS = {"app.js": "text/javascript", "app.css": "text/css"}
HEADER = "X-Playground"
KEEPALIVE = 15.0


class Act(BaseModel):
    """Fields every act carries: who acts."""

    user: str


class Command(Act):
    channel: str
    text: str


class Element(Act):
    surface: Literal["modal", "home", "message"] = "modal"
    block_id: str
    action_id: str
    value: Any = None
    channel: str | None = None
    ts: str | None = None


ActT = TypeVar("ActT", bound=Act)


class Field(BaseModel):
    block_id: str
    action_id: str
    value: Any = None


class Submit(Act):
    values: list[Field] = []


class Query(Element):
    query: str = ""


@dataclass
class Hooks:
    """What the page may ask of the playground besides Slack acts (the first world)."""

    machine: Callable[[], dict[str, Any]] = dict
    offer: Callable[[str], Awaitable[dict[str, Any]]] | None = None


class Page:
    """The page's routes over one emulator and the driver of the running bot."""

    def __init__(self, slack: SlackEmulator, driver: Callable[[], SlackDriver], hooks: Hooks | None = None) -> None:
        self.slack = slack
        self.driver = driver  # the bot's current driver (a new one after the bot restarts)
        self.hooks = hooks or Hooks()

    def app(self, password: str | None = None) -> web.Application:
        """The aiohttp application: ``/``, ``/static/…``, ``/events`` and ``/api/…``."""
        app = web.Application(middlewares=[_basic_auth(password)] if password else [], client_max_size=1024 * 1024)
        app.router.add_get("/", self.index)
        app.router.add_get("/static/{name}", self.asset)
        app.router.add_get("/events", self.events)
        for name, handler in self._acts().items():
            app.router.add_post(f"/api/{name}", handler)
        return app

    def _acts(self) -> dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]]:
        return {"command": self.command, "set": self.set_value, "click": self.click, "submit": self.submit,
                "close": self.close, "options": self.options, "home": self.home, "machine": self.machine}  # fmt: skip

    # -- page and stream ---------------------------------------------------------------------------------

    async def index(self, _: web.Request) -> web.Response:
        return web.Response(text=_asset("index.html"), content_type="text/html", headers=_NO_STORE)

    async def asset(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in ASSETS:
            raise web.HTTPNotFound()
        return web.Response(text=_asset(name), content_type=ASSETS[name], headers=_NO_STORE)

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: the person's whole view now, then again after every change."""
        user = _person(request.query.get("user", ""))
        stream = web.StreamResponse(headers={"Content-Type": "text/event-stream", **_NO_STORE})
        await stream.prepare(request)
        changes = self.slack.world.changes
        seen = -1
        try:
            while True:
                current = changes.version
                if current != seen:
                    seen = current
                    body = {**state.view_for(self.slack, user), "machine": self.hooks.machine()}
                    await stream.write(f"event: state\ndata: {json.dumps(body)}\n\n".encode())
                elif await changes.after(seen, KEEPALIVE) == seen:
                    await stream.write(b": keep-alive\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return stream

    # -- acts --------------------------------------------------------------------------------------------

    async def command(self, request: web.Request) -> web.Response:
        act = await _parse(request, Command)
        text = act.text.strip()
        if not text.startswith("/") or len(text) < 2:
            return _refused("Type a slash command, like /backup new (the bot reads no plain messages).")
        name, _, rest = text.partition(" ")
        return await self._deliver(lambda d: d.slash_command(name, rest.strip(), user=act.user, channel=act.channel))

    async def set_value(self, request: web.Request) -> web.Response:
        act = await _parse(request, Element)
        return await self._deliver(lambda d: d.set_value(act.action_id, act.value, block_id=act.block_id,
                                                         user=act.user, home=act.surface == "home"))  # fmt: skip

    async def click(self, request: web.Request) -> web.Response:
        act = await _parse(request, Element)
        value = None if act.value is None else str(act.value)
        if act.surface == "message":
            if not (act.channel and act.ts):
                return _refused("A click on a message names its channel and ts.")
            return await self._deliver(lambda d: d.click(act.action_id, value=value, block_id=act.block_id,
                                                         user=act.user, channel=act.channel, ts=act.ts))  # fmt: skip
        return await self._deliver(lambda d: d.click(act.action_id, value=value, block_id=act.block_id,
                                                     user=act.user, home=act.surface == "home"))  # fmt: skip

    async def submit(self, request: web.Request) -> web.Response:
        act = await _parse(request, Submit)

        async def go(driver: SlackDriver) -> Any:
            for item in act.values:  # what the person typed last, in case a change event was still on its way
                await driver.set_value(item.action_id, item.value, block_id=item.block_id, user=act.user)
            return await driver.submit(act.user)

        return await self._deliver(go)

    async def close(self, request: web.Request) -> web.Response:
        act = await _parse(request, Act)
        return await self._deliver(lambda d: d.close(act.user))

    async def options(self, request: web.Request) -> web.Response:
        act = await _parse(request, Query)
        try:
            found = await self.driver().options(act.action_id, act.query, block_id=act.block_id, user=act.user,
                                                home=act.surface == "home")  # fmt: skip
        except (DriverError, SlackClientRefusal, AckTimeoutError, LookupError, ValueError) as exc:
            return _refused(_sentence(exc))
        return web.json_response({"ok": True, "options": found})

    async def home(self, request: web.Request) -> web.Response:
        act = await _parse(request, Act)
        return await self._deliver(lambda d: d.open_home(act.user))

    async def machine(self, request: web.Request) -> web.Response:
        act = await _parse(request, Act)
        if self.hooks.offer is None:
            return _refused("This playground offers no machine.")
        result = await self.hooks.offer(act.user)
        self.slack.world.changes.poke()
        return web.json_response(result, status=200 if result.get("ok") else 400)

    async def _deliver(self, act: Callable[[SlackDriver], Awaitable[Any]]) -> web.Response:
        """Run one act through the driver; Slack's refusals come back as one sentence for the page."""
        try:
            response = await act(self.driver())
        except SlackClientRefusal as exc:
            body = {"ok": False, "error": exc.reason, "fields": exc.details}
            return web.json_response(body, status=400)
        except (DriverError, AckTimeoutError, LookupError, ValueError) as exc:
            return _refused(_sentence(exc))
        finally:
            self.slack.world.changes.poke()
        late = bool(getattr(response, "late", False))
        status = getattr(response, "status", 200)
        note = None
        if late:
            note = "The bot answered after 3 seconds: Slack would have shown the person an error."
        elif status != 200:
            note = f"The bot answered HTTP {status}: Slack would have shown the person an error."
        return web.json_response({"ok": note is None, "error": note})


_NO_STORE = {"Cache-Control": "no-store"}


def _asset(name: str) -> str:
    return resources.files("bot.playground").joinpath(name).read_text(encoding="utf-8")


def _person(user: str) -> str:
    if user not in {p.id for p in PEOPLE}:
        raise web.HTTPBadRequest(text="unknown user: the page's switcher offers the known ones")
    return user


async def _parse(request: web.Request, model: type[ActT]) -> ActT:
    """The act's JSON, checked: only same-origin script sends the header and JSON (see the module's docstring)."""
    if request.headers.get(HEADER) != "1" or request.content_type != "application/json":
        raise web.HTTPForbidden(text="acts come from the playground's page")
    try:
        act = model.model_validate(await request.json())
    except (ValidationError, ValueError) as exc:
        raise web.HTTPBadRequest(text=f"malformed act: {str(exc)[:200]}") from None
    _person(act.user)
    return act


def _refused(sentence: str) -> web.Response:
    return web.json_response({"ok": False, "error": sentence}, status=400)


def _sentence(exc: Exception) -> str:
    return str(exc.args[0] if exc.args else exc)[:500] or type(exc).__name__


def _basic_auth(password: str) -> Any:
    """Basic auth with any user name and ``password`` (compared in constant time)."""

    @web.middleware
    async def check(request: web.Request, handler: Any) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        given = ""
        if header.lower().startswith("basic "):
            try:
                given = base64.b64decode(header[6:]).decode("utf-8", "replace").partition(":")[2]
            except ValueError:
                given = ""
        if not hmac.compare_digest(given.encode(), password.encode()):
            raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Basic realm="backup-bot playground"'})
        return await handler(request)

    return check
