"""chat.* methods: post, update, delete and ephemeral messages, with Slack's membership and block rules.

Posting to a user id opens the app's DM (as Slack does); a public channel the bot is not in answers
``not_in_channel``, a private one it cannot see ``channel_not_found``; bad blocks answer ``invalid_blocks``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import ApiError
from .limits import MESSAGE_TEXT_MAX, check_message_blocks
from .messages import Ephemeral
from .registry import Channel
from .world import Ctx


def resolve_channel(ctx: Ctx, ref: str | None) -> Channel:
    """The conversation to post in, checking the bot can post there."""
    registry, bot = ctx.world.registry, ctx.installation
    if ref and ref[0] in "UW":
        try:
            return registry.open_dm(bot.team_id, bot.bot_user_id, ref)[0]
        except ApiError as exc:
            raise ApiError("channel_not_found") from exc
    channel = registry.channel(bot.team_id, ref)
    if bot.bot_user_id not in channel.members:
        if channel.is_private or channel.is_im:
            raise ApiError("channel_not_found")
        if "chat:write.public" not in bot.scopes.split(","):
            raise ApiError("not_in_channel")
    return channel


def message_content(ctx: Ctx) -> dict[str, Any]:
    """text/blocks/attachments of a message, refused like Slack when empty, too long or with bad blocks."""
    blocks = ctx.json("blocks", "invalid_blocks_format")
    attachments = ctx.json("attachments", "invalid_attachments")
    text = ctx.text("text")
    if blocks is not None:
        problems = check_message_blocks(blocks)
        if problems:
            plain = [p.removeprefix("[ERROR] ") for p in problems]
            raise ApiError("invalid_blocks", messages=problems, extra={"errors": plain})
    if text is not None and len(text) > MESSAGE_TEXT_MAX:
        raise ApiError("msg_too_long")
    if not text and not blocks and not attachments:
        raise ApiError("no_text")
    content: dict[str, Any] = {"text": text or ""}
    if blocks is not None:
        content["blocks"] = blocks
    if attachments is not None:
        content["attachments"] = attachments
    return content


def bot_message(ctx: Ctx, content: dict[str, Any], ts: str) -> dict[str, Any]:
    """A message authored by the calling bot, as Slack returns and stores it."""
    bot = ctx.installation
    bot_user = ctx.world.registry.users.get(bot.bot_user_id)
    message: dict[str, Any] = {
        "type": "message",
        "user": bot.bot_user_id,
        "bot_id": bot.bot_id,
        "app_id": bot.app_id,
        "team": bot.team_id,
        "ts": ts,
        **content,
        "bot_profile": {
            "id": bot.bot_id,
            "app_id": bot.app_id,
            "team_id": bot.team_id,
            "name": bot_user.name if bot_user else "bot",
        },
    }
    for name in ("thread_ts", "metadata"):
        if ctx.params.get(name):
            message[name] = ctx.json(name, "invalid_metadata_format") if name == "metadata" else ctx.params[name]
    return message


def post_message(ctx: Ctx) -> dict[str, Any]:
    """chat.postMessage."""
    channel = resolve_channel(ctx, ctx.text("channel"))
    message = bot_message(ctx, message_content(ctx), ctx.world.ids.ts())
    ctx.world.messages.add(channel.id, message)
    return {"channel": channel.id, "ts": message["ts"], "message": dict(message)}


def _own_message(ctx: Ctx, refusal: str) -> tuple[Channel, dict[str, Any]]:
    channel = resolve_channel(ctx, ctx.text("channel"))
    message = ctx.world.messages.get(channel.id, ctx.text("ts"))
    if message.get("bot_id") != ctx.installation.bot_id:
        raise ApiError(refusal)
    return channel, message


def update_message(ctx: Ctx) -> dict[str, Any]:
    """chat.update: omitted blocks/attachments are kept, as documented."""
    channel, message = _own_message(ctx, "cant_update_message")
    content = message_content(ctx)
    updated = ctx.world.messages.update(
        channel.id, message["ts"], content, ctx.installation.bot_user_id, ctx.world.ids.ts()
    )
    return {"channel": channel.id, "ts": updated["ts"], "text": updated.get("text", ""), "message": dict(updated)}


def delete_message(ctx: Ctx) -> dict[str, Any]:
    """chat.delete."""
    channel, message = _own_message(ctx, "cant_delete_message")
    ctx.world.messages.delete(channel.id, message["ts"])
    return {"channel": channel.id, "ts": message["ts"]}


def post_ephemeral(ctx: Ctx) -> dict[str, Any]:
    """chat.postEphemeral: only to a member of the channel."""
    channel = resolve_channel(ctx, ctx.text("channel"))
    user = ctx.world.registry.user(ctx.team_id, ctx.text("user", required=True, error="user_not_found"))
    if user.id not in channel.members:
        raise ApiError("user_not_in_channel")
    message = bot_message(ctx, message_content(ctx), ctx.world.ids.ts())
    ctx.world.messages.ephemerals.append(Ephemeral(channel.id, user.id, message))
    return {"message_ts": message["ts"]}


METHODS: dict[str, Callable[[Ctx], dict[str, Any]]] = {
    "chat.postMessage": post_message,
    "chat.update": update_message,
    "chat.delete": delete_message,
    "chat.postEphemeral": post_ephemeral,
}
