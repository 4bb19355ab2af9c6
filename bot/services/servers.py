"""Servers: adding one, and confirming or re-pinning its host key — an admin's acts.

Adding a server contacts its address (to read the host key it presents), so it needs an admin before anything is
sent. Pinning needs an admin *and* a fingerprint the admin obtained out of band (from the server's console, its
provisioning, its owner) typed or pasted, compared with the key the server presents: a button under a fingerprint
read over the same connection would only prove that whoever answers at that address has some key. Until a key is
pinned no login, secret or command goes to the address. Every pin is audited and announced to the admins.

Managing them (``/backup servers``, ``backup-bot server``): :func:`list_servers` shows admins every server and
anyone else the servers granted to them; :func:`refresh` probes one again (its admins and operators); :func:`add`
pins a key non-interactively against a fingerprint given on the command line; :func:`remove` is refused while
chains or pools use the server, naming them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bot import validation
from bot.access import Actor, NotFound, Refused, authz
from bot.access.audit import record
from bot.alerts import Alert, AlertBus
from bot.inventory import (
    FingerprintMismatch,
    cached_capabilities,
    fetch_host_key,
    pin_host_key,
    refresh_capabilities,
    ssh_target,
)
from bot.probes.base import ProbeContext
from bot.probes.borg import BorgInfo
from bot.probes.capabilities import Capabilities, ProbeSpec
from bot.probes.dbcheck import CheckResult, DbCredential, check
from bot.probes.registry import default_specs
from bot.services import credentials
from bot.transport import SSHPool
from bot.transport.hostkeys import HostKeyInfo, fingerprint
from storage.models import BackupSource, DatabaseCredential, RoleGrant, Server, ServerStatus, StoragePool
from storage.orm import IntegrityError, in_transaction

ADMIN_NOTICE = "admin_notice"  # an Alert kind: told to the workspace's admins (bot.slack.notices)
_SHA256 = re.compile(r"SHA256:([A-Za-z0-9+/]{20,64})=*")


@dataclass(frozen=True)
class NewServer:
    name: str
    host: str
    port: int
    username: str


def typed_fingerprint(text: str) -> str | None:
    """Given what an admin pasted (``SHA256:…``, the bare hash, or a whole ``ssh-keygen -lf`` line), return the
    ``SHA256:…`` fingerprint in it, or None."""
    value = " ".join(str(text or "").split())[:400]
    found = _SHA256.search(value)
    if found:
        return f"SHA256:{found.group(1)}"
    bare = value.rstrip("=")
    return f"SHA256:{bare}" if re.fullmatch(r"[A-Za-z0-9+/]{43}", bare) else None


async def propose(actor: Actor, new: NewServer, existing: Server | None, *,
                  timeout: float) -> tuple[Server, HostKeyInfo]:  # fmt: skip
    """Given an admin and a server to add (or a known one without a pinned key), read the host key the address
    presents (no login happens) and record the server as unconfirmed; the key waits for :func:`confirm_key`.

    Raises :class:`Refused` for a non-admin (before any connection) and
    :class:`~bot.transport.base.TransportError` when the address does not answer."""
    await authz.require_admin(actor, "add servers" if existing is None else "confirm host keys")
    info = await fetch_host_key(new.host, new.port, timeout=timeout)
    if existing is not None:
        if existing.status == ServerStatus.NEW:
            existing.status = ServerStatus.UNCONFIRMED
            await existing.save(update_fields=["status"])
        return existing, info
    await _name_free(actor, new.name)
    return await _create(actor, new), info


async def _name_free(actor: Actor, name: str) -> None:
    """Refuse a name the workspace already uses (before anything is contacted)."""
    taken = await actor.tenant.get_or_none(Server, name=name)
    if taken is not None:
        raise Refused(f"A server named {name!r} already exists in this workspace "
                      f"({taken.username}@{taken.host}:{taken.port}); choose another name.")  # fmt: skip


async def _create(actor: Actor, new: NewServer) -> Server:
    """Given an admin and a server to add, return its new row (unconfirmed: no key pinned yet), audited."""
    try:
        server = await actor.tenant.create(Server, name=new.name, host=new.host, port=new.port, username=new.username,
                                           status=ServerStatus.UNCONFIRMED, created_by=actor.user_id)  # fmt: skip
    except IntegrityError:
        raise Refused(f"A server named {new.name!r} already exists in this workspace; choose another name.") from None
    await record(actor, "server.add", "server", server.id, after={"name": server.name, "host": server.host,
                                                                  "port": server.port, "username": server.username})
    return server


async def confirm_key(actor: Actor, server: Server, key_line: str, typed: str, *,
                      alerts: AlertBus | None) -> Server:  # fmt: skip
    """Given an admin, a server, the key it presents and the fingerprint the admin typed, pin that key.

    Refused (nothing pinned) for a non-admin, when nothing was typed, or when the typed fingerprint is not the
    presented key's; a mismatch is audited, since it may be an attack. Re-pinning a changed key works the same way.
    """
    await authz.require_admin(actor, "confirm or re-pin host keys")
    presented = fingerprint(key_line)
    wanted = typed_fingerprint(typed)
    if wanted is None:
        raise Refused(f"Paste the fingerprint of {server.host}:{server.port} that you obtained from the server "
                      "itself (on its console: `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`, or from its "
                      "administrator), then press Confirm: the bot compares it with the key it is shown.")  # fmt: skip
    if wanted != presented:
        await record(actor, "server.pin_refused", "server", server.id, typed=wanted, presented=presented)
        raise Refused(f"The fingerprint you typed ({wanted}) is not the one {server.host}:{server.port} presents "
                      f"({presented}); nothing was pinned. If you are sure of yours, something else answers at that "
                      "address: check DNS and the network before trusting it.")  # fmt: skip
    previous = server.host_key_fingerprint
    try:
        await pin_host_key(server, key_line, presented, actor=actor.user_id)
    except FingerprintMismatch as exc:
        raise Refused(str(exc)) from None
    if alerts is not None:
        verb = f"re-pinned the host key of *{server.name}* (was `{previous}`)" if previous and previous != presented \
            else f"confirmed the host key of *{server.name}*"
        await alerts.publish(Alert(team_id=actor.team_id, kind=ADMIN_NOTICE,
                                   message=f":key: <@{actor.user_id}> {verb} ({server.host}:{server.port}): "
                                           f"`{presented}`.",
                                   details={"server_id": server.id, "fingerprint": presented,
                                            "previous": previous, "actor": actor.user_id}))  # fmt: skip
    return server


# -- using a server (the HTTP API; the wizard's steps check the same way) ----------------------------------------


async def usable(actor: Actor, server_id: object) -> Server:
    """Given an actor and a server id, return the server once the actor may use it and its key is pinned."""
    text = str(server_id)
    server = await actor.tenant.get_or_none(Server, id=int(text)) if text.isdigit() else None
    if server is None:
        raise NotFound(f"There is no server {text[:20]} in this workspace.")
    await authz.require_server(actor, server)
    if not server.host_key:
        raise Refused(f"Server {server.name} has no confirmed host key yet: an admin has to confirm its fingerprint "
                      "first.")  # fmt: skip
    return server


async def capabilities(actor: Actor, server_id: object, *, refresh: bool, max_age: timedelta, pool: SSHPool,
                       alerts: AlertBus | None) -> tuple[Server, Capabilities]:  # fmt: skip
    """The server's capabilities: cached on its row while younger than ``max_age``, else probed now (read-only)."""
    server = await usable(actor, server_id)
    caps = None if refresh else cached_capabilities(server, max_age=max_age)
    if caps is None:
        caps = await refresh_capabilities(server, pool, default_specs(), alerts=alerts)
    return server, caps


