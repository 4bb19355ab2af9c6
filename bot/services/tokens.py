"""HTTP API tokens: created (shown once), listed, revoked and checked — each token one ``ApiToken`` row.

Only a token's SHA-256 is stored, in a unique index: a request finds its row by that hash alone (no scan of the
workspaces), compares it in constant time, and is refused when the row is revoked or expired. A token has a scope:
``read`` tokens read (``/metrics``, cached capabilities) and never change state or contact a server; ``write``
tokens act with their user's roles. ``last_used_at`` is written at most once a minute, so a busy scraper does not
turn every read into a write.

Who may: anyone may create a token acting as themselves; a token for another user, or for no user (``/metrics`` of
the whole workspace), is an admin's act. Admins list and revoke every token of the workspace; others their own.
Creating and revoking are audited (never the token nor its hash).

Tokens from before this table (hashes in ``Workspace.settings["api_token_hashes"]``) are moved into rows by
:func:`migrate_legacy` — at start-up, or on the first lookup of a process — and removed from the settings. They
keep exactly the power they had: a legacy token naming a user becomes ``write`` (it acted with that user's roles,
and making it ``read`` would silently break the scripts using it), and a legacy token without a user becomes
``read`` (it could read ``/metrics`` and nothing else, which is what ``read`` allows). Neither gets an expiry it
never had; both are labelled ``legacy`` in the list, so an admin sees them and can revoke them.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tortoise import Tortoise

from bot.access import Actor, Forbidden, NotFound, Refused, authz
from bot.access.actor import USER_ID
from bot.access.audit import record
from storage.models import ApiToken, TokenScope, Workspace
from storage.orm import IntegrityError, Q, in_transaction

PREFIX = "bwapi_"
LEGACY_KEY = "api_token_hashes"
LEGACY_LABEL = "legacy (created before token scopes)"
USE_RESOLUTION = timedelta(minutes=1)  # last_used_at is written at most this often
MAX_EXPIRY = timedelta(days=3650)
DEFAULT_EXPIRY = timedelta(days=90)
_DURATION = re.compile(r"^(\d{1,5})([hdwy])$")
_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1), "y": timedelta(days=365)}


class TokenRejected(Exception):
    """A token that is known but may not be used (revoked or expired); ``sentence`` says so and what to do."""

    def __init__(self, sentence: str) -> None:
        super().__init__(sentence)
        self.sentence = sentence


@dataclass(frozen=True)
class TokenIdentity:
    """Who a valid token acts as: its workspace, its user (None: nobody, ``/metrics`` only) and its scope."""

    team_id: str
    user_id: str | None
    scope: TokenScope = TokenScope.READ
    token_id: int | None = None

    @property
    def writes(self) -> bool:
        return self.scope == TokenScope.WRITE


@dataclass(frozen=True)
class TokenView:
    """One token as its list shows it (never the token or its hash)."""

    id: int
    user_id: str | None
    scope: str
    label: str
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    def state(self, now: datetime | None = None) -> str:
        """``active``, ``expired`` or ``revoked``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= (now or datetime.now(UTC)):
            return "expired"
        return "active"


@dataclass(frozen=True)
class NewToken:
    """A token just created: ``secret`` is shown to its creator once and stored nowhere."""

    secret: str
    view: TokenView


