"""Restoring from a chain's archives (``/backup restore``, *Restore* buttons, ``backup-bot restore``): the rules, the
checks and the queued ``RESTORE`` run — every surface calls :func:`request_restore` and renders its answer.

Who may: admins, and the operators of the chain's servers (a creator without such a grant may not: a restore writes
on a server); for the target, the actor must also be allowed on the target server, within their grant's path
prefixes (the target directory) and database names (the target database). Writing over existing data (a non-empty
directory, an existing database, the source database itself) needs an admin who typed the target's name to confirm.
A retired chain can be restored from.

Everything a person could get wrong is refused here with one sentence, before anything is written anywhere:
restoring into ``/`` or a relative path, into a non-empty directory, over the source database, into a database name
that exists, from an archive that is not in the repository or whose repository is being pruned, to a server
without borg or without the space the selection needs. Then one ``RESTORE`` run is queued (the repository's lock,
retries, crash recovery as for backups; see :mod:`bot.runs.restoring`), audited as ``chain.restore``.

:func:`browse` lists one directory level of an archive (search and paging) from ``borg list --json-lines``,
kept a few minutes per archive so that paging through a large archive lists it once.
"""

from __future__ import annotations

import posixpath
import re
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from bot.access import Actor, Forbidden, NotFound, Refused, authz
from bot.access.audit import record
from bot.backup import plan as planning
from bot.backup import restore as files
from bot.backup import restore_db
from bot.backup.sources import postgresql as pg_source
from bot.backup.sources.base import database_of
from bot.borg import list as borg_list
from bot.borg.repo import Repo
from bot.borg.runner import BorgError
from bot.mrkdwn import esc
from bot.runs.nudge import nudge
from bot.runs.queue import RunSpec, insert_rows
from bot.runs.restoring import RestoreSpec, reach
from bot.services.runs import MANUAL_PRIORITY
from bot.transport.base import TransportError
from storage.models import (
    BackupChain,
    BackupSource,
    BackupType,
    PoolKind,
    Repository,
    Run,
    RunKind,
    RunStatus,
    Server,
    WizardSession,
)

DUMP_ENGINES = {".pgdump": "postgresql", ".sql": "mysql", ".archive": "mongodb"}
WHOLE_MONGO = "mongodump.archive"  # a whole MongoDB instance in one archive: restored by hand, not by the bot
STAMP = re.compile(r"-(\d{8}T\d{6})$")  # the UTC stamp ending a chain's archive names (bot.backup.jobs)
PER_PAGE = 20
_LISTINGS: OrderedDict[tuple[int, str], tuple[float, list[dict[str, Any]]]] = OrderedDict()
LISTING_TTL, LISTINGS_KEPT = 300.0, 8


@dataclass(frozen=True)
class RestoreRequest:
    """What a person asks for. ``server``: the target server's name (None: the chain's first source server, or the
    bot's host for a local pool); ``target``: a new directory (files) or a new database name (database);
    ``database``: which dump of the archive (its source database; None: the archive's only dump)."""

    chain: int | str
    archive: str
    target: str
    what: Literal["files", "database"] = "files"
    paths: tuple[str, ...] = ()
    server: str | None = None
    database: str | None = None
    credential_id: int | None = None
    overwrite: bool = False
    confirm: str = ""  # the target's name, typed by an admin, when ``overwrite``
    globals: bool = False  # PostgreSQL: also create the server's roles from the same backup's globals (admins only)


@dataclass(frozen=True)
class Requested:
    run_id: int
    spec: RestoreSpec
    sentence: str


@dataclass(frozen=True)
class Entry:
    """One item of a directory level: its archive path, name, type (``d``, ``-``, ``l``…) and size."""

    path: str
    name: str
    type: str
    size: int


@dataclass(frozen=True)
class Level:
    directory: str
    entries: tuple[Entry, ...]
    page: int
    pages: int
    total: int


@dataclass
class Target:
    """The resolved target: the server row (None: the bot's host), how it reaches the repository."""

    server: Server | None
    via: Literal["source", "pool"]
    name: str = field(default="")


# --- who, and which chain ---------------------------------------------------------------------------------------