async def test_login(actor: Actor, server_id: object, *, credential_id: int | None, typed: DbCredential | None,
                     pool: SSHPool) -> CheckResult:  # fmt: skip
    """Connect to a database from the server with a stored login (its test status is recorded) or a typed one
    (nothing is stored), and say what happened."""
    server = await usable(actor, server_id)
    context = ProbeContext(pool.transport(ssh_target(server)))
    if credential_id is not None:
        stored = await actor.tenant.get_or_none(DatabaseCredential, id=credential_id, server_id=server.id)
        if stored is None:
            raise NotFound(f"There is no credential {credential_id} on server {server.name}.")
        return await credentials.test_stored(context, stored)
    if typed is None:
        raise Refused("Give credential_id, or engine (mysql, postgresql or mongodb) with host/port/user.")
    return await check(context, typed)


# -- managing servers: list, refresh, add without a prompt, remove ------------------------------------------------

ServerRef = str | int  # a name (as people type it) or an id (as buttons carry it)
KEY_NOT_CONFIRMED = "key not confirmed"
REFRESH_TIMEOUT = 15.0  # seconds to read a host key when adding from the command line
MAX_NAMES = 10  # chains or pools named in one sentence; the rest are counted


@dataclass(frozen=True)
class ServerView:
    """One server as a person may see it: where it is, whether it answers, its borg, and what uses it."""

    id: int
    name: str
    host: str
    port: int
    username: str
    fingerprint: str | None  # the pinned key's; None until an admin confirmed one
    status: str  # a ServerStatus value
    problem: str | None  # why it is unreachable or refused, from the last probe
    borg_version: str | None
    borg_summary: str | None  # "borg 1.4.1 is installed and supported.", or how to install it
    probed_at: datetime | None
    chains: tuple[str, ...]  # names of the chains backing it up
    pools: tuple[str, ...]  # names of the storage pools on it
    may_refresh: bool
    may_remove: bool  # an admin, and nothing uses it

    @property
    def address(self) -> str:
        """``user@host:port`` (an IPv6 address in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.username}@{host}:{self.port}"

    @property
    def key(self) -> str:
        return self.fingerprint or KEY_NOT_CONFIRMED

    @property
    def reachable(self) -> bool | None:
        """True when the last probe logged in, False when it could not, None when never probed (or no key)."""
        if self.status == ServerStatus.OK and self.probed_at is not None:
            return True
        if self.status in (ServerStatus.UNREACHABLE, ServerStatus.HOST_KEY_CHANGED):
            return False
        return None

    def to_json(self) -> dict[str, Any]:
        """The view as plain JSON (``backup-bot server list --json``)."""
        return {"id": self.id, "name": self.name, "address": self.address, "host": self.host, "port": self.port,
                "user": self.username, "fingerprint": self.fingerprint, "status": self.status,
                "reachable": self.reachable, "problem": self.problem, "borg_version": self.borg_version,
                "last_probe": self.probed_at.isoformat() if self.probed_at else None, "chains": list(self.chains),
                "pools": list(self.pools)}  # fmt: skip


@dataclass(frozen=True)
class Usage:
    """What uses a server: chains backing it up, sources of no chain (left-overs), pools on it."""

    chains: tuple[str, ...] = ()
    orphan_sources: tuple[int, ...] = ()
    pools: tuple[str, ...] = ()


async def _usage(actor: Actor, server_ids: Sequence[int]) -> dict[int, Usage]:
    """Given server ids of the actor's workspace, return what uses each (chains and pools by name)."""
    found: dict[int, dict[str, list[Any]]] = {i: {"chains": [], "orphans": [], "pools": []} for i in server_ids}
    if not server_ids:
        return {}
    sources = await actor.tenant.query(BackupSource).filter(server_id__in=list(server_ids)).prefetch_related("chains")
    for source in sources:
        names = sorted(chain.name for chain in source.chains)
        bucket = found[source.server_id]  # type: ignore[attr-defined]
        bucket["chains"] += [n for n in names if n not in bucket["chains"]]
        if not names:
            bucket["orphans"].append(source.id)
    pools = await actor.tenant.query(StoragePool).filter(server_id__in=list(server_ids)).order_by("name")
    for pool in pools:
        found[pool.server_id]["pools"].append(pool.name)  # type: ignore[attr-defined,index]
    return {i: Usage(tuple(sorted(u["chains"])), tuple(u["orphans"]), tuple(u["pools"])) for i, u in found.items()}


