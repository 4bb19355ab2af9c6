"""The checks every operation makes before its first effect, and the refusal sentences they raise.

Rules (issue 10's roles):

* *admins* — Slack workspace admins/owners and the users and user groups an admin granted the admin role — add
  servers and pools, confirm and re-pin host keys, store database logins, set disruptive options (stopping or
  pausing containers, table locks, snapshots, pre/post commands) and grant roles;
* *operators* of a server or a pool — users, user groups or everyone, as granted — may back up from that server
  (within the grant's path prefixes and database names, when it has any), store into that pool, restore, and
  operate the chains of that server;
* anyone else sees and uses nothing but what is granted to them, and is told who can grant it.

A chain is operated (run now, retry, pause, resume, settings) by its creator, the operators of its servers, and
admins. Every refusal is a :class:`~bot.access.errors.Refused` whose sentence names what was refused and who can
allow it.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from bot.access.actor import EVERYONE, GROUP_ID, USER_ID, Actor
from bot.access.errors import Forbidden, NotFound
from storage.models import BackupChain, BackupSource, Role, RoleGrant, Server, StoragePool

M = TypeVar("M", Server, StoragePool, BackupChain)


def mention(subject: str) -> str:
    """A grant subject as Slack shows it: ``<@U…>``, ``<!subteam^S…>``, or the word everyone."""
    if USER_ID.match(subject):
        return f"<@{subject}>"
    if GROUP_ID.match(subject):
        return f"<!subteam^{subject}>"
    return subject


async def who_can_allow(team_id: str) -> str:
    """Given a workspace, return "ask <@U1>, <!subteam^S2> or a Slack workspace admin": its admins by name."""
    subjects = await RoleGrant.filter(team_id=team_id, role=Role.ADMIN).order_by("id").values_list("subject", flat=True)
    people = [*(mention(s) for s in list(dict.fromkeys(subjects))[:5]), "a Slack workspace admin"]
    return "ask " + (", ".join(people[:-1]) + " or " if len(people) > 1 else "") + people[-1]


async def require_admin(actor: Actor, doing: str) -> None:
    """Refuse unless ``actor`` is an admin: "Only admins can ``doing`` — ask …"."""
    if not actor.is_admin:
        raise Forbidden(f"Only admins can {doing} — {await who_can_allow(actor.team_id)}.")


# -- scopes on a server ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """What an actor may reach on one server: path prefixes and database names (``None``: no limit)."""

    paths: tuple[str, ...] | None = None
    databases: tuple[str, ...] | None = None


FULL = Scope()


def _union(values: Iterable[list[str]]) -> tuple[str, ...] | None:
    """Limits of several grants together: any grant without a limit lifts it; else the union of their lists."""
    merged: list[str] = []
    for limit in values:
        if not limit:
            return None
        merged += [v for v in limit if v not in merged]
    return tuple(merged)


async def _grants(actor: Actor, **where: object) -> list[RoleGrant]:
    return await actor.tenant.query(RoleGrant).filter(role=Role.OPERATOR, subject__in=sorted(actor.subjects),
                                                      **where)  # fmt: skip


async def server_scope(actor: Actor, server_id: int) -> Scope | None:
    """Given an actor and a server, return what the actor may reach there (admins: everything), or None."""
    if actor.is_admin:
        return FULL
    grants = await _grants(actor, server_id=server_id)
    if not grants:
        return None
    return Scope(paths=_union(g.paths for g in grants), databases=_union(g.databases for g in grants))


async def usable_server_ids(actor: Actor) -> set[int] | None:
    """The servers an actor may pick (None: all of the workspace's, for admins)."""
    if actor.is_admin:
        return None
    return {g.server_id for g in await _grants(actor, server_id__isnull=False)}  # type: ignore[attr-defined]


async def usable_pool_ids(actor: Actor) -> set[int] | None:
    """The storage pools an actor may store into (None: all of the workspace's, for admins)."""
    if actor.is_admin:
        return None
    return {g.pool_id for g in await _grants(actor, pool_id__isnull=False)}  # type: ignore[attr-defined]


async def require_server(actor: Actor, server: Server) -> Scope:
    """Refuse unless ``actor`` may use ``server``; return the scope of that use."""
    scope = await server_scope(actor, server.id)
    if scope is None:
        raise Forbidden(f"You have no access to the server {server.name}: an admin has to grant it to you — "
                        f"{await who_can_allow(actor.team_id)}.")  # fmt: skip
    return scope


async def require_pool(actor: Actor, pool: StoragePool) -> None:
    """Refuse unless ``actor`` may store into ``pool``."""
    if actor.is_admin:
        return
    if not await _grants(actor, pool_id=pool.id):
        raise Forbidden(f"You have no access to the storage pool {pool.name}: an admin has to grant it to you — "
                        f"{await who_can_allow(actor.team_id)}.")  # fmt: skip


def normal_path(path: str) -> str | None:
    """An absolute path with ``.``/``..`` and repeated slashes resolved, or None when it is not absolute."""
    text = str(path or "").strip()
    if not text.startswith("/"):
        return None
    return posixpath.normpath("/" + text.lstrip("/"))


def within(path: str, prefixes: Sequence[str]) -> bool:
    """Given a path and allowed prefixes, return whether the path is one of them or below one (by whole path
    components: ``/srv/app`` allows ``/srv/app/x``, not ``/srv/application``)."""
    normal = normal_path(path)
    if normal is None:
        return False
    for prefix in prefixes:
        base = normal_path(prefix)
        if base is not None and (base == "/" or normal == base or normal.startswith(base + "/")):
            return True
    return False


async def require_paths(actor: Actor, server: Server, scope: Scope, paths: Iterable[str]) -> None:
    """Refuse the first of ``paths`` outside ``scope`` on ``server``."""
    if scope.paths is None:
        return
    for path in paths:
        if not within(path, scope.paths):
            allowed = ", ".join(scope.paths) or "no path"
            raise Forbidden(f"{str(path)[:200]} is outside what you may back up on {server.name} ({allowed}); "
                            f"to widen your grant, {await who_can_allow(actor.team_id)}.")  # fmt: skip


async def require_databases(actor: Actor, server: Server, scope: Scope, databases: Iterable[str]) -> None:
    """Refuse databases outside ``scope``; an empty selection means "all databases" and needs an unlimited one."""
    if scope.databases is None:
        return
    chosen = list(databases)
    allowed = ", ".join(scope.databases) or "none"
    if not chosen:
        raise Forbidden(f"You may back up only these databases on {server.name}: {allowed}; choose them by name "
                        f"instead of all databases, or to widen your grant, {await who_can_allow(actor.team_id)}.")
    for name in chosen:
        if name not in scope.databases:
            raise Forbidden(f"The database {str(name)[:100]} is outside what you may back up on {server.name} "
                            f"({allowed}); to widen your grant, {await who_can_allow(actor.team_id)}.")  # fmt: skip


# -- chains ----------------------------------------------------------------------------------------------------


async def chain_server_ids(chain: BackupChain) -> list[int]:
    rows = await BackupSource.filter(team_id=chain.team_id, chains__id=chain.id).values_list("server_id", flat=True)
    return sorted(set(rows))


async def may_operate(actor: Actor, chain: BackupChain) -> bool:
    """Given an actor and a chain of their workspace, return whether they may run, retry, pause, resume or
    reconfigure it: its creator, an operator of one of its servers, or an admin."""
    if actor.team_id != chain.team_id:
        return False
    if actor.is_admin or (actor.user_id and actor.user_id == chain.created_by):
        return True
    servers = await chain_server_ids(chain)
    return bool(servers) and bool(await _grants(actor, server_id__in=servers))


async def require_operate(actor: Actor, chain: BackupChain) -> None:
    if not await may_operate(actor, chain):
        raise Forbidden(f"You are not allowed to change {chain.name}: only its creator, the operators of its server "
                        f"and admins may — {await who_can_allow(actor.team_id)}. Nothing was changed.")  # fmt: skip


async def named(actor: Actor, model: type[M], name: object, what: str) -> M:
    """Given an actor, a per-workspace model with a ``name`` and a name, return the actor's workspace's row of that
    name; :class:`NotFound` ("There is no ``what`` named …") otherwise, also for another workspace's."""
    text = str(name or "").strip()
    row = await actor.tenant.query(model).filter(name=text).first() if text else None
    if row is None:
        raise NotFound(f"There is no {what} named {text[:100]!r} in this workspace.")
    return row


async def chain_of(actor: Actor, chain_id: object) -> BackupChain:
    """The actor's workspace's chain ``chain_id``; :class:`NotFound` for another workspace's, like a missing one."""
    text = str(chain_id or "")
    chain = await actor.tenant.get_or_none(BackupChain, id=int(text)) if text.isdigit() else None
    if chain is None:
        raise NotFound("That backup chain no longer exists in this workspace.")
    return chain


async def find_chain(actor: Actor, ref: int | str, command: str) -> BackupChain:
    """Given a chain id (buttons) or name (commands: ``command`` is the slash command that names it, for the hint),
    return the actor's workspace's chain; :class:`NotFound` otherwise."""
    if isinstance(ref, int):
        return await chain_of(actor, ref)
    text = str(ref or "").strip()
    if not text:
        raise NotFound(f"Name the chain: `/backup {command} <chain>` (`/backup list` shows their names).")
    chain = await actor.tenant.query(BackupChain).filter(name=text).first()
    if chain is None:
        raise NotFound(f"There is no backup chain named {text[:100]!r} in this workspace: `/backup list` shows "
                       "their names.")  # fmt: skip
    return chain


__all__ = ["EVERYONE", "FULL", "Scope", "chain_of", "find_chain", "may_operate", "mention", "named", "normal_path",
           "require_admin", "require_databases", "require_operate", "require_paths", "require_pool", "require_server",
           "server_scope", "usable_pool_ids", "usable_server_ids", "who_can_allow", "within"]  # fmt: skip
