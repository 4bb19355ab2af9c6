"""How the driver reaches the app: signed HTTP requests, or envelopes over the emulator's Socket Mode link.

Both transports take the same logical delivery (a slash command, an interaction, an event) and return the app's
acknowledgement as an :class:`AppResponse`, so driver code and tests do not care which one is in use. Both give
up after Slack's 3-second acknowledgement window, the way Slack does.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

import aiohttp

from .errors import AckTimeoutError
from .signing import signed_headers
from .socket_mode import SocketModeHub

T = TypeVar("T")
Kind = Literal["slash_commands", "interactive", "events_api"]
ACK_LIMIT = 3.0
LATE_CAP = 30.0  # how long a driver in "flag late acks" mode still waits for a slow app
SLACK_USER_AGENT = "Slackbot 1.0 (+https://api.slack.com/robots)"


@dataclass
class AppResponse:
    """The app's answer: HTTP status (200 for a Socket Mode ack), parsed body, time taken."""

    status: int
    body: Any
    elapsed: float
    headers: dict[str, str] = field(default_factory=dict)
    late: bool = False

    @property
    def json(self) -> dict[str, Any]:
        """The body as a dict (empty when the app acked with nothing)."""
        return self.body if isinstance(self.body, dict) else {}


class Transport(Protocol):
    """Delivers one payload to the app and returns its acknowledgement."""

    async def deliver(self, kind: Kind, payload: dict[str, Any], *, limit: float, late_ok: bool) -> AppResponse:
        """Send ``payload``; raise :class:`AckTimeoutError` past ``limit`` unless ``late_ok``."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def encode(kind: Kind, payload: dict[str, Any]) -> tuple[bytes, str]:
    """The raw body and content type Slack uses for each kind of delivery."""
    if kind == "slash_commands":
        return urllib.parse.urlencode(payload).encode(), "application/x-www-form-urlencoded"
    if kind == "interactive":
        body = urllib.parse.urlencode({"payload": json.dumps(payload, separators=(",", ":"))})
        return body.encode(), "application/x-www-form-urlencoded"
    return json.dumps(payload).encode(), "application/json"


def parse_body(raw: bytes, content_type: str) -> Any:
    """JSON bodies as dicts, empty bodies as ``None``, anything else as text."""
    if not raw:
        return None
    text = raw.decode(errors="replace")
    if "json" in content_type or text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    return text


async def _within(coro: Awaitable[T], kind: str, limit: float, late_ok: bool) -> tuple[T, float, bool]:
    """Await ``coro``; past ``limit`` either raise (Slack gave up) or flag it as late."""
    start = time.monotonic()
    try:
        result = await asyncio.wait_for(coro, LATE_CAP if late_ok else limit)
    except TimeoutError as exc:
        raise AckTimeoutError(kind, time.monotonic() - start, limit) from exc
    elapsed = time.monotonic() - start
    return result, elapsed, elapsed > limit


class HttpTransport:
    """POSTs signed requests to the app's request URL (e.g. ``http://127.0.0.1:PORT/slack/events``)."""

    def __init__(self, url: str, signing_secret: str) -> None:
        self.url = url
        self.signing_secret = signing_secret
        self._session: aiohttp.ClientSession | None = None

    async def post_raw(self, body: bytes, content_type: str, headers: dict[str, str]) -> AppResponse:
        """POST exactly these bytes and headers (tests use it to send a badly signed request)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        start = time.monotonic()
        all_headers = {"Content-Type": content_type, "User-Agent": SLACK_USER_AGENT, **headers}
        async with self._session.post(self.url, data=body, headers=all_headers) as resp:
            raw = await resp.read()
            return AppResponse(
                resp.status, parse_body(raw, resp.content_type), time.monotonic() - start, dict(resp.headers)
            )

    async def deliver(
        self, kind: Kind, payload: dict[str, Any], *, limit: float = ACK_LIMIT, late_ok: bool = False
    ) -> AppResponse:
        """Sign and POST the payload as Slack encodes it."""
        body, content_type = encode(kind, payload)
        headers = signed_headers(self.signing_secret, body)
        response, elapsed, late = await _within(self.post_raw(body, content_type, headers), kind, limit, late_ok)
        response.elapsed, response.late = elapsed, late
        return response

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()


class SocketModeTransport:
    """Sends envelopes over the app's Socket Mode connection to the emulator and awaits the ack."""

    def __init__(self, hub: SocketModeHub, connect_timeout: float = 5.0) -> None:
        self.hub = hub
        self.connect_timeout = connect_timeout

    async def deliver(
        self, kind: Kind, payload: dict[str, Any], *, limit: float = ACK_LIMIT, late_ok: bool = False
    ) -> AppResponse:
        """Send the envelope and wait for ``{"envelope_id", "payload"}`` from the app."""
        accepts = kind != "events_api"
        future = await self.hub.send(kind, payload, accepts_response_payload=accepts, within=self.connect_timeout)
        ack, elapsed, late = await _within(future, kind, limit, late_ok)
        return AppResponse(200, ack or None, elapsed, late=late)

    async def close(self) -> None:
        """Nothing to release: the connection belongs to the app."""
