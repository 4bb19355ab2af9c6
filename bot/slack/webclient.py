"""The Web API client with one kept-alive connection pool.

Without a ``session``, slack_sdk's ``AsyncWebClient`` opens a new aiohttp session — a new TCP (and, against
slack.com, TLS) connection — for every call and closes it afterwards. The wizard makes a ``views.update`` per button
and per progress line, the outbox posts every report: each of those would pay a handshake. This client keeps one
session per event loop (an aiohttp session belongs to the loop it was made on) and reuses its connections; the
per-call timeout stays the client's ``timeout``. Whoever owns the client closes it (:meth:`PooledWebClient.close`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from slack_sdk.web.async_client import AsyncWebClient


class PooledWebClient(AsyncWebClient):
    """``AsyncWebClient`` whose calls share one connection pool (made on first use, on the running loop)."""

    _pool_loop: asyncio.AbstractEventLoop | None = None

    async def _request(self, *, http_verb: str, api_url: str, req_args: dict) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        if self.session is None or self.session.closed or self._pool_loop is not loop:
            self.session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout), trust_env=self.trust_env_in_session
            )
            self._pool_loop = loop
        return await super()._request(http_verb=http_verb, api_url=api_url, req_args=req_args)

    async def close(self) -> None:
        """Close the pool (its connections) if it belongs to the running loop; a later call opens a new one."""
        session, self.session = self.session, None
        if session is not None and not session.closed and self._pool_loop is asyncio.get_running_loop():
            await session.close()
        self._pool_loop = None
