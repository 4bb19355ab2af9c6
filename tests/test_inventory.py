"""Servers in the inventory: confirm-then-pin, cached capabilities on the row, host key change alerts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.alerts import Alert, AlertBus
from bot.inventory import FingerprintMismatch, cached_capabilities, fetch_host_key, pin_host_key, refresh_capabilities
from bot.probes import system
from storage.models import AuditLog, Server, ServerStatus
from storage.tenancy import Tenant


async def _server(host) -> Server:
    return await Tenant("T0001").create(Server, name=host.name, host=host.host, port=host.port, username=host.user)


async def test_confirmed_fingerprint_is_pinned_and_audited(sqlite_db, make_sshd) -> None:
    host = make_sshd("pin")
    server = await _server(host)
    offered = await fetch_host_key(server.host, server.port)
    with pytest.raises(FingerprintMismatch, match="nothing was pinned"):
        await pin_host_key(server, offered.key_line, "SHA256:somethingElse", actor="U1")
    assert (await Server.get(id=server.id)).host_key is None
    await pin_host_key(server, offered.key_line, host.host_key_fingerprint, actor="U1")
    stored = await Server.get(id=server.id)
    assert stored.host_key_fingerprint == host.host_key_fingerprint
    assert stored.status == ServerStatus.OK
    audit = await AuditLog.get(action="server.pin_host_key")
    assert audit.actor == "U1" and audit.details["fingerprint"] == host.host_key_fingerprint


async def test_capabilities_are_cached_on_the_row(sqlite_db, make_sshd, pool_for) -> None:
    host = make_sshd("cache")
    server = await _server(host)
    info = await fetch_host_key(server.host, server.port)
    await pin_host_key(server, info.key_line, info.fingerprint, actor="U1")
    caps = await refresh_capabilities(server, pool_for(host), [])
    stored = await Server.get(id=server.id)
    cached = cached_capabilities(stored)
    assert cached is not None and cached.get("system", system.SystemInfo).hostname == "cache"
    assert cached.collected_at == caps.collected_at
    assert cached_capabilities(stored, max_age=timedelta(hours=1)) is not None
    stored.capabilities_detected_at = datetime.now(UTC) - timedelta(hours=2)
    assert cached_capabilities(stored, max_age=timedelta(hours=1)) is None


async def test_changed_host_key_sets_status_and_alerts_the_workspace(sqlite_db, make_sshd, pool_for) -> None:
    host = make_sshd("rekeyed")
    server = await _server(host)
    info = await fetch_host_key(server.host, server.port)
    await pin_host_key(server, info.key_line, info.fingerprint, actor="U1")
    host.restart(new_host_key=True)
    bus, seen = AlertBus(), []
    bus.subscribe(seen.append)
    caps = await refresh_capabilities(server, pool_for(host), [], alerts=bus)
    assert not caps.outcomes["system"].ok
    assert (await Server.get(id=server.id)).status == ServerStatus.HOST_KEY_CHANGED
    assert len(seen) == 1 and isinstance(seen[0], Alert)
    assert seen[0].team_id == "T0001" and seen[0].kind == "host_key_changed"
    assert info.fingerprint in seen[0].message and host.host_key_fingerprint in seen[0].message


async def test_unreachable_server_is_marked_so(sqlite_db, make_sshd, pool_for) -> None:
    host = make_sshd("down")
    server = await _server(host)
    info = await fetch_host_key(server.host, server.port)
    await pin_host_key(server, info.key_line, info.fingerprint, actor="U1")
    host.stop()
    caps = await refresh_capabilities(server, pool_for(host), [])
    assert caps.outcomes["system"].kind == "unreachable"
    assert (await Server.get(id=server.id)).status == ServerStatus.UNREACHABLE
