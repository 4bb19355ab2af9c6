"""Per-workspace API tokens: shown once, stored only as SHA-256 hashes in the Workspace's settings."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from storage.models import Workspace

PREFIX = "bwapi_"
KEY = "api_token_hashes"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


async def create_token(team_id: str) -> str:
    """A new token for ``team_id`` (the workspace row is created if needed); only its hash is kept."""
    token = PREFIX + secrets.token_urlsafe(32)
    workspace, _ = await Workspace.get_or_create(team_id=team_id)
    settings = dict(workspace.settings or {})
    settings[KEY] = [*settings.get(KEY, []), _digest(token)]
    workspace.settings = settings
    await workspace.save(update_fields=["settings"])
    return token


async def team_for_token(token: str) -> str | None:
    """The workspace a token belongs to, or None. Compares in constant time against every stored hash."""
    if not token.startswith(PREFIX):
        return None
    wanted = _digest(token)
    found = None
    for workspace in await Workspace.all():
        for stored in (workspace.settings or {}).get(KEY, []):
            if hmac.compare_digest(stored, wanted):
                found = workspace.team_id
    return found
