"""The Web API client keeps its connections: calls share one kept-alive connection instead of one each, the per-call
timeout still applies, and closing it (or using it from another event loop) opens a fresh pool."""

from __future__ import annotations

import asyncio
import threading

import pytest
from aiohttp import web
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import load_settings
from bot.slack.app import build_client
from bot.slack.emulator import DEFAULT_BOT_TOKEN
from bot.slack.webclient import PooledWebClient


class Api:
    """A Web API endpoint that answers ok and notes which client connection (port) each call came on."""

    def __init__(self) -> None:
        self.ports: list[int] = []
        self.delay = 0.0

    async def handle(self, request: web.Request) -> web.Response:
        self.ports.append(request.transport.get_extra_info("peername")[1])
        await asyncio.sleep(self.delay)
        return web.json_response({"ok": True, "url": "https://example.slack.com/", "team": "T", "user": "U"})

    async def __aenter__(self) -> str:
        app = web.Application()
        app.router.add_post("/api/{method}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{self.runner.addresses[0][1]}/api/"

    async def __aexit__(self, *exc) -> None:
        await self.runner.cleanup()


async def test_calls_share_one_kept_alive_connection() -> None:
    api = Api()
    async with api as url:
        pooled = PooledWebClient(token=DEFAULT_BOT_TOKEN, base_url=url)
        for _ in range(3):
            assert (await pooled.auth_test())["ok"]
        await pooled.close()
        plain = AsyncWebClient(token=DEFAULT_BOT_TOKEN, base_url=url)  # slack_sdk without a session, for contrast
        for _ in range(2):
            await plain.auth_test()
    assert len(set(api.ports[:3])) == 1
    assert len(set(api.ports[3:])) == 2 and not set(api.ports[3:]) & set(api.ports[:3])


async def test_close_and_a_new_pool_afterwards() -> None:
    api = Api()
    async with api as url:
        client = PooledWebClient(token=DEFAULT_BOT_TOKEN, base_url=url)
        await client.auth_test()
        first = client.session
        await client.close()
        assert first is not None and first.closed and client.session is None
        await client.auth_test()
        assert client.session is not None and client.session is not first
        await client.close()
    assert len(set(api.ports)) == 2


async def test_the_per_call_timeout_still_applies() -> None:
    api = Api()
    api.delay = 2.0
    async with api as url:
        client = PooledWebClient(token=DEFAULT_BOT_TOKEN, base_url=url, timeout=1)
        with pytest.raises(asyncio.TimeoutError):
            await client.auth_test()
        await client.close()


def test_a_client_used_from_another_event_loop_gets_a_pool_of_that_loop(tmp_path) -> None:
    """A session belongs to the loop it was made on; a thread with its own loop must not reuse it."""
    results: list[bool] = []

    async def scenario() -> None:
        api = Api()
        async with api as url:
            settings = load_settings(tmp_path / "none.env", SLACK_BOT_TOKEN=DEFAULT_BOT_TOKEN,
                                     SLACK_SIGNING_SECRET="s", SLACK_API_URL=url)  # fmt: skip
            client = build_client(settings)
            assert isinstance(client, PooledWebClient)
            await client.auth_test()
            mine = client.session

            def elsewhere() -> None:
                async def call() -> None:
                    await client.auth_test()
                    results.append(client.session is not mine)
                    await client.close()

                asyncio.run(call())

            thread = threading.Thread(target=elsewhere)
            await asyncio.to_thread(lambda: (thread.start(), thread.join()))
            assert mine is not None and not mine.closed  # the other loop left this loop's pool alone
            await mine.close()

    asyncio.run(scenario())
    assert results == [True]