def digest(token: str) -> str:
    """The stored form of a token: its SHA-256, hex."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def parse_expiry(text: str | None) -> timedelta | None:
    """Given ``90d``, ``12h``, ``4w``, ``1y`` or ``never``, return the lifetime (None: never expires)."""
    value = str(text or "").strip().lower()
    if value in ("never", "none", "0"):
        return None
    found = _DURATION.match(value)
    if not found or int(found.group(1)) == 0:
        raise Refused(f"{value[:20]!r} is not a token lifetime: give a number with h, d, w or y (like 90d), or "
                      "never.")  # fmt: skip
    lifetime = int(found.group(1)) * _UNITS[found.group(2)]
    if lifetime > MAX_EXPIRY:
        raise Refused("A token may live at most 10 years (3650d); give a shorter --expires, or never.")
    return lifetime


def _view(row: ApiToken) -> TokenView:
    return TokenView(id=row.id, user_id=row.user_id, scope=TokenScope(row.scope).value, label=row.label,
                     created_by=row.created_by, created_at=row.created_at, expires_at=row.expires_at,
                     revoked_at=row.revoked_at, last_used_at=row.last_used_at)  # fmt: skip


async def issue(team_id: str, user_id: str | None, *, scope: TokenScope, lifetime: timedelta | None,
                label: str = "", created_by: str = "") -> NewToken:  # fmt: skip
    """Given a workspace and what the token may do, return a new token and its stored row (no role check: the
    surfaces call :func:`create`; tests and start-up tools call this)."""
    secret = PREFIX + secrets.token_urlsafe(32)
    expires_at = datetime.now(UTC) + lifetime if lifetime is not None else None
    await Workspace.get_or_create(team_id=team_id)
    row = await ApiToken.create(team_id=team_id, user_id=user_id, token_hash=digest(secret), scope=scope,
                                label=label[:100], created_by=created_by[:32], expires_at=expires_at)  # fmt: skip
    return NewToken(secret=secret, view=_view(row))


async def create(actor: Actor, user_id: str | None, *, scope: TokenScope, lifetime: timedelta | None,
                 label: str = "") -> NewToken:  # fmt: skip
    """Given an actor and the token wanted, return it (shown once). Anyone may create a token acting as themselves;
    for another user or for no user it takes an admin. A write token must name a user (it acts with their roles)."""
    if user_id is not None and not USER_ID.match(user_id):
        raise Refused(f"{user_id[:40]!r} is not a Slack user id (U… or W…).")
    if user_id is None and scope == TokenScope.WRITE:
        raise Refused("A token without a user can only read /metrics; give the Slack user it acts as (--user U…) "
                      "for a write token.")  # fmt: skip
    if user_id != actor.user_id:
        await authz.require_admin(actor, "create API tokens for other users or for no user")
    new = await issue(actor.team_id, user_id, scope=scope, lifetime=lifetime, label=label, created_by=actor.user_id)
    expires = new.view.expires_at.isoformat() if new.view.expires_at else None
    await record(actor, "api_token.create", "api_token", new.view.id,
                 after={"user": user_id, "scope": scope.value, "expires_at": expires, "label": new.view.label})
    return new


async def list_tokens(actor: Actor) -> list[TokenView]:
    """Given an actor, return the workspace's tokens (admins) or the actor's own, newest first."""
    rows = ApiToken.filter(team_id=actor.team_id)
    if not actor.is_admin:
        rows = rows.filter(user_id=actor.user_id)
    return [_view(row) for row in await rows.order_by("-id")]


async def revoke(actor: Actor, token_id: object) -> TokenView:
    """Given an actor and a token id, revoke that token now (admins: any of the workspace's; others: their own)."""
    text = str(token_id or "").strip()
    row = await ApiToken.get_or_none(team_id=actor.team_id, id=int(text)) if text.isdigit() else None
    if row is None:
        raise NotFound(f"There is no API token {text[:20]} in this workspace; `backup-bot api-token list` shows them.")
    if not actor.is_admin and row.user_id != actor.user_id:
        raise Forbidden(f"Only admins can revoke other users' API tokens — {await authz.who_can_allow(actor.team_id)}.")
    if row.revoked_at is not None:
        raise Refused(f"API token {row.id} was already revoked on {row.revoked_at:%Y-%m-%d %H:%M} UTC.")
    row.revoked_at = datetime.now(UTC)
    await row.save(update_fields=["revoked_at"])
    await record(actor, "api_token.revoke", "api_token", row.id,
                 before={"user": row.user_id, "scope": TokenScope(row.scope).value, "label": row.label})
    return _view(row)


# -- checking a presented token ----------------------------------------------------------------------------------


async def authenticate(token: str) -> TokenIdentity | None:
    """Given a presented token, return who it acts as; None when it is no token of ours. Raises
    :class:`TokenRejected` for a revoked or expired one. One indexed lookup, whatever the number of workspaces."""
    if not token.startswith(PREFIX) or len(token) > 200:
        return None
    wanted = digest(token)
    row = await ApiToken.get_or_none(token_hash=wanted)
    if row is None and await migrate_legacy_once():
        row = await ApiToken.get_or_none(token_hash=wanted)
    if row is None or not hmac.compare_digest(row.token_hash, wanted):
        return None
    now = datetime.now(UTC)
    again = f"create a new one with `backup-bot api-token create --team {row.team_id}" + (
        f" --user {row.user_id}`." if row.user_id else "`.")
    if row.revoked_at is not None:
        raise TokenRejected(f"This API token was revoked on {row.revoked_at:%Y-%m-%d %H:%M} UTC; {again}")
    if row.expires_at is not None and row.expires_at <= now:
        raise TokenRejected(f"This API token expired on {row.expires_at:%Y-%m-%d %H:%M} UTC; {again}")
    await _touch(row, now)
    return TokenIdentity(team_id=row.team_id, user_id=row.user_id, scope=TokenScope(row.scope), token_id=row.id)


async def _touch(row: ApiToken, now: datetime) -> None:
    """Record the use, at most once per :data:`USE_RESOLUTION` (a conditional update: concurrent requests of the
    same minute write once)."""
    if row.last_used_at is not None and now - row.last_used_at < USE_RESOLUTION:
        return
    stale = Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - USE_RESOLUTION)
    await ApiToken.filter(stale, id=row.id).update(last_used_at=now)