def _probe_facts(server: Server) -> tuple[str | None, str | None, str | None]:
    """Given a server row, return (problem, borg version, borg sentence) from its stored capabilities."""
    caps = cached_capabilities(server)
    if caps is None:
        return None, None, None
    system = caps.outcomes.get("system")
    problem = None if system is None or system.ok else (system.error or "the server could not be probed")[:500]
    borg = caps.get("borg", BorgInfo)
    if borg is None:
        return problem, None, None
    return problem, borg.version, (borg.summary if borg.supported else f"{borg.summary} {borg.install_hint}")[:500]


def _view(actor: Actor, server: Server, usage: Usage, *, operator: bool) -> ServerView:
    problem, version, summary = _probe_facts(server)
    unused = not usage.chains and not usage.pools
    return ServerView(id=server.id, name=server.name, host=server.host, port=server.port, username=server.username,
                      fingerprint=server.host_key_fingerprint if server.host_key else None,
                      status=str(server.status.value if isinstance(server.status, ServerStatus) else server.status),
                      problem=problem, borg_version=version, borg_summary=summary,
                      probed_at=server.capabilities_detected_at, chains=usage.chains, pools=usage.pools,
                      may_refresh=bool(server.host_key) and (actor.is_admin or operator),
                      may_remove=actor.is_admin and unused)  # fmt: skip


