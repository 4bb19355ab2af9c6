"""``GET /metrics``: the Prometheus text of one workspace, chosen by its API token (bot.monitoring renders it)."""

from __future__ import annotations

import logging

from aiohttp import web

from bot.api.tokens import team_for_token
from bot.monitoring import CONTENT_TYPE, render_metrics

log = logging.getLogger(__name__)


async def metrics_handler(request: web.Request) -> web.Response:
    header = request.headers.get("Authorization", "")
    team_id = await team_for_token(header.removeprefix("Bearer ").strip()) if header.startswith("Bearer ") else None
    if team_id is None:
        return web.Response(
            status=401,
            text="Send a workspace API token as `Authorization: Bearer …` (create one with "
            "`backup-bot api-token --team <team id>`); the metrics are that workspace's.\n",
            headers={"WWW-Authenticate": 'Bearer realm="backupbot"'},
        )
    try:
        body = await render_metrics(team_id)
    except Exception as exc:  # a scrape must not take the bot down; Prometheus records the failed scrape
        log.error("metrics failed: %s", type(exc).__name__)
        log.debug("metrics error detail", exc_info=exc)
        return web.Response(status=503, text="metrics unavailable\n")
    return web.Response(body=body.encode(), headers={"Content-Type": CONTENT_TYPE})


def add_metrics_route(web_app: web.Application) -> None:
    web_app.router.add_get("/metrics", metrics_handler)
