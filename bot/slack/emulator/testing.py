"""Wiring a bolt ``AsyncApp`` to the emulator the two ways Slack reaches apps, for tests and the playground.

HTTP: the app's own aiohttp ``web_app()`` on 127.0.0.1 port 0, addressed by the driver with signed requests.
Socket Mode: bolt's ``AsyncSocketModeHandler`` with a Web API client pointed at the emulator, so the handler
fetches its WebSocket URL from the emulator's ``apps.connections.open`` exactly as it would from Slack.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from .server import DEFAULT_APP_TOKEN, SlackEmulator


@asynccontextmanager
async def serve_http(app: AsyncApp, path: str = "/slack/events") -> AsyncIterator[str]:
    """Serve ``app`` over HTTP on a free local port; yields its request URL."""
    runner = web.AppRunner(app.web_app(path=path), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}{path}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def serve_socket_mode(
    app: AsyncApp, emulator: SlackEmulator, app_token: str = DEFAULT_APP_TOKEN
) -> AsyncIterator[AsyncSocketModeHandler]:
    """Connect ``app`` to the emulator over Socket Mode; yields the handler once the emulator said hello."""
    handler = AsyncSocketModeHandler(app, app_token, web_client=AsyncWebClient(base_url=emulator.api_url))
    await handler.connect_async()  # type: ignore[no-untyped-call]
    await emulator.socket.wait_connected()
    try:
        yield handler
    finally:
        await handler.close_async()  # type: ignore[no-untyped-call]
