"""Wizard sessions in the database: created, loaded (only by their owner), saved with a version check.

The modal carries only the session id; everything else lives in the WizardSession row, saved after every
transition, so a restart of the bot loses nothing. ``version`` makes a stale writer (a double click, a
second bot process) fail instead of overwriting newer answers. Sessions expire after ``ttl`` of inactivity.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from storage.models import WizardSession
from storage.tenancy import Tenant

DEFAULT_TTL = timedelta(days=2)
CLOSED = ("done", "cancelled")


class StaleSession(Exception):
    """Someone saved this session in between; reload and try again."""


class SessionGone(Exception):
    """No open session with that id for this user (finished, cancelled, expired, or someone else's)."""


async def create(tenant: Tenant, user_id: str, channel_id: str | None, state: str, data: dict[str, Any], *,
                 ttl: timedelta = DEFAULT_TTL) -> WizardSession:  # fmt: skip
    return await tenant.create(
        WizardSession, id=uuid.uuid4(), user_id=user_id, channel_id=channel_id, state=state, data=data,
        expires_at=datetime.now(UTC) + ttl,
    )  # fmt: skip


async def load(tenant: Tenant, session_id: str, user_id: str) -> WizardSession:
    try:
        key = uuid.UUID(str(session_id))
    except ValueError:
        raise SessionGone("That wizard session id is not valid.") from None
    row = await tenant.get_or_none(WizardSession, id=key, user_id=user_id)
    if row is None or row.state in CLOSED:
        raise SessionGone("This wizard is finished or cancelled. Start a new one with `/backup new`.")
    if row.expires_at is not None and row.expires_at < datetime.now(UTC):
        raise SessionGone("This wizard expired after a long pause. Start a new one with `/backup new`.")
    return row


async def save(row: WizardSession, *, ttl: timedelta = DEFAULT_TTL) -> None:
    """Write state and data if nobody else saved since we loaded; bumps the version."""
    expires = datetime.now(UTC) + ttl
    updated = await WizardSession.filter(id=row.id, version=row.version).update(
        state=row.state, data=row.data, view_id=row.view_id, version=row.version + 1, expires_at=expires
    )
    if updated != 1:
        raise StaleSession("This wizard was changed in another window; it has been reloaded.")
    row.version += 1
    row.expires_at = expires


async def latest_open(tenant: Tenant, user_id: str) -> WizardSession | None:
    now = datetime.now(UTC)
    return (
        await tenant.query(WizardSession)
        .filter(user_id=user_id, expires_at__gt=now)
        .exclude(state__in=CLOSED)
        .order_by("-updated_at")
        .first()
    )


async def expired_open(now: datetime | None = None) -> list[WizardSession]:
    """Open sessions past their expiry (across workspaces: the periodic clean-up is the bot's own job)."""
    moment = now or datetime.now(UTC)
    return await WizardSession.filter(expires_at__lt=moment).exclude(state__in=CLOSED)