async def list_servers(actor: Actor) -> list[ServerView]:
    """Given an actor, return the servers they may see, by name: every server for admins, the servers granted to
    them for anyone else (so a member never learns of servers they cannot use)."""
    allowed = await authz.usable_server_ids(actor)
    query = actor.tenant.query(Server)
    if allowed is not None:
        query = query.filter(id__in=sorted(allowed))
    rows = await query.order_by("name", "id")
    usage = await _usage(actor, [row.id for row in rows])
    return [_view(actor, row, usage[row.id], operator=allowed is not None) for row in rows]


async def _lookup(actor: Actor, ref: ServerRef) -> Server:
    """The actor's workspace's server by id (an int, from a button) or by name; NotFound otherwise."""
    if isinstance(ref, int):
        server = await actor.tenant.get_or_none(Server, id=ref)
        if server is None:
            raise NotFound("That server no longer exists in this workspace.")
        return server
    return await authz.named(actor, Server, ref, "server")


async def view_of(actor: Actor, ref: ServerRef) -> ServerView:
    """Given an actor and a server they may use, return its view (as in :func:`list_servers`)."""
    server = await _lookup(actor, ref)
    await authz.require_server(actor, server)
    usage = await _usage(actor, [server.id])
    return _view(actor, server, usage[server.id], operator=not actor.is_admin)


@dataclass(frozen=True)
class Refreshed:
    view: ServerView
    sentence: str  # what the probe found, for people
    key_changed: bool  # the server presents another host key than the pinned one (reported, never re-pinned)


def _refresh_sentence(view: ServerView) -> str:
    if view.status == ServerStatus.HOST_KEY_CHANGED:
        return (f"{view.name} ({view.address}) presents a different host key than the pinned {view.fingerprint}; "
                "the bot will not log in and nothing was re-pinned. If the change is expected (a reinstalled "
                "server), an admin confirms the new fingerprint obtained from the server itself: in the wizard's "
                f"server step, or `backup-bot server add --name {view.name} --host {view.host} --port {view.port} "
                f"--user {view.username} --fingerprint SHA256:…`.")  # fmt: skip
    if view.status != ServerStatus.OK:
        return f"{view.name} ({view.address}) could not be probed: {view.problem or 'no answer'}"
    borg = view.borg_summary or "borg could not be checked."
    return f"{view.name} ({view.address}) answered. {borg}"


async def refresh(actor: Actor, ref: ServerRef, *, pool: SSHPool, alerts: AlertBus | None,
                  specs: Sequence[ProbeSpec] | None = None) -> Refreshed:  # fmt: skip
    """Given an admin or an operator of the server, probe it again now (login, system, borg and the rest of the
    capabilities table), store what was found and its time, and say it. A changed host key is reported (status,
    alert) and never re-pinned: that needs an admin and a fingerprint from the server itself."""
    server = await _lookup(actor, ref)
    await authz.require_server(actor, server)
    if not server.host_key:
        raise Refused(f"{server.name} has no confirmed host key yet, so the bot does not log in there: an admin "
                      "confirms its fingerprint first (`/backup new`, or `backup-bot server add … --fingerprint`).")
    await refresh_capabilities(server, pool, list(specs) if specs is not None else default_specs(), alerts=alerts)
    await record(actor, "server.refresh", "server", server.id, status=str(server.status))
    view = await view_of(actor, server.id)
    return Refreshed(view, _refresh_sentence(view), view.status == ServerStatus.HOST_KEY_CHANGED)


@dataclass(frozen=True)
class Added:
    """The outcome of :func:`add`: ``server`` is None (and nothing was stored) when no fingerprint was given."""

    presented: HostKeyInfo
    server: Server | None

    @property
    def added(self) -> bool:
        return self.server is not None


def checked(new: NewServer) -> NewServer:
    """Given a server as typed, return it cleaned (host, port, login, name defaulting to the host), or Refused."""
    try:
        host = validation.host(new.host)
        port = validation.port(new.port)
        username = validation.username(new.username)
    except validation.InvalidInput as exc:
        raise Refused(str(exc)) from None
    name = " ".join(str(new.name or "").split()) or host
    if len(name) > 100:
        raise Refused("A server name is one line of at most 100 characters.")
    return NewServer(name=name, host=host, port=port, username=username)


