"""Slash command listeners: ``/backup <subcommand>``.

The answer goes back in the ack (an ephemeral response), which is the fastest path and needs no extra scope.
"""

from __future__ import annotations

from slack_bolt.async_app import AsyncAck, AsyncApp

from bot.slack.blocks import SUBCOMMANDS, help_blocks

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


def register(app: AsyncApp) -> None:
    @app.command(COMMAND)
    async def backup_command(ack: AsyncAck, command: dict) -> None:
        blocks = answer_for(command.get("text", ""))
        await ack(response_type="ephemeral", text="Backup Wizard help", blocks=blocks)
