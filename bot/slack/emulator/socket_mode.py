"""The Socket Mode side of Slack: WebSocket connections opened with a ticket from ``apps.connections.open``.

Protocol as Slack speaks it: the server sends ``hello`` on connect, then envelopes
``{"envelope_id", "type", "payload", "accepts_response_payload"}``; the app answers each with
``{"envelope_id", "payload"?}``. ``disconnect`` asks the client to fetch a new URL and reconnect, and envelopes
are never sent to a connection that was asked to go.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from .world import World


@dataclass
class Connection:
    """One live WebSocket from the app."""

    ws: web.WebSocketResponse
    app_id: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    draining: bool = False


class SocketModeHub:
    """Accepts app connections, sends envelopes and resolves acks."""

    def __init__(self, world: World) -> None:
        self._world = world
        self.connections: list[Connection] = []
        self._pending: dict[str, asyncio.Future[dict[str, Any] | None]] = {}
        self.received: list[dict[str, Any]] = []
        self.connects = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """GET /link/?ticket=...: upgrade if the ticket is one we issued (single use)."""
        app_id = self._world.socket_tickets.pop(request.query.get("ticket", ""), None)
        if app_id is None:
            return web.Response(status=401, text="invalid ticket")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        conn = Connection(ws, app_id)
        self.connections.append(conn)
        self.connects += 1
        await ws.send_json(self._hello(conn))
        self._world.changes.poke()
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self._on_text(str(msg.data))
        finally:
            self.connections.remove(conn)
            self._world.changes.poke()
        return ws

    def _hello(self, conn: Connection) -> dict[str, Any]:
        return {
            "type": "hello",
            "num_connections": len(self.live()),
            "debug_info": {
                "host": f"applink-emulator-{conn.id}",
                "build_number": 1,
                "approximate_connection_time": 3600,
            },
            "connection_info": {"app_id": conn.app_id},
        }

    def _on_text(self, data: str) -> None:
        try:
            message = json.loads(data)
        except json.JSONDecodeError:
            return
        self.received.append(message)
        future = self._pending.pop(str(message.get("envelope_id")), None)
        if future is not None and not future.done():
            future.set_result(message.get("payload"))

    def live(self) -> list[Connection]:
        """Connections that may receive envelopes."""
        return [c for c in self.connections if not c.draining and not c.ws.closed]

    async def wait_connected(self, within: float = 5.0) -> Connection:
        """The newest live connection, waiting for the app to connect if needed."""
        await self._world.changes.wait_for(lambda: bool(self.live()), within)
        return self.live()[-1]

    async def send(
        self, kind: str, payload: dict[str, Any], *, accepts_response_payload: bool, within: float = 5.0
    ) -> asyncio.Future[dict[str, Any] | None]:
        """Send an envelope; the returned future resolves with the ack's payload (``None`` if empty)."""
        conn = await self.wait_connected(within)
        envelope_id = str(uuid.uuid4())
        future: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()
        self._pending[envelope_id] = future
        envelope: dict[str, Any] = {
            "envelope_id": envelope_id,
            "type": kind,
            "payload": payload,
            "accepts_response_payload": accepts_response_payload,
        }
        if kind == "events_api":
            envelope.update(retry_attempt=0, retry_reason="")
        await conn.ws.send_json(envelope)
        return future

    async def disconnect(self, reason: str = "refresh_requested") -> None:
        """Ask every connection to reconnect, as Slack does before recycling a server."""
        for conn in self.live():
            conn.draining = True
            await conn.ws.send_json(
                {"type": "disconnect", "reason": reason, "debug_info": {"host": f"applink-emulator-{conn.id}"}}
            )

    async def close(self) -> None:
        """Close every connection (emulator shutdown)."""
        for conn in list(self.connections):
            await conn.ws.close()
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
