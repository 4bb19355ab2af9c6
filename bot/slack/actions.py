"""Block action listeners (buttons, selects) outside of modals."""

from __future__ import annotations

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext
from slack_sdk.web.async_client import AsyncWebClient

from bot.flows.wizard.controller import WizardController
from bot.services import templates
from bot.slack.actors import directory_of
from bot.slack.home import chain_action, publish_help, publish_home
from bot.slack.home_blocks import CHAIN_ACTIONS, HELP, PAGE, page_of
from bot.slack.listing import TEMPLATE_START
from bot.slack.wizard import open_wizard
from storage.models import BackupTemplate


def register(app: AsyncApp, wizard: WizardController | None = None) -> None:
    if wizard is not None:
        _register_template_start(app, wizard)

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
                directory=directory_of(context, client),
            )


def _register_template_start(app: AsyncApp, wizard: WizardController) -> None:
    @app.action(TEMPLATE_START)
    async def start_from_template(ack: AsyncAck, body: dict, client: AsyncWebClient, context: AsyncBoltContext) -> None:
        """`/backup templates`' "Start wizard" button: the same as `/backup new from:<name>` (trigger_id: 3 s)."""
        await ack()
        value = str(body["actions"][0].get("value") or "")
        user_id = body["user"]["id"]
        channel_id = (body.get("channel") or {}).get("id")
        row = await context["tenant"].get_or_none(BackupTemplate, id=int(value)) if value.isdigit() else None
        if row is None:
            if channel_id:
                gone = "That template no longer exists; see `/backup templates`."
                await client.chat_postEphemeral(channel=channel_id, user=user_id, text=gone)
            return
        await open_wizard(wizard, client, context, body["trigger_id"], user_id, channel_id,
                          prefill=templates.prefill_of(row))  # fmt: skip
