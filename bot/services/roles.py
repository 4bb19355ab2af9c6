"""Roles: who is an admin beyond Slack's own admins, and who operates which server or pool, within what limits.

Only admins change roles (the CLI's operator is one: they hold the keys). Every change is audited with what it
granted or revoked. Grants name a user (``U…``/``W…``), a user group (``S…``) or ``everyone``; an operator grant
names one server (optionally limited to absolute path prefixes and database names) or one storage pool.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from bot.access import Actor, NotFound, Refused, authz
from bot.access.actor import EVERYONE, GROUP_ID, USER_ID
from bot.access.audit import record
from storage.models import Role, RoleGrant, Server, StoragePool, Workspace

CHANNEL_ID = re.compile(r"^[CG][A-Z0-9]{2,20}$")
DATABASE_NAME = re.compile(r"^[A-Za-z0-9_$.\-]{1,64}$")
ADMIN_CHANNEL = "admin_channel"  # Workspace.settings key: where admin notices (host key pins) are posted
MAX_LIMITS = 50


@dataclass(frozen=True)
class GrantView:
    """One grant, as every surface shows it."""

    id: int
    role: str
    subject: str
    target: str  # "workspace", "server web-1", "pool main"
    paths: tuple[str, ...]
    databases: tuple[str, ...]

    @property
    def limits(self) -> str:
        parts = [f"paths {', '.join(self.paths)}" if self.paths else "",
                 f"databases {', '.join(self.databases)}" if self.databases else ""]  # fmt: skip
        return "; ".join(p for p in parts if p) or "no limits"


@dataclass(frozen=True)
class RolesView:
    grants: tuple[GrantView, ...]
    admin_channel: str | None
    everything: bool  # False: only the actor's own grants are shown (a non-admin asked)


def subject_of(text: str) -> str:
    """Given ``U…``, ``S…``, ``everyone`` or Slack's escaped ``<@U…|name>`` / ``<!subteam^S…|@name>``, return the
    subject id; a :class:`Refused` names what was expected."""
    value = text.strip()
    found = re.fullmatch(r"<@([UW][A-Z0-9]+)(\|[^>]*)?>|<!subteam\^(S[A-Z0-9]+)(\|[^>]*)?>", value)
    if found:
        value = found.group(1) or found.group(3)
    if value.lower() == EVERYONE:
        return EVERYONE
    if USER_ID.match(value) or GROUP_ID.match(value):
        return value
    raise Refused(f"{value[:40]!r} is not a user (U…), a user group (S…) or everyone.")


def _paths(values: Sequence[str]) -> list[str]:
    found: list[str] = []
    for raw in values[:MAX_LIMITS]:
        normal = authz.normal_path(raw)
        if normal is None or "\x00" in raw or len(raw) > 1024:
            raise Refused(f"{raw[:80]!r} is not an absolute path (like /srv/app).")
        if normal not in found:
            found.append(normal)
    return found


def _databases(values: Sequence[str]) -> list[str]:
    for name in values:
        if not DATABASE_NAME.match(name):
            raise Refused(f"{name[:80]!r} is not a database name (letters, digits, _ $ . - ; at most 64).")
    return list(dict.fromkeys(values))[:MAX_LIMITS]


async def _view(rows: Sequence[RoleGrant]) -> tuple[GrantView, ...]:
    views = []
    for row in rows:
        target = "workspace"
        if row.server_id is not None:  # type: ignore[attr-defined]
            server = await Server.get_or_none(id=row.server_id)  # type: ignore[attr-defined]
            target = f"server {server.name if server else row.server_id}"  # type: ignore[attr-defined]
        elif row.pool_id is not None:  # type: ignore[attr-defined]
            pool = await StoragePool.get_or_none(id=row.pool_id)  # type: ignore[attr-defined]
            target = f"pool {pool.name if pool else row.pool_id}"  # type: ignore[attr-defined]
        views.append(GrantView(row.id, row.role.value, row.subject, target, tuple(row.paths or ()),
                               tuple(row.databases or ())))  # fmt: skip
    return tuple(views)


async def show(actor: Actor) -> RolesView:
    """Given an actor, return the workspace's roles (admins) or the actor's own grants (anyone else)."""
    query = actor.tenant.query(RoleGrant).order_by("role", "id")
    if not actor.is_admin:
        query = query.filter(subject__in=sorted(actor.subjects))
    workspace = await Workspace.get_or_none(team_id=actor.team_id)
    channel = (workspace.settings or {}).get(ADMIN_CHANNEL) if workspace else None
    return RolesView(await _view(await query), channel if actor.is_admin else None, actor.is_admin)


async def grant_admin(actor: Actor, subject: str) -> GrantView:
    await authz.require_admin(actor, "grant roles")
    who = subject_of(subject)
    if who == EVERYONE:
        raise Refused("The admin role cannot be given to everyone; name users or user groups.")
    existing = await actor.tenant.query(RoleGrant).filter(role=Role.ADMIN, subject=who).first()
    row = existing or await actor.tenant.create(RoleGrant, role=Role.ADMIN, subject=who, granted_by=actor.user_id)
    if existing is None:
        await record(actor, "role.grant", "role", row.id, after={"role": "admin", "subject": who})
    return (await _view([row]))[0]


async def grant_operator(actor: Actor, subject: str, *, server: str | None = None, pool: str | None = None,
                         paths: Sequence[str] = (), databases: Sequence[str] = ()) -> GrantView:  # fmt: skip
    """Make ``subject`` an operator of one server (by name, optionally limited) or one pool (by name)."""
    await authz.require_admin(actor, "grant roles")
    who = subject_of(subject)
    if (server is None) == (pool is None):
        raise Refused("Name exactly one server or one storage pool to grant.")
    target: dict[str, object]
    if server is not None:
        target = {"server": await authz.named(actor, Server, server, "server")}
        limits = {"paths": _paths(paths), "databases": _databases(databases)}
    else:
        found = await authz.named(actor, StoragePool, pool, "storage pool")
        if paths or databases:
            raise Refused("A pool grant has no path or database limits; those belong to a server grant.")
        target, limits = {"pool": found}, {"paths": [], "databases": []}
    grant = await actor.tenant.create(RoleGrant, role=Role.OPERATOR, subject=who, granted_by=actor.user_id,
                                      **target, **limits)  # fmt: skip
    view = (await _view([grant]))[0]
    await record(actor, "role.grant", "role", grant.id, after={"role": "operator", "subject": who,
                                                               "target": view.target, **limits})
    return view


async def revoke(actor: Actor, grant_id: object) -> GrantView:
    await authz.require_admin(actor, "revoke roles")
    text = str(grant_id or "").strip().lstrip("#")
    row = await actor.tenant.get_or_none(RoleGrant, id=int(text)) if text.isdigit() else None
    if row is None:
        raise NotFound(f"There is no grant #{text[:20]} in this workspace; `/backup roles` lists them.")
    view = (await _view([row]))[0]
    await row.delete()
    await record(actor, "role.revoke", "role", view.id, before={"role": view.role, "subject": view.subject,
                                                                "target": view.target, "paths": list(view.paths),
                                                                "databases": list(view.databases)})
    return view


async def set_admin_channel(actor: Actor, channel: str | None) -> str | None:
    """Where notices for admins (host key pins) are posted; None: a DM to each admin named in the roles."""
    await authz.require_admin(actor, "choose the admins' channel")
    value = None
    if channel:
        found = re.fullmatch(r"<#([CG][A-Z0-9]+)(\|[^>]*)?>|([CG][A-Z0-9]+)", channel.strip())
        if not found or not CHANNEL_ID.match(found.group(1) or found.group(3)):
            raise Refused(f"{channel[:40]!r} is not a Slack channel (C… or #channel).")
        value = found.group(1) or found.group(3)
    workspace, _ = await Workspace.get_or_create(team_id=actor.team_id)
    before = (workspace.settings or {}).get(ADMIN_CHANNEL)
    workspace.settings = {**(workspace.settings or {}), ADMIN_CHANNEL: value}
    await workspace.save(update_fields=["settings", "updated_at"])
    await record(actor, "role.admin_channel", "workspace", actor.team_id, before={"channel": before},
                 after={"channel": value})  # fmt: skip
    return value


async def admin_recipients(team_id: str) -> tuple[str | None, list[str]]:
    """(the admins' channel, the admin users named in the roles) — who is told of an admin notice."""
    workspace = await Workspace.get_or_none(team_id=team_id)
    channel = (workspace.settings or {}).get(ADMIN_CHANNEL) if workspace else None
    users = await RoleGrant.filter(team_id=team_id, role=Role.ADMIN).order_by("id").values_list("subject", flat=True)
    return channel, [u for u in dict.fromkeys(users) if USER_ID.match(u)]
