"""auth.test, users.info, conversations.*, usergroups.users.list and apps.connections.open.

Bolt calls ``auth.test`` before any listener runs, and the Socket Mode client calls ``apps.connections.open``
with the app-level token to learn its WebSocket URL; both must answer with Slack's fields.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from .errors import ApiError
from .world import Ctx


def auth_test(ctx: Ctx) -> dict[str, Any]:
    """auth.test for a bot token."""
    bot = ctx.installation
    team = ctx.world.registry.team(bot.team_id)
    user = ctx.world.registry.users.get(bot.bot_user_id)
    return {
        "url": f"https://{team.domain}.slack.com/",
        "team": team.name or team.domain,
        "user": user.name if user else "bot",
        "team_id": team.id,
        "user_id": bot.bot_user_id,
        "bot_id": bot.bot_id,
        "is_enterprise_install": False,
    }


def users_info(ctx: Ctx) -> dict[str, Any]:
    """users.info."""
    user = ctx.world.registry.user(ctx.team_id, ctx.text("user", required=True, error="user_not_found"))
    out = user.to_json()
    if ctx.flag("include_locale"):
        out["locale"] = "en-US"
    return {"user": out}


def conversations_info(ctx: Ctx) -> dict[str, Any]:
    """conversations.info (private channels the bot is not in are invisible, as on Slack)."""
    bot = ctx.installation
    channel = ctx.world.registry.channel(bot.team_id, ctx.text("channel", required=True, error="channel_not_found"))
    if (channel.is_private or channel.is_im) and bot.bot_user_id not in channel.members:
        raise ApiError("channel_not_found")
    out = channel.to_json(viewer=bot.bot_user_id)
    if ctx.flag("include_num_members"):
        out["num_members"] = len(channel.members)
    return {"channel": out}


def conversations_members(ctx: Ctx) -> dict[str, Any]:
    """conversations.members with Slack's cursor pagination."""
    info = conversations_info(ctx)
    members = ctx.world.registry.channels[info["channel"]["id"]].members
    limit = int(ctx.params.get("limit") or 100)
    cursor = ctx.text("cursor")
    start = int(base64.b64decode(cursor).decode().split(":")[1]) if cursor else 0
    page = members[start : start + limit]
    more = start + limit < len(members)
    next_cursor = base64.b64encode(f"offset:{start + limit}".encode()).decode() if more else ""
    return {"members": list(page), "response_metadata": {"next_cursor": next_cursor}}


def conversations_open(ctx: Ctx) -> dict[str, Any]:
    """conversations.open for a DM with one user (multi-person DMs are not emulated)."""
    bot = ctx.installation
    existing = ctx.text("channel")
    if existing:
        channel = ctx.world.registry.channel(bot.team_id, existing)
        return {"no_op": True, "already_open": True, "channel": {"id": channel.id}}
    users = [u for u in (ctx.text("users") or "").split(",") if u]
    if not users:
        raise ApiError("users_list_not_supplied")
    if len(users) > 1:
        raise ApiError("not_supported", messages=["[ERROR] the emulator only opens 1:1 DMs"])
    channel, existed = ctx.world.registry.open_dm(bot.team_id, bot.bot_user_id, users[0])
    body: dict[str, Any] = {"channel": {"id": channel.id}}
    if existed:
        body.update(no_op=True, already_open=True)
    if ctx.flag("return_im"):
        body["channel"] = channel.to_json(viewer=bot.bot_user_id)
    return body


def usergroups_users_list(ctx: Ctx) -> dict[str, Any]:
    """usergroups.users.list: the ids of a user group's members."""
    group = ctx.world.registry.usergroup(ctx.team_id, ctx.text("usergroup", required=True, error="no_such_subteam"))
    return {"users": list(group.users)}


def connections_open(ctx: Ctx) -> dict[str, Any]:
    """apps.connections.open: a single-use WebSocket URL for the app token's app."""
    assert ctx.app is not None
    ticket = ctx.world.ids.token()
    ctx.world.socket_tickets[ticket] = ctx.app.app_id
    ws_base = ctx.world.base_url.replace("http://", "ws://", 1)
    return {"url": f"{ws_base}/link/?ticket={ticket}&app_id={ctx.app.app_id}"}


METHODS: dict[str, Callable[[Ctx], dict[str, Any]]] = {
    "auth.test": auth_test,
    "users.info": users_info,
    "conversations.info": conversations_info,
    "conversations.members": conversations_members,
    "conversations.open": conversations_open,
    "usergroups.users.list": usergroups_users_list,
    "apps.connections.open": connections_open,
}
APP_TOKEN_METHODS = frozenset({"apps.connections.open"})