async def find_chain(actor: Actor, ref: int | str) -> BackupChain:
    """Given a chain id (buttons) or name (``/backup restore``), return the actor's workspace's chain."""
    return await authz.find_chain(actor, ref, "restore")


async def pool_side(chain: BackupChain, services: Any) -> tuple[Any, Repo, str]:
    """The bot's own access to the chain's repository: the pool's transport, the Repo by path, the pool-side borg."""
    repository = await Repository.filter(id=chain.repository_id).select_related("pool__server").get()  # type: ignore[attr-defined]
    return planning.repository_at_pool(repository, services)


async def may_restore(actor: Actor, chain: BackupChain) -> bool:
    """Admins, and operators of one of the chain's servers (see the module docstring)."""
    if actor.team_id != chain.team_id:
        return False
    if actor.is_admin:
        return True
    for server_id in await authz.chain_server_ids(chain):
        if await authz.server_scope(actor, server_id) is not None:
            return True
    return False


async def restorable(actor: Actor, ref: int | str, action: str = "chain.restore") -> BackupChain:
    """The chain ``ref`` (id or name; retired ones too), once the actor may restore from it; refusals audited."""
    chain = await find_chain(actor, ref)
    if not await may_restore(actor, chain):
        await record(actor, action, "chain", chain.id, outcome="denied")
        raise Forbidden(f"You are not allowed to restore from {chain.name}: only admins and the operators of its "
                        f"server may — {await authz.who_can_allow(actor.team_id)}. Nothing was written.")  # fmt: skip
    return chain


async def restorable_chains(actor: Actor) -> list[BackupChain]:
    """The chains the actor may restore from, by name."""
    chains = await actor.tenant.query(BackupChain).order_by("name").limit(500)
    return [chain for chain in chains if await may_restore(actor, chain)]


async def target_servers(actor: Actor, chain: BackupChain) -> list[Target]:
    """Where a restore of ``chain`` can run: its source servers (they reach the repository with their push key) and
    the pool's host (with the bot's access), those the actor may use."""
    found: list[Target] = []
    for server_id in await authz.chain_server_ids(chain):
        server = await actor.tenant.get_or_none(Server, id=server_id)
        if server is not None and await authz.server_scope(actor, server.id) is not None:
            found.append(Target(server, "source", server.name))
    repository = await Repository.filter(id=chain.repository_id).select_related("pool__server").get()  # type: ignore[attr-defined]
    pool = repository.pool
    if pool.kind == PoolKind.SSH and pool.server is not None and all(t.server.id != pool.server.id for t in found):
        if await authz.server_scope(actor, pool.server.id) is not None:
            found.append(Target(pool.server, "pool", pool.server.name))
    return found


async def _target(actor: Actor, chain: BackupChain, name: str | None) -> Target:
    choices = await target_servers(actor, chain)
    if not name:
        if not choices:
            raise Forbidden(f"You may not use any server {chain.name} can be restored to — "
                            f"{await authz.who_can_allow(actor.team_id)}.")  # fmt: skip
        return choices[0]
    for choice in choices:
        if choice.name == name:
            return choice
    server = await actor.tenant.query(Server).filter(name=name).first()
    if server is None:
        raise NotFound(f"There is no server named {name[:100]!r} in this workspace.")
    await authz.require_server(actor, server)
    usable = ", ".join(c.name for c in choices) or "none you may use"
    raise Refused(f"{server.name} cannot read the repository of {chain.name}: restore to one of its source servers "
                  f"or its pool's host ({usable}), then copy from there.")  # fmt: skip


# --- archives and browsing ----------------------------------------------------------------------------------------


async def archive_names(actor: Actor, chain: BackupChain, services: Any) -> list[borg_list.ArchiveEntry]:
    """The chain's archives, newest first (names and times, from the manifest)."""
    transport, repo, borg = await pool_side(chain, services)
    try:
        found = await borg_list.archives(transport, repo, borg=borg, utc=True)
    except (BorgError, TransportError) as exc:
        raise Refused(f"The archives of {chain.name} could not be listed: {exc}") from None
    return sorted(found, key=lambda a: a.time, reverse=True)


