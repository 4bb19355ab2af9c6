"""Who is acting in a Slack request: the :class:`~bot.access.Actor` the service layer checks.

:class:`SlackDirectory` answers the two questions only Slack can — is this user a workspace admin or owner
(``users.info``), who is in user group S… (``usergroups.users.list``) — and remembers the answers for a minute, so a
burst of clicks costs one Web API call. Any failure to ask is a "no": a Slack outage never makes anyone an admin.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from slack_bolt.async_app import AsyncBoltContext
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from bot.access import Actor, resolve_actor
from storage.tenancy import Installation, Origin, Tenant, tenant_of

log = logging.getLogger(__name__)
TTL = 60.0
MAX_ENTRIES = 10_000


class SlackDirectory:
    def __init__(self, client: AsyncWebClient, *, ttl: float = TTL) -> None:
        self.client = client
        self.ttl = ttl
        self._cache: dict[tuple[str, str, str], tuple[float, Any]] = {}
        self._asking: dict[tuple[str, str, str], asyncio.Future[dict[str, Any] | None]] = {}

    def _get(self, key: tuple[str, str, str]) -> Any:
        hit = self._cache.get(key)
        return hit[1] if hit is not None and time.monotonic() - hit[0] < self.ttl else None

    def _put(self, key: tuple[str, str, str], value: Any) -> Any:
        if len(self._cache) >= MAX_ENTRIES:
            self._cache.clear()
        self._cache[key] = (time.monotonic(), value)
        return value

    async def user(self, user_id: str) -> dict[str, Any] | None:
        """``users.info``'s user, remembered for a minute; callers asking at the same moment share one request
        (None when Slack could not be asked: not remembered)."""
        key = ("user", "", user_id)
        cached = self._get(key)
        if cached is not None:
            return cached
        pending = self._asking.get(key)
        if pending is None:
            pending = self._asking[key] = asyncio.ensure_future(self._ask_user(user_id))
            pending.add_done_callback(lambda _: self._asking.pop(key, None))
        user = await asyncio.shield(pending)
        return None if user is None else self._put(key, user)

    async def _ask_user(self, user_id: str) -> dict[str, Any] | None:
        try:
            return (await self.client.users_info(user=user_id)).get("user") or {}
        except (SlackApiError, SlackClientError, OSError) as exc:
            log.warning("users.info failed: %s", type(exc).__name__)
            return None

    async def is_workspace_admin(self, team_id: str, user_id: str) -> bool:
        user = await self.user(user_id)
        if not user:
            return False
        if team_id.startswith("E"):  # an org-wide install: an admin of the org (Enterprise Grid), none other
            org = user.get("enterprise_user") or {}
            return org.get("enterprise_id") == team_id and bool(
                org.get("is_admin") or org.get("is_owner") or user.get("is_primary_owner"))  # fmt: skip
        if user.get("team_id") not in (None, team_id):  # an admin of another workspace is not one here
            return False
        return bool(user.get("is_admin") or user.get("is_owner") or user.get("is_primary_owner"))

    async def group_members(self, team_id: str, group_id: str) -> frozenset[str]:
        key = ("group", team_id, group_id)
        cached = self._get(key)
        if cached is not None:
            return cached
        try:
            members = (await self.client.usergroups_users_list(usergroup=group_id)).get("users") or []
        except (SlackApiError, SlackClientError, OSError) as exc:
            log.warning("cannot read user group %s: %s", group_id, type(exc).__name__)
            return frozenset()
        return self._put(key, frozenset(m for m in members if isinstance(m, str)))


class Installations:
    """Where this bot is installed. Single-token mode: the bot token's own workspace (and Grid org), from one
    ``auth.test`` remembered for the process's life. A failure to ask is not remembered and installs nothing, so a
    Slack outage refuses requests rather than admitting any workspace."""

    def __init__(self, client: AsyncWebClient, known: tuple[Installation, ...] | None = None) -> None:
        self.client = client
        self._known = known
        self._lock = asyncio.Lock()

    async def all(self) -> tuple[Installation, ...]:
        if self._known is None:
            async with self._lock:
                if self._known is None:
                    self._known = await self._ask()
        return self._known or ()

    async def _ask(self) -> tuple[Installation, ...] | None:
        try:
            answer = await self.client.auth_test()
        except (SlackApiError, SlackClientError, OSError) as exc:
            log.warning("auth.test failed (%s): requests are refused until Slack answers", type(exc).__name__)
            return None
        return (Installation(team_id=answer.get("team_id") or None, enterprise_id=answer.get("enterprise_id") or None,
                             is_enterprise_install=bool(answer.get("is_enterprise_install"))),)  # fmt: skip


def origin_of(context: AsyncBoltContext) -> Origin:
    """Where bolt read this request to come from (workspace, Grid org, org-wide install)."""
    return Origin(team_id=context.team_id or None, enterprise_id=context.enterprise_id or None,
                  is_enterprise_install=bool(context.is_enterprise_install))  # fmt: skip


async def tenant_for(context: AsyncBoltContext, installations: Installations) -> Tenant | None:
    """This request's Tenant under :func:`storage.tenancy.tenant_of`, or None: not a workspace the bot is in."""
    return tenant_of(origin_of(context), await installations.all())


def directory_of(context: AsyncBoltContext, client: AsyncWebClient) -> SlackDirectory:
    """The app's directory (set by the tenant middleware), or a fresh one for a listener called alone in a test."""
    found = context.get("directory")
    return found if isinstance(found, SlackDirectory) else SlackDirectory(client)


async def actor_of(context: AsyncBoltContext, client: AsyncWebClient, user_id: str) -> Actor:
    """The acting user of this request, with the roles they hold now."""
    return await resolve_actor(directory_of(context, client), context["tenant"].team_id, user_id)
