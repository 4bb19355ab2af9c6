"""What one person sees in the emulated workspace, as the JSON the page renders.

The page renders Block Kit generically from the JSON the bot sent, so this only gathers it per person: the
conversations they are in (channels and their DM with the bot), each with its messages and the ephemerals only
they see, their modal stack (with the errors Slack shows under inputs) and their home tab. Nothing is rendered
here and nothing is trusted: the page sets every string with ``textContent``.
"""

from __future__ import annotations

from typing import Any

from bot.playground.workspace import PEOPLE
from bot.slack.emulator import DEFAULT_BOT_USER, DEFAULT_TEAM, SlackEmulator

MAX_MESSAGES = 300  # per conversation, newest kept


def conversations(slack: SlackEmulator, user: str) -> list[dict[str, Any]]:
    """Given a person, return the conversations they see: channels they are in, then their DM with the bot."""
    registry = slack.world.registry
    mine = [c for c in registry.channels.values() if user in c.members and c.team_id == DEFAULT_TEAM]
    channels = sorted((c for c in mine if not c.is_im), key=lambda c: c.name)
    dms = [c for c in mine if c.is_im and DEFAULT_BOT_USER in c.members]
    return [{"id": c.id, "name": c.name, "label": f"#{c.name}", "is_im": False} for c in channels] + [
        {"id": c.id, "name": "backup-wizard", "label": "Backup Wizard (direct messages)", "is_im": True} for c in dms
    ]


def messages(slack: SlackEmulator, channel: str, user: str) -> list[dict[str, Any]]:
    """Given a conversation and a person, return what they see in it: messages and their own ephemerals, in time
    order, ephemerals marked."""
    shown = slack.messages(channel)[-MAX_MESSAGES:]
    for item in slack.world.messages.ephemerals:
        if item.channel == channel and item.user == user:
            shown.append({**item.message, "ephemeral": True})
    return sorted(shown, key=lambda m: float(m["ts"]))[-MAX_MESSAGES:]


def people(slack: SlackEmulator) -> list[dict[str, Any]]:
    """The switcher's people, and every user name for mentions (``<@U…>``) and user selects."""
    return [{"id": p.id, "name": p.name, "real_name": p.real_name, "role": p.role} for p in PEOPLE]


def names(slack: SlackEmulator) -> dict[str, dict[str, str]]:
    """Display names of users and channels, for ``<@U…>`` and ``<#C…>`` in mrkdwn and for conversation selects."""
    registry = slack.world.registry
    return {
        "users": {u.id: u.real_name or u.name for u in registry.users.values()},
        "channels": {c.id: c.name for c in registry.channels.values() if not c.is_im},
    }


def view_for(slack: SlackEmulator, user: str) -> dict[str, Any]:
    """Given a person, return everything the page shows them."""
    world = slack.world
    stack = [{**r.to_json(), "errors": dict(r.errors)} for r in world.views.stack(DEFAULT_TEAM, user)]
    home = world.views.home(DEFAULT_TEAM, user)
    chats = conversations(slack, user)
    return {
        "version": world.changes.version,
        "user": user,
        "people": people(slack),
        "names": names(slack),
        "conversations": chats,
        "messages": {c["id"]: messages(slack, c["id"], user) for c in chats},
        "modal": stack,
        "home": home.to_json() if home else None,
    }