# -- moving the tokens kept in workspace settings into rows ------------------------------------------------------

_migrated: weakref.WeakSet = weakref.WeakSet()  # database connections already migrated by this process


def _legacy_entries(settings: dict) -> list[tuple[str, str | None]]:
    """The ``(hash, user)`` pairs kept in a workspace's settings (dicts, or bare hashes from before users)."""
    pairs = []
    for stored in settings.get(LEGACY_KEY) or ():
        entry = stored if isinstance(stored, dict) else {"hash": stored, "user": None}
        value, user = str(entry.get("hash") or ""), entry.get("user")
        if re.fullmatch(r"[0-9a-f]{64}", value):
            pairs.append((value, user if isinstance(user, str) and USER_ID.match(user) else None))
    return pairs


async def _migrate_workspace(workspace_id: int) -> int:
    """Move one workspace's legacy hashes into rows and drop them from its settings; return how many moved."""
    moved = 0
    async with in_transaction():
        workspace = await Workspace.select_for_update().get(id=workspace_id)
        settings = dict(workspace.settings or {})
        for value, user in _legacy_entries(settings):
            if await ApiToken.filter(token_hash=value).exists():
                continue
            scope = TokenScope.WRITE if user else TokenScope.READ
            await ApiToken.create(team_id=workspace.team_id, user_id=user, token_hash=value, scope=scope,
                                  label=LEGACY_LABEL, created_by="migration")  # fmt: skip
            moved += 1
        settings.pop(LEGACY_KEY, None)
        workspace.settings = settings
        await workspace.save(update_fields=["settings"])
    return moved


async def migrate_legacy() -> int:
    """Move every token kept in workspace settings into ``ApiToken`` rows (idempotent); return how many moved."""
    moved = 0
    for workspace_id, settings in await Workspace.all().values_list("id", "settings"):
        if isinstance(settings, dict) and LEGACY_KEY in settings:
            try:
                moved += await _migrate_workspace(workspace_id)
            except IntegrityError:  # another process moved the same hash meanwhile: its row is the one
                continue
    return moved


async def migrate_legacy_once() -> bool:
    """Run :func:`migrate_legacy` once per database connection of this process; True when it moved tokens now (so
    a lookup that missed is worth repeating). Later misses cost nothing: unknown tokens never scan the workspaces.
    Two first lookups at once may both migrate: that is harmless, each hash becomes one row."""
    connection = Tortoise.get_connection("default")
    if connection in _migrated:
        return False
    moved = await migrate_legacy()
    _migrated.add(connection)
    return moved > 0
