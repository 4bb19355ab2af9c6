"""Servers in the inventory: pinning host keys after a person confirms, and cached capabilities.

This is where the ORM meets the transport and probes (which take plain values): it turns a Server row
into an :class:`~bot.transport.SSHTarget`, stores what the probes found on the row, and turns a changed
host key into a server status plus an alert for the workspace.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from pydantic import SecretStr

from bot.alerts import Alert, AlertBus
from bot.probes.base import ProbeContext
from bot.probes.capabilities import Capabilities, ProbeSpec, gather
from bot.probes.dbcheck import DbCredential
from bot.transport import SSHPool, SSHTarget
from bot.transport.hostkeys import HostKeyInfo, fetch_host_key, fingerprint
from storage.models import AuditLog, AuthMethod, DatabaseCredential, Server, ServerStatus

__all__ = ["HostKeyInfo", "db_credential", "fetch_host_key", "pin_host_key", "refresh_capabilities", "ssh_target"]


class FingerprintMismatch(Exception):
    """The key to pin is not the one the person confirmed."""


def ssh_target(server: Server) -> SSHTarget:
    return SSHTarget(host=server.host, port=server.port, username=server.username, host_key=server.host_key,
                     workspace=server.team_id)  # its workspace's share of the SSH pool


def db_credential(row: DatabaseCredential) -> DbCredential:
    """A stored database login as the probes take it: the password decrypted only here, into a SecretStr."""
    socket_auth = row.auth_method == AuthMethod.SOCKET
    password = None if socket_auth or row.password is None else row.password.reveal()
    return DbCredential(engine=str(row.db_type.value), host=row.host, port=row.port, user=row.username,
                        password=SecretStr(password) if password else None,
                        auth_method="socket" if socket_auth else "password")  # fmt: skip


async def pin_host_key(server: Server, key_line: str, confirmed_fingerprint: str, *, actor: str) -> Server:
    """Pin ``key_line`` on ``server`` — only if it is the key whose fingerprint the person confirmed."""
    actual = fingerprint(key_line)
    if actual != confirmed_fingerprint:
        raise FingerprintMismatch(
            f"The key offered for pinning has fingerprint {actual}, not the confirmed {confirmed_fingerprint}; "
            "nothing was pinned. Fetch the fingerprint again and confirm it with the server's administrator."
        )
    previous = server.host_key_fingerprint
    server.host_key = key_line
    server.host_key_fingerprint = actual
    server.status = ServerStatus.OK if server.status != ServerStatus.UNREACHABLE else server.status
    await server.save()
    await AuditLog.create(
        team_id=server.team_id,
        actor=actor,
        action="server.pin_host_key",
        object_type="server",
        object_id=str(server.id),
        details={"fingerprint": actual, "previous": previous},
    )
    return server


async def refresh_capabilities(
    server: Server, pool: SSHPool, specs: Sequence[ProbeSpec], *, alerts: AlertBus | None = None
) -> Capabilities:
    """Probe ``server`` now, store the result and its time on the row, and update the server's status."""
    ctx = ProbeContext(pool.transport(ssh_target(server)))
    caps = await gather(ctx, specs, target=f"{server.username}@{server.host}:{server.port}")
    system = caps.outcomes["system"]
    server.capabilities = caps.model_dump(mode="json")
    server.capabilities_detected_at = caps.collected_at
    server.status = ServerStatus.OK if system.ok else ServerStatus.UNREACHABLE
    if system.transport_kind == "host_key_changed":
        server.status = ServerStatus.HOST_KEY_CHANGED
        if alerts is not None:
            await alerts.publish(
                Alert(
                    team_id=server.team_id,
                    kind="host_key_changed",
                    message=system.error or "",
                    details={"server_id": server.id, "server": server.name},
                )
            )
    await server.save()
    return caps


def cached_capabilities(server: Server, *, max_age: timedelta | None = None) -> Capabilities | None:
    """The stored capabilities, or None when there are none or they are older than ``max_age``."""
    if not server.capabilities or server.capabilities_detected_at is None:
        return None
    if max_age is not None and datetime.now(UTC) - server.capabilities_detected_at > max_age:
        return None
    return Capabilities.model_validate(server.capabilities)
