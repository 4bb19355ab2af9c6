"""The payloads Slack sends to an app, field for field: slash commands, interactions and Events API callbacks.

Shapes follow what Slack actually delivers (``user``/``team`` objects, ``container``, ``api_app_id``, the
deprecated verification ``token``), because bolt's matchers and the app's parsers read these exact fields.
"""

from __future__ import annotations

import time
from typing import Any

from .registry import BotToken, Channel, Team, User

VERIFICATION_TOKEN = "emulator-verification-token"  # noqa: S105 - Slack's deprecated, non-secret field


def slash_command(
    *,
    bot: BotToken,
    team: Team,
    user: User,
    channel: Channel,
    command: str,
    text: str,
    trigger_id: str,
    response_url: str,
) -> dict[str, str]:
    """A slash command: form fields over HTTP, the same dict (all strings) over Socket Mode."""
    return {
        "token": VERIFICATION_TOKEN,
        "team_id": team.id,
        "team_domain": team.domain,
        "channel_id": channel.id,
        "channel_name": "directmessage" if channel.is_im else channel.name,
        "user_id": user.id,
        "user_name": user.name,
        "command": command,
        "text": text,
        "api_app_id": bot.app_id,
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": trigger_id,
    }


def _base(kind: str, bot: BotToken, team: Team, user: User) -> dict[str, Any]:
    return {
        "type": kind,
        "user": user.ref(),
        "api_app_id": bot.app_id,
        "token": VERIFICATION_TOKEN,
        "team": team.ref(),
        "enterprise": None,
        "is_enterprise_install": False,
    }


def block_actions_in_view(
    *, bot: BotToken, team: Team, user: User, view: dict[str, Any], action: dict[str, Any], trigger_id: str
) -> dict[str, Any]:
    """block_actions from a modal or the home tab."""
    payload = _base("block_actions", bot, team, user)
    payload.update(
        container={"type": "view", "view_id": view["id"]},
        trigger_id=trigger_id,
        view=view,
        actions=[action],
    )
    return payload


def block_actions_in_message(
    *,
    bot: BotToken,
    team: Team,
    user: User,
    channel: Channel,
    message: dict[str, Any],
    action: dict[str, Any],
    trigger_id: str,
    response_url: str,
    values: dict[str, Any],
    ephemeral: bool = False,
) -> dict[str, Any]:
    """block_actions from a message (with channel, message, state and response_url). Slack leaves the ``message``
    out for an ephemeral one (the app never owned it) and marks the container ``is_ephemeral``."""
    payload = _base("block_actions", bot, team, user)
    container = {"type": "message", "message_ts": message["ts"], "channel_id": channel.id, "is_ephemeral": ephemeral}
    payload.update(
        container=container,
        trigger_id=trigger_id,
        channel={"id": channel.id, "name": channel.name},
        state={"values": values},
        response_url=response_url,
        actions=[action],
    )
    if not ephemeral:
        payload["message"] = message
    return payload


def view_submission(*, bot: BotToken, team: Team, user: User, view: dict[str, Any], trigger_id: str) -> dict[str, Any]:
    """view_submission: the view with ``state.values``, ``private_metadata``, ``callback_id``, ``hash``."""
    payload = _base("view_submission", bot, team, user)
    payload.update(trigger_id=trigger_id, view=view, response_urls=[])
    return payload


def view_closed(*, bot: BotToken, team: Team, user: User, view: dict[str, Any], is_cleared: bool) -> dict[str, Any]:
    """view_closed (sent only when the view set ``notify_on_close``)."""
    payload = _base("view_closed", bot, team, user)
    payload.update(view=view, is_cleared=is_cleared)
    return payload


def block_suggestion(
    *, bot: BotToken, team: Team, user: User, view: dict[str, Any], block_id: str, action_id: str, value: str
) -> dict[str, Any]:
    """block_suggestion for an external select: what the user typed so far."""
    payload = _base("block_suggestion", bot, team, user)
    payload.update(
        container={"type": "view", "view_id": view["id"]},
        view=view,
        block_id=block_id,
        action_id=action_id,
        value=value,
    )
    return payload


def event_callback(*, bot: BotToken, event: dict[str, Any], event_id: str) -> dict[str, Any]:
    """An Events API ``event_callback`` envelope around ``event``."""
    return {
        "token": VERIFICATION_TOKEN,
        "team_id": bot.team_id,
        "api_app_id": bot.app_id,
        "event": event,
        "type": "event_callback",
        "event_id": event_id,
        "event_time": int(time.time()),
        "authorizations": [
            {
                "enterprise_id": None,
                "team_id": bot.team_id,
                "user_id": bot.bot_user_id,
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": False,
        "event_context": f"4-emulator-{event_id}",
    }


def app_home_opened(*, user: User, channel: Channel, view: dict[str, Any] | None) -> dict[str, Any]:
    """The ``app_home_opened`` event (with the published home view, if any)."""
    event: dict[str, Any] = {
        "type": "app_home_opened",
        "user": user.id,
        "channel": channel.id,
        "tab": "home",
        "event_ts": f"{time.time():.6f}",
    }
    if view is not None:
        event["view"] = view
    return event


def url_verification(challenge: str) -> dict[str, Any]:
    """The challenge Slack sends when an Events API request URL is configured."""
    return {"token": VERIFICATION_TOKEN, "challenge": challenge, "type": "url_verification"}
