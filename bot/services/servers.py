"""Servers: adding one, and confirming or re-pinning its host key — an admin's acts.

Adding a server contacts its address (to read the host key it presents), so it needs an admin before anything is
sent. Pinning needs an admin *and* a fingerprint the admin obtained out of band (from the server's console, its
provisioning, its owner) typed or pasted, compared with the key the server presents: a button under a fingerprint
read over the same connection would only prove that whoever answers at that address has some key. Until a key is
pinned no login, secret or command goes to the address. Every pin is audited and announced to the admins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

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
from bot.probes.capabilities import Capabilities
from bot.probes.dbcheck import CheckResult, DbCredential, check
from bot.probes.registry import default_specs
from bot.services import credentials
from bot.transport import SSHPool
from bot.transport.hostkeys import HostKeyInfo, fingerprint
from storage.models import BackupSource, DatabaseCredential, Server, ServerStatus, StoragePool
from storage.orm import IntegrityError

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
    taken = await actor.tenant.get_or_none(Server, name=new.name)
    if taken is not None:
        raise Refused(f"A server named {new.name!r} already exists in this workspace "
                      f"({taken.username}@{taken.host}:{taken.port}); choose another name.")  # fmt: skip
    try:
        server = await actor.tenant.create(Server, name=new.name, host=new.host, port=new.port, username=new.username,
                                           status=ServerStatus.UNCONFIRMED, created_by=actor.user_id)  # fmt: skip
    except IntegrityError:
        raise Refused(f"A server named {new.name!r} already exists in this workspace; choose another name.") from None
    await record(actor, "server.add", "server", server.id, after={"name": server.name, "host": server.host,
                                                                  "port": server.port, "username": server.username})
    return server, info


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


async def remove(actor: Actor, name: str) -> None:
    """Remove a server that no source and no pool uses (its grants go with it)."""
    await authz.require_admin(actor, "remove servers")
    server = await authz.named(actor, Server, name, "server")
    if await actor.tenant.query(BackupSource).filter(server_id=server.id).exists():
        raise Refused(f"Backups of {server.name} exist: retire their chains first.")
    if await actor.tenant.query(StoragePool).filter(server_id=server.id).exists():
        raise Refused(f"{server.name} holds a storage pool: remove the pool first.")
    await server.delete()
    await record(actor, "server.remove", "server", server.id, before={"name": server.name, "host": server.host,
                                                                      "port": server.port,
                                                                      "fingerprint": server.host_key_fingerprint})
