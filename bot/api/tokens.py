"""Per-workspace API tokens: shown once, stored only as SHA-256 hashes in the Workspace's settings.

A token acts for one workspace and, when created with ``--user``, as that Slack user: the API applies that user's
roles (a token without a user reads ``/metrics`` only and touches no server). Entries are ``{"hash", "user"}``;
tokens created before users existed are a bare hash.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from storage.models import Workspace

PREFIX = "bwapi_"
KEY = "api_token_hashes"


@dataclass(frozen=True)
class TokenIdentity:
    team_id: str
    user_id: str | None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


async def create_token(team_id: str, user_id: str | None = None) -> str:
    """A new token for ``team_id`` acting as ``user_id`` (the workspace row is created if needed); only its hash is
    kept."""
    token = PREFIX + secrets.token_urlsafe(32)
    workspace, _ = await Workspace.get_or_create(team_id=team_id)
    settings = dict(workspace.settings or {})
    settings[KEY] = [*settings.get(KEY, []), {"hash": _digest(token), "user": user_id}]
    workspace.settings = settings
    await workspace.save(update_fields=["settings"])
    return token


async def identity_of(token: str) -> TokenIdentity | None:
    """Who a token acts as, or None. Compares in constant time against every stored hash."""
    if not token.startswith(PREFIX):
        return None
    wanted = _digest(token)
    found = None
    for workspace in await Workspace.all():
        for stored in (workspace.settings or {}).get(KEY, []):
            entry = stored if isinstance(stored, dict) else {"hash": stored, "user": None}
            if hmac.compare_digest(str(entry.get("hash")), wanted):
                found = TokenIdentity(workspace.team_id, entry.get("user"))
    return found


async def team_for_token(token: str) -> str | None:
    """The workspace a token belongs to, or None."""
    found = await identity_of(token)
    return found.team_id if found else None
