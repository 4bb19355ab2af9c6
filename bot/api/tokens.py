"""The HTTP surface's view of API tokens: reading a bearer token from a request and creating one for tests/tools.

Tokens are :class:`storage.models.ApiToken` rows managed by :mod:`bot.services.tokens` (create, list, revoke,
expiry, read/write scope, lookup by hash index). A token acts for one workspace and, when created with ``--user``,
as that Slack user: the API applies that user's roles (a token without a user reads ``/metrics`` only and touches
no server); a ``read`` token never changes state or contacts a server.
"""

from __future__ import annotations

from datetime import timedelta

from aiohttp import web

from bot.services.tokens import PREFIX, TokenIdentity, TokenRejected, authenticate, issue
from storage.models import TokenScope

__all__ = ["PREFIX", "TokenIdentity", "TokenRejected", "bearer", "create_token", "identity_of", "team_for_token"]


def bearer(request: web.Request) -> str:
    """The token of an ``Authorization: Bearer …`` header ('' when there is none)."""
    header = request.headers.get("Authorization", "")
    return header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""


async def create_token(team_id: str, user_id: str | None = None, *, scope: TokenScope | None = None,
                       lifetime: timedelta | None = None, label: str = "") -> str:  # fmt: skip
    """A new token for ``team_id`` acting as ``user_id``, without a role check (tests and tools; people use
    ``backup-bot api-token create``). Default scope: write with a user (it acts with their roles), read without."""
    wanted = scope or (TokenScope.WRITE if user_id else TokenScope.READ)
    return (await issue(team_id, user_id, scope=wanted, lifetime=lifetime, label=label, created_by="tool")).secret


async def identity_of(token: str) -> TokenIdentity | None:
    """Who a token acts as, or None for an unknown, revoked or expired one (surfaces that want the reason call
    :func:`bot.services.tokens.authenticate`)."""
    try:
        return await authenticate(token)
    except TokenRejected:
        return None


async def team_for_token(token: str) -> str | None:
    """The workspace a usable token belongs to, or None."""
    found = await identity_of(token)
    return found.team_id if found else None
