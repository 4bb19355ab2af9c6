"""Wizard sessions in the database: created, loaded (only by their owner), saved with a version check.

The modal carries only the session id; everything else lives in the WizardSession row, saved after every
transition, so a restart of the bot loses nothing. ``version`` makes a stale writer (a double click, a
second bot process) fail instead of overwriting newer answers. Sessions expire after ``ttl`` of inactivity.

A save may still be on its way when the next read of the session comes (a caller that answers first and saves
after, ``submit(save_later=True)``; a background slow step): a load, and ``latest_open``, first wait for the saves
still running in this process, so a session is always read as last written, whatever the connection pool does.
"""

from __future__ import annotations

import asyncio
import uuid
import weakref
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


_saving: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[uuid.UUID, asyncio.Future[None]]] = (
    weakref.WeakKeyDictionary()
)


def _saves() -> dict[uuid.UUID, asyncio.Future[None]]:
    """The saves running now on this event loop, by session id."""
    loop = asyncio.get_running_loop()
    found = _saving.get(loop)
    if found is None:
        found = _saving[loop] = {}
    return found


async def load(tenant: Tenant, session_id: str, user_id: str) -> WizardSession:
    try:
        key = uuid.UUID(str(session_id))
    except ValueError:
        raise SessionGone("That wizard session id is not valid.") from None
    running = _saves().get(key)
    if running is not None:  # read what that save writes, not what was there before it
        await asyncio.shield(running)
    row = await tenant.get_or_none(WizardSession, id=key, user_id=user_id)
    if row is None or row.state in CLOSED:
        raise SessionGone("This wizard is finished or cancelled. Start a new one with `/backup new`.")
    if row.expires_at is not None and row.expires_at < datetime.now(UTC):
        raise SessionGone("This wizard expired after a long pause. Start a new one with `/backup new`.")
    return row


async def save(row: WizardSession, *, ttl: timedelta = DEFAULT_TTL) -> None:
    """Write state and data if nobody else saved since we loaded; bumps the version."""
    saves = _saves()
    before = saves.get(row.id)
    done = asyncio.get_running_loop().create_future()
    saves[row.id] = done
    try:
        if before is not None:  # two saves of one session: in the order they were asked for
            await asyncio.shield(before)
        await _write(row, ttl)
    finally:
        done.set_result(None)
        if saves.get(row.id) is done:
            del saves[row.id]


async def _write(row: WizardSession, ttl: timedelta) -> None:
    expires = datetime.now(UTC) + ttl
    updated = await WizardSession.filter(id=row.id, version=row.version).update(
        state=row.state, data=row.data, view_id=row.view_id, version=row.version + 1, expires_at=expires
    )
    if updated != 1:
        raise StaleSession("This wizard was changed in another window; it has been reloaded.")
    row.version += 1
    row.expires_at = expires


async def latest_open(tenant: Tenant, user_id: str) -> WizardSession | None:
    running = list(_saves().values())
    if running:  # any of them may be this person's
        await asyncio.shield(asyncio.gather(*running))
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