async def listing(chain: BackupChain, archive: str, services: Any) -> list[dict[str, Any]]:
    """The archive's items (kept :data:`LISTING_TTL` seconds per archive for paging and the run's checks)."""
    key = (chain.repository_id, archive)  # type: ignore[attr-defined]
    now = time.monotonic()
    kept = _LISTINGS.get(key)
    if kept is not None and now - kept[0] < LISTING_TTL:
        return kept[1]
    transport, repo, borg = await pool_side(chain, services)
    try:
        items = await files.listing(transport, repo, archive, borg=borg)
    except BorgError as exc:
        if exc.kind == "archive_missing":
            raise Refused(f"The archive {archive} is not in the repository of {chain.name} (pruned or deleted): "
                          "choose another one.") from None  # fmt: skip
        raise Refused(f"The archive {archive} could not be listed: {exc}") from None
    except TransportError as exc:
        raise Refused(f"The archive {archive} could not be listed: {exc}") from None
    _LISTINGS[key] = (now, items)
    while len(_LISTINGS) > LISTINGS_KEPT:
        _LISTINGS.popitem(last=False)
    return items


async def browse(actor: Actor, ref: int | str, archive: str, directory: str = "", *, services: Any,
                 search: str = "", page: int = 1, per_page: int = PER_PAGE) -> Level:  # fmt: skip
    """One level of ``archive`` below ``directory`` (``search``: names containing it, at any depth below), paged."""
    chain = await restorable(actor, ref, "chain.restore.browse")
    base = files.relative([directory])[0] if files.relative([directory]) else ""
    items = await listing(chain, archive, services)
    needle = search.strip().lower()
    entries = _matches(items, base, needle) if needle else _children(items, base)
    entries.sort(key=lambda e: (e.type != "d", e.path))
    pages = max(1, -(-len(entries) // per_page))
    page = min(max(1, page), pages)
    shown = tuple(entries[(page - 1) * per_page:page * per_page])
    return Level(base, shown, page, pages, len(entries))


def _children(items: list[dict[str, Any]], base: str) -> list[Entry]:
    """The entries one level below ``base``. borg stores only what was backed up, not the parents of a backed-up
    path (``/srv/www`` has no ``srv`` item), so a component seen only inside longer paths is a directory too."""
    prefix = base + "/" if base else ""
    found: dict[str, Entry] = {}
    for item in items:
        path = str(item.get("path", ""))
        if not path.startswith(prefix) or path == base:
            continue
        name = path[len(prefix):].split("/", 1)[0]
        child = prefix + name
        if path == child:
            found[child] = Entry(child, name, str(item.get("type", "?")), int(item.get("size") or 0))
        else:
            found.setdefault(child, Entry(child, name, "d", 0))
    return list(found.values())


def _matches(items: list[dict[str, Any]], base: str, needle: str) -> list[Entry]:
    """Items anywhere below ``base`` whose name contains ``needle``."""
    prefix = base + "/" if base else ""
    return [Entry(str(i["path"]), posixpath.basename(str(i["path"])), str(i.get("type", "?")), int(i.get("size") or 0))
            for i in items if str(i.get("path", "")).startswith(prefix)
            and needle in posixpath.basename(str(i.get("path", ""))).lower()]  # fmt: skip


def dumps_of(items: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    """The database dumps in an archive: source database → (file name, engine)."""
    found = {}
    for item in items:
        path = str(item.get("path", ""))
        for extension, engine in DUMP_ENGINES.items():
            if item.get("type") == "-" and path.endswith(extension) and path not in ("globals.sql", WHOLE_MONGO):
                found[database_of(path)] = (path, engine)
    return found


# --- the request ------------------------------------------------------------------------------------------------


async def _pruning(repository_id: int) -> bool:
    return await Run.filter(repository_id=repository_id, kind__in=(RunKind.PRUNE, RunKind.COMPACT),
                            status__in=(RunStatus.QUEUED, RunStatus.RUNNING)).exists()  # fmt: skip


def _overwrite_check(actor: Actor, request: RestoreRequest) -> None:
    if request.globals and not actor.is_admin:
        raise Forbidden("Only admins can restore a server's roles (they are server-wide); restore the database "
                        "without them, or ask an admin.")  # fmt: skip
    if not request.overwrite:
        return
    if not actor.is_admin:
        raise Forbidden("Only admins can restore over existing data; restore into a new directory or database.")
    if request.confirm.strip() != request.target.strip():
        raise Refused(f"To restore over {request.target[:200]}, type its name exactly to confirm.")


async def _db_spec(actor: Actor, chain: BackupChain, request: RestoreRequest, items: list[dict[str, Any]],
                   target: Target, services: Any) -> RestoreSpec:  # fmt: skip
    dumps = dumps_of(items)
    if not dumps and any(i.get("path") == WHOLE_MONGO for i in items):
        raise Refused(f"The archive {request.archive} holds a whole MongoDB instance: restore it with mongorestore "
                      "by hand; the bot restores one database's archive (mongo-<db>) into a new name.")  # fmt: skip
    if not dumps:
        raise Refused(f"The archive {request.archive} holds no database dump: restore its files instead.")
    source_db = request.database or (next(iter(dumps)) if len(dumps) == 1 else None)
    if source_db not in dumps:
        raise Refused(f"Choose which database to restore: {', '.join(sorted(dumps))[:500]}.")
    dump, engine = dumps[source_db]
    if engine == "mysql" and not await chain.sources.filter(type=BackupType.MYSQL).exists():
        raise Refused(f"{dump} is not a MySQL/MariaDB dump of this chain.")
    if request.globals and engine != "postgresql":
        raise Refused("Roles can only be restored with a PostgreSQL dump; restore this database without them.")
    if engine == "mongodb" and request.overwrite:
        raise Refused("A MongoDB dump is only restored into a new database (mongorestore would mix it into existing "
                      "data): choose a new name.")  # fmt: skip
    roles = await _globals_archive(chain, request, items, services) if request.globals else None
    name = request.target.strip()
    restore_db.check_target(name, name, overwrite=True, limit=restore_db.PG_MAX_NAME)
    scope = await authz.require_server(actor, target.server) if target.server is not None else authz.FULL
    if scope.databases is not None and name not in scope.databases:
        raise Forbidden(f"The database {name[:100]} is outside what you may use on {target.name} — "
                        f"{await authz.who_can_allow(actor.team_id)}.")  # fmt: skip
    same_server = target.server is not None and await BackupSource.filter(
        team_id=chain.team_id, chains__id=chain.id, server_id=target.server.id).exists()  # fmt: skip
    if same_server and name == source_db and not request.overwrite:
        raise Refused(f"{name} is the database this dump was taken from: restoring into it would overwrite live "
                      "data. Choose a new database name (an admin may confirm overwriting it).")  # fmt: skip
    return RestoreSpec(what="database", archive=request.archive, via=target.via, target=name,
                       server_id=target.server.id if target.server else None, engine=engine, dump=dump,  # type: ignore[arg-type]
                       source_database=source_db, credential_id=request.credential_id, overwrite=request.overwrite,
                       server_name=target.name, globals_archive=roles)  # fmt: skip


async def _globals_archive(chain: BackupChain, request: RestoreRequest, items: list[dict[str, Any]],
                           services: Any) -> str:  # fmt: skip
    """Given a PostgreSQL dump archive, return the archive holding the same backup's roles: the chosen archive when
    it holds ``globals.sql``, else its sibling ``<repository>-globals-<same stamp>`` (one run stamps all its
    archives alike, see :mod:`bot.backup.runner`); a sentence when the backup has none."""
    if any(i.get("path") == restore_db.GLOBALS_FILE and i.get("type") == "-" for i in items):
        return request.archive
    stamp = STAMP.search(request.archive)
    repository = await Repository.get(id=chain.repository_id)  # type: ignore[attr-defined]
    sibling = f"{repository.name}-{pg_source.GLOBALS_SUFFIX}-{stamp.group(1)}" if stamp else ""
    if sibling:
        transport, repo, borg = await pool_side(chain, services)
        try:
            names = {a.name for a in await borg_list.archives(transport, repo, borg=borg)}
        except (BorgError, TransportError) as exc:
            raise Refused(f"The archives of {chain.name} could not be listed to find its roles: {exc}") from None
        if sibling in names:
            return sibling
    raise Refused(f"The backup {request.archive} has no roles archive ({sibling or 'no globals'} is not in the "
                  "repository: the source was backed up without its globals): restore without the roles.")


async def _files_spec(actor: Actor, request: RestoreRequest, items: list[dict[str, Any]],
                      target: Target) -> RestoreSpec:  # fmt: skip
    problem = files.target_problem(request.target)
    if problem:
        raise Refused(problem)
    directory = posixpath.normpath(request.target)
    if target.server is not None:
        scope = await authz.require_server(actor, target.server)
        await authz.require_paths(actor, target.server, scope, [directory])
    chosen = files.relative(request.paths)
    missing = [p for p in chosen if not any(files.selected(str(i.get("path", "")), [p]) for i in items)]
    if missing:
        raise Refused(f"{missing[0][:200]} is not in the archive {request.archive}; choose paths from its listing.")
    return RestoreSpec(what="files", archive=request.archive, via=target.via, target=directory, paths=chosen,
                       server_id=target.server.id if target.server else None, overwrite=request.overwrite,
                       server_name=target.name or "the bot's host")  # fmt: skip


async def _preflight(chain: BackupChain, spec: RestoreSpec, items: list[dict[str, Any]], services: Any) -> None:
    """On the target server, before anything is written: borg runs there, the target is free, the data fits."""
    try:
        where = await reach(chain, spec, services)
        problem = await files.borg_problem(where.target, where.borg, spec.server_name)
        if problem:
            raise Refused(problem)
        if spec.what == "files":
            state, _ = await files.target_state(where.target, spec.target, sudo=where.sudo)
            if state != "new" and not spec.overwrite:
                raise Refused(f"{spec.target} on {spec.server_name} already exists and is not empty: choose a new "
                              "directory (an admin may confirm restoring over it).")  # fmt: skip
            needed = files.expected_of(items, spec.paths).bytes
            place = spec.target
        else:
            needed = sum(int(i.get("size") or 0) for i in items if i.get("path") == spec.dump)
            place = {"postgresql": "/var/lib/postgresql", "mongodb": "/var/lib/mongodb"}.get(spec.engine or "",
                                                                                          "/var/lib/mysql")
            await _database_free(chain, spec, where)
        problem = await files.space_problem(where.target, place, needed, spec.server_name)
        if problem:
            raise Refused(problem)
    except planning.PlanProblem as exc:
        raise Refused(str(exc)) from None
    except TransportError as exc:
        raise Refused(f"{spec.server_name} could not be reached to prepare the restore: {exc}") from None


async def _database_free(chain: BackupChain, spec: RestoreSpec, where: Any) -> None:
    """Refuse a target database name that exists (unless confirmed): a new database, never someone's data."""
    from bot.runs.restoring import credential_for

    login = await credential_for(chain, spec)
    try:
        if spec.engine == "mongodb":
            exists, _ = await restore_db.mongo_counts(where.target, login, spec.target, sudo=where.sudo)
        else:
            exists = await restore_db.database_exists(where.target, spec.engine or "postgresql", login, spec.target,
                                                      client=spec.client, sudo=where.sudo)  # fmt: skip
    except restore_db.RestoreFailed as exc:
        raise Refused(f"The databases on {spec.server_name} could not be listed: {exc}") from None
    if exists and not spec.overwrite:
        raise Refused(f"The database {spec.target} already exists on {spec.server_name}: choose a new name (an "
                      "admin may confirm restoring over it).")  # fmt: skip


async def prepare(actor: Actor, request: RestoreRequest, *, services: Any) -> tuple[BackupChain, RestoreSpec]:
    """Every check of :func:`request_restore`, without queueing (the Slack summary shows what would run)."""
    chain = await restorable(actor, request.chain)
    _overwrite_check(actor, request)
    target = await _target(actor, chain, request.server)
    if await _pruning(chain.repository_id):  # type: ignore[attr-defined]
        raise Refused(f"The repository of {chain.name} is being pruned right now: restore when the prune has "
                      "finished, so the archive cannot vanish half-way.")  # fmt: skip
    items = await listing(chain, request.archive, services)
    if request.what == "database":
        spec = await _db_spec(actor, chain, request, items, target, services)
    else:
        spec = await _files_spec(actor, request, items, target)
    await _preflight(chain, spec, items, services)
    return chain, spec


async def request_restore(actor: Actor, request: RestoreRequest, *, services: Any) -> Requested:
    """Given an actor and a restore request, check everything (see the module docstring) and queue one ``RESTORE``
    run carrying its :class:`RestoreSpec`; a refusal is one sentence and nothing was written."""
    try:
        chain, spec = await prepare(actor, request, services=services)
    except Refused as refused:
        chain_id = request.chain if isinstance(request.chain, int) else None
        await record(actor, "chain.restore", "chain", chain_id, outcome="refused", reason=refused.sentence[:300])
        raise
    runs = await insert_rows([RunSpec(team_id=actor.team_id, kind=RunKind.RESTORE, chain_id=chain.id,
                                      repository_id=chain.repository_id,  # type: ignore[attr-defined]
                                      priority=MANUAL_PRIORITY, requested_by=actor.user_id,
                                      spec=spec.model_dump())])  # fmt: skip
    run = runs[0]
    await record(actor, "chain.restore", "chain", chain.id, outcome="queued", run_id=run.id, what=spec.described(),
                 archive=spec.archive, overwrite=spec.overwrite)  # fmt: skip
    nudge()
    sentence = (f":rewind: Restore of *{esc(chain.name)}* queued: {esc(spec.described())} from `{esc(spec.archive)}`. "
                "Progress and the result come in the chain's thread.")  # fmt: skip
    return Requested(run.id, spec, sentence)


# --- the Slack flow's draft (resumable: a closed modal reopens where it was) ---------------------------------------
# Kept in a WizardSession row of its own kind: state "done" (the wizard's resume and expiry never pick it up as an
# open wizard) and data["flow"] == "restore"; the flow's own step is data["step"].

DRAFT_TTL = timedelta(days=2)


async def _draft_row(actor: Actor) -> WizardSession | None:
    rows = await actor.tenant.query(WizardSession).filter(user_id=actor.user_id, state="done",
                                                          expires_at__gt=datetime.now(UTC)).order_by("-updated_at")
    return next((row for row in rows if (row.data or {}).get("flow") == "restore"), None)


async def load_draft(actor: Actor) -> dict[str, Any] | None:
    """The actor's unfinished restore flow (its answers and step), or None."""
    row = await _draft_row(actor)
    return dict(row.data) if row is not None else None


async def save_draft(actor: Actor, data: dict[str, Any]) -> None:
    """Keep the flow's answers after every step (no secrets: paths, names and choices only)."""
    row = await _draft_row(actor)
    values = {**data, "flow": "restore"}
    expires = datetime.now(UTC) + DRAFT_TTL
    if row is None:
        await actor.tenant.create(WizardSession, id=uuid.uuid4(), user_id=actor.user_id, state="done", data=values,
                                  expires_at=expires)  # fmt: skip
    else:
        row.data, row.expires_at = values, expires
        await row.save(update_fields=["data", "expires_at", "updated_at"])


async def clear_draft(actor: Actor) -> None:
    row = await _draft_row(actor)
    if row is not None:
        row.expires_at = datetime.now(UTC)
        await row.save(update_fields=["expires_at", "updated_at"])


async def archive_sizes(chain: BackupChain, names: list[str]) -> dict[str, int]:
    """Original sizes of archives the bot's runs recorded (name → bytes), for the archive picker."""
    runs = await Run.filter(chain_id=chain.id, archive_name__in=names).values_list("archive_name", "stats")
    return {name: int((stats or {}).get("original_size") or 0) for name, stats in runs if stats}


__all__ = [
    "Entry",
    "Level",
    "Requested",
    "RestoreRequest",
    "archive_names",
    "archive_sizes",
    "browse",
    "clear_draft",
    "dumps_of",
    "load_draft",
    "prepare",
    "request_restore",
    "restorable",
    "restorable_chains",
    "save_draft",
    "target_servers",
]  # fmt: skip
