"""The gate every Slack request passes after bolt checked its signature and before any listener runs.

1. **Tenant.** The request's workspace (or Grid org) must be one the bot is installed in
   (:func:`bot.slack.actors.tenant_for`, one rule for every surface). Otherwise it is refused — a slash command with
   one sentence, anything else with nothing to act on — and no Workspace row is created for it.
2. **Once.** A request is named by its signature (HTTP), its ``trigger_id`` and, for events, its ``event_id``
   (:mod:`storage.replay`); a name already seen means a copy: a captured request replayed within Slack's 5-minute
   window, or an event Slack resends (``x-slack-retry-num``). The copy is acknowledged (so Slack stops resending)
   and has no effect. Each click or command of a person has its own ``trigger_id`` and signature, so repeated
   clicks are never copies.
3. The workspace's row exists (created on first contact), and ``context["tenant"]`` is set for the listeners.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncBoltContext
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

from bot.slack.actors import Installations, SlackDirectory, tenant_for
from storage import replay
from storage.models import Workspace

log = logging.getLogger(__name__)
EXPIRE_EVERY = 60.0  # seconds between removals of old SeenRequest rows
NOT_INSTALLED = ("Backup Wizard is not installed in this workspace, so it does nothing here. A workspace admin "
                 "can install it from the app's page; until then, use it in the workspace where it is installed.")
NO_EFFECT_KINDS = frozenset({"block_suggestion"})  # options requests only read: never deduplicated


def request_keys(req: AsyncBoltRequest, body: dict[str, Any]) -> list[str]:
    """Given a request, the names under which its copies are recognised (none for read-only requests)."""
    if body.get("type") in NO_EFFECT_KINDS:
        return []
    keys = []
    signature = _header(req, "x-slack-signature")
    if signature:
        keys.append(replay.request_key("sig", signature))
    for kind, field in (("trigger", "trigger_id"), ("event", "event_id")):
        value = body.get(field)
        if isinstance(value, str) and value:
            keys.append(replay.request_key(kind, value))
    return keys


def _header(req: AsyncBoltRequest, name: str) -> str | None:
    values = req.headers.get(name) or []
    return values[0] if values else None


def refusal(req: AsyncBoltRequest, body: dict[str, Any]) -> BoltResponse:
    """The answer to a request from a workspace the bot is not installed in: a slash command is told why; anything
    else is acknowledged over Socket Mode (so it is not resent) and refused with 403 over HTTP."""
    if body.get("command"):
        return BoltResponse(status=200, body={"response_type": "ephemeral", "text": NOT_INSTALLED})
    return BoltResponse(status=200 if req.mode == "socket_mode" else 403, body="" if req.mode == "socket_mode"
                        else NOT_INSTALLED)  # fmt: skip


def gate(installations: Installations, directory: SlackDirectory) -> Callable[..., Awaitable[BoltResponse | None]]:
    """The global middleware described in the module docstring."""
    known: set[str] = set()
    last_expiry = [0.0]

    async def guard(req: AsyncBoltRequest, body: dict[str, Any], context: AsyncBoltContext,
                    next: Callable[[], Awaitable[None]]) -> BoltResponse | None:  # fmt: skip
        context["directory"] = directory  # who is an admin / in a user group, remembered for a minute
        tenant = await tenant_for(context, installations)
        if tenant is None:
            log.warning("refused a request from a workspace this bot is not installed in (team %s, org %s)",
                        context.team_id, context.enterprise_id)  # fmt: skip
            return refusal(req, body)
        if time.monotonic() - last_expiry[0] > EXPIRE_EVERY:
            last_expiry[0] = time.monotonic()
            await replay.forget_older()
        keys = request_keys(req, body)
        if keys and not await replay.first_sighting(keys):
            log.info("ignored a copy of a request already handled (%s, retry %s)", body.get("type") or "command",
                     _header(req, "x-slack-retry-num") or "-")  # fmt: skip
            return BoltResponse(status=200, body="")
        if tenant.team_id not in known:
            await Workspace.get_or_create(team_id=tenant.team_id)
            known.add(tenant.team_id)
        context["tenant"] = tenant
        await next()
        return None

    return guard
