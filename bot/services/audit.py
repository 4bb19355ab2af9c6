"""Reading the audit log: who did what, when, to what — as much of it as the reader may see.

Scope rules (issue 10's roles):

* *admins* see every entry of their workspace;
* anyone else sees the entries about the chains they may operate (:func:`~bot.access.authz.may_operate`: their
  own, and those of servers they operate), about those chains' repositories, sources and runs, and about the
  servers they hold a grant on (:func:`~bot.access.authz.server_scope`) — nothing about roles, templates, other
  servers or other chains;
* asking for something outside that (a chain or server they have no grant on, another user's entries) is refused
  with a sentence naming who can allow it, rather than answered with an empty page that would look like "nothing
  happened".

Every query goes through the actor's :class:`~storage.tenancy.Tenant`, so no row of another workspace is read, and
every page is bounded (at most :data:`MAX_PAGE_SIZE` rows).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bot.access import Actor, Forbidden, NotFound, Refused, authz
from bot.access.actor import USER_ID
from storage.models import AuditLog, BackupChain, BackupSource, BackupTemplate, Repository, Run, Server
from storage.orm import Q

MAX_PAGE_SIZE = 50
DEFAULT_PAGE_SIZE = 20
NON_PERSONS = ("cli", "system")  # actors that are not Slack users: the host's operator and the bot itself
_CHUNK = 500  # ids per IN (...) list
_SHOWN = ("before", "after", "outcome", "via")  # details with a field of their own


@dataclass(frozen=True)
class Entry:
    """One audit row, as every surface shows it."""

    id: int
    when: datetime
    actor: str  # a Slack user id, "cli" or "system"
    action: str  # "chain.pause", "role.grant", …
    object_type: str  # "chain", "server", "repository", "run", "source", "role", "workspace", "template", …
    object_id: str | None
    object_name: str | None  # the object's current name, when it still exists (or the name the entry recorded)
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    outcome: str | None  # "done", "denied", "queued", … (None when the action has only one outcome)
    via: str | None  # the surface: "slack", "cli", "api", "system"
    details: dict[str, Any] = field(default_factory=dict)  # everything else the entry recorded

    @property
    def target(self) -> str:
        """``chain 3 (web-files)``, ``role 12``, ``workspace T…``."""
        label = f"{self.object_type} {self.object_id}" if self.object_id else self.object_type
        return f"{label} ({self.object_name})" if self.object_name else label

    @property
    def change(self) -> str:
        """A short before→after of what changed: ``status: active→paused``; "" when the entry has neither."""
        if self.before is None and self.after is None:
            return ""
        before, after = self.before or {}, self.after or {}
        parts = [f"{key}: {_short(before.get(key))}→{_short(after.get(key))}"
                 for key in dict.fromkeys([*before, *after]) if before.get(key) != after.get(key)]  # fmt: skip
        text = "; ".join(parts) or "no change"
        return text if len(text) <= 160 else text[:159] + "…"

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping (``when`` in ISO-8601 UTC)."""
        return {"id": self.id, "when": self.when.astimezone(UTC).isoformat(), "actor": self.actor,
                "action": self.action, "object_type": self.object_type, "object_id": self.object_id,
                "object_name": self.object_name, "before": self.before, "after": self.after,
                "outcome": self.outcome, "via": self.via, "details": self.details}  # fmt: skip


@dataclass(frozen=True)
class AuditPage:
    """One page of entries, newest first. ``page`` counts from 0; ``pages`` is at least 1."""

    entries: tuple[Entry, ...]
    page: int
    pages: int
    total: int
    page_size: int
    everything: bool  # True: the whole workspace's log (an admin); False: only what the actor may operate

    @property
    def has_next(self) -> bool:
        return self.page + 1 < self.pages

    @property
    def counted(self) -> str:
        """``1 entry``, ``23 entries``."""
        return f"{self.total} {'entry' if self.total == 1 else 'entries'}"


def _short(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, Mapping):
        text = ", ".join(f"{k}={v}" for k, v in value.items())
        text = "{" + text + "}"
    elif isinstance(value, list | tuple):
        text = ",".join(str(v) for v in value)
    else:
        text = str(value)
    return text if len(text) <= 60 else text[:59] + "…"


