"""Storage pools: adding and removing one is an admin's act (using one is an operator's, see bot.access.authz).

A pool is a directory on a server the bot reaches over SSH (``ssh``) or on the bot's own host (``local``). Adding
one records it; measuring it and creating repositories in it happen when a wizard uses it.
"""

from __future__ import annotations

from bot.access import Actor, Refused, authz
from bot.access.audit import record
from storage.models import PerformanceTier, PoolKind, Repository, Server, StoragePool
from storage.orm import IntegrityError

MAX_NAME = 100


async def add_pool(actor: Actor, name: str, base_path: str, *, server: str | None = None, tier: str = "standard",
                   quota_bytes: int | None = None) -> StoragePool:  # fmt: skip
    """Given an admin, a name and a directory (on ``server`` by name, or on the bot's own host when None), return
    the new pool."""
    await authz.require_admin(actor, "add storage pools")
    label = " ".join(str(name or "").split())
    if not label or len(label) > MAX_NAME:
        raise Refused("Give the pool a name: one line of at most 100 characters.")
    path = authz.normal_path(base_path)
    if path is None or path == "/" or any(c in str(base_path) for c in '"\n\r\x00\\'):
        raise Refused(f"{str(base_path)[:80]!r} is not a usable pool directory: give an absolute path below / "
                      "without quotes or backslashes, like /srv/borg.")  # fmt: skip
    if tier not in {t.value for t in PerformanceTier}:
        raise Refused(f"The tier is one of {', '.join(t.value for t in PerformanceTier)}.")
    if quota_bytes is not None and quota_bytes <= 0:
        raise Refused("A quota must be a positive number of bytes (or none).")
    host = None
    if server is not None:
        host = await authz.named(actor, Server, server, "server")
        if not host.host_key:
            raise Refused(f"Confirm the host key of {host.name} first: the bot stores nothing on an unpinned host.")
    try:
        pool = await actor.tenant.create(StoragePool, name=label, kind=PoolKind.SSH if host else PoolKind.LOCAL,
                                         server=host, base_path=path, tier=PerformanceTier(tier),
                                         quota_bytes=quota_bytes)  # fmt: skip
    except IntegrityError:
        raise Refused(f"A storage pool named {label!r} already exists in this workspace.") from None
    after = {"name": label, "server": host.name if host else None, "base_path": path, "tier": tier,
             "quota_bytes": quota_bytes}
    await record(actor, "pool.add", "pool", pool.id, after=after)
    return pool


async def remove_pool(actor: Actor, name: str) -> None:
    """Remove a pool that holds no repository of the bot (its files on disk are left as they are)."""
    await authz.require_admin(actor, "remove storage pools")
    pool = await authz.named(actor, StoragePool, name, "storage pool")
    if await actor.tenant.query(Repository).filter(pool_id=pool.id).exists():
        raise Refused(f"{pool.name} still holds repositories: retire their chains first.")
    await pool.delete()
    await record(actor, "pool.remove", "pool", pool.id, before={"name": pool.name, "base_path": pool.base_path})
