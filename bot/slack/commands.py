"""Slash command listeners: ``/backup <subcommand>``.

The answer goes back in the ack (an ephemeral response), which is the fastest path and needs no extra scope.
"""

from __future__ import annotations

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot.flows.wizard.controller import WizardController
from bot.services import templates
from bot.slack import archives, audit, chain_settings, drill, listing, pools, retire, roles, servers
from bot.slack import restore as restore_flow
from bot.slack.actors import actor_of
from bot.slack.blocks import SUBCOMMANDS, help_blocks
from bot.slack.edit import open_edit
from bot.slack.wizard import open_or_explain, open_wizard
from bot.slack.wizard_render import modal

COMMAND = "/backup"


def answer_for(text: str) -> list[dict]:
    """Blocks answering ``/backup <text>``; unknown or not-yet-available subcommands get help with a note."""
    word = (text or "").strip().split(maxsplit=1)[0].lower() if (text or "").strip() else "help"
    known = {c.name: c for c in SUBCOMMANDS}
    note = None
    if word not in known:
        note = f"I don't know `/backup {word[:40]}`. Here is what I can do:"
    elif not known[word].available:
        note = f"`/backup {word}` is not available in this version yet. Here is what I can do:"
    return [b.to_dict() for b in help_blocks(note)]


def register(app: AsyncApp, controller: WizardController | None = None) -> None:
    @app.command(COMMAND)
    async def backup_command(ack: AsyncAck, command: dict, client: AsyncWebClient, context: AsyncBoltContext,
                             respond: AsyncRespond) -> None:  # fmt: skip
        word = (command.get("text") or "").strip().split(maxsplit=1)[0].lower() if command.get("text") else "help"
        if word in listing.WORDS and context.get("tenant") is not None:
            found = await listing.answer(context["tenant"], command.get("text", ""),
                                         actor=await actor_of(context, client, command["user_id"]))  # its buttons
            await ack(response_type="ephemeral", text=found.text, blocks=found.to_dicts())
            return
        if word in ACTOR_ANSWERS and context.get("tenant") is not None:
            rest = (command.get("text") or "").strip().split(maxsplit=1)
            if word in SLOW_WORDS:  # it asks a server: ack within Slack's 3 s, answer through the response URL
                await ack()
            actor = await actor_of(context, client, command["user_id"])
            found = await ACTOR_ANSWERS[word](actor, rest[1] if len(rest) > 1 else "")
            answer = ack if word not in SLOW_WORDS else respond
            await answer(response_type="ephemeral", text=found.text, blocks=found.to_dicts())
            return
        if controller is None or word not in WIZARD_WORDS:
            await ack(response_type="ephemeral", text="Backup Wizard help", blocks=answer_for(command.get("text", "")))
            return
        await ack()
        await WIZARD_WORDS[word](controller, client, context, command)


async def _new(controller: WizardController, client: AsyncWebClient, context: AsyncBoltContext, command: dict):
    """``/backup new`` or ``/backup new from:<template>`` (the template pre-fills what it covers)."""
    words = (command.get("text") or "").split(maxsplit=1)
    prefill = None
    if len(words) > 1:
        name = words[1].strip().removeprefix("from:").strip()
        try:
            prefill = await templates.prefill(context["tenant"], name)
        except templates.TemplateError as exc:
            await _tell(client, command, f"{exc} See `/backup templates`.")
            return
    await open_wizard(controller, client, context, command["trigger_id"], command["user_id"], command.get("channel_id"),
                      prefill=prefill)  # fmt: skip


async def _resume(controller: WizardController, client: AsyncWebClient, context: AsyncBoltContext, command: dict):
    screen = await controller.resume(context["tenant"], command["user_id"])
    if screen is None:
        await _tell(client, command, "You have no open wizard. Start one with `/backup new`.")
        return
    await open_or_explain(client, command["trigger_id"], modal(screen), command["user_id"], command.get("channel_id"))


async def _cancel(controller: WizardController, client: AsyncWebClient, context: AsyncBoltContext, command: dict):
    screen = await controller.resume(context["tenant"], command["user_id"])
    if screen is None:
        await _tell(client, command, "You have no open wizard to cancel.")
        return
    await controller.cancel(context["tenant"], command["user_id"], screen.session_id)
    await _tell(client, command, "Your open wizard was cancelled; nothing was created.")


async def _tell(client: AsyncWebClient, command: dict, text: str) -> None:
    await client.chat_postEphemeral(channel=command["channel_id"], user=command["user_id"], text=text)


SLOW_WORDS = frozenset({"archives"})  # answers that run borg on a pool: acked first, answered afterwards
WIZARD_WORDS = {"new": _new, "resume": _resume, "cancel": _cancel, "edit": open_edit,
                "restore": restore_flow.open_from_command}
# Answers that act for the user (roles resolved first).
ACTOR_ANSWERS = {**chain_settings.ANSWERS, **roles.ANSWERS, **audit.ANSWERS, **pools.ANSWERS, **servers.ANSWERS,
                 **retire.ANSWERS, **archives.ANSWERS, **drill.ANSWERS}