async def _pinnable(actor: Actor, new: NewServer) -> Server | None:
    """The row an ``add`` with a fingerprint would pin: none (a new server), the same server left unconfirmed or
    whose key changed; Refused for a name or an address already in use otherwise."""
    same = await actor.tenant.get_or_none(Server, name=new.name)
    if same is None:
        elsewhere = await actor.tenant.query(Server).filter(host=new.host, port=new.port,
                                                            username=new.username).first()  # fmt: skip
        if elsewhere is not None:
            raise Refused(f"{new.username}@{new.host}:{new.port} is already in this workspace as "
                          f"{elsewhere.name!r}; use that name.")  # fmt: skip
        return None
    if (same.host, same.port, same.username) != (new.host, new.port, new.username):
        await _name_free(actor, new.name)  # raises, naming the other address
    if same.host_key and same.status != ServerStatus.HOST_KEY_CHANGED:
        raise Refused(f"{same.name} is already in this workspace with the pinned host key "
                      f"{same.host_key_fingerprint}; nothing was changed.")  # fmt: skip
    return same


async def add(actor: Actor, new: NewServer, typed: str | None, *, alerts: AlertBus | None,
              timeout: float = REFRESH_TIMEOUT) -> Added:  # fmt: skip
    """Given an admin, a server and the fingerprint they obtained out of band, read the key the server presents
    and pin it when it is that one (audited and announced, as :func:`confirm_key` does): the command-line way to
    add a server. Without a fingerprint, return only what the server presents and store nothing, so the admin can
    compare it with the server's own before anything is trusted. A re-installed server (its key changed) is
    re-pinned the same way. Everything typed is checked before the address is contacted."""
    await authz.require_admin(actor, "add servers")
    new = checked(new)
    wanted = None if typed is None else typed_fingerprint(typed)
    if typed is not None and wanted is None:
        raise Refused(f"{str(typed)[:80]!r} is not a host key fingerprint: give it as ssh-keygen prints it, "
                      "SHA256: followed by 43 characters.")  # fmt: skip
    existing = await _pinnable(actor, new)
    info = await fetch_host_key(new.host, new.port, timeout=timeout)
    if wanted is None:
        return Added(info, None)
    if wanted != info.fingerprint:
        await record(actor, "server.pin_refused", "server", existing.id if existing else None, typed=wanted,
                     presented=info.fingerprint, address=f"{new.username}@{new.host}:{new.port}")  # fmt: skip
        raise Refused(f"The fingerprint you gave ({wanted}) is not the one {new.host}:{new.port} presents "
                      f"({info.fingerprint}); nothing was stored. If you are sure of yours, something else answers "
                      "at that address: check DNS and the network before trusting it.")  # fmt: skip
    server = existing or await _create(actor, new)
    return Added(info, await confirm_key(actor, server, info.key_line, wanted, alerts=alerts))


def _unused_or_refuse(server: Server, usage: Usage) -> None:
    """Refuse, naming them, while chains back ``server`` up or pools live on it."""
    def names(items: tuple[str, ...]) -> str:
        shown = ", ".join(items[:MAX_NAMES])
        return shown + (f" and {len(items) - MAX_NAMES} more" if len(items) > MAX_NAMES else "")

    if usage.chains or usage.pools:
        uses = []
        if usage.chains:
            uses.append(f"backs up the chain{'s' if len(usage.chains) > 1 else ''} {names(usage.chains)}")
        if usage.pools:
            uses.append(f"holds a storage pool ({names(usage.pools)})")
        fix = "remove the pool first (`/backup pools`); " if usage.pools else ""
        if usage.chains:
            fix += ("delete those chains first (`/backup delete <chain>`; a retired chain keeps its server while its "
                    "repository is kept, so an admin deletes the repository too); ")  # fmt: skip
        raise Refused(f"{server.name} {' and '.join(uses)}: {fix}a server stays as long as chains back it up. "
                      "Nothing was removed.")  # fmt: skip


async def remove(actor: Actor, ref: ServerRef) -> Server:
    """Given an admin and a server that no chain backs up and no pool lives on, remove it with its stored database
    logins, its operator grants and any source left behind by no chain, and return the removed row; audited.
    Nothing is contacted."""
    await authz.require_admin(actor, "remove servers")
    server = await _lookup(actor, ref)
    usage = (await _usage(actor, [server.id]))[server.id]
    _unused_or_refuse(server, usage)
    async with in_transaction():
        logins = await actor.tenant.query(DatabaseCredential).filter(server_id=server.id).count()
        if usage.orphan_sources:
            await actor.tenant.query(BackupSource).filter(id__in=list(usage.orphan_sources)).delete()
        await actor.tenant.query(RoleGrant).filter(server_id=server.id).delete()
        await actor.tenant.query(DatabaseCredential).filter(server_id=server.id).delete()
        await server.delete()
    await record(actor, "server.remove", "server", server.id, logins_removed=logins,
                 before={"name": server.name, "host": server.host, "port": server.port, "username": server.username,
                         "fingerprint": server.host_key_fingerprint})  # fmt: skip
    return server