def user_of(text: str) -> str:
    """Given ``U…``, Slack's escaped ``<@U…|name>``, ``cli`` or ``system``, return the actor id to filter by."""
    value = str(text or "").strip()
    found = re.fullmatch(r"<@([UW][A-Z0-9]+)(\|[^>]*)?>", value)
    if found:
        value = found.group(1)
    if value.lower() in NON_PERSONS:
        return value.lower()
    if USER_ID.match(value):
        return value
    raise Refused(f"{value[:40]!r} is not a user (U…, or @someone in Slack).")


# -- what an actor may see -----------------------------------------------------------------------------------


@dataclass
class _Objects:
    """Object ids per object type (as the audit log stores them: strings)."""

    ids: dict[str, set[str]] = field(default_factory=dict)

    def add(self, object_type: str, values: Iterable[object]) -> None:
        self.ids.setdefault(object_type, set()).update(str(v) for v in values if v is not None)

    def q(self) -> Q | None:
        """A filter matching entries about these objects; None when there are none."""
        parts = [Q(object_type=kind, object_id__in=sorted(ids)) for kind, ids in self.ids.items() if ids]
        if not parts:
            return None
        return Q(*parts, join_type="OR") if len(parts) > 1 else parts[0]


async def _chain_objects(actor: Actor, chains: list[BackupChain], objects: _Objects) -> None:
    """Add ``chains`` and their repositories, sources and (audited) runs to ``objects``."""
    if not chains:
        return
    chain_ids = [c.id for c in chains]
    objects.add("chain", chain_ids)
    objects.add("repository", [c.repository_id for c in chains])  # type: ignore[attr-defined]
    sources = await actor.tenant.query(BackupSource).filter(chains__id__in=chain_ids).values_list("id", flat=True)
    objects.add("source", sources)
    # Runs are many (one per backup); only the few that have an entry of their own are worth looking up.
    audited = (
        await actor.tenant.query(AuditLog).filter(object_type="run").distinct().values_list("object_id", flat=True)
    )
    run_ids = sorted({int(v) for v in audited if v and str(v).isdigit()})
    for start in range(0, len(run_ids), _CHUNK):
        found = (
            await actor.tenant.query(Run)
            .filter(id__in=run_ids[start : start + _CHUNK], chain_id__in=chain_ids)
            .values_list("id", flat=True)
        )
        objects.add("run", found)


async def _chains_on(actor: Actor, server_id: int) -> list[BackupChain]:
    """The actor's workspace's chains with a source on ``server_id``."""
    return await actor.tenant.query(BackupChain).filter(sources__server_id=server_id).distinct()


async def _scope(actor: Actor) -> Q | None:
    """The filter of what a non-admin may see (None: nothing at all). Call only for non-admins."""
    objects = _Objects()
    chains = [c for c in await actor.tenant.query(BackupChain).order_by("id") if await authz.may_operate(actor, c)]
    await _chain_objects(actor, chains, objects)
    objects.add("server", sorted(await authz.usable_server_ids(actor) or ()))
    return objects.q()


async def _who(actor: Actor) -> str:
    return await authz.who_can_allow(actor.team_id)


async def _chain_filter(actor: Actor, name: str) -> Q | None:
    chain = await actor.tenant.query(BackupChain).filter(name=name.strip()).first()
    if chain is None:
        raise NotFound(f"There is no backup chain named {name.strip()[:100]!r} in this workspace.")
    if not await authz.may_operate(actor, chain):
        raise Forbidden(f"You may not read the audit log of {chain.name}: only its creator, the operators of its "
                        f"server and admins may — {await _who(actor)}.")  # fmt: skip
    objects = _Objects()
    await _chain_objects(actor, [chain], objects)
    return objects.q()


async def _server_filter(actor: Actor, name: str) -> Q | None:
    server = await actor.tenant.query(Server).filter(name=name.strip()).first()
    if server is None:
        raise NotFound(f"There is no server named {name.strip()[:100]!r} in this workspace.")
    if await authz.server_scope(actor, server.id) is None:
        raise Forbidden(f"You have no access to the server {server.name}, so not to its audit log either: an admin "
                        f"has to grant it to you — {await _who(actor)}.")  # fmt: skip
    objects = _Objects()
    objects.add("server", [server.id])
    objects.add(
        "source", await actor.tenant.query(BackupSource).filter(server_id=server.id).values_list("id", flat=True)
    )
    await _chain_objects(actor, await _chains_on(actor, server.id), objects)
    return objects.q()


# -- names of the objects on a page --------------------------------------------------------------------------

