"""``/backup edit <chain>`` and the *Edit* button: the wizard, prefilled from the chain, opened at its review step.

Parsing and rendering only: :func:`bot.flows.wizard.editing.open_edit` starts the session (the service layer checks
first that the person may operate the chain), the wizard's own listeners (:mod:`bot.slack.wizard`) run every click
after that, and *Apply changes* is decided by :func:`bot.services.editing.apply`.
"""

from __future__ import annotations

import asyncio

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext
from slack_sdk.web.async_client import AsyncWebClient

from bot.access import Refused
from bot.flows.wizard import editing
from bot.flows.wizard.controller import WizardController
from bot.slack.actors import actor_of, directory_of
from bot.slack.wizard import open_or_explain, user_tz
from bot.slack.wizard_render import modal

EDIT_ACTION = "chain_edit"  # a button whose value is the chain's id (on /backup status and the App Home)
USAGE = "Say which chain: `/backup edit <chain name>` (`/backup list` shows them)."


async def _tz(context: AsyncBoltContext, client: AsyncWebClient, user_id: str) -> str:
    """The person's time zone for the wizard, if Slack answers within a second (else UTC, as for /backup new)."""
    try:
        return await asyncio.wait_for(user_tz(directory_of(context, client), user_id), 1.0)
    except TimeoutError:
        return "UTC"


async def start(controller: WizardController, client: AsyncWebClient, context: AsyncBoltContext, *, chain: str | int,
                trigger_id: str, user_id: str, channel_id: str | None) -> str | None:  # fmt: skip
    """Open the edit wizard of ``chain`` (a name or an id); return the sentence to tell the person instead when it
    cannot be opened (not found, not theirs to change, retired)."""
    actor = await actor_of(context, client, user_id)
    try:
        screen = await editing.open_edit(controller, actor, chain, channel_id, user_tz=await _tz(context, client,
                                                                                                 user_id))  # fmt: skip
    except Refused as exc:
        return exc.sentence
    await open_or_explain(client, trigger_id, modal(screen), user_id, channel_id)
    return None


async def open_edit(controller: WizardController, client: AsyncWebClient, context: AsyncBoltContext,
                    command: dict) -> None:  # fmt: skip
    """``/backup edit <chain>``: the chain's wizard at its review step, or a sentence saying why not."""
    words = (command.get("text") or "").strip().split(maxsplit=1)
    name = words[1].strip() if len(words) > 1 else ""
    said = USAGE if not name else await start(controller, client, context, chain=name,
                                              trigger_id=command["trigger_id"], user_id=command["user_id"],
                                              channel_id=command.get("channel_id"))  # fmt: skip
    if said:
        await client.chat_postEphemeral(channel=command["channel_id"], user=command["user_id"], text=said)


def register(app: AsyncApp, controller: WizardController) -> None:
    """The *Edit* button (action ``chain_edit``, value: the chain's id) wherever a chain is shown."""

    @app.action(EDIT_ACTION)
    async def on_edit(ack: AsyncAck, body: dict, action: dict, client: AsyncWebClient,
                      context: AsyncBoltContext) -> None:  # fmt: skip
        await ack()
        value = str(action.get("value") or "")
        channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
        user_id = body["user"]["id"]
        said = await start(controller, client, context, chain=int(value) if value.isdigit() else value,
                           trigger_id=body["trigger_id"], user_id=user_id, channel_id=channel)  # fmt: skip
        if said and channel:
            await client.chat_postEphemeral(channel=channel, user=user_id, text=said)
        elif said:  # a click on the App Home: tell them in a DM
            await client.chat_postMessage(channel=user_id, text=said)
