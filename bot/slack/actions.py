"""Block action listeners (buttons, selects) outside of modals."""

from __future__ import annotations

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.home import chain_action, publish_help, publish_home
from bot.slack.home_blocks import CHAIN_ACTIONS, HELP, PAGE, page_of


def register(app: AsyncApp) -> None:
    @app.action(HELP)
    async def show_help(ack: AsyncAck, body: dict, client: AsyncWebClient) -> None:
        await ack()
        await publish_help(client, body["user"]["id"])

    @app.action(PAGE)
    async def home_page(ack: AsyncAck, body: dict, client: AsyncWebClient, context: AsyncBoltContext) -> None:
        await ack()
        value = str(body["actions"][0].get("value") or "0")
        await publish_home(client, context["tenant"], body["user"]["id"], page=int(value) if value.isdigit() else 0)

    for action_id in CHAIN_ACTIONS:

        @app.action(action_id)
        async def home_chain_button(
            ack: AsyncAck, body: dict, client: AsyncWebClient, context: AsyncBoltContext
        ) -> None:
            await ack()
            action = body["actions"][0]
            view = body.get("view") or {}
            await chain_action(
                client,
                context["tenant"],
                body["user"]["id"],
                action["action_id"],
                str(action.get("value") or ""),
                page=page_of(view.get("private_metadata")),
            )