_NAMED: dict[str, type] = {"chain": BackupChain, "server": Server, "repository": Repository,
                           "source": BackupSource, "template": BackupTemplate}  # fmt: skip


async def _names(actor: Actor, rows: list[AuditLog]) -> dict[tuple[str, str], str]:
    wanted: dict[str, set[int]] = {}
    for row in rows:
        if row.object_id and row.object_id.isdigit() and (row.object_type in _NAMED or row.object_type == "run"):
            wanted.setdefault(row.object_type, set()).add(int(row.object_id))
    names: dict[tuple[str, str], str] = {}
    for kind, ids in wanted.items():
        if kind == "run":
            runs = await actor.tenant.query(Run).filter(id__in=sorted(ids)).values_list("id", "chain_id")
            chain_names = dict(await actor.tenant.query(BackupChain).filter(
                id__in=sorted({c for _, c in runs if c is not None})).values_list("id", "name"))  # fmt: skip
            names |= {("run", str(r)): f"of {chain_names[c]}" for r, c in runs if c in chain_names}
            continue
        # values_list: names only, nothing encrypted is read
        found = await actor.tenant.query(_NAMED[kind]).filter(id__in=sorted(ids)).values_list("id", "name")
        names |= {(kind, str(i)): str(n) for i, n in found}
    return names


def _entry(row: AuditLog, names: Mapping[tuple[str, str], str]) -> Entry:
    details = dict(row.details) if isinstance(row.details, Mapping) else {}
    before, after = details.get("before"), details.get("after")
    name = names.get((row.object_type, row.object_id or ""))
    if name is None and isinstance(details.get("name"), str):  # gone since: the name the entry recorded
        name = details["name"]
    when = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
    return Entry(id=row.id, when=when, actor=row.actor, action=row.action, object_type=row.object_type,
                 object_id=row.object_id, object_name=name,
                 before=dict(before) if isinstance(before, Mapping) else None,
                 after=dict(after) if isinstance(after, Mapping) else None,
                 outcome=str(details["outcome"]) if details.get("outcome") is not None else None,
                 via=str(details["via"]) if details.get("via") is not None else None,
                 details={k: v for k, v in details.items() if k not in _SHOWN})  # fmt: skip


# -- the operation -------------------------------------------------------------------------------------------


async def entries(actor: Actor, *, chain: str | None = None, server: str | None = None, user: str | None = None,
                  since: datetime | None = None, page: int = 0,
                  page_size: int = DEFAULT_PAGE_SIZE) -> AuditPage:  # fmt: skip
    """Given an actor and optional filters (a chain or server by name, an acting user, a start time), return one
    page (``page`` counts from 0) of the audit entries the actor may see, newest first.

    Raises :class:`NotFound` for a chain or server name the workspace does not have, :class:`Forbidden` (naming
    who can allow it) when a non-admin asks for a chain, server or user outside their scope, and
    :class:`Refused` for a malformed user or page."""
    if page < 0:
        raise Refused("Pages are counted from the first; there is no page before it.")
    size = min(max(int(page_size), 1), MAX_PAGE_SIZE)
    wanted: list[Q | None] = []  # all must match; a None matches nothing
    if user is not None:
        who = user_of(user)
        if not actor.is_admin and who != actor.user_id:
            raise Forbidden(f"Only admins can read what other people did; you can read your own entries — "
                            f"{await _who(actor)}.")  # fmt: skip
        wanted.append(Q(actor=who))
    if chain is not None:
        wanted.append(await _chain_filter(actor, chain))
    if server is not None:
        wanted.append(await _server_filter(actor, server))
    if not actor.is_admin:
        wanted.append(await _scope(actor))
    if any(q is None for q in wanted):
        return AuditPage((), page, 1, 0, size, actor.is_admin)
    query = actor.tenant.query(AuditLog)
    if since is not None:
        query = query.filter(created_at__gte=since if since.tzinfo else since.replace(tzinfo=UTC))
    for q in wanted:
        query = query.filter(q)  # type: ignore[arg-type]  # None was ruled out above
    total = await query.count()
    pages = max(1, math.ceil(total / size))
    rows = await query.order_by("-created_at", "-id").offset(page * size).limit(size) if page < pages else []
    names = await _names(actor, rows)
    return AuditPage(tuple(_entry(r, names) for r in rows), page, pages, total, size, actor.is_admin)
