"""``response_url`` posts (bolt's ``respond()``): ephemeral by default, ``in_channel``, replace or delete original.

Slack accepts up to 5 posts per response_url; the same limit applies here. Blocks are checked like messages.
"""

from __future__ import annotations

from typing import Any

from .errors import ApiError
from .limits import check_message_blocks
from .messages import Ephemeral
from .world import ResponseTarget, World

MAX_USES = 5


def _as_bot_message(world: World, target: ResponseTarget, body: dict[str, Any]) -> dict[str, Any]:
    bot = world.registry.bot_for_team(target.team_id)
    message = {
        "type": "message",
        "user": bot.bot_user_id,
        "bot_id": bot.bot_id,
        "app_id": bot.app_id,
        "team": bot.team_id,
        "ts": world.ids.ts(),
        "text": body.get("text", ""),
    }
    for name in ("blocks", "attachments", "thread_ts"):
        if name in body:
            message[name] = body[name]
    return message


def apply_response(world: World, target: ResponseTarget, body: Any) -> tuple[int, str]:
    """Apply one response_url post; returns the HTTP status and text Slack would answer."""
    if not isinstance(body, dict):
        return 400, "invalid_payload"
    if target.uses >= MAX_USES:
        return 404, "used_url"
    if "blocks" in body and check_message_blocks(body["blocks"]):
        return 400, "invalid_blocks"
    target.uses += 1
    world.responses.append({"channel": target.channel_id, "user": target.user_id, "body": body})
    try:
        show(world, target, body)
    except ApiError as exc:  # the original message is gone
        return 404, exc.code
    return 200, "ok"


def show(world: World, target: ResponseTarget, body: dict[str, Any]) -> None:
    """Display a reply the way Slack does (also used for a slash command's ack body)."""
    store = world.messages
    private = store.ephemeral_at(target.channel_id, target.message_ts, target.user_id) if target.message_ts else None
    if private is not None and (body.get("delete_original") or body.get("replace_original")):
        store.ephemerals = [e for e in store.ephemerals if e.message is not private]
        if body.get("replace_original"):  # an ephemeral is replaced by another one, for the same person
            store.ephemerals.append(Ephemeral(target.channel_id, target.user_id, _as_bot_message(world, target, body)))
    elif body.get("delete_original") and target.message_ts:
        store.delete(target.channel_id, target.message_ts)
    elif body.get("replace_original") and target.message_ts:
        changes: dict[str, Any] = {k: body[k] for k in ("text", "blocks", "attachments") if k in body}
        bot = world.registry.bot_for_team(target.team_id)
        store.update(target.channel_id, target.message_ts, changes, bot.bot_user_id, world.ids.ts())
    elif body.get("response_type") == "in_channel":
        store.add(target.channel_id, _as_bot_message(world, target, body))
    else:
        store.ephemerals.append(Ephemeral(target.channel_id, target.user_id, _as_bot_message(world, target, body)))
