"""The wizard's gate: what the acting user may choose, checked before the step that needs it touches a server.

Every step checks its own answer (the server before it is probed, the paths before ``du`` runs, a new database
login before it is stored, the pool before it is measured), and :func:`check_answers` checks all of them again
before validation runs anything on a server and before the review step writes rows: a submission forged for a
step the user never saw (or answers changed behind the modal) is refused there, with nothing done. Refusals are
:class:`~bot.access.Refused` whose sentence the step shows inline.

Disruptive options — stopping or pausing containers, locking tables, snapshots, pre/post commands — are an
admin's. Full-system and Docker backups reach every file of the server, so an operator needs a grant without path
limits for them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bot.access import Actor, Forbidden, Refused, authz
from bot.access.authz import Scope
from bot.services.answers import DATABASE_TYPES, InvalidSession, SessionData
from storage.models import Server, StoragePool

WHOLE_SERVER_TYPES = ("system", "docker")


async def check_server(actor: Actor, server: Server) -> Scope:
    """The actor's scope on ``server`` (refused when they have none); an unconfirmed key is an admin's matter."""
    scope = await authz.require_server(actor, server)
    if not server.host_key:
        await authz.require_admin(actor, f"confirm the host key of {server.name}")
    return scope


async def check_kind(actor: Actor, server: Server, backup_type: str | None) -> Scope:
    """The actor's scope on ``server`` for a backup of ``backup_type`` (checked before the source form probes)."""
    scope = await check_server(actor, server)
    if backup_type in WHOLE_SERVER_TYPES and scope.paths is not None:
        kind = "A full-system backup" if backup_type == "system" else "A Docker backup"
        raise Forbidden(f"{kind} reaches every file on {server.name}, and your grant there is limited to "
                        f"{', '.join(scope.paths) or 'no path'}; back up those paths as files instead, or "
                        f"{await authz.who_can_allow(actor.team_id)}.")  # fmt: skip
    return scope


async def check_source(actor: Actor, server: Server, backup_type: str | None, source: Mapping[str, Any]) -> None:
    """Refuse a source outside the actor's grant on ``server`` or with an option only admins may set."""
    scope = await check_kind(actor, server, backup_type)
    if backup_type == "files":
        await authz.require_paths(actor, server, scope, source.get("paths") or ())
    if backup_type in DATABASE_TYPES:
        await authz.require_databases(actor, server, scope, source.get("databases") or ())
    if backup_type == "docker":
        for container, policy in (source.get("policies") or {}).items():
            if policy in ("pause", "stop"):
                await authz.require_admin(actor, f"{policy} containers during a backup (like {container})")
    if backup_type == "mysql" and source.get("lock_non_transactional"):
        await authz.require_admin(actor, "lock tables during a backup (untick the table lock to go on)")


async def check_snapshot(actor: Actor, method: str | None) -> None:
    if method not in (None, "", "none"):
        await authz.require_admin(actor, "take snapshots of a server's file systems")


async def check_answers(actor: Actor, data: Mapping[str, Any]) -> None:
    """Check every answer the session holds, as at each step; raises the first refusal."""
    try:
        answers = SessionData.of(data)
    except InvalidSession as exc:
        raise Refused(f"{exc} Start again with `/backup new`.") from None
    tenant = actor.tenant
    server = await tenant.get_or_none(Server, id=answers.server_id) if answers.server_id is not None else None
    if server is None:
        raise Forbidden("Choose a server you may use first (step 1).")
    await check_source(actor, server, answers.backup_type, answers.source or {})
    await check_snapshot(actor, answers.snapshot.method if answers.snapshot else None)
    if any(str(key).endswith("_backup_commands") for key in data):  # pre/post commands: not offered yet
        await authz.require_admin(actor, "run commands before or after a backup")
    pool = await tenant.get_or_none(StoragePool, id=answers.pool_id) if answers.pool_id is not None else None
    if pool is not None:
        await authz.require_pool(actor, pool)
