"""``GET /metrics``: the Prometheus text of one workspace, chosen by its API token (bot.monitoring renders it)."""

from __future__ import annotations

import logging

from aiohttp import web

from bot.monitoring import CONTENT_TYPE, render_metrics
from bot.services.tokens import TokenRejected, authenticate

log = logging.getLogger(__name__)


async def metrics_handler(request: web.Request) -> web.Response:
    header = request.headers.get("Authorization", "")
    try:
        found = await authenticate(header.removeprefix("Bearer ").strip()) if header.startswith("Bearer ") else None
    except TokenRejected as exc:  # revoked or expired: its sentence says so and how to get a new one
        return _unauthorized(exc.sentence)
    if found is None:
        return _unauthorized("Send a workspace API token as `Authorization: Bearer …` (create one with "
                             "`backup-bot api-token create --team <team id>`); the metrics are that workspace's.")
    team_id = found.team_id
    try:
        body = await render_metrics(team_id)
    except Exception as exc:  # a scrape must not take the bot down; Prometheus records the failed scrape
        log.error("metrics failed: %s", type(exc).__name__)
        log.debug("metrics error detail", exc_info=exc)
        return web.Response(status=503, text="metrics unavailable\n")
    return web.Response(body=body.encode(), headers={"Content-Type": CONTENT_TYPE})


def _unauthorized(sentence: str) -> web.Response:
    return web.Response(status=401, text=sentence + "\n", headers={"WWW-Authenticate": 'Bearer realm="backupbot"'})


def add_metrics_route(web_app: web.Application) -> None:
    web_app.router.add_get("/metrics", metrics_handler)
