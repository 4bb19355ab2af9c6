"""``/backup edit <chain>``: (being built) the wizard, prefilled from the chain, opened at its review step."""

from __future__ import annotations

from slack_bolt.async_app import AsyncBoltContext
from slack_sdk.web.async_client import AsyncWebClient

from bot.flows.wizard.controller import WizardController


async def open_edit(controller: WizardController, client: AsyncWebClient, context: AsyncBoltContext,
                    command: dict) -> None:  # fmt: skip
    """Open the chain's wizard for editing (not built yet: says so)."""
    await client.chat_postEphemeral(channel=command["channel_id"], user=command["user_id"],
                                    text="`/backup edit` is not available in this version yet.")  # fmt: skip
