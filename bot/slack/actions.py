"""Block action listeners (buttons, selects) outside of modals."""

from __future__ import annotations

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.home import publish_help


def register(app: AsyncApp) -> None:
    @app.action("home_show_help")
    async def show_help(ack: AsyncAck, body: dict, client: AsyncWebClient) -> None:
        await ack()
        await publish_help(client, body["user"]["id"])
