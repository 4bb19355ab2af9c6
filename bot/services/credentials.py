"""Database logins stored on a server's behalf: storing one (encrypted) and removing one are an admin's acts.

Using a stored login (backing up with it, testing it) is open to the server's operators; seeing its password is
open to nobody: it is decrypted only to hand it to the database client on the server.
"""

from __future__ import annotations

from datetime import UTC, datetime

from bot.access import Actor, NotFound, Refused, authz
from bot.access.audit import record
from bot.inventory import db_credential
from bot.probes.base import ProbeContext
from bot.probes.dbcheck import CheckResult, check
from storage.models import AuthMethod, BackupSource, DatabaseCredential, DbType, Server, TestStatus


async def store_login(actor: Actor, server: Server, engine: str, *, host: str, port: int, user: str,
                      password: str) -> DatabaseCredential:  # fmt: skip
    """Given an admin and a login typed for ``server``, return the stored row (the same login typed twice is one
    row). The password never reaches the audit log."""
    await authz.require_admin(actor, "store database logins (choose a saved login)")
    same = actor.tenant.query(DatabaseCredential).filter(server_id=server.id, db_type=engine, host=host, port=port,
                                                         username=user)  # fmt: skip
    for row in await same:
        if row.password is not None and row.password.reveal() == password:
            return row
    row = await actor.tenant.create(DatabaseCredential, server=server, db_type=DbType(engine), host=host, port=port,
                                    username=user, password=password, auth_method=AuthMethod.PASSWORD)  # fmt: skip
    await record(actor, "credential.store", "server", server.id, credential_id=row.id,
                 after={"engine": engine, "login": f"{user}@{host}:{port}"})  # fmt: skip
    return row


async def remove_login(actor: Actor, credential_id: object) -> None:
    """Remove a stored login that no source uses any more."""
    await authz.require_admin(actor, "remove database logins")
    text = str(credential_id or "")
    row = await actor.tenant.get_or_none(DatabaseCredential, id=int(text)) if text.isdigit() else None
    if row is None:
        raise NotFound(f"There is no stored database login {text[:20]} in this workspace.")
    if await actor.tenant.query(BackupSource).filter(credential_id=row.id).exists():
        raise Refused("A backup source still uses this login: change or remove that chain first.")
    await row.delete()
    await record(actor, "credential.remove", "server", row.server_id,  # type: ignore[attr-defined]
                 credential_id=row.id, before={"engine": row.db_type.value,
                                               "login": f"{row.username}@{row.host}:{row.port}"})  # fmt: skip


async def test_stored(ctx: ProbeContext, row: DatabaseCredential, *, timeout: float = 10.0) -> CheckResult:
    """Connect with a stored login from its server and record the outcome on the row (``test_status``)."""
    result = await check(ctx, db_credential(row), timeout=timeout)
    row.test_status = TestStatus.SUCCESS if result.ok else TestStatus.FAILED
    row.last_test_at = datetime.now(UTC)
    await row.save(update_fields=["test_status", "last_test_at"])
    return result
